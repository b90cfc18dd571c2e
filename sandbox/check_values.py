"""Values of expressions as the interpreter computes them: string literals (escapes such as
`\\N{SOLIDUS}`, implicit concatenation, bytes, f-string text), `+`-folded constants, numbers, and
the literal strings a name can hold (through sandbox/check_flow.py).

String rules run on these values, never on the source text: `"\\x2ftmp"` is "/tmp", `b"/tmp"` is a
path too, and `"AUTO" "RESEARCH"` is one string.
"""
from __future__ import annotations

import ast
import warnings
from typing import Callable

import libcst as cst

from sandbox.check_flow import Flow, Leaf, Scope

NUMERIC_SPEC_TYPES = frozenset("bcdeEfFgGnoxX%")
# Builtins and methods whose result is a number whatever their arguments.
# Builtins whose result the interpreter guarantees to be a number whatever their argument ...
NUMERIC_BUILTINS = frozenset({"int", "float", "len", "hash", "ord", "bool", "complex"})
# ... and those that return what their arguments' methods return (max('..', '') is '..').
NUMERIC_IF_ARGUMENTS = frozenset({"round", "abs", "min", "max", "sum", "pow", "divmod"})
NUMERIC_METHODS = frozenset({"item", "numel", "bit_length", "nelement", "element_size", "count", "index",
                             "get_vocab_size", "get_bos_token_id", "total_seconds", "timestamp"})
NUMERIC_MODULES = ("math.", "time.time", "time.perf_counter", "time.monotonic", "time.process_time",
                   "os.getpid", "os.cpu_count", "torch.cuda.device_count", "random.")


def literal(node: cst.CSTNode | None) -> str | bytes | None:
    """Value of a plain string literal ('a', b'a', implicit 'a' 'b'); None for anything else.
    Implicit concatenations are folded iteratively: libcst nests them one level per piece, and a
    long one would exhaust the recursion of libcst's own `evaluated_value`."""
    if isinstance(node, cst.SimpleString):
        return _evaluated(node)
    if not isinstance(node, cst.ConcatenatedString):
        return None
    pieces = []
    while isinstance(node, cst.ConcatenatedString):
        pieces.append(node.left)
        node = node.right
    pieces.append(node)
    if not all(isinstance(piece, cst.SimpleString) for piece in pieces):
        return None   # an f-string piece: not a plain literal
    values = [_evaluated(piece) for piece in pieces]
    if all(isinstance(v, str) for v in values):
        return "".join(values)
    if all(isinstance(v, bytes) for v in values):
        return b"".join(values)
    return None   # str mixed with bytes: compile() rejects it anyway


def _evaluated(node: cst.SimpleString) -> str | bytes | None:
    raw = node.value
    if "\\" not in raw:   # no escapes: the value is the text between the quotes (literal_eval compiles)
        prefix = node.prefix
        quote = node.quote
        body = raw[len(prefix) + len(quote):len(raw) - len(quote)]
        if "b" in prefix.lower():
            return body.encode("latin-1", "surrogateescape") if body.isascii() else None
        return body
    with warnings.catch_warnings():   # invalid escapes: the interpreter keeps them, and so do we
        warnings.simplefilter("ignore")
        try:
            return node.evaluated_value
        except (ValueError, SyntaxError):
            return None


