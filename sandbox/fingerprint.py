"""Fingerprints of train.py versions: equal when only comments, formatting or docstrings differ.

`fingerprint(source)` is the sha256 of `ast.dump` of the parsed source, without line/column
attributes and with docstrings removed. Comments and whitespace never reach the AST; docstrings
do, but they are documentation that train.py never reads, so a candidate that only rewords one
is the same experiment. Literals are compared by value (`0.040` == `0.04`) but not folded
(`2**19` != `524288`): the fingerprint finds exact duplicates, it does not prove equivalence.
A source that does not parse gets a fingerprint of its raw text (prefixed so it can never
collide with a parsed one), so broken drafts can still be deduplicated.
"""
from __future__ import annotations

import ast
import hashlib

_DEFINITIONS = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _statement_blocks(node: ast.AST):
    """Every statement list under `node` (docstrings only live at the head of one)."""
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        block = getattr(node, field, None)
        if isinstance(block, list):
            if block and isinstance(block[0], ast.stmt):
                yield node, field, block
            for child in block:
                if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                    yield from _statement_blocks(child)


def _strip_docstrings(tree: ast.Module) -> None:
    for node, field, block in list(_statement_blocks(tree)):
        if field == "body" and isinstance(node, _DEFINITIONS):
            first = block[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                # keep the body non-empty so the tree stays a valid shape
                node.body = block[1:] or [ast.Pass()]


def _dump(node: ast.AST, out: list[str]) -> None:
    """ast.dump(annotate_fields=False, include_attributes=False), about twice as fast."""
    out.append(type(node).__name__)
    out.append("(")
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, ast.AST):
            _dump(value, out)
        elif isinstance(value, list):
            out.append("[")
            for item in value:
                if isinstance(item, ast.AST):
                    _dump(item, out)
                else:
                    out.append(repr(item))
                out.append(",")
            out.append("]")
        else:
            out.append(repr(value))
        out.append(",")
    out.append(")")


def normalized_dump(source: str) -> str:
    tree = ast.parse(source)
    _strip_docstrings(tree)
    out: list[str] = []
    _dump(tree, out)
    return "".join(out)


def fingerprint(source: str) -> str:
    try:
        text = "ast:" + normalized_dump(source)
    except (SyntaxError, ValueError):
        text = "raw:" + source
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
