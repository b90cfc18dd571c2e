"""The integrity checker: what a candidate train.py may not do.

`check_source(source, baseline_source=None)` returns every violation found in one walk of the
syntax tree; `check_command(path)` is `autoresearch check FILE` (prints ACCEPTED, or one
`REJECTED <rule>: <message> (line N)` per violation; exit 0 / 1).

The checker's job is to keep the experiment's rules (BASELINE.md): only train.py changes,
prepare.py's constants, data and evaluation are fixed, and no dependency is added. It is not a
security sandbox (a determined attacker with arbitrary Python can always do more); it catches
the ways an optimiser, human or LLM, drifts into winning by changing the measurement. A false
rejection costs as much as a miss, so everything a research edit legitimately does passes:
any architecture/optimizer/schedule change, new functions and classes, any torch API,
environment settings such as PYTORCH_CUDA_ALLOC_CONF, reading TIME_BUDGET / MAX_SEQ_LEN.

Rule ids (stable; memory and prompts refer to them):

- `syntax`             the file parses and compiles (line of the error).
- `import-not-allowed` imports only: modules the baseline imports; the standard library minus
                       modules that start processes or open connections (subprocess,
                       multiprocessing, concurrent, signal, socket, ssl, http, urllib, asyncio, ...),
                       run dynamic code or reach into the interpreter (importlib, runpy, code,
                       ctypes, inspect, builtins, pickle/marshal/shelve, timeit, pdb, ...) or write
                       files wholesale (shutil, tempfile, tarfile, zipfile, sqlite3, ...), and
                       private `_x` modules; and the training stack (torch, numpy, triton,
                       kernels, tiktoken). Not pyarrow: its only use would be reading the data
                       shards behind make_dataloader's back. Not pickle: unpickling runs code and
                       train.py has nothing to serialise that torch.save cannot.
- `prepare-names`      from prepare only the names the baseline imports, unaliased; no
                       `import prepare`, no `*`; make_dataloader / evaluate_bpb only called
                       directly (passing them around hides which split is loaded).
- `dynamic-access`     no exec/eval/compile/__import__/globals()/locals()/vars(), no
                       `sys.modules`, frame or function internals (`__globals__`, `f_back`, ...),
                       `gc.get_objects`-style heap walks, getattr/setattr with computed names on
                       modules or prepare's objects.
- `prepare-rebind`     prepare's names (TIME_BUDGET, MAX_SEQ_LEN, EVAL_TOKENS, VOCAB_SIZE, PRESET,
                       Tokenizer, make_dataloader, evaluate_bpb) are never rebound or shadowed: no
                       assignment of any kind, def/class, parameter, loop/with/except target,
                       global/nonlocal, del, import-as, or attribute assignment on them.
- `val-split`          make_dataloader's split is the literal "train"; no `split="val"` anywhere;
                       no strings naming prepare's data (climbmix, shard_*, .parquet,
                       .cache/autoresearch, AUTORESEARCH*, /opt/ml/input); environment reads use
                       literal keys and never enumerate os.environ.
- `file-write`         writes only inside the candidate's folder. Policy: a path is inside when
                       it is a string literal (or Path()/os.path.join of literals) that is
                       relative and has no `..`; anything else (absolute, `~`, `..`, computed) is
                       rejected for open() in w/a/x/+ modes, os.remove/rename/makedirs/chdir/...,
                       Path.write_text/unlink/..., torch.save, numpy.save*, logging file handlers.
                       Inside the folder, the files the harness owns are off limits too
                       (.harness/ with the evaluator record, result.json, run.log, prepare.py,
                       harness.py, ...: WORKSPACE_FILES). Reading any file is fine.
- `process-network`    no os.system/popen/exec*/spawn*/fork/kill/posix_spawn (the process modules
                       themselves are import-not-allowed).
- `evaluation`         evaluate_bpb(...) is still called from code that runs (module level, or a
                       function reachable from it), and the summary is still printed: `---`
                       and the keys val_bpb, training_seconds, total_seconds, peak_vram_mb,
                       mfu_percent, total_tokens_M, num_steps, num_params_M, depth. Also: the
                       library functions evaluate_bpb's loss goes through are not monkeypatched
                       (assigning, setattr or del of `torch.nn.functional.*`, `torch.Tensor.*`,
                       `torch.nn.Module.*` and torch's loss/reduction functions; see
                       MONKEYPATCH_TARGETS). Reading or aliasing them (`ce = F.cross_entropy`) is fine.

What a static check cannot see (the limits, stated so nobody relies on them):
- evaluate_bpb sums the per-token loss that the candidate's own `model(x, y, reduction="none")`
  returns (as upstream does). A forward that returns a smaller loss in that mode is a change of
  the candidate's own code, indistinguishable here from a legitimate architecture change. The
  monkeypatch rule closes the cheap global route (`F.cross_entropy = ...` before evaluation), not
  this one; noise-aware selection, confirmation re-runs and reading the winning diff do.
- The printed summary is cross-checked at run time, not here: the harness compares the printed
  val_bpb with the evaluator record that evaluate_bpb writes, and bounds the wall clock; a file
  that calls evaluate_bpb but prints a made-up number passes this checker and is `rejected` by
  the harness (and by sandbox/preflight.py before any cloud money is spent).

Built on libcst, the library the proposers edit train.py with: the checker reads the same
concrete tree those edits produce (comments, strings and parentheses exactly as written, so
messages quote the candidate's own text), and line numbers are positions in the original text.
One `libcst.parse_module`, one `CSTVisitor` pass; positions (`MetadataWrapper` +
`PositionProvider`, the only metadata used) are resolved only when there is a violation to place,
because an accepted file needs none and the provider costs about as much as the parse. libcst
accepts some code the running interpreter rejects (and the reverse), so the file is also
`compile()`d: the `syntax` rule reports what Python itself says. Timings on a 2-core box
(benchmarks/bench_check.py): ~60 ms for an accepted train.py, ~135 ms for a rejected one (the
positions), ~8 ms for a number-only edit of an accepted file (the acceptance memo, below).
"""
from __future__ import annotations

import io
import sys
import threading
import tokenize
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

RULES: dict[str, str] = {
    "syntax": "the file must parse and compile",
    "import-not-allowed": "only the baseline's imports, the safe standard library and the training stack",
    "prepare-names": "only the baseline's names from prepare, unaliased, called directly",
    "dynamic-access": "no dynamic code or reflection that could reach prepare's names",
    "prepare-rebind": "prepare's constants and functions are never rebound or shadowed",
    "val-split": "no training on, or reading of, the validation data or prepare's data files",
    "file-write": "no writing files outside the candidate's folder",
    "process-network": "no starting processes or opening connections",
    "evaluation": "evaluate_bpb is still called and the summary still printed",
}

