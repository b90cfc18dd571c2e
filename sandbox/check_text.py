"""What Python runs: the candidate's bytes, how the interpreter decodes them, the identifiers it
binds, and its own parse of the file (the witness the checker's libcst view is held to).

The checker reads a libcst tree; the interpreter runs what *its* tokenizer and parser make of the
file's bytes. The two differ in three known ways, each closed here:
- decoding: Python decodes the file by its coding declaration (`# coding: unicode_escape` turns
  `\\n` inside a comment into a line of code). Only UTF-8 is accepted (rule `encoding`): a
  training script has no reason to declare anything else, and rejecting is simpler to trust than
  re-implementing every codec the interpreter would apply.
- identifiers: Python NFKC-normalises every non-ASCII identifier (`𝐞𝐱𝐞𝐜` *is* `exec`,
  `ＴＩＭＥ_BUDGET` *is* `TIME_BUDGET`). The checker normalises the libcst tree the same way
  before any rule runs (`normalise_names`). Non-ASCII names are normalised, not rejected: a
  researcher writing `α = 0.9` has done nothing wrong, and after normalisation a disguised name
  is just the name it stands for, caught by the rule for that name.
- unknown differences between libcst's parser and CPython's (line breaks, form feeds, parser
  bugs): the interpreter's own tree (`interpreter_view`, parsed from the same bytes the
  workspace writes) is compared with the checker's, identifier by identifier. Any name one of
  them sees and the other does not is an `encoding` rejection: the checker never judges text
  that Python would run differently.
Bidirectional-control characters (Trojan Source) are rejected too: they make the text a person
reviews a winning diff in differ from the text Python runs.
"""
from __future__ import annotations

import ast
import codecs
import io
import re
import tokenize
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass

import libcst as cst

_UTF8_CODECS = frozenset({"utf-8", "utf-8-sig"})
# Embeddings, overrides and isolates: they reorder how text displays, not what runs.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f\s]+")


@dataclass(frozen=True)
class TextProblem:
    rule: str       # "encoding" or "syntax"
    message: str
    line: int | None


def source_bytes(source: str) -> tuple[bytes | None, TextProblem | None]:
    """The bytes the workspace writes for `source` (UTF-8), or why there are none."""
    try:
        return source.encode("utf-8"), None
    except UnicodeEncodeError as exc:   # lone surrogates: no file can hold them
        line = source.count("\n", 0, exc.start) + 1
        return None, TextProblem("encoding", f"character {source[exc.start]!r} cannot be written as UTF-8", line)


def coding_problem(data: bytes) -> TextProblem | None:
    """A coding declaration other than UTF-8, found exactly where the interpreter looks for one."""
    try:
        declared, lines = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:   # an unknown codec, or a BOM contradicting the declaration
        return TextProblem("encoding", f"the interpreter cannot decode this file: {exc}", 1)
    if codecs.lookup(declared).name in _UTF8_CODECS:
        return None
    line = next((i for i, text in enumerate(lines, 1) if b"coding" in text), 1)
    return TextProblem("encoding", f"the file declares the coding {declared!r}: Python would decode it "
                       "differently from what the checker reads; write train.py in UTF-8 without a "
                       "coding declaration (or with `# -*- coding: utf-8 -*-`)", line)


def bidi_problem(source: str) -> TextProblem | None:
    match = _BIDI_CONTROLS.search(source)
    if match is None:
        return None
    line = source.count("\n", 0, match.start()) + 1
    return TextProblem("encoding", f"bidirectional control character U+{ord(match.group()):04X}: the code "
                       "displays differently from how it runs (Trojan Source); remove it", line)


def carriage_return_problem(source: str) -> TextProblem | None:
    """A carriage return not followed by a line feed: Python's tokenizer turns it into a line
    break (in comments and inside triple-quoted strings too), tools that show the file may not."""
    index = source.find("\r")
    while index != -1 and source.startswith("\r\n", index):
        index = source.find("\r", index + 2)
    if index == -1:
        return None
    line = source.count("\n", 0, index) + 1
    return TextProblem("encoding", "a carriage return without a line feed: Python reads it as a line break; "
                       "use \\n (or \\r\\n) line endings and write \\r inside strings as an escape", line)


def read_problems(source: str) -> tuple[bytes | None, list[TextProblem]]:
    """The bytes and every reason the checker cannot read `source` as Python will."""
    data, problem = source_bytes(source)
    if problem is not None:
        return None, [problem]
    problems = [p for p in (coding_problem(data), bidi_problem(source), carriage_return_problem(source))
                if p is not None]
    return data, problems


# ---------------------------------------------------------------------------------------- NFKC

def needs_normalising(source: str) -> bool:
    """Could any identifier change under NFKC? (ASCII never does; cheap test for the usual case.)"""
    if source.isascii():
        return False
    return any(unicodedata.normalize("NFKC", run) != run for run in _NON_ASCII_RUN.findall(source))


class _Normaliser(cst.CSTTransformer):
    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.Name:
        value = updated_node.value
        if value.isascii():
            return updated_node
        return updated_node.with_changes(value=unicodedata.normalize("NFKC", value))


def normalise_names(module: cst.Module) -> cst.Module:
    """The module with every identifier spelled as the interpreter binds it (NFKC, as in PEP 3131)."""
    return module.visit(_Normaliser())


# ---------------------------------------------------------------------------------------- the witness

@dataclass
class Witness:
    """The interpreter's reading of the file."""
    tree: ast.Module
    names: Counter              # every identifier (NFKC, as bound and looked up) and how often
    name_lines: dict[str, int]  # the first line each identifier appears on
    statement_lines: list[int]  # the first line of every statement, in document order


