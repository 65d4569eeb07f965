"""The built-in corpus: text that ships with every Python install, so `minigpt train` needs nothing else.

Two sources, both English prose about Python written by its developers:
    pydoc_data.topics   the reference manual's topics behind `help("if")`, `help("FORMATTING")`, ...
    the standard library's docstrings, read from the .py sources with `ast` (never imported:
    importing every module would run code, open windows, print the Zen of Python ...)

One document per pydoc topic and one per stdlib module (its docstring, then each documented class and
function as `name(signature)` followed by its docstring). About 2 MB of text in all.
"""
import ast
import os
import sysconfig

# folders of the standard library that are not documentation-style prose (tests, the IDLE GUI, vendored)
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "idlelib",
             "lib2to3", "ensurepip", "turtledemo", "tkinter"}


def pydoc_topics():
    """The documents of pydoc_data.topics, in sorted topic order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        return []
    return [topics[name].strip() + "\n" for name in sorted(topics) if topics[name].strip()]


def docstring_entries(tree, module_name):
    """(head, docstring) of every documented public class and function of a parsed module, in source
    order: head is `module.name(signature)` or `class module.Name`; methods follow their class."""
    entries = []

    def visit(node, prefix):
        for child in node.body:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if child.name.startswith("_") and not child.name.startswith("__init__"):
                    continue  # private helpers: rarely documented for readers
                name = prefix + child.name
                doc = ast.get_docstring(child)
                if doc:
                    if isinstance(child, ast.ClassDef):
                        head = f"class {name}"
                    else:
                        head = f"{name}({ast.unparse(child.args)})"
                    entries.append((head, doc))
                if isinstance(child, ast.ClassDef):
                    visit(child, name + ".")
    visit(tree, module_name + ".")
    return entries


def documented(tree, module_name):
    """The same entries as docstring_entries, by the name posttrain's chat generators use."""
    return docstring_entries(tree, module_name)


def parse_module(source):
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def module_document(source, module_name):
    """A module's docstrings as one document, or None if it has none."""
    tree = parse_module(source)
    if tree is None:
        return None
    parts = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"Module {module_name}\n\n{doc}\n")
    parts += [f"{head}\n{doc}\n" for head, doc in docstring_entries(tree, module_name)]
    return "\n".join(parts) if parts else None


def stdlib_sources(root=None):
    """(module name, source text) of every standard-library module, in sorted path order."""
    root = root or sysconfig.get_paths()["stdlib"]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            module = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
            try:
                with open(path, encoding="utf-8") as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            yield module, source


def stdlib_documents(root=None):
    """One document per standard-library module with docstrings, in sorted path order."""
    docs = (module_document(source, module) for module, source in stdlib_sources(root))
    return [doc for doc in docs if doc]


def builtin_documents():
    """The whole built-in corpus: pydoc topics, then stdlib module docstrings. Deterministic for a
    given Python install."""
    return pydoc_topics() + stdlib_documents()