PREPARE_MODULE = "prepare"
# Everything prepare exports that a candidate could be tempted to shadow.
PREPARE_EXPORTS = frozenset({"PRESET", "MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE",
                             "Tokenizer", "TrainingClock", "make_dataloader", "evaluate_bpb"})
DEFAULT_PREPARE_IMPORTS = frozenset({"PRESET", "MAX_SEQ_LEN", "TIME_BUDGET", "Tokenizer", "TrainingClock",
                                     "make_dataloader", "evaluate_bpb"})
PREPARE_FUNCTIONS = frozenset({"make_dataloader", "evaluate_bpb"})
SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth")

TRAINING_PACKAGES = frozenset({"torch", "numpy", "triton", "kernels", "tiktoken"})

_PROCESS = "starts processes or sends signals"
_NETWORK = "opens network connections"
_DYNAMIC = "runs dynamic code or reaches into the interpreter"
_FILES = "writes or moves files wholesale"
DENIED_STDLIB: dict[str, str] = {
    **dict.fromkeys(["subprocess", "multiprocessing", "concurrent", "signal", "pty", "pipes",
                     "posix", "nt"], _PROCESS),
    **dict.fromkeys(["socket", "socketserver", "ssl", "http", "urllib", "ftplib", "smtplib", "smtpd",
                     "poplib", "imaplib", "nntplib", "telnetlib", "xmlrpc", "asyncio", "asyncore",
                     "asynchat", "webbrowser", "antigravity", "wsgiref", "cgi", "cgitb"], _NETWORK),
    **dict.fromkeys(["importlib", "imp", "runpy", "code", "codeop", "ctypes", "inspect", "builtins",
                     "pickle", "pickletools", "marshal", "shelve", "copyreg", "pkgutil", "zipimport",
                     "site", "modulefinder", "pydoc", "doctest", "timeit", "trace", "pdb", "bdb",
                     "cProfile", "profile", "unittest", "idlelib", "ensurepip", "venv", "distutils",
                     "lib2to3"], _DYNAMIC),
    **dict.fromkeys(["shutil", "tempfile", "tarfile", "zipfile", "zipapp", "sqlite3", "dbm",
                     "fileinput", "compileall", "py_compile"], _FILES),
}

# Attributes that lead from ordinary objects to frames, globals, modules or builtins.
REFLECTION_ATTRS = frozenset({
    "__globals__", "__builtins__", "__code__", "__closure__", "__defaults__", "__kwdefaults__",
    "__subclasses__", "__import__", "__loader__", "__self__", "f_globals", "f_locals", "f_back",
    "f_builtins", "f_code", "gi_frame", "cr_frame", "ag_frame", "tb_frame", "_getframe",
    "_current_frames", "settrace", "setprofile", "get_objects", "get_referrers", "get_referents",
    "meta_path", "path_hooks", "path_importer_cache", "builtins", "sys",
})
# As string literals, "sys"/"builtins" are too ordinary to mean anything on their own.
REFLECTION_STRINGS = REFLECTION_ATTRS - {"sys", "builtins"}
DYNAMIC_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "globals", "locals", "__builtins__"})

PROCESS_CALLS = frozenset({"system", "popen", "execl", "execle", "execlp", "execlpe", "execv", "execve",
                           "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                           "spawnve", "spawnvp", "spawnvpe", "fork", "forkpty", "kill", "killpg",
                           "posix_spawn", "posix_spawnp", "startfile"})

# Strings that only make sense for reaching prepare's data or its settings.
DATA_MARKERS = ("climbmix", ".cache/autoresearch", "AUTORESEARCH", "shard_", ".parquet", "/opt/ml/input")
VAL_SPLITS = frozenset({"val", "valid", "validation", "test"})

# Library code that evaluate_bpb's number flows through (the model's forward calls it with
# reduction="none"). Replacing it globally changes the measurement for every model, so a
# candidate may call, read and alias these, never assign them. Prefixes cover whole namespaces
# that hold only functions and methods (torch's configuration flags live elsewhere:
# torch.backends.*, torch._dynamo.config.*, which stay assignable).
MONKEYPATCH_PREFIXES = ("torch.nn.functional.", "torch.Tensor.", "torch.nn.Module.", "torch.nn.modules.")
MONKEYPATCH_TARGETS = frozenset(f"torch.{name}" for name in (
    "cross_entropy", "log_softmax", "softmax", "logsumexp", "nll_loss", "gather", "where", "sum",
    "mean", "tanh", "log", "exp", "zeros_like", "no_grad", "autocast", "nn.CrossEntropyLoss",
    "nn.functional", "Tensor", "nn.Module", "tensor"))

_WRITE_MODE_CHARS = set("wax+")
# dotted callee -> (positional index, keyword) of each path argument that must stay inside.
_PATH_CALLS: dict[str, tuple[tuple[int, str], ...]] = {
    **{f"os.{n}": ((0, "path"),) for n in ("remove", "unlink", "rmdir", "removedirs", "mkdir", "makedirs",
                                           "truncate", "chmod", "chown", "lchown", "utime", "mkfifo",
                                           "mknod", "chdir", "open", "chroot")},
    **{f"os.{n}": ((0, "src"), (1, "dst")) for n in ("rename", "renames", "replace", "link", "symlink")},
    "torch.save": ((1, "f"),),
    "torch.jit.save": ((1, "f"),),
    "torch.export.save": ((1, "f"),),
    **{f"numpy.{n}": ((0, "file"),) for n in ("save", "savez", "savez_compressed")},
    "numpy.savetxt": ((0, "fname"),),
    "logging.FileHandler": ((0, "filename"),),
    "logging.handlers.RotatingFileHandler": ((0, "filename"),),
    "logging.handlers.TimedRotatingFileHandler": ((0, "filename"),),
    "logging.handlers.WatchedFileHandler": ((0, "filename"),),
}
_OPEN_CALLS = frozenset({"open", "io.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open"})
_PATH_WRITE_METHODS = frozenset({"write_text", "write_bytes", "touch", "unlink", "mkdir", "rmdir",
                                 "symlink_to", "hardlink_to", "chmod", "lchmod"})
_PATH_CTORS = frozenset({"Path", "pathlib.Path", "PurePath", "pathlib.PurePath", "PosixPath",
                         "pathlib.PosixPath", "os.path.join"})
