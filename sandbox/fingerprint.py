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


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, _DEFINITIONS) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                # keep the body non-empty so the tree stays a valid shape
                node.body = node.body[1:] or [ast.Pass()]


def normalized_dump(source: str) -> str:
    tree = ast.parse(source)
    _strip_docstrings(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def fingerprint(source: str) -> str:
    try:
        text = "ast:" + normalized_dump(source)
    except (SyntaxError, ValueError):
        text = "raw:" + source
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