def as_text(value: str | bytes | None) -> str | None:
    """A literal as text for the string rules: bytes are strings too (paths, keys, names)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def fstring_text(part: cst.FormattedStringText, quote: str) -> str:
    """A literal piece of an f-string as the interpreter sees it (escapes decoded, {{ -> {)."""
    raw = part.value
    text = raw.replace("{{", "{").replace("}}", "}")
    if "\\" not in text:
        return text
    letters = quote.rstrip("'\"")
    prefix = "".join(c for c in letters if c.lower() != "f")
    quotes = quote[len(letters):] or '"'
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ast.literal_eval(f"{prefix}{quotes}{text}{quotes}")
        return value if isinstance(value, str) else text
    except (ValueError, SyntaxError):
        return text


def constant_string(node: cst.CSTNode | None) -> str | None:
    """Value of a string expression built only from literals ("a" + "b" is folded)."""
    if isinstance(node, cst.BinaryOperation):
        if not isinstance(node.operator, cst.Add):
            return None
        left, right = constant_string(node.left), constant_string(node.right)
        return left + right if left is not None and right is not None else None
    return as_text(literal(node))


def spec_is_numeric(spec) -> bool:
    """A format spec like `05d` or `.3f`: the formatted value is a number, whatever it is."""
    if not spec:
        return False
    last = spec[-1]
    return isinstance(last, cst.FormattedStringText) and bool(last.value) and last.value[-1] in NUMERIC_SPEC_TYPES


class Values:
    """Questions about values that need the names' origins."""

    def __init__(self, flow: Flow, dotted: Callable[[cst.CSTNode, Scope], str | None]):
        self.flow = flow
        self.dotted = dotted

    def strings(self, node: cst.CSTNode, scope: Scope, depth: int = 0) -> set[str] | None:
        """Every string `node` can be, when they are all literals (None: unknown or not a string)."""
        value = constant_string(node)
        if value is not None:
            return {value}
        if depth > 6:
            return None
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
            left, right = self.strings(node.left, scope, depth + 1), self.strings(node.right, scope, depth + 1)
            if left is None or right is None or len(left) * len(right) > 16:
                return None
            return {a + b for a in left for b in right}
        if isinstance(node, cst.IfExp):
            a, b = self.strings(node.body, scope, depth + 1), self.strings(node.orelse, scope, depth + 1)
            return a | b if a is not None and b is not None else None
        if not isinstance(node, cst.Name):
            return None
        leaves = self.flow.origins(node, scope)
        if not leaves:
            return None
        out: set[str] = set()
        for leaf in leaves:
            if leaf.kind != "expr" or isinstance(leaf.node, cst.Name):
                return None
            found = self.strings(leaf.node, leaf.scope, depth + 1)
            if found is None:
                return None
            out |= found
        return out

    def numeric(self, node: cst.CSTNode, scope: Scope, depth: int = 0) -> bool:
        """Is `node` a number (or bool/None) whatever its value? Such a value cannot hold a path
        separator, so it is a safe piece of a file name."""
        if depth > 8:
            return False
        if isinstance(node, (cst.Integer, cst.Float, cst.Imaginary)):
            return True
        if isinstance(node, cst.Name) and node.value in ("True", "False", "None"):
            return True
        if isinstance(node, cst.UnaryOperation):
            return self.numeric(node.expression, scope, depth + 1)
        if isinstance(node, cst.BinaryOperation):
            return self.numeric(node.left, scope, depth + 1) and self.numeric(node.right, scope, depth + 1)
        if isinstance(node, cst.IfExp):
            return self.numeric(node.body, scope, depth + 1) and self.numeric(node.orelse, scope, depth + 1)
        if isinstance(node, cst.Subscript):
            return self._numeric_container(node.value, scope, depth + 1)
        if isinstance(node, cst.Call):
            return self._numeric_call(node, scope, depth)
        if isinstance(node, cst.Name):
            leaves = self.flow.origins(node, scope)
            return bool(leaves) and all(self._numeric_leaf(leaf, depth) for leaf in leaves)
        return False

    def _numeric_leaf(self, leaf: Leaf, depth: int) -> bool:
        if leaf.kind == "numeric":
            return True
        if leaf.kind == "aug":   # x += <value>: a number when the value is (the other bindings decide the rest)
            return self.numeric(leaf.node, leaf.scope, depth + 1)
        if leaf.kind == "import":
            return leaf.extra in ("prepare.MAX_SEQ_LEN", "prepare.TIME_BUDGET", "prepare.EVAL_TOKENS",
                                  "prepare.VOCAB_SIZE")
        return leaf.kind == "expr" and self.numeric(leaf.node, leaf.scope, depth + 1)

    def _numeric_call(self, node: cst.Call, scope: Scope, depth: int) -> bool:
        func = node.func
        builtin = isinstance(func, cst.Name) and self.flow.lookup(scope, func.value) is None
        if builtin and func.value in NUMERIC_BUILTINS:
            return True
        if builtin and func.value in NUMERIC_IF_ARGUMENTS | {"str"}:
            return bool(node.args) and all(not a.star and self.numeric(a.value, scope, depth + 1) for a in node.args)
        if isinstance(func, cst.Attribute) and func.attr.value in NUMERIC_METHODS \
                and func.attr.value not in self.flow.functions:   # a library's .item(), not one of its own
            return True
        name = self.dotted(func, scope)
        if name and name.startswith(NUMERIC_MODULES):
            return True
        returned = self.flow.returned(node, scope)
        return bool(returned) and all(self._numeric_leaf(leaf, depth + 1) for leaf in returned)

    def _numeric_container(self, node: cst.CSTNode, scope: Scope, depth: int) -> bool:
        """An element of a literal list/tuple/dict whose elements are all numbers (any index)."""
        if id(node) in self.flow.mutated:
            return False
        if isinstance(node, cst.Dict):
            return all(isinstance(e, cst.DictElement) and self.numeric(e.value, scope, depth + 1)
                       for e in node.elements)
        if isinstance(node, (cst.List, cst.Tuple)):
            return all(not isinstance(e, cst.StarredElement) and self.numeric(e.value, scope, depth + 1)
                       for e in node.elements)
        if isinstance(node, cst.Name):
            leaves = self.flow.origins(node, scope)
            return bool(leaves) and all(leaf.kind == "expr" and self._numeric_container(leaf.node, leaf.scope, depth + 1)
                                        for leaf in leaves)
        return False


# ---------------------------------------------------------------------------------------- call arguments

STAR = object()   # an argument that may be hidden in *args / **kwargs


def positional(call: cst.Call) -> list[cst.Arg]:
    """Positional arguments, `*args` included (as ast's Call.args)."""
    return [a for a in call.args if a.keyword is None and a.star != "**"]


def argument(call: cst.Call, index: int | None, keyword: str | None):
    """The argument for (position, keyword): its expression, None when absent, STAR when it may be
    hidden in *args/**kwargs."""
    given = positional(call)
    if index is not None:
        if any(a.star for a in given[:index + 1]):
            return STAR
        if len(given) > index:
            return given[index].value
    for a in call.args:
        if a.keyword is not None and a.keyword.value == keyword:
            return a.value
    if any(a.star == "**" for a in call.args) or (index is not None and any(a.star for a in given)):
        return STAR
    return None