_ENVIRON = ("os.environ", "os.environb")
# What the workspace holds besides the candidate's own outputs (sandbox/workspace.py, harness.py):
# writing .harness/eval_record.json after evaluate_bpb could forge the score the harness checks.
WORKSPACE_FILES = frozenset({".harness", "result.json", "run.log", "prepare.py", "harness.py",
                             "candidate.json", "requirements.txt", "train.py", "__pycache__"})


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"REJECTED {self.rule}: {self.message}{where}"


@dataclass(frozen=True)
class _Baseline:
    modules: frozenset[str]          # top-level modules the baseline imports
    prepare_names: frozenset[str]    # names it imports from prepare


# ---------------------------------------------------------------------------------------- tree helpers

def _dotted_name(node: cst.BaseExpression | None) -> str | None:
    """`a.b.c` of a Name/Attribute chain as written (import statements); None otherwise."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def _statements(body) -> Iterator[cst.CSTNode]:
    """Every statement (compound and small) under a module or suite, at any depth. Imports and
    assignments are statements, so this is all the pre-pass needs, and far cheaper than a visit."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, cst.SimpleStatementLine):
            stack.extend(reversed(node.body))
            continue
        if not isinstance(node, cst.BaseCompoundStatement):
            continue
        suite = getattr(node, "body", None)      # Match has cases only
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


def _module_assignments(module: cst.Module) -> Iterator[tuple[list, cst.BaseExpression | None]]:
    """(targets, value) of each module-level statement that binds names (for loops count too)."""
    for line in module.body:
        if isinstance(line, cst.For):
            yield [line.target], None
        elif isinstance(line, cst.SimpleStatementLine):
            for stmt in line.body:
                if isinstance(stmt, cst.Assign):
                    yield [t.target for t in stmt.targets], stmt.value
                elif isinstance(stmt, (cst.AnnAssign, cst.AugAssign)):
                    yield [stmt.target], stmt.value


def _literal(node: cst.CSTNode | None) -> str | bytes | None:
    """Value of a plain string literal ('a', b'a', implicit 'a' 'b'); None for anything else.
    Implicit concatenations are folded iteratively: libcst nests them one level per piece, and a
    long one would exhaust the recursion of libcst's own `evaluated_value`."""
    if isinstance(node, cst.SimpleString):
        return node.evaluated_value
    if not isinstance(node, cst.ConcatenatedString):
        return None
    pieces = []
    while isinstance(node, cst.ConcatenatedString):
        pieces.append(node.left)
        node = node.right
    pieces.append(node)
    if not all(isinstance(piece, cst.SimpleString) for piece in pieces):
        return None   # an f-string piece: not a plain literal
    values = [piece.evaluated_value for piece in pieces]
    if all(isinstance(v, str) for v in values):
        return "".join(values)
    if all(isinstance(v, bytes) for v in values):
        return b"".join(values)
    return None   # str mixed with bytes: compile() rejects it anyway


def _string_value(node: cst.CSTNode | None) -> str | None:
    """Value of a string expression built only from literals ("a" + "b" is folded)."""
    if isinstance(node, cst.BinaryOperation):
        if not isinstance(node.operator, cst.Add):
            return None
        left, right = _string_value(node.left), _string_value(node.right)
        return left + right if left is not None and right is not None else None
    value = _literal(node)
    return value if isinstance(value, str) else None


def _unsafe_piece(text: str) -> bool:
    """A literal path piece that leaves the candidate's folder (absolute, ~, drive, ..)."""
    if not text or text.startswith(("/", "\\", "~")) or (len(text) > 1 and text[1] == ":"):
        return True
    return ".." in text.replace("\\", "/").split("/")


def _first_component(pieces: list[str]) -> str | None:
    for piece in pieces:
        for part in piece.replace("\\", "/").split("/"):
            if part not in ("", "."):
                return part
    return None


def _fstring_text(raw: str, is_raw: bool) -> str:
    """A literal piece of an f-string as the interpreter sees it (escapes decoded, {{ -> {)."""
    text = raw.replace("{{", "{").replace("}}", "}")
    if is_raw or "\\" not in text:
        return text
    try:  # non-latin-1 characters become \\u escapes first, so unicode_escape keeps them
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        return text


def _positional(call: cst.Call) -> list[cst.Arg]:
    """Positional arguments, `*args` included (as ast's Call.args)."""
    return [a for a in call.args if a.keyword is None and a.star != "**"]


def _arg(call: cst.Call, index: int, keyword: str) -> cst.BaseExpression | None:
    positional = _positional(call)
    if len(positional) > index and not any(a.star for a in positional[:index + 1]):
        return positional[index].value
    for a in call.args:
        if a.keyword is not None and a.keyword.value == keyword:
            return a.value
    return None


