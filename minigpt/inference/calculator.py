"""The calculator tool: exact arithmetic the model can call instead of computing in its head.

    calculate("(123*456)+7")  -> "56095"
    calculate("1/3")          -> "0.333333333333"      (12 significant digits when it does not terminate)
    calculate("2**0.5")       -> "error: exponents must be integers"

Numbers are exact fractions (Python's Fraction), so 0.1 + 0.2 is 0.3, not 0.30000000000000004.
The expression is parsed with Python's `ast` into a tree and walked here, node by node, allowing
only numbers, + - * / // % **, unary signs and parentheses: no names, calls, attributes or
anything else, and never eval/exec. Every bound is checked before the work it limits: the
length of the text, the nesting depth, the size of each intermediate result and of each power.
A bad expression returns an "error: ..." string for the model to read, never an exception.
"""
import ast
import math
from fractions import Fraction

MAX_CHARS = 256        # longer expressions are refused before parsing
MAX_DEPTH = 32         # nesting of operations and parentheses
MAX_BITS = 4096        # numerator and denominator of every intermediate result
MAX_EXPONENT = 10_000  # |b| in a ** b
SIGNIFICANT = 12       # digits shown for a result that is not a terminating decimal

OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: lambda a, b: a % b,
}


class CalcError(ValueError):
    pass


def number(node, text):
    """A literal as an exact Fraction, read from its source text (so 0.1 is exactly 1/10)."""
    if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise CalcError(f"only numbers are allowed, found {type(node.value).__name__}")
    literal = ast.get_source_segment(text, node) or repr(node.value)
    try:
        return Fraction(literal.replace("_", ""))
    except (ValueError, ZeroDivisionError):
        raise CalcError(f"cannot read the number {literal[:20]!r}") from None


def check_size(x):
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise CalcError(f"a result is too large (more than {MAX_BITS} bits)")
    return x


def power(a, b):
    if b.denominator != 1:
        raise CalcError("exponents must be integers")
    e = b.numerator
    if abs(e) > MAX_EXPONENT:
        raise CalcError(f"the exponent {e} is too large (at most {MAX_EXPONENT})")
    if a == 0 and e < 0:
        raise CalcError("division by zero")
    # the result's size is known before computing it: bits(a) * |e|
    bits = max(a.numerator.bit_length(), a.denominator.bit_length()) * abs(e)
    if bits > MAX_BITS:
        raise CalcError(f"a result is too large (more than {MAX_BITS} bits)")
    return a ** e


def evaluate(node, text, depth=0):
    if depth > MAX_DEPTH:
        raise CalcError(f"the expression is nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(node, ast.Expression):
        return evaluate(node.body, text, depth + 1)
    if isinstance(node, ast.Constant):
        return check_size(number(node, text))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        x = evaluate(node.operand, text, depth + 1)
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        a = evaluate(node.left, text, depth + 1)
        b = evaluate(node.right, text, depth + 1)
        if isinstance(node.op, ast.Pow):
            return check_size(power(a, b))
        if type(node.op) not in OPS:
            raise CalcError(f"the operator {type(node.op).__name__} is not allowed")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
            raise CalcError("division by zero")
        return check_size(OPS[type(node.op)](a, b))
    raise CalcError(f"only numbers and + - * / // % ** ( ) are allowed, found {type(node).__name__}")


def decimal_text(x, places):
    """x rounded to `places` decimal places, as text without trailing zeros (exact integer maths)."""
    scaled = round(abs(x) * 10 ** places)  # an int
    whole, frac = divmod(scaled, 10 ** places)
    frac_text = str(frac).rjust(places, "0").rstrip("0") if places else ""
    sign = "-" if x < 0 and scaled else ""
    return f"{sign}{whole}" + (f".{frac_text}" if frac_text else "")


def format_number(x):
    """An exact integer or terminating decimal as it is; otherwise SIGNIFICANT significant digits."""
    if x.denominator == 1:
        return str(x.numerator)
    d, places = x.denominator, 0
    while d % 10 == 0 or d % 2 == 0 or d % 5 == 0:  # 10^places must be a multiple of the denominator
        d //= 10 if d % 10 == 0 else 2 if d % 2 == 0 else 5
    if d == 1:  # terminates: print every digit
        places = 0
        while (x * 10 ** places).denominator != 1:
            places += 1
        return decimal_text(x, places)
    magnitude = math.floor(math.log10(abs(x.numerator)) - math.log10(x.denominator))
    return decimal_text(x, max(SIGNIFICANT - 1 - magnitude, 0))


def calculate(text):
    """The value of an arithmetic expression as text, or "error: ..." (never raises)."""
    if not isinstance(text, str):
        return "error: the expression must be text"
    if len(text) > MAX_CHARS:
        return f"error: the expression is too long ({len(text)} characters, at most {MAX_CHARS})"
    text = text.strip()
    if not text:
        return "error: empty expression"
    if text.count("(") > MAX_DEPTH:
        return f"error: the expression is nested too deeply (more than {MAX_DEPTH} parentheses)"
    try:
        tree = ast.parse(text, mode="eval")
        return format_number(evaluate(tree, text))
    except CalcError as e:
        return f"error: {e}"
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return "error: not an arithmetic expression"
