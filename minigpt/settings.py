"""Settings: commented dataclasses in, command-line flags and config files out.

Every command's knobs are dataclass fields, written like GPTConfig: a type, a default and a comment
that says what the field means.

    @dataclass
    class SamplingSettings:
        temperature: float = 0.8     # softmax temperature; 0 = greedy

From those this file builds, with nothing written twice:
    add_arguments(parser, Cls, ...)   one flag per field (--temperature), its comment and default as
                                      the help, its type to parse, choices from Cls.CHOICES
    build(Cls, *layers)               the settings from layers of values, later ones winning
                                      (defaults < config file < a resumed run < flags given now),
                                      every value type-checked; the class's __post_init__ checks ranges
    read_config(path, Cls, ...)       a JSON object or nanoGPT-style `name = value` lines

A bad value is a ValueError with one line that names the setting, what it must be and what it was;
the CLI prints it and exits 2.
"""
import argparse
import ast
import dataclasses
import inspect
import io
import json
import math
import tokenize
import typing


def field_comments(cls):
    """{field name: its trailing comment} from the class's source (classes up the MRO too)."""
    comments = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        name = None
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME and tok.start[1] == 4 and name is None:
                name = tok.string  # the first name on an indented line: a field, maybe
            elif tok.type == tokenize.COMMENT and name is not None:
                comments[name] = tok.string.lstrip("# ").strip()
            elif tok.type in (tokenize.NEWLINE, tokenize.NL):
                name = None
    return comments


def field_type(f):
    """The plain type of a field (int, float, str or bool); `int = None` means optional int."""
    t = f.type
    if isinstance(t, str):
        t = {"int": int, "float": float, "str": str, "bool": bool}.get(t, str)
    if typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def check_type(cls_name, f, value):
    """value as the field's type, or a one-line ValueError. Never converts silently: "2e3" steps is
    an error, not 2000."""
    t = field_type(f)
    if value is None:
        if f.default is None:
            return None
        raise ValueError(f"{cls_name}.{f.name} must be a {t.__name__}, found None")
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, found {value}")
            return float(value)
    elif t is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ValueError(f"{f.name} must be {'an' if t is int else 'a'} {t.__name__}, found {value!r}")


def fields(*classes):
    """The fields of several settings classes, merged by name (a later class's field wins)."""
    out = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            out[f.name] = (cls, f)
    return out


def build(cls, *layers):
    """cls(**values) from dicts of values, later layers overriding earlier ones; unknown names are
    ignored here (a layer may serve several classes: read_config checks names)."""
    values = {}
    for layer in layers:
        values.update({k: v for k, v in (layer or {}).items() if v is not None or k in values})
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = check_type(cls.__name__, f, values[f.name])
    return cls(**kwargs)


def as_dict(*objs):
    """The values of settings objects, merged into one dict (for JSON and resuming)."""
    out = {}
    for obj in objs:
        out.update(dataclasses.asdict(obj))
    return out


# --------------------------------------------------------------------------------------------------
# the command line


def parse_bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, found {text!r}")


def parse_number(t):
    def parse(text):
        try:
            return t(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if t is int else 'a number'}, "
                                             f"found {text!r}") from None
    parse.__name__ = t.__name__
    return parse


def add_arguments(parser, *classes, skip=()):
    """One --flag per field of the classes (underscores become dashes); default None, so that only
    what the user typed overrides the other layers."""
    for name, (cls, f) in fields(*classes).items():
        if name in skip:
            continue
        t = field_type(f)
        comment = field_comments(cls).get(name, "")
        default = "" if f.default is None or f.default is dataclasses.MISSING else f" (default {f.default})"
        choices = getattr(cls, "CHOICES", {}).get(name)
        flag = "--" + name.replace("_", "-")
        if t is bool:  # --plot / --no-plot (or --plot false)
            parser.add_argument(flag, dest=name, nargs="?", const=True, type=parse_bool, default=None,
                                metavar="BOOL", help=(comment + default).strip())
            parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_const", const=False,
                                help=f"the same as {flag} false")
            continue
        kind = parse_number(t) if t in (int, float) else str
        parser.add_argument(flag, dest=name, type=kind, default=None, choices=choices,
                            metavar=None if choices else name.upper(), help=(comment + default).strip())


def from_args(args, *classes):
    """The values the user typed for the fields of the classes (a layer for build)."""
    names = fields(*classes)
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def read_config(path, *classes):
    """A config file as a dict: a JSON object, or nanoGPT-style `name = value` lines (Python
    literals, # comments; a bare word is a string). Names must be fields of the classes."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    try:
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a JSON config must be an object of name: value, "
                             f"found {type(values).__name__}")
    except json.JSONDecodeError:
        values = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise ValueError(f"{path}:{lineno}: expected `name = value`, found {line[:60]!r}")
            name, value = (s.strip() for s in line.split("=", 1))
            if len(value) > 1000:
                raise ValueError(f"{path}:{lineno}: the value of {name} is too long ({len(value)} characters)")
            try:
                values[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                values[name] = value  # a bare word: a string
    known = fields(*classes)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    return values


def check_range(obj, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """A one-line ValueError unless lo <= obj.name <= hi (open ends with lo_open / hi_open); None
    passes (an unset optional)."""
    value = getattr(obj, name)
    if value is None:
        return
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        left = "any" if lo is None else f"{'(' if lo_open else '['}{lo}"
        right = "any" if hi is None else f"{hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be in {left}, {right}, found {value}")


def check_choice(obj, name):
    value, choices = getattr(obj, name), type(obj).CHOICES[name]
    if value is not None and value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, found {value!r}")