def _targets(node: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    """The Name/Attribute/Subscript nodes an assignment target binds (tuples unpacked)."""
    if isinstance(node, (cst.Tuple, cst.List)):
        for element in node.elements:
            yield from _targets(element.value)
    elif isinstance(node, cst.StarredElement):
        yield from _targets(node.value)
    else:
        yield node


# ---------------------------------------------------------------------------------------- policy

@lru_cache(maxsize=8)
def _baseline_policy(baseline_source: str | None) -> _Baseline:
    if baseline_source is None:
        return _Baseline(frozenset(), DEFAULT_PREPARE_IMPORTS)
    try:
        module = cst.parse_module(baseline_source)
    except cst.ParserSyntaxError as exc:
        raise ValueError(f"baseline train.py does not parse: {exc.message}") from None
    modules, names = set(), set()
    for node in _statements(module.body):
        if isinstance(node, cst.Import):
            modules.update(a.evaluated_name.split(".")[0] for a in node.names)
        elif isinstance(node, cst.ImportFrom) and node.module is not None and not node.relative:
            top = _dotted_name(node.module).split(".")[0]
            if top == PREPARE_MODULE:
                if not isinstance(node.names, cst.ImportStar):
                    names.update(a.evaluated_name for a in node.names)
            else:
                modules.add(top)
    modules.discard(PREPARE_MODULE)
    return _Baseline(frozenset(modules), frozenset(names) or DEFAULT_PREPARE_IMPORTS)


def _module_denial(top: str, baseline: _Baseline) -> str | None:
    """Why importing top-level module `top` is not allowed, or None when it is."""
    if top in baseline.modules or top in TRAINING_PACKAGES:
        return None
    if top in DENIED_STDLIB:
        return f"'{top}' {DENIED_STDLIB[top]}"
    if top.startswith("_"):
        return f"'{top}' is a private interpreter module"
    if top in sys.stdlib_module_names:
        return None
    return (f"'{top}' is a new dependency; allowed: the baseline's imports, the standard library, "
            f"and {', '.join(sorted(TRAINING_PACKAGES))}")


def _monkeypatched(dotted: str | None) -> bool:
    return bool(dotted) and (dotted in MONKEYPATCH_TARGETS or dotted.startswith(MONKEYPATCH_PREFIXES))


# ---------------------------------------------------------------------------------------- the visitor

_STORE, _DEL = "store", "del"
_RECURSION_LIMIT = 20_000
_UNSEEN = object()


class _Checker(cst.CSTVisitor):
    def __init__(self, module: cst.Module, baseline: _Baseline):
        super().__init__()
        self.module = module
        self.baseline = baseline
        self.protected = PREPARE_EXPORTS | baseline.prepare_names
        self.found: list[tuple[str, str, cst.CSTNode | None]] = []   # positions resolved at the end
        self.aliases: dict[str, str] = {}      # bound name -> dotted import target
        self.module_strings: dict[str, str] = {}   # module-level NAME = "literal", assigned once
        self.vetted: set[int] = set()          # ids of nodes whose use a parent already approved
        self.context: dict[int, str] = {}      # ids of assignment/del targets -> _STORE | _DEL
        self.not_refs: set[int] = set()        # ids of Names that are not expressions (x.attr, f(kw=...))
        self.strings: list[str] = []           # every literal string piece (for the summary keys)
        # For the evaluation rule: names each scope (None = module level) calls or references,
        # the scopes that call evaluate_bpb, and the definitions by name.
        self.scope: cst.CSTNode | None = None
        self.refs: dict[cst.CSTNode | None, set[str]] = {None: set()}
        self.evaluating_scopes: set[cst.CSTNode | None] = set()
        self.definitions: dict[str, list[cst.CSTNode]] = {}
        self.methods: dict[cst.CSTNode, list[cst.CSTNode]] = {}
        self._index(module)

    # CSTVisitor looks up visit_X / leave_X / visit_X_field / leave_X_field methods by name for
    # every node and every field of it. The checker has only visit_X methods: a per-class cache of
    # those and no-op leave/field hooks halve the traversal's cost.
    _dispatch: dict[type, object] = {}

    def on_visit(self, node: cst.CSTNode) -> bool:
        kind = type(node)
        method = self._dispatch.get(kind, _UNSEEN)
        if method is _UNSEEN:
            method = self._dispatch[kind] = getattr(_Checker, f"visit_{kind.__name__}", None)
        return method is None or method(self, node) is not False

    def on_leave(self, original_node: cst.CSTNode) -> None:
        return None

    def on_visit_attribute(self, node: cst.CSTNode, attribute: str) -> None:
        return None

    def on_leave_attribute(self, original_node: cst.CSTNode, attribute: str) -> None:
        return None

    # ------------------------------------------------------------------ helpers
    def flag(self, rule: str, message: str, node: cst.CSTNode | None) -> None:
        self.found.append((rule, message, node))

    def _index(self, module: cst.Module) -> None:
        for node in _statements(module.body):
            if isinstance(node, cst.Import):
                for a in node.names:
                    name = a.evaluated_name
                    if a.asname:
                        self.aliases[a.evaluated_alias] = name
                    else:
                        top = name.split(".")[0]
                        self.aliases[top] = top
            elif isinstance(node, cst.ImportFrom) and node.module is not None and not node.relative \
                    and not isinstance(node.names, cst.ImportStar):
                dotted = _dotted_name(node.module)
                for a in node.names:
                    self.aliases[a.evaluated_alias or a.evaluated_name] = f"{dotted}.{a.evaluated_name}"
        counts: dict[str, int] = {}
        for targets, value in _module_assignments(module):
            for target in targets:
                if isinstance(target, cst.Name):
                    counts[target.value] = counts.get(target.value, 0) + 1
                    literal = _literal(value)
                    if isinstance(literal, str):
                        self.module_strings[target.value] = literal
        for name, n in counts.items():
            if n > 1:
                self.module_strings.pop(name, None)

    def dotted(self, node: cst.CSTNode) -> str | None:
        """`np.save` -> 'numpy.save' through the import aliases; None for non-name chains."""
        if isinstance(node, cst.Name):
            return self.aliases.get(node.value, node.value)
        if isinstance(node, cst.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr.value}" if base else None
        return None

    def is_module_ref(self, node: cst.CSTNode) -> bool:
        """A name bound by an import (modules and prepare's objects), or an attribute of one."""
        while isinstance(node, cst.Attribute):
            node = node.value
        return isinstance(node, cst.Name) and node.value in self.aliases

    def literal_or_known(self, node: cst.CSTNode) -> str | None:
        value = _string_value(node)
        if value is None and isinstance(node, cst.Name):
            value = self.module_strings.get(node.value)
        return value

    def path_pieces(self, node: cst.CSTNode) -> list[str] | None:
        """The literal pieces a path expression is built from (literals, module-level string
        constants, `/`, Path() and os.path.join() of those); None when any piece is computed."""
        value = _literal(node)
        if value is not None:
            return [value.decode(errors="replace") if isinstance(value, bytes) else value]
        if isinstance(node, cst.Name) and node.value in self.module_strings:
            return [self.module_strings[node.value]]
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide):
            left, right = self.path_pieces(node.left), self.path_pieces(node.right)
            return left + right if left is not None and right is not None else None
        if isinstance(node, cst.Call) and node.args and self.dotted(node.func) in _PATH_CTORS:
            pieces: list[str] = []
            for a in node.args:
                part = None if a.star or a.keyword is not None else self.path_pieces(a.value)
                if part is None:
                    return None
                pieces += part
            return pieces
        return None

    def path_problem(self, node: cst.CSTNode | None) -> str | None:
        """Why writing to `node` may leave the candidate's own files (see file-write); None if safe."""
        pieces = self.path_pieces(node) if node is not None else None
        if pieces is None or any(_unsafe_piece(p) for p in pieces):
            return "must use a literal relative path without '..' (inside the candidate's folder)"
        first = _first_component(pieces)
        if first in WORKSPACE_FILES:
            return (f"must not touch '{first}': it belongs to the harness (evaluator record, result, log, "
                    "pinned prepare.py); use a name of your own")
        return None

    def code(self, node: cst.CSTNode) -> str:
        """The node's source text as the candidate wrote it, on one line (for messages)."""
        return " ".join(line.strip() for line in self.module.code_for_node(node).strip().splitlines())

    def _show(self, node: cst.CSTNode | None) -> str:
        if node is None:
            return "an unseen path"
        text = self.code(node)
        return text if len(text) <= 60 else text[:57] + "..."

    def _mark(self, target: cst.BaseExpression, how: str) -> None:
        for node in _targets(target):
            self.context[id(node)] = how

    # ------------------------------------------------------------------ imports
    def visit_Import(self, node: cst.Import) -> bool:
        for a in node.names:
            name, alias = a.evaluated_name, a.evaluated_alias
            top = name.split(".")[0]
            if top == PREPARE_MODULE:
                self.flag("prepare-names", f"'import {name}' gives access to all of prepare; use "
                          f"'from prepare import {', '.join(sorted(self.baseline.prepare_names))}'", node)
                continue
            why = _module_denial(top, self.baseline)
            if why:
                self.flag("import-not-allowed", f"import {name}: {why}", node)
            if alias in self.protected:
                self.flag("prepare-rebind", f"'import {name} as {alias}' shadows prepare's {alias}", node)
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        module = _dotted_name(node.module) or ""
        top = module.split(".")[0]
        star = isinstance(node.names, cst.ImportStar)
        names = () if star else node.names
        if node.relative:
            if top == PREPARE_MODULE or any(a.evaluated_name == PREPARE_MODULE for a in names):
                self.flag("prepare-names", "relative import of prepare; use 'from prepare import ...'", node)
            else:
                self.flag("import-not-allowed", f"relative import 'from {'.' * len(node.relative)}{module}': "
                          "train.py is a single file", node)
            return False
        if top == PREPARE_MODULE:
            if star:
                self.flag("prepare-names", "'from prepare import *' hides which names are used", node)
            for a in names:
                name, alias = a.evaluated_name, a.evaluated_alias
                if module != PREPARE_MODULE or name not in self.baseline.prepare_names:
                    self.flag("prepare-names", f"'{name}' is not one of the names train.py may take "
                              f"from prepare ({', '.join(sorted(self.baseline.prepare_names))})", node)
                elif alias and alias != name:
                    self.flag("prepare-names", f"'from prepare import {name} as {alias}': "
                              "aliasing prepare's names hides their use", node)
            return False
        why = _module_denial(top, self.baseline)
        if why:
            self.flag("import-not-allowed", f"from {module} import ...: {why}", node)
        for a in names:
            name = a.evaluated_name
            bound = a.evaluated_alias or name
            if bound in self.protected:
                self.flag("prepare-rebind", f"'from {module} import {name}' shadows prepare's {bound}", node)
            full = f"{module}.{name}"
            if module == "os" and name in PROCESS_CALLS:
                self.flag("process-network", f"os.{name} starts or signals processes", node)
            elif name in REFLECTION_ATTRS or full in ("sys.modules", "gc.get_objects"):
                self.flag("dynamic-access", f"'{full}' reaches interpreter internals", node)
        return False

    # ------------------------------------------------------------------ assignment targets
    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._mark(target.target, _STORE)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._mark(node.target, _STORE)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._mark(node.target, _STORE)

    def visit_For(self, node: cst.For) -> None:
        self._mark(node.target, _STORE)

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._mark(node.target, _STORE)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._mark(node.target, _STORE)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._mark(node.asname.name, _STORE)

    def visit_Del(self, node: cst.Del) -> None:
        self._mark(node.target, _DEL)

    # ------------------------------------------------------------------ names and bindings
    def visit_Name(self, node: cst.Name) -> None:
        key = id(node)
        if key in self.not_refs:
            return
        name = node.value
        how = self.context.get(key)
        if how is not None:
            if name in self.protected:
                verb = "deletes" if how == _DEL else "rebinds"
                self.flag("prepare-rebind", f"{verb} prepare's {name}; it must keep prepare's value", node)
            return
        self.refs[self.scope].add(name)   # called, or passed as a callback that may be called
        if key in self.vetted:
            return
        if name in DYNAMIC_BUILTINS and not self._imported_callable(name):
            self.flag("dynamic-access", f"'{name}' runs or exposes code dynamically", node)
        elif name in PREPARE_FUNCTIONS:
            self.flag("prepare-names", f"{name} may only be called directly, not passed around or aliased", node)
        elif name == "vars":
            pass   # judged at the call (vars(obj) on a plain object is fine)
        elif self.aliases.get(name) in _ENVIRON:
            self.flag("val-split", "os.environ may only be read with literal keys", node)

    def _imported_callable(self, name: str) -> bool:
        # `from torch import compile` makes compile(...) torch's, not the builtin.
        target = self.aliases.get(name)
        return bool(target) and target.split(".")[0] in TRAINING_PACKAGES

    def _bind(self, name: cst.Name | None, node: cst.CSTNode, how: str) -> None:
        if name is None:
            return
        self.not_refs.add(id(name))
        if name.value in self.protected:
            self.flag("prepare-rebind", f"{how} '{name.value}' shadows prepare's {name.value}", node)

    def _in_scope(self, node: cst.FunctionDef | cst.ClassDef) -> None:
        """Visit a def/class body as its own scope (decorators, defaults and bases run in the
        enclosing scope, when the statement executes)."""
        self.definitions.setdefault(node.name.value, []).append(node)
        outer, self.scope = self.scope, node
        self.refs[node] = set()
        node.body.visit(self)
        self.scope = outer

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self._bind(node.name, node.name, "def")
        for decorator in node.decorators:
            decorator.visit(self)
        node.params.visit(self)
        if node.returns is not None:
            node.returns.visit(self)
        self._in_scope(node)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self._bind(node.name, node.name, "class")
        for part in (*node.decorators, *node.bases, *node.keywords):
            part.visit(self)
        # an instance's methods run implicitly (__init__, __call__ -> forward, ...)
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        self.methods[node] = [m for m in body if isinstance(m, cst.FunctionDef)]
        self._in_scope(node)
        return False

    def visit_Param(self, node: cst.Param) -> bool:
        self._bind(node.name, node, "parameter")
        if node.annotation is not None:
            node.annotation.visit(self)
        if node.default is not None:
            node.default.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)   # the keyword is a parameter name, not a reference
        return False

    def _bind_names(self, node: cst.Global | cst.Nonlocal, how: str) -> bool:
        for item in node.names:
            self._bind(item.name, node, how)
        return False

    def visit_Global(self, node: cst.Global) -> bool:
        return self._bind_names(node, "global")

    def visit_Nonlocal(self, node: cst.Nonlocal) -> bool:
        return self._bind_names(node, "nonlocal")

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if node.name is not None and isinstance(node.name.name, cst.Name):
            self._bind(node.name.name, node.name, "except ... as")

    def visit_ExceptStarHandler(self, node: cst.ExceptStarHandler) -> None:
        self.visit_ExceptHandler(node)

    def visit_MatchAs(self, node: cst.MatchAs) -> None:
        self._bind(node.name, node, "case pattern")

    def visit_MatchStar(self, node: cst.MatchStar) -> None:
        self._bind(node.name, node, "case pattern")

    def visit_MatchMapping(self, node: cst.MatchMapping) -> None:
        self._bind(node.rest, node, "case pattern")

    def visit_MatchKeywordElement(self, node: cst.MatchKeywordElement) -> None:
        self.not_refs.add(id(node.key))   # an attribute name of the matched class

    # ------------------------------------------------------------------ attributes
    def visit_Attribute(self, node: cst.Attribute) -> bool:
        attr = node.attr.value
        base = node.value
        how = self.context.get(id(node))
        base_name = base.value if isinstance(base, cst.Name) else None
        dotted = self.dotted(node)
        if how is not None and base_name in self.protected:
            self.flag("prepare-rebind", f"assigning {base_name}.{attr} changes prepare's object", node)
        elif base_name in PREPARE_FUNCTIONS:
            self.flag("dynamic-access", f"{base_name}.{attr} reaches into prepare's function object", node)
            self.vetted.add(id(base))
        if how is not None and self.is_module_ref(base) and _monkeypatched(dotted):
            verb = "deleting" if how == _DEL else "replacing"
            self.flag("evaluation", f"{verb} {dotted} monkeypatches code that evaluate_bpb's loss runs "
                      "through; call your own function from the model instead", node)
        if attr in REFLECTION_ATTRS:
            self.flag("dynamic-access", f"'.{attr}' reaches interpreter internals", node)
        elif attr == "modules" and dotted and dotted.endswith("sys.modules"):
            self.flag("dynamic-access", "sys.modules gives access to every loaded module, prepare included", node)
        elif attr == "__dict__" and self.is_module_ref(base):
            self.flag("dynamic-access", f"'{self.code(node)}' exposes a module's or prepare's namespace", node)
        elif attr in PROCESS_CALLS and dotted == f"os.{attr}":
            self.flag("process-network", f"os.{attr} starts or signals processes", node)
        elif dotted in _ENVIRON and id(node) not in self.vetted:
            self.flag("val-split", "os.environ may only be used with literal keys (no enumeration or copies)", node)
        base.visit(self)   # not node.attr: an attribute name is not a reference to a variable
        return False

    def visit_Subscript(self, node: cst.Subscript) -> None:
        if self.dotted(node.value) in _ENVIRON:
            self.vetted.add(id(node.value))
            key = node.slice[0].slice if len(node.slice) == 1 else None
            if not (isinstance(key, cst.Index) and _string_value(key.value) is not None):
                self.flag("val-split", "os.environ read with a computed key; use a literal name", node)
        if self.context.get(id(node)) is not None and isinstance(node.value, cst.Name) \
                and node.value.value in self.protected:
            self.flag("prepare-rebind", f"item assignment on prepare's {node.value.value}", node)

    def visit_Comparison(self, node: cst.Comparison) -> None:
        # `"X" in os.environ` is a literal-key read.
        literal_left = _string_value(node.left) is not None
        for target in node.comparisons:
            if literal_left and isinstance(target.operator, (cst.In, cst.NotIn)) \
                    and self.dotted(target.comparator) in _ENVIRON:
                self.vetted.add(id(target.comparator))

    # ------------------------------------------------------------------ strings
    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        value = _literal(node)
        if isinstance(value, str):
            self._string(value, node)

    def visit_ConcatenatedString(self, node: cst.ConcatenatedString) -> bool:
        value = _literal(node)   # None when an f-string is part of it: then visit the parts
        if value is None:
            return True
        if isinstance(value, str):
            self._string(value, node)
        return False

    def visit_FormattedString(self, node: cst.FormattedString) -> None:
        is_raw = "r" in node.prefix.lower()
        pending = list(node.parts)
        while pending:
            part = pending.pop()
            if isinstance(part, cst.FormattedStringText):
                self._string(_fstring_text(part.value, is_raw), node)
            elif part.format_spec:
                pending.extend(part.format_spec)

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        folded = _string_value(node)
        if folded is not None:
            self._string(folded, node, whole_only=True)

    def _string(self, text: str, node: cst.CSTNode, whole_only: bool = False) -> None:
        if not whole_only:
            self.strings.append(text)
        if id(node) in self.vetted:
            return   # a bare string statement (docstring) is inert
        for marker in DATA_MARKERS:
            if marker in text:
                self.flag("val-split", f"string {text[:60]!r} names prepare's data or settings ({marker!r})", node)
                break
        if text in REFLECTION_STRINGS:
            self.flag("dynamic-access", f"string {text!r} names an interpreter internal", node)

    def visit_Expr(self, node: cst.Expr) -> None:
        if isinstance(node.value, (cst.SimpleString, cst.ConcatenatedString)) \
                and isinstance(_literal(node.value), str):
            self.vetted.add(id(node.value))

    # ------------------------------------------------------------------ calls
    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        name = self.dotted(func)
        if isinstance(func, cst.Attribute):
            self.refs[self.scope].add(func.attr.value)
        elif isinstance(func, cst.Name) and func.value == "evaluate_bpb":
            self.evaluating_scopes.add(self.scope)
        if isinstance(func, cst.Name) and func.value in PREPARE_FUNCTIONS:
            self.vetted.add(id(func))
            if func.value == "make_dataloader":
                self._check_split(node)
        for arg in node.args:
            if arg.keyword is not None and arg.keyword.value == "split":
                value = _literal(arg.value)
                if value in VAL_SPLITS:
                    self.flag("val-split", f"split={value!r}: only evaluate_bpb may read the validation split", node)
        if isinstance(func, cst.Name) and func.value in ("getattr", "setattr", "delattr", "hasattr"):
            self._check_reflection_call(func.value, node)
        elif isinstance(func, cst.Name) and func.value == "vars" and "vars" not in self.aliases:
            positional = _positional(node)
            first = positional[0].value if positional else None
            if first is None or self.is_module_ref(first) or (
                    isinstance(first, cst.Name) and first.value in self.protected):
                self.flag("dynamic-access", "vars() of a module or the current scope exposes its names", node)
        if name:
            self._check_env_call(name, func, node)
            self._check_file_call(name, node)
        if isinstance(func, cst.Attribute):
            self._check_path_method(func, node)

    def _check_split(self, node: cst.Call) -> None:
        if any(a.star for a in node.args):
            self.flag("val-split", "make_dataloader called with *args/**kwargs: its split must be visible", node)
            return
        split = _arg(node, 3, "split")
        if split is not None and _literal(split) != "train":
            self.flag("val-split", f"make_dataloader(..., {self.code(split)}): training data must come from the "
                      "literal split \"train\"; only evaluate_bpb reads the validation split", node)

    def _check_reflection_call(self, fn: str, node: cst.Call) -> None:
        positional = _positional(node)
        if len(positional) < 2:
            return
        target_arg, attr_arg = positional[0], positional[1]
        target = target_arg.value if not target_arg.star else target_arg   # *args: never a name
        attr = self.literal_or_known(attr_arg.value) if not attr_arg.star else None
        target_name = target.value if isinstance(target, cst.Name) else None
        on_prepare = target_name in self.protected
        if on_prepare and fn in ("setattr", "delattr"):
            self.flag("prepare-rebind", f"{fn}({target_name}, ...) changes prepare's object", node)
        elif on_prepare and target_name in PREPARE_FUNCTIONS:
            self.vetted.add(id(target))
            self.flag("dynamic-access", f"{fn}({target_name}, ...) reaches into prepare's function object", node)
        elif attr is not None and (attr in REFLECTION_ATTRS or attr == "__dict__"
                                   or (attr == "modules" and self.is_module_ref(target))):
            self.flag("dynamic-access", f"{fn}(..., {attr!r}) reaches interpreter internals", node)
        elif attr is None and (self.is_module_ref(target) or on_prepare or isinstance(target, cst.Call)):
            self.flag("dynamic-access", f"{fn}() with a computed attribute name on "
                      f"'{self.code(target)}'; use the attribute directly or a literal name", node)
        elif fn in ("setattr", "delattr") and self.is_module_ref(target) \
                and _monkeypatched(f"{self.dotted(target)}.{attr}"):
            self.flag("evaluation", f"{fn}({self.code(target)}, {attr!r}, ...) monkeypatches code that "
                      "evaluate_bpb's loss runs through; call your own function from the model instead", node)

    def _check_env_call(self, name: str, func: cst.BaseExpression, node: cst.Call) -> None:
        if name in ("os.environ.update", "os.environb.update"):
            self.vetted.add(id(func.value))   # writes; AUTORESEARCH* keys are caught as strings
        elif name in ("os.getenv", "os.environ.get", "os.environ.setdefault", "os.environ.pop",
                      "os.putenv", "os.unsetenv", "os.environb.get"):
            if isinstance(func, cst.Attribute):
                self.vetted.add(id(func.value))
            positional = _positional(node)
            key = positional[0] if positional else None
            if key is None or key.star or _string_value(key.value) is None:
                self.flag("val-split", f"{name} with a computed key; use a literal variable name", node)

    def _check_file_call(self, name: str, node: cst.Call) -> None:
        if name in _OPEN_CALLS and (name != "open" or "open" not in self.aliases):
            mode = _arg(node, 1, "mode")
            mode_text = _string_value(mode) if mode is not None else "r"
            if mode_text is not None and not (_WRITE_MODE_CHARS & set(mode_text)):
                return   # reading is always fine
            path = _arg(node, 0, "file")
            problem = self.path_problem(path)
            if problem:
                what = "a computed mode" if mode_text is None else f"mode {mode_text!r}"
                self.flag("file-write", f"{name}() with {what} on {self._show(path)}: writes {problem}", node)
            return
        spec = _PATH_CALLS.get(name)
        if spec is None and name.startswith("np."):
            spec = _PATH_CALLS.get("numpy." + name[3:])
        if spec is None and name == "logging.basicConfig":
            spec = ((99, "filename"),)
        if spec is None:
            return
        for index, keyword in spec:
            path = _arg(node, index, keyword)
            if path is None:
                if index < 99 and (len(_positional(node)) > index or any(a.star == "**" for a in node.args)):
                    self.flag("file-write", f"{name}() path is hidden in *args/**kwargs", node)
                continue
            problem = self.path_problem(path)
            if problem:
                self.flag("file-write", f"{name}() on {self._show(path)}: file changes {problem}", node)

    def _check_path_method(self, func: cst.Attribute, node: cst.Call) -> None:
        method = func.attr.value
        receiver = func.value
        if method in _PATH_WRITE_METHODS:
            targets = [receiver]
        elif method in ("rename", "replace") and len(node.args) == 1 and not node.args[0].star \
                and node.args[0].keyword is None:
            targets = [receiver, node.args[0].value]        # str.replace always has two arguments
        elif method == "tofile" and _positional(node):
            targets = [_positional(node)[0].value]
        elif method == "open" and isinstance(receiver, cst.Call) and self.dotted(receiver.func) in _PATH_CTORS:
            mode = _arg(node, 0, "mode")
            mode_text = _string_value(mode) if mode is not None else "r"
            if mode_text is not None and not (_WRITE_MODE_CHARS & set(mode_text)):
                return
            targets = [receiver]
        else:
            return
        for target in targets:
            problem = self.path_problem(target)
            if problem:
                self.flag("file-write", f".{method}() on {self._show(target)}: file changes {problem}", node)


