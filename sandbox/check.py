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
                       Reading any file is fine.
- `process-network`    no os.system/popen/exec*/spawn*/fork/kill/posix_spawn (the process modules
                       themselves are import-not-allowed).
- `evaluation`         evaluate_bpb(...) is still called from code that runs (module level, or a
                       function reachable from it), and the summary is still printed: `---`
                       and the keys val_bpb, training_seconds, total_seconds, peak_vram_mb,
                       mfu_percent, total_tokens_M, num_steps, num_params_M, depth.

Built on Python's `ast` rather than libcst: the checker only reads the tree, `ast` gives line
numbers without a metadata pass, it is exactly what the interpreter will run, and it is about
10x faster (a proposer checks hundreds of drafts per generation).
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
                             "Tokenizer", "make_dataloader", "evaluate_bpb"})
DEFAULT_PREPARE_IMPORTS = frozenset({"PRESET", "MAX_SEQ_LEN", "TIME_BUDGET", "Tokenizer",
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


@lru_cache(maxsize=8)
def _baseline_policy(baseline_source: str | None) -> _Baseline:
    if baseline_source is None:
        return _Baseline(frozenset(), DEFAULT_PREPARE_IMPORTS)
    try:
        tree = ast.parse(baseline_source)
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"baseline train.py does not parse: {exc}") from None
    modules, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            top = node.module.split(".")[0]
            if top == PREPARE_MODULE:
                names.update(a.name for a in node.names)
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


def _safe_path(node: ast.AST) -> bool:
    """True when `node` is provably a path inside the candidate's folder (see file-write)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        text = node.value.decode(errors="replace") if isinstance(node.value, bytes) else node.value
        if not text or text.startswith(("/", "\\", "~")) or (len(text) > 1 and text[1] == ":"):
            return False
        return ".." not in text.replace("\\", "/").split("/")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _safe_path(node.left) and _safe_path(node.right)
    return False


def _string_value(node: ast.AST) -> str | None:
    """Value of a string expression built only from literals ("a" + "b" is folded)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string_value(node.left), _string_value(node.right)
        if left is not None and right is not None:
            return left + right
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self, tree: ast.Module, baseline: _Baseline):
        self.baseline = baseline
        self.protected = PREPARE_EXPORTS | baseline.prepare_names
        self.found: list[Violation] = []
        self.aliases: dict[str, str] = {}      # bound name -> dotted import target
        self.module_strings: dict[str, str] = {}   # module-level NAME = "literal", assigned once
        self.vetted: set[int] = set()          # ids of nodes whose use a parent already approved
        self.strings: list[str] = []           # every literal string piece (for the summary keys)
        self._index(tree)

    # ------------------------------------------------------------------ helpers
    def flag(self, rule: str, message: str, node: ast.AST | None) -> None:
        self.found.append(Violation(rule, message, getattr(node, "lineno", None)))

    def _index(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name != "*":
                        self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        counts: dict[str, int] = {}
        for stmt in tree.body:
            for target in getattr(stmt, "targets", [getattr(stmt, "target", None)]):
                if isinstance(target, ast.Name):
                    counts[target.id] = counts.get(target.id, 0) + 1
                    value = getattr(stmt, "value", None)
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        self.module_strings[target.id] = value.value
        for name, n in counts.items():
            if n > 1:
                self.module_strings.pop(name, None)

    def dotted(self, node: ast.AST) -> str | None:
        """`np.save` -> 'numpy.save' through the import aliases; None for non-name chains."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def is_module_ref(self, node: ast.AST) -> bool:
        """A name bound by an import (modules and prepare's objects), or an attribute of one."""
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and node.id in self.aliases

    def literal_or_known(self, node: ast.AST) -> str | None:
        value = _string_value(node)
        if value is None and isinstance(node, ast.Name):
            value = self.module_strings.get(node.id)
        return value

    def safe_path(self, node: ast.AST) -> bool:
        if _safe_path(node):
            return True
        if isinstance(node, ast.Name) and node.id in self.module_strings:
            return _safe_path(ast.Constant(self.module_strings[node.id]))
        if isinstance(node, ast.Call) and self.dotted(node.func) in _PATH_CTORS:
            return bool(node.args) and all(self.safe_path(a) for a in node.args) and not node.keywords
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.safe_path(node.left) and self.safe_path(node.right)
        return False

    @staticmethod
    def arg(call: ast.Call, index: int, keyword: str) -> ast.AST | None:
        if len(call.args) > index and not any(isinstance(a, ast.Starred) for a in call.args[:index + 1]):
            return call.args[index]
        for kw in call.keywords:
            if kw.arg == keyword:
                return kw.value
        return None

    # ------------------------------------------------------------------ imports
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            top = a.name.split(".")[0]
            if top == PREPARE_MODULE:
                self.flag("prepare-names", f"'import {a.name}' gives access to all of prepare; use "
                          f"'from prepare import {', '.join(sorted(self.baseline.prepare_names))}'", node)
                continue
            why = _module_denial(top, self.baseline)
            if why:
                self.flag("import-not-allowed", f"import {a.name}: {why}", node)
            if a.asname in self.protected:
                self.flag("prepare-rebind", f"'import {a.name} as {a.asname}' shadows prepare's {a.asname}", node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        top = module.split(".")[0]
        if node.level:
            if top == PREPARE_MODULE or any(a.name == PREPARE_MODULE for a in node.names):
                self.flag("prepare-names", "relative import of prepare; use 'from prepare import ...'", node)
            else:
                self.flag("import-not-allowed", f"relative import 'from {'.' * node.level}{module}': "
                          "train.py is a single file", node)
            return
        if top == PREPARE_MODULE:
            for a in node.names:
                if a.name == "*":
                    self.flag("prepare-names", "'from prepare import *' hides which names are used", node)
                elif module != PREPARE_MODULE or a.name not in self.baseline.prepare_names:
                    self.flag("prepare-names", f"'{a.name}' is not one of the names train.py may take "
                              f"from prepare ({', '.join(sorted(self.baseline.prepare_names))})", node)
                elif a.asname and a.asname != a.name:
                    self.flag("prepare-names", f"'from prepare import {a.name} as {a.asname}': "
                              "aliasing prepare's names hides their use", node)
            return
        why = _module_denial(top, self.baseline)
        if why:
            self.flag("import-not-allowed", f"from {module} import ...: {why}", node)
        for a in node.names:
            bound = a.asname or a.name
            if bound in self.protected:
                self.flag("prepare-rebind", f"'from {module} import {a.name}' shadows prepare's {bound}", node)
            full = f"{module}.{a.name}"
            if module == "os" and a.name in PROCESS_CALLS:
                self.flag("process-network", f"os.{a.name} starts or signals processes", node)
            elif a.name in REFLECTION_ATTRS or full in ("sys.modules", "gc.get_objects"):
                self.flag("dynamic-access", f"'{full}' reaches interpreter internals", node)

    # ------------------------------------------------------------------ names and bindings
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            if name in self.protected:
                verb = "deletes" if isinstance(node.ctx, ast.Del) else "rebinds"
                self.flag("prepare-rebind", f"{verb} prepare's {name}; it must keep prepare's value", node)
            return
        if id(node) in self.vetted:
            return
        if name in DYNAMIC_BUILTINS and not self._imported_callable(name):
            self.flag("dynamic-access", f"'{name}' runs or exposes code dynamically", node)
        elif name in PREPARE_FUNCTIONS:
            self.flag("prepare-names", f"{name} may only be called directly, not passed around or aliased", node)
        elif name == "vars":
            pass   # judged at the call (vars(obj) on a plain object is fine)
        elif self.aliases.get(name) in ("os.environ", "os.environb"):
            self.flag("val-split", "os.environ may only be read with literal keys", node)

    def _imported_callable(self, name: str) -> bool:
        # `from torch import compile` makes compile(...) torch's, not the builtin.
        target = self.aliases.get(name)
        return bool(target) and target.split(".")[0] in TRAINING_PACKAGES

    def _bind(self, name: str | None, node: ast.AST, how: str) -> None:
        if name and name in self.protected:
            self.flag("prepare-rebind", f"{how} '{name}' shadows prepare's {name}", node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._bind(node.name, node, "def")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._bind(node.name, node, "class")
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self._bind(node.arg, node, "parameter")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        for name in node.names:
            self._bind(name, node, type(node).__name__.lower())

    visit_Nonlocal = visit_Global

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self._bind(node.name, node, "except ... as")
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        self._bind(node.name, node, "case pattern")
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        self._bind(node.name, node, "case pattern")

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self._bind(node.rest, node, "case pattern")
        self.generic_visit(node)

    # ------------------------------------------------------------------ attributes
    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        base = node.value
        if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(base, ast.Name) and base.id in self.protected:
            self.flag("prepare-rebind", f"assigning {base.id}.{attr} changes prepare's object", node)
        elif isinstance(base, ast.Name) and base.id in PREPARE_FUNCTIONS:
            self.flag("dynamic-access", f"{base.id}.{attr} reaches into prepare's function object", node)
            self.vetted.add(id(base))
        dotted = self.dotted(node)
        if attr in REFLECTION_ATTRS:
            self.flag("dynamic-access", f"'.{attr}' reaches interpreter internals", node)
        elif attr == "modules" and dotted and dotted.endswith("sys.modules"):
            self.flag("dynamic-access", "sys.modules gives access to every loaded module, prepare included", node)
        elif attr == "__dict__" and self.is_module_ref(base):
            self.flag("dynamic-access", f"'{ast.unparse(node)}' exposes a module's or prepare's namespace", node)
        elif attr in PROCESS_CALLS and dotted == f"os.{attr}":
            self.flag("process-network", f"os.{attr} starts or signals processes", node)
        elif dotted in ("os.environ", "os.environb") and id(node) not in self.vetted:
            self.flag("val-split", "os.environ may only be used with literal keys (no enumeration or copies)", node)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self.dotted(node.value) in ("os.environ", "os.environb"):
            self.vetted.add(id(node.value))
            if _string_value(node.slice) is None:
                self.flag("val-split", "os.environ read with a computed key; use a literal name", node)
        if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(node.value, ast.Name) \
                and node.value.id in self.protected:
            self.flag("prepare-rebind", f"item assignment on prepare's {node.value.id}", node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        # `"X" in os.environ` is a literal-key read.
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)) and self.dotted(right) in ("os.environ", "os.environb") \
                    and _string_value(node.left) is not None:
                self.vetted.add(id(right))
        self.generic_visit(node)

    # ------------------------------------------------------------------ strings
    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._string(node.value, node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        folded = _string_value(node)
        if folded is not None and isinstance(node.left, (ast.Constant, ast.BinOp)):
            self._string(folded, node, whole_only=True)
        self.generic_visit(node)

    def _string(self, text: str, node: ast.AST, whole_only: bool = False) -> None:
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

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            self.vetted.add(id(node.value))
        self.generic_visit(node)

    # ------------------------------------------------------------------ calls
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = self.dotted(func)
        if isinstance(func, ast.Name) and func.id in PREPARE_FUNCTIONS:
            self.vetted.add(id(func))
            if func.id == "make_dataloader":
                self._check_split(node)
        for kw in node.keywords:
            if kw.arg == "split" and isinstance(kw.value, ast.Constant) and kw.value.value in VAL_SPLITS:
                self.flag("val-split", f"split={kw.value.value!r}: only evaluate_bpb may read the validation split", node)
        if isinstance(func, ast.Name) and func.id in ("getattr", "setattr", "delattr", "hasattr"):
            self._check_reflection_call(func.id, node)
        elif isinstance(func, ast.Name) and func.id == "vars" and "vars" not in self.aliases:
            if not node.args or self.is_module_ref(node.args[0]) or (
                    isinstance(node.args[0], ast.Name) and node.args[0].id in self.protected):
                self.flag("dynamic-access", "vars() of a module or the current scope exposes its names", node)
        if name:
            self._check_env_call(name, func, node)
            self._check_file_call(name, node)
        if isinstance(func, ast.Attribute):
            self._check_path_method(func, node)
        self.generic_visit(node)

    def _check_split(self, node: ast.Call) -> None:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(kw.arg is None for kw in node.keywords):
            self.flag("val-split", "make_dataloader called with *args/**kwargs: its split must be visible", node)
            return
        split = self.arg(node, 3, "split")
        if split is not None and not (isinstance(split, ast.Constant) and split.value == "train"):
            shown = ast.unparse(split)
            self.flag("val-split", f"make_dataloader(..., {shown}): training data must come from the literal "
                      "split \"train\"; only evaluate_bpb reads the validation split", node)

    def _check_reflection_call(self, fn: str, node: ast.Call) -> None:
        if len(node.args) < 2:
            return
        target, attr_node = node.args[0], node.args[1]
        attr = self.literal_or_known(attr_node)
        on_prepare = isinstance(target, ast.Name) and target.id in self.protected
        if on_prepare and fn in ("setattr", "delattr"):
            self.flag("prepare-rebind", f"{fn}({target.id}, ...) changes prepare's object", node)
        elif on_prepare and target.id in PREPARE_FUNCTIONS:
            self.vetted.add(id(target))
            self.flag("dynamic-access", f"{fn}({target.id}, ...) reaches into prepare's function object", node)
        elif attr is not None and (attr in REFLECTION_ATTRS or attr == "__dict__"
                                   or (attr == "modules" and self.is_module_ref(target))):
            self.flag("dynamic-access", f"{fn}(..., {attr!r}) reaches interpreter internals", node)
        elif attr is None and (self.is_module_ref(target) or on_prepare or isinstance(target, ast.Call)):
            self.flag("dynamic-access", f"{fn}() with a computed attribute name on "
                      f"'{ast.unparse(target)}'; use the attribute directly or a literal name", node)

    def _check_env_call(self, name: str, func: ast.AST, node: ast.Call) -> None:
        if name in ("os.environ.update", "os.environb.update"):
            self.vetted.add(id(func.value))   # writes; AUTORESEARCH* keys are caught as strings
        elif name in ("os.getenv", "os.environ.get", "os.environ.setdefault", "os.environ.pop",
                      "os.putenv", "os.unsetenv", "os.environb.get"):
            if isinstance(func, ast.Attribute):
                self.vetted.add(id(func.value))
            key = node.args[0] if node.args else None
            if key is None or _string_value(key) is None:
                self.flag("val-split", f"{name} with a computed key; use a literal variable name", node)

    def _check_file_call(self, name: str, node: ast.Call) -> None:
        if name in _OPEN_CALLS and (name != "open" or "open" not in self.aliases):
            mode = self.arg(node, 1, "mode")
            mode_text = _string_value(mode) if mode is not None else "r"
            if mode_text is not None and not (_WRITE_MODE_CHARS & set(mode_text)):
                return   # reading is always fine
            path = self.arg(node, 0, "file")
            if path is None or not self.safe_path(path):
                what = "a computed mode" if mode_text is None else f"mode {mode_text!r}"
                self.flag("file-write", f"{name}() with {what} on {self._show(path)}: writes must use a literal "
                          "relative path without '..' (inside the candidate's folder)", node)
            return
        spec = _PATH_CALLS.get(name)
        if spec is None and name.startswith("np."):
            spec = _PATH_CALLS.get("numpy." + name[3:])
        if spec is None and name == "logging.basicConfig":
            spec = ((99, "filename"),)
        if spec is None:
            return
        for index, keyword in spec:
            path = self.arg(node, index, keyword)
            if path is None:
                if index < 99 and (len(node.args) > index or any(k.arg is None for k in node.keywords)):
                    self.flag("file-write", f"{name}() path is hidden in *args/**kwargs", node)
                continue
            if not self.safe_path(path):
                self.flag("file-write", f"{name}() on {self._show(path)}: file changes must use a literal relative "
                          "path without '..' (inside the candidate's folder)", node)

    def _check_path_method(self, func: ast.Attribute, node: ast.Call) -> None:
        method = func.attr
        receiver = func.value
        if method in _PATH_WRITE_METHODS:
            targets = [receiver]
        elif method in ("rename", "replace") and len(node.args) == 1 and not node.keywords:
            targets = [receiver, node.args[0]]        # str.replace always has two arguments
        elif method == "tofile" and node.args:
            targets = [node.args[0]]
        elif method == "open" and isinstance(receiver, ast.Call) and self.dotted(receiver.func) in _PATH_CTORS:
            mode = self.arg(node, 0, "mode")
            mode_text = _string_value(mode) if mode is not None else "r"
            if mode_text is not None and not (_WRITE_MODE_CHARS & set(mode_text)):
                return
            targets = [receiver]
        else:
            return
        for target in targets:
            if not self.safe_path(target):
                self.flag("file-write", f".{method}() on {self._show(target)}: file changes must use a literal "
                          "relative path without '..' (inside the candidate's folder)", node)

    @staticmethod
    def _show(node: ast.AST | None) -> str:
        if node is None:
            return "an unseen path"
        text = ast.unparse(node)
        return text if len(text) <= 60 else text[:57] + "..."


def _definition_time_parts(node: ast.AST) -> list[ast.AST]:
    """What runs when a def/class statement itself executes (not the function body)."""
    if isinstance(node, ast.ClassDef):
        return [*node.decorator_list, *node.bases, *node.keywords, *node.body]
    args = node.args
    return [*node.decorator_list, *args.defaults, *[d for d in args.kw_defaults if d is not None]]


def _runs(nodes: list[ast.AST]) -> tuple[set[str], bool]:
    """Names called or referenced by `nodes` (nested function bodies excluded), and whether
    evaluate_bpb is called among them."""
    names, evaluates = set(), False
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stack.extend(_definition_time_parts(n))
            continue
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name):
                evaluates |= f.id == "evaluate_bpb"
            elif isinstance(f, ast.Attribute):
                names.add(f.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            names.add(n.id)   # called, or passed as a callback that may be called
        stack.extend(ast.iter_child_nodes(n))
    return names, evaluates


def _evaluation_violations(tree: ast.Module, strings: list[str]) -> list[Violation]:
    """Is evaluate_bpb reachable, and is the summary still printed? Reachability matches calls by
    name (plain or method), which over-approximates and so never rejects code that evaluates."""
    found: list[Violation] = []
    defs: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs.setdefault(node.name, []).append(node)
    frontier, evaluated = _runs(tree.body)
    frontier = set(frontier)
    seen: set[str] = set()
    while frontier and not evaluated:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        for definition in defs.get(name, ()):
            body = definition.body
            if isinstance(definition, ast.ClassDef):
                # an instance's methods run implicitly (__init__, __call__ -> forward, ...)
                body = [m for m in definition.body]
                body += [x for m in definition.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                         for x in m.body]
            calls, evaluates = _runs(body)
            evaluated |= evaluates
            frontier |= calls - seen
    if not evaluated:
        found.append(Violation("evaluation", "evaluate_bpb(...) is no longer called from code that runs; "
                               "the score must come from prepare's evaluation", None))
    if not any(line.strip() == "---" for s in strings for line in s.split("\n")):
        found.append(Violation("evaluation", "the summary separator line '---' is no longer printed", None))
    pieces = "\n".join(strings)
    missing = [k for k in SUMMARY_KEYS if f"{k}:" not in pieces and k not in strings]
    if missing:
        found.append(Violation("evaluation", f"the summary no longer prints {', '.join(missing)} "
                               "(keys of the output contract)", None))
    return found


def check_source(source: str, baseline_source: str | None = None) -> list[Violation]:
    """Every violation in `source`, sorted by line; [] means the candidate is accepted.
    `baseline_source` (the fixed baseline train.py) widens the import and prepare-name policy to
    what it uses; without it the defaults above apply."""
    try:
        tree = ast.parse(source, filename="train.py")
        compile(tree, "train.py", "exec", dont_inherit=True)   # symtable errors (return outside def, ...)
    except SyntaxError as exc:
        return [Violation("syntax", f"{exc.msg}", exc.lineno)]
    except ValueError as exc:   # null bytes and similar
        return [Violation("syntax", str(exc), None)]
    checker = _Checker(tree, _baseline_policy(baseline_source))
    checker.visit(tree)
    found = checker.found + _evaluation_violations(tree, checker.strings)
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