def interpreter_view(data: bytes, filename: str = "train.py") -> Witness | TextProblem:
    """Parse and compile `data` exactly as `python train.py` would; the compile catches what the
    parser accepts but the compiler refuses (`return` outside a function, duplicate arguments)."""
    try:
        with warnings.catch_warnings():   # invalid escapes etc. are the candidate's business, not stderr's
            warnings.simplefilter("ignore")
            tree = ast.parse(data, filename)
            compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return TextProblem("syntax", exc.msg, exc.lineno)
    except ValueError as exc:   # null bytes and similar
        return TextProblem("syntax", str(exc), None)
    except (RecursionError, MemoryError) as exc:
        return TextProblem("syntax", f"the interpreter cannot compile this file ({type(exc).__name__}: "
                           "expressions nested too deeply)", None)
    names, lines = _identifiers(tree)
    return Witness(tree, names, lines, [s.lineno for s in _ast_statements(tree.body)])


def _identifiers(tree: ast.Module) -> tuple[Counter, dict[str, int]]:
    """Every identifier in the tree, counted the way libcst's Name nodes count them: names,
    attributes, definitions, parameters, keywords, import paths, global/nonlocal, match captures,
    and True/False/None (constants in ast, Name nodes in libcst)."""
    names: Counter = Counter()
    lines: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        names[name] += 1
        if line and line < lines.get(name, 10**9):
            lines[name] = line

    stack = [tree]
    while stack:     # a flat loop over each node's fields: ast.walk's generators cost twice as much
        node = stack.pop()
        kind = type(node)
        getter = _NAME_GETTERS.get(kind)
        if getter is not None:
            line = getattr(node, "lineno", 0)
            for name in getter(node):
                add(name, line)
        for field in kind._fields:
            value = getattr(node, field, None)
            if isinstance(value, ast.AST):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(item for item in value if isinstance(item, ast.AST))
    return names, lines


def _constant_names(node: ast.Constant):
    value = node.value
    return (repr(value),) if value is None or type(value) is bool else ()


_NAME_GETTERS = {
    ast.Name: lambda n: (n.id,),
    ast.Attribute: lambda n: (n.attr,),
    ast.Constant: _constant_names,
    ast.MatchSingleton: lambda n: (repr(n.value),),
    ast.FunctionDef: lambda n: (n.name,),
    ast.AsyncFunctionDef: lambda n: (n.name,),
    ast.ClassDef: lambda n: (n.name,),
    ast.arg: lambda n: (n.arg,),
    ast.keyword: lambda n: (n.arg,) if n.arg is not None else (),
    ast.alias: lambda n: (*(n.name.split(".") if n.name != "*" else ()), *((n.asname,) if n.asname else ())),
    ast.ImportFrom: lambda n: tuple(n.module.split(".")) if n.module else (),
    ast.Global: lambda n: tuple(n.names),
    ast.Nonlocal: lambda n: tuple(n.names),
    ast.ExceptHandler: lambda n: (n.name,) if n.name else (),
    ast.MatchAs: lambda n: (n.name,) if n.name else (),
    ast.MatchStar: lambda n: (n.name,) if n.name else (),
    ast.MatchMapping: lambda n: (n.rest,) if n.rest else (),
    ast.MatchClass: lambda n: tuple(n.kwd_attrs),
}


def _ast_statements(body: list[ast.stmt]):
    """Statements in document order (pre-order: a compound statement, then what it contains)."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        children: list[ast.stmt] = list(getattr(node, "body", ()))
        for clause in (*getattr(node, "handlers", ()), *getattr(node, "cases", ())):
            children += clause.body
        children += getattr(node, "orelse", ())
        children += getattr(node, "finalbody", ())
        stack.extend(reversed(children))


def libcst_statements(body) -> list[cst.CSTNode]:
    """The libcst statements that correspond one to one with ast's (small statements of a
    `a; b` line count separately, as in ast), in the same document order."""
    out: list[cst.CSTNode] = []
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, cst.SimpleStatementLine):
            out.extend(node.body)
            continue
        out.append(node)
        if not isinstance(node, cst.BaseCompoundStatement):
            continue
        suite = getattr(node, "body", None)       # Match has cases only
        children = list(suite.body) if suite is not None else []
        for clause in (*getattr(node, "handlers", ()), *getattr(node, "cases", ())):
            children += clause.body.body
        orelse = getattr(node, "orelse", None)
        if isinstance(orelse, cst.If):
            children.append(orelse)          # elif: a statement of its own
        elif orelse is not None:
            children += orelse.body.body
        final = getattr(node, "finalbody", None)
        if final is not None:
            children += final.body.body
        stack.extend(reversed(children))
    return out


def disagreement(checker_names: Counter, witness: Witness) -> TextProblem | None:
    """The first identifier that only one of the two readings of the file has (None: they agree)."""
    if checker_names == witness.names:
        return None
    only_python = witness.names - checker_names
    only_checker = checker_names - witness.names
    if only_python:
        name = min(only_python, key=lambda n: witness.name_lines.get(n, 10**9))
        return TextProblem("encoding", f"Python reads the name {name!r} here, which the checker's parser "
                           "does not see: the file is read differently by the two (unusual line breaks, "
                           "control characters or encoding tricks); write plain UTF-8 source",
                           witness.name_lines.get(name))
    name = sorted(only_checker)[0]
    return TextProblem("encoding", f"the checker's parser reads the name {name!r}, which Python does not: "
                       "the file is read differently by the two; write plain UTF-8 source", None)