# ---------------------------------------------------------------------------------------- verdict

def _evaluation_violations(checker: _Checker) -> list[Violation]:
    """Is evaluate_bpb reachable, and is the summary still printed? Reachability follows names
    (plain calls, method calls, references) from module-level code into definitions of that name;
    it over-approximates, so it never rejects code that does evaluate."""
    found: list[Violation] = []
    evaluated = None in checker.evaluating_scopes
    frontier, seen = set(checker.refs[None]), set()
    while frontier and not evaluated:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        for definition in checker.definitions.get(name, ()):
            for scope in [definition, *checker.methods.get(definition, ())]:
                evaluated |= scope in checker.evaluating_scopes
                frontier |= checker.refs.get(scope, set()) - seen
    if not evaluated:
        found.append(Violation("evaluation", "evaluate_bpb(...) is no longer called from code that runs; "
                               "the score must come from prepare's evaluation", None))
    strings = checker.strings
    if not any(line.strip() == "---" for s in strings if "---" in s for line in s.split("\n")):
        found.append(Violation("evaluation", "the summary separator line '---' is no longer printed", None))
    pieces = "\n".join(strings)
    missing = [k for k in SUMMARY_KEYS if f"{k}:" not in pieces and k not in strings]
    if missing:
        found.append(Violation("evaluation", f"the summary no longer prints {', '.join(missing)} "
                               "(keys of the output contract)", None))
    return found


def _syntax_violation(source: str, parser_error: Exception | None) -> Violation | None:
    """What the interpreter says about `source` (authoritative), else libcst's own complaint."""
    try:
        with warnings.catch_warnings():   # invalid escapes etc. are the candidate's business, not stderr's
            warnings.simplefilter("ignore")
            compile(source, "train.py", "exec", dont_inherit=True)   # symtable errors too (return outside def)
    except SyntaxError as exc:
        return Violation("syntax", f"{exc.msg}", exc.lineno)
    except ValueError as exc:   # null bytes and similar
        return Violation("syntax", str(exc), None)
    except (RecursionError, MemoryError) as exc:
        return Violation("syntax", f"the interpreter cannot compile this file ({type(exc).__name__}: "
                         "expressions nested too deeply)", None)
    if parser_error is None:
        return None
    if isinstance(parser_error, cst.ParserSyntaxError):
        return Violation("syntax", f"the checker's parser (libcst) cannot read this file: {parser_error.message}",
                         parser_error.raw_line or None)
    return Violation("syntax", f"the checker's parser (libcst) cannot read this file: "
                     f"{type(parser_error).__name__}: {parser_error}", None)


def _place(module: cst.Module, found: list[tuple[str, str, cst.CSTNode | None]]) -> list[Violation]:
    """Violations with the line of their node (positions computed only now, and only if needed)."""
    if not any(node is not None for _, _, node in found):
        return [Violation(rule, message, None) for rule, message, _ in found]
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    return [Violation(rule, message, positions[node].start.line if node is not None else None)
            for rule, message, node in found]


# ---------------------------------------------------------------------------------------- memo
# Proposers check many drafts that differ from an accepted file only in number literals (the
# heuristic proposer's knob edits: MATRIX_LR = 0.04 -> 0.05). No rule reads the value of a number
# (they read names, strings, call shapes and structure), so such a draft has the same verdict:
# accepted. The memo keys an accepted file by its token stream with numbers blanked (comments and
# blank lines dropped: the checker never reads them) and answers a repeat in ~7 ms instead of a
# full parse. Only acceptances are remembered; anything else takes the full path. A rule that one
# day reads a number's value must drop the memo.
_MEMO_SIZE = 512
_MAX_NUMBER_CHARS = 40          # a number too long to be a knob (4,300+ digits fail to compile)
_accepted_shapes: OrderedDict[tuple, None] = OrderedDict()
_memo_lock = threading.Lock()    # proposers may check drafts from several threads
_memo_hits = 0
_IGNORED_TOKENS = frozenset({tokenize.COMMENT, tokenize.NL})


def _shape(source: str, baseline: _Baseline) -> tuple | None:
    """The number-blind token stream of `source` under `baseline`'s policy; None when it does not
    tokenize or holds a number too long to trust."""
    shape: list = [baseline]
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in _IGNORED_TOKENS:
                continue
            if token.type == tokenize.NUMBER:
                if len(token.string) > _MAX_NUMBER_CHARS:
                    return None
                shape.append(tokenize.NUMBER)
            else:
                shape.append((token.type, token.string))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None
    return tuple(shape)


def _memo_lookup(shape: tuple) -> bool:
    global _memo_hits
    with _memo_lock:
        if shape not in _accepted_shapes:
            return False
        _accepted_shapes.move_to_end(shape)
        _memo_hits += 1
        return True


def _remember_accepted(shape: tuple) -> None:
    with _memo_lock:
        _accepted_shapes[shape] = None
        _accepted_shapes.move_to_end(shape)
        while len(_accepted_shapes) > _MEMO_SIZE:
            _accepted_shapes.popitem(last=False)


def clear_memo() -> None:
    """Forget remembered acceptances (benchmarks measure the full check without it)."""
    global _memo_hits
    with _memo_lock:
        _accepted_shapes.clear()
        _memo_hits = 0


def memo_info() -> dict[str, int]:
    """How many accepted shapes are remembered, and how many checks they answered."""
    with _memo_lock:
        return {"size": len(_accepted_shapes), "hits": _memo_hits}


def check_source(source: str, baseline_source: str | None = None) -> list[Violation]:
    """Every violation in `source`, sorted by line; [] means the candidate is accepted.
    `baseline_source` (the fixed baseline train.py) widens the import and prepare-name policy to
    what it uses; without it the defaults above apply."""
    baseline = _baseline_policy(baseline_source)
    shape = _shape(source, baseline)
    if shape is not None and _memo_lookup(shape):
        return []
    found = _check_fully(source, baseline)
    if not found and shape is not None:
        _remember_accepted(shape)
    return found


def _check_fully(source: str, baseline: _Baseline) -> list[Violation]:
    try:
        module = cst.parse_module(source)
    except Exception as exc:   # ParserSyntaxError, or libcst's own limits (recursion, encodings)
        return [_syntax_violation(source, exc)]
    syntax = _syntax_violation(source, None)
    if syntax is not None:
        return [syntax]
    checker = _Checker(module, baseline)
    # The visit recurses a few frames per tree level: code the interpreter compiles (up to ~200
    # nested levels, long operator chains) can need more than the default limit of 1000.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _RECURSION_LIMIT))
    try:
        module.visit(checker)
        found = _place(module, checker.found) + _evaluation_violations(checker)
    except RecursionError:
        return [Violation("syntax", "the file is nested too deeply for the checker to read "
                          "(split long expressions or deep nesting)", None)]
    finally:
        sys.setrecursionlimit(limit)
    unique = dict.fromkeys(found)   # same message on the same line once
    return sorted(unique, key=lambda v: (v.line or 10**9, v.rule))


def check_command(path: str | Path, baseline: str | Path | None = None) -> int:
    """`autoresearch check FILE`: print ACCEPTED or the violations; return the exit code."""
    file = Path(path)
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"REJECTED syntax: cannot read {file}: {exc}")
        return 1
    baseline_source = Path(baseline).read_text(encoding="utf-8") if baseline else None
    violations = check_source(source, baseline_source)
    if not violations:
        print("ACCEPTED")
        return 0
    for v in violations:
        print(v)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (1, 2):
        print("usage: python -m sandbox.check FILE [BASELINE]", file=sys.stderr)
        return 2
    return check_command(*args)


if __name__ == "__main__":
    raise SystemExit(main())
