"""The checker's tables: which modules and names a candidate train.py may use, and for what.

One place for every fact the rules look up (sandbox/check_rules.py applies them). Modules are
allowed by an allow-list, not a deny-list: the standard-library modules a training script needs,
the training stack, and whatever the baseline train.py itself imports. Within allowed modules, a
few names are refused because of what they do (start a process, load code, deserialise with
pickle, write where the checker cannot see), and a few modules (sys, gc, types) allow only a short
list of names. Everything here is about effects; no table lists words a candidate may not say.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache

import libcst as cst

# ---------------------------------------------------------------------------------------- rules

RULES: dict[str, str] = {
    "syntax": "the file must parse and compile",
    "encoding": "the checker must read exactly the text Python runs (UTF-8, no look-alike tricks)",
    "import-not-allowed": "only the baseline's imports, the standard library a training script needs, "
                          "and the training stack",
    "prepare-names": "only prepare's exported names, unaliased; its data functions called directly",
    "prepare-rebind": "prepare's names, objects and classes are never rebound, patched or subclassed",
    "dynamic-access": "no dynamic code, reflection, frames, private internals or computed attribute names",
    "dunder-access": "no dunder attributes beyond a short list (__init__, __name__, ...)",
    "unsafe-deserialisation": "no loading that can run code (pickle, torch.load without weights_only=True, ...)",
    "process-network": "no new processes, signals, scheduling changes or network connections",
    "file-write": "writes land only inside the candidate's own folder, never on files Python imports "
                  "or the harness owns",
    "environment": "the environment is read with literal keys and never changed where the harness, "
                   "the loaders or other processes read it",
    "val-split": "no training on, or reading of, the validation data or prepare's data files",
    "monkeypatch": "no assignment to attributes of imported modules or their classes (documented "
                   "configuration switches excepted)",
    "torch-override": "no overriding of torch's functions through its extension points",
    "evaluation": "the score comes from prepare's evaluate_bpb, called from code that runs",
}

# ---------------------------------------------------------------------------------------- prepare

PREPARE_MODULE = "prepare"
# What candidates may import from prepare (the train.py <-> prepare.py contract, version 2).
PREPARE_EXPORTS = frozenset({"PRESET", "MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE",
                             "Tokenizer", "make_dataloader", "evaluate_bpb", "TrainingClock"})
# Called directly only: passing them around hides which split is loaded and what is evaluated.
PREPARE_FUNCTIONS = frozenset({"make_dataloader", "evaluate_bpb"})
PRESET_VALUES = ("gpu", "cpu", "micro")    # what PRESET can hold (a safe piece of a file name)

# ---------------------------------------------------------------------------------------- modules

TRAINING_PACKAGES = frozenset({"torch", "numpy", "triton", "kernels", "flash_attn", "tiktoken"})

# Standard-library modules a training script needs. Those marked (*) have names that are judged
# by what they do (writes, listing, processes); the rest is computation, text, time and typing.
ALLOWED_STDLIB = frozenset({
    "__future__", "abc", "argparse", "array", "ast", "base64", "binascii", "bisect", "bz2",  # bz2*
    "calendar", "cmath", "codecs", "collections", "colorsys", "concurrent", "configparser",
    "contextlib", "contextvars", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum",
    "errno", "fnmatch", "fractions", "functools", "gc", "getopt", "glob", "graphlib", "gzip", "hashlib",
    "heapq", "hmac", "html", "io", "itertools", "json", "keyword", "locale", "logging", "lzma", "math",
    "numbers", "operator", "os", "pathlib", "platform", "pprint", "queue", "random", "re", "reprlib",
    "resource", "secrets", "shlex", "shutil", "sqlite3", "statistics", "string", "struct", "sys",
    "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "traceback", "types", "typing",
    "unicodedata", "uuid", "warnings", "weakref", "zipfile", "zlib", "zoneinfo",
})

_PROCESS = "starts processes or sends signals"
_NETWORK = "opens network connections"
_CODE = "loads or runs code the checker cannot see"
_REFLECTION = "reaches into the interpreter (frames, modules, objects)"
_PICKLE = "deserialises with pickle, which runs code"
# Why the best-known refused modules are refused (any other module outside the lists gets a
# generic message). Denied whatever the baseline imports.
DENIED_MODULES: dict[str, str] = {
    **dict.fromkeys(["subprocess", "multiprocessing", "signal", "pty", "pipes", "posix", "nt", "_posixsubprocess",
                     "pwd", "grp", "atexit", "faulthandler", "sched", "select", "selectors", "mmap", "fcntl",
                     "termios"], _PROCESS),
    **dict.fromkeys(["socket", "socketserver", "ssl", "http", "urllib", "ftplib", "smtplib", "poplib", "imaplib",
                     "nntplib", "telnetlib", "xmlrpc", "asyncio", "asyncore", "asynchat", "webbrowser",
                     "antigravity", "wsgiref", "cgi", "cgitb", "requests", "urllib3", "httpx", "aiohttp"], _NETWORK),
    **dict.fromkeys(["importlib", "imp", "runpy", "code", "codeop", "ctypes", "cffi", "pkgutil", "zipimport",
                     "site", "sitecustomize", "usercustomize", "modulefinder", "pydoc", "doctest", "unittest",
                     "pdb", "bdb", "trace", "cProfile", "profile", "tracemalloc", "dis", "symtable", "compileall",
                     "py_compile", "zipapp", "ensurepip", "venv", "distutils", "setuptools", "lib2to3",
                     "idlelib", "encodings", "sysconfig"], _CODE),
    **dict.fromkeys(["inspect", "builtins", "__builtin__", "gc_objects"], _REFLECTION),
    **dict.fromkeys(["pickle", "_pickle", "cPickle", "pickletools", "marshal", "shelve", "copyreg", "dill",
                     "cloudpickle", "joblib", "dbm"], _PICKLE),
    "pyarrow": "reads prepare's data files behind make_dataloader's back",
    "pandas": "reads prepare's data files behind make_dataloader's back",
}

# Modules whose names a candidate may use only from a short list (their other names reach the
# interpreter's internals: sys.modules, sys._getframe, gc.get_objects, types.FunctionType ...).
# The baseline's own uses are added (sandbox/check.py: Baseline.uses).
MEMBER_ALLOW_LISTS: dict[str, frozenset[str]] = {
    "sys": frozenset({"argv", "exit", "stdout", "stderr", "stdin", "platform", "version", "version_info",
                      "hexversion", "maxsize", "float_info", "int_info", "byteorder",
                      "getrecursionlimit", "setrecursionlimit", "getsizeof", "exc_info", "exception",
                      "getdefaultencoding", "getfilesystemencoding", "implementation", "maxunicode",
                      "float_repr_style", "get_int_max_str_digits", "set_int_max_str_digits",
                      "getswitchinterval", "is_finalizing", "api_version", "copyright", "thread_info"}),
    "gc": frozenset({"collect", "freeze", "unfreeze", "disable", "enable", "isenabled", "set_threshold",
                     "get_threshold", "get_count", "get_freeze_count", "get_stats", "DEBUG_STATS"}),
    # the baseline's Flash-Attention loader: only get_kernel, and only the repositories it names
    "kernels": frozenset({"get_kernel"}),
    "types": frozenset({"SimpleNamespace", "MappingProxyType", "MethodType", "GeneratorType", "NoneType",
                        "GenericAlias", "UnionType", "EllipsisType", "NotImplementedType",
                        "BuiltinFunctionType", "BuiltinMethodType"}),
}

# Names of modules that, reached as an attribute of another module (`torch.os`, `os.sys`,
# `torch.serialization.pickle`), would give the refused or restricted module without its import.
MODULE_ATTRIBUTE_NAMES = frozenset({
    "os", "sys", "gc", "builtins", "__builtins__", "subprocess", "ctypes", "importlib", "inspect", "pickle",
    "marshal", "shelve", "socket", "multiprocessing", "runpy", "code", "codeop", "shutil", "io", "site",
    "posix", "nt", "_pickle", "copyreg", "pty", "threading", "_thread", "urllib", "http", "asyncio",
    "torch", "numpy", "np", "triton", "kernels", "tiktoken", "pathlib", "tempfile", "logging",
})
# ... and names that are such modules under another name (torch's DataLoader keeps multiprocessing
# as `python_multiprocessing`, torch.serialization keeps `pickle_module`).
MODULE_ATTRIBUTE_PARTS = ("subprocess", "multiprocessing", "pickle", "ctypes", "importlib")

# ---------------------------------------------------------------------------------------- dotted names

@dataclass(frozen=True)
class Refusal:
    rule: str
    why: str


def _refuse(rule: str, why: str, *names: str) -> dict[str, Refusal]:
    return {name: Refusal(rule, why) for name in names}


_OS_PROCESS = ["system", "popen", "fork", "forkpty", "kill", "killpg", "abort", "_exit", "register_at_fork",
               "setsid", "setpgid", "setpgrp", "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid",
               "setresuid", "setresgid", "setgroups", "initgroups", "nice", "setpriority", "sched_setaffinity",
               "sched_setscheduler", "sched_setparam", "chroot", "unshare", "setns", "plock", "pidfd_open",
               "wait", "waitpid", "wait3", "wait4", "waitid", "startfile", "posix_spawn", "posix_spawnp",
               "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", "spawnl", "spawnle",
               "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe"]

# Dotted prefixes refused whatever follows them (longest match wins).
REFUSED: dict[str, Refusal] = {
    **_refuse("process-network", _PROCESS, *(f"os.{n}" for n in _OS_PROCESS)),
    **_refuse("process-network", "changes the limits the harness set", "resource.setrlimit", "resource.prlimit"),
    **_refuse("file-write", "moves the working directory to a descriptor the checker cannot see", "os.fchdir"),
    **_refuse("process-network", "runs work in other processes", "concurrent.futures.ProcessPoolExecutor",
              "concurrent.futures.process", "torch.multiprocessing", "torch.distributed",
              "torch.utils.data.DataLoader2"),
    **_refuse("process-network", "downloads and runs code from the internet", "torch.hub", "torch.utils.model_zoo"),
    **_refuse("process-network", _NETWORK, "numpy.DataSource", "numpy.lib.npyio.DataSource",
              "logging.handlers.SocketHandler", "logging.handlers.DatagramHandler",
              "logging.handlers.SysLogHandler", "logging.handlers.HTTPHandler", "logging.handlers.SMTPHandler",
              "logging.handlers.NTEventLogHandler", "logging.handlers.QueueListener"),
    **_refuse("dynamic-access", "compiles and loads native code", "torch.utils.cpp_extension", "numpy.ctypeslib",
              "numpy.f2py", "numpy.distutils", "torch.ops.load_library", "torch.classes.load_library"),
    **_refuse("dynamic-access", "imports modules named by strings", "torch.ops.import_module", "logging.config",
              "typing.get_type_hints", "typing.ForwardRef", "codecs.register", "codecs.unregister"),
    **_refuse("dynamic-access", "reads the call stack (what is calling the model)", "traceback.extract_stack",
              "traceback.walk_stack", "traceback.format_stack", "traceback.print_stack", "traceback.StackSummary",
              "traceback.walk_tb", "threading.settrace", "threading.setprofile", "threading.settrace_all_threads",
              "threading.setprofile_all_threads", "threading._shutdown"),
    **_refuse("dynamic-access", "views arbitrary memory (numpy does not check the bounds)",
              "numpy.lib.stride_tricks.as_strided"),
    **_refuse("unsafe-deserialisation", "loads code", "torch.jit.load", "torch.package", "torch.export.load"),
    **_refuse("unsafe-deserialisation", "widens what torch.load may unpickle", "torch.serialization.add_safe_globals",
              "torch.serialization.safe_globals", "torch.serialization.register_package"),
    **_refuse("unsafe-deserialisation", "low-level .npy/.npz I/O that can unpickle; use numpy.save / numpy.load",
              "numpy.lib.format"),
    **_refuse("unsafe-deserialisation", _PICKLE, "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load",
              "yaml.full_load_all", "yaml.UnsafeLoader", "yaml.FullLoader", "yaml.Loader"),
    **_refuse("torch-override", "replaces torch's functions (where prepare's evaluation runs them too)",
              "torch.overrides", "torch.utils._python_dispatch", "torch._library",
              "torch._custom_op", "torch._custom_ops", "torch._decomp", "torch._prims", "torch._refs",
              "torch._subclasses", "torch.compiler.substitute_in_graph",
              "torch.nn.modules.module.register_module_forward_hook",
              "torch.nn.modules.module.register_module_forward_pre_hook",
              "torch.nn.modules.module.register_module_full_backward_hook",
              "torch.nn.modules.module.register_module_full_backward_pre_hook",
              "torch.nn.modules.module.register_module_backward_hook",
              "torch.nn.modules.module.register_module_buffer_registration_hook",
              "torch.nn.modules.module.register_module_module_registration_hook",
              "torch.nn.modules.module.register_module_parameter_registration_hook"),
}

# torch.library: defining operators in a namespace of the candidate's own is research (a fused
# Triton kernel); registering anything for torch's own namespaces replaces what prepare runs.
TORCH_LIBRARY_CALLS = frozenset({"torch.library.custom_op", "torch.library.triton_op", "torch.library.define",
                                 "torch.library.impl", "torch.library.register_fake", "torch.library.register_kernel",
                                 "torch.library.register_autograd", "torch.library.Library", "torch.library.opcheck",
                                 "torch.library.wrap_triton"})
TORCH_NAMESPACES = ("aten", "prims", "prim", "quantized", "_", "c10d", "profiler", "inductor", "higher_order",
                    "torch", "mkldnn", "rngprims")

# Private (`_x`) names of allowed modules that are documented or baseline knobs, not internals.
# A name is allowed when it is one of these, lies below one, or is a package above one
# (`import torch._dynamo`); entries ending in "_" are prefixes (torch._foreach_add_, ...).
PRIVATE_ALLOWED = ("torch._dynamo.config", "torch._inductor.config", "torch._functorch.config",
                   "torch._dynamo.reset", "torch._dynamo.mark_dynamic", "torch._dynamo.mark_static",
                   "torch._dynamo.maybe_mark_dynamic", "torch._dynamo.disable", "torch._dynamo.allow_in_graph",
                   "torch._dynamo.explain", "torch._foreach_", "torch._scaled_mm", "torch._int_mm",
                   "torch._assert", "torch._logging.set_logs")

# Configuration namespaces a candidate may assign to (`torch.backends.cudnn.benchmark = True`)...
SWITCH_PREFIXES = ("torch.backends.", "torch._dynamo.config.", "torch._inductor.config.",
                   "torch._functorch.config.", "torch.compiler.config.")
# ... except settings that name a program, a folder or a remote service the compiler will use.
SWITCH_REFUSED_PARTS = ("cxx", "dir", "path", "cmd", "executable", "binary", "compiler", "remote")

# Methods that change a container in place (on a module's attribute they patch the module).
MUTATING_METHODS = frozenset({"append", "extend", "insert", "update", "setdefault", "pop", "popitem", "clear",
                              "remove", "add", "discard", "__setitem__", "__delitem__"})

# ---------------------------------------------------------------------------------------- builtins

# Builtins that run code or expose namespaces; referring to them at all is refused.
DYNAMIC_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "globals", "locals", "breakpoint"})
# Builtins that are fine to call as written but must not be passed around (an alias would hide
# what they are applied to): the reflection builtins and the file opener.
DIRECT_ONLY_BUILTINS = frozenset({"getattr", "setattr", "delattr", "vars", "open"})
# Module-level dunder names that reach the interpreter (the rest, like __name__ or __file__, are data).
DUNDER_NAMES_REFUSED = frozenset({"__builtins__", "__import__", "__loader__", "__spec__", "__build_class__",
                                  "__dict__", "__class__"})
# Dunder attributes honest model code uses. Everything else (__globals__, __setattr__, __self__,
# __dict__, __subclasses__, __code__, __bases__, __doc__ ...) leads to the interpreter's internals
# or turns data into code.
DUNDER_ATTRS_ALLOWED = frozenset({"__init__", "__name__", "__qualname__", "__module__", "__version__",
                                  "__file__", "__class__", "__annotations__", "__len__", "__iter__", "__next__",
                                  "__enter__", "__exit__", "__call__", "__repr__", "__str__", "__getitem__",
                                  "__post_init__", "__contains__", "__hash__", "__eq__"})
# Strings naming a dunder are attribute names in waiting (getattr, setattr, type() dicts).
DUNDER_STRINGS_ALLOWED = DUNDER_ATTRS_ALLOWED | {"__main__"}
TORCH_OVERRIDE_DUNDERS = frozenset({"__torch_function__", "__torch_dispatch__"})

# ---------------------------------------------------------------------------------------- files

@dataclass(frozen=True)
class Opener:
    """A call that opens a file for reading or writing, depending on its mode argument."""
    path: tuple[int, str]                    # (position, keyword) of the path argument
    mode: tuple[int, str] | None             # (position, keyword) of the mode; None: always writes
    default: str | None = "r"                # the mode when the argument is absent
    reading: frozenset[str] = frozenset()    # modes that only read (else: no char of "wax+")

    def writes(self, mode: str) -> bool:
        if self.reading:
            return mode not in self.reading
        return bool(set(mode) & set("wax+"))


_MEMMAP_READING = frozenset({"r", "c", "readonly", "copyonwrite"})
OPENERS: dict[str, Opener] = {
    "open": Opener((0, "file"), (1, "mode")),
    "io.open": Opener((0, "file"), (1, "mode")),
    "io.FileIO": Opener((0, "file"), (1, "mode")),
    "codecs.open": Opener((0, "filename"), (1, "mode")),
    "gzip.open": Opener((0, "filename"), (1, "mode"), "rb"),
    "gzip.GzipFile": Opener((0, "filename"), (1, "mode"), "rb"),
    "bz2.open": Opener((0, "filename"), (1, "mode"), "rb"),
    "bz2.BZ2File": Opener((0, "filename"), (1, "mode")),
    "lzma.open": Opener((0, "filename"), (1, "mode"), "rb"),
    "lzma.LZMAFile": Opener((0, "filename"), (1, "mode")),
    "zipfile.ZipFile": Opener((0, "file"), (1, "mode")),
    "zipfile.PyZipFile": Opener((0, "file"), (1, "mode")),
    "tarfile.open": Opener((0, "name"), (1, "mode")),
    "tarfile.TarFile": Opener((0, "name"), (1, "mode")),
    "tarfile.TarFile.open": Opener((0, "name"), (1, "mode")),
    "numpy.memmap": Opener((0, "filename"), (2, "mode"), "r+", _MEMMAP_READING),
    "numpy.load": Opener((0, "file"), (1, "mmap_mode"), "r", _MEMMAP_READING),
    "numpy.fromfile": Opener((0, "file"), None, "r", frozenset({"r"})),
    "numpy.loadtxt": Opener((0, "fname"), None, "r", frozenset({"r"})),
    "numpy.genfromtxt": Opener((0, "fname"), None, "r", frozenset({"r"})),
    "torch.load": Opener((0, "f"), None, "r", frozenset({"r"})),
    "torch.from_file": Opener((0, "filename"), None, "r", frozenset({"r"})),
    "sqlite3.connect": Opener((0, "database"), None, "w"),
    "logging.FileHandler": Opener((0, "filename"), None, "a"),
    "logging.handlers.RotatingFileHandler": Opener((0, "filename"), None, "a"),
    "logging.handlers.TimedRotatingFileHandler": Opener((0, "filename"), None, "a"),
    "logging.handlers.WatchedFileHandler": Opener((0, "filename"), None, "a"),
}
# Readers whose mode lives elsewhere: a `mode=None` opener with "r" default and reading {"r"}
# always reads (listed so that their path is judged as a read: /proc/self/mem, the home folder).
# Every argument listed is a path that the call creates, replaces, moves or deletes.
_OS_ONE_PATH = ("remove", "unlink", "rmdir", "removedirs", "mkdir", "makedirs", "truncate", "chmod", "chown",
                "lchown", "lchmod", "utime", "mkfifo", "mknod", "chdir", "setxattr", "removexattr", "chflags",
                "lchflags")
PATH_WRITERS: dict[str, tuple[tuple[int, str], ...]] = {
    **{f"os.{n}": ((0, "path"),) for n in _OS_ONE_PATH},
    **{f"os.{n}": ((0, "src"), (1, "dst")) for n in ("rename", "renames", "replace", "link", "symlink")},
    "torch.save": ((1, "f"),),
    "torch.jit.save": ((1, "f"),),
    "torch.export.save": ((1, "f"),),
    "torch.onnx.export": ((2, "f"),),
    "torch.profiler.tensorboard_trace_handler": ((0, "dir_name"),),
    **{f"numpy.{n}": ((0, "file"),) for n in ("save", "savez", "savez_compressed")},
    "numpy.savetxt": ((0, "fname"),),
    **{f"shutil.{n}": ((1, "dst"),) for n in ("copy", "copy2", "copyfile", "copytree", "copymode", "copystat")},
    "shutil.move": ((0, "src"), (1, "dst")),
    "shutil.rmtree": ((0, "path"),),
    "shutil.chown": ((0, "path"),),
    "shutil.make_archive": ((0, "base_name"),),
}
# Hub repositories kernels.get_kernel may load native code from (the baseline's FA3 kernels; a
# baseline naming others adds them).
KERNEL_REPOSITORIES = frozenset({"varunneal/flash-attention-3", "kernels-community/flash-attn3"})
# Copies land at dst/basename(src) when dst is a folder: both places are judged.
COPIES = frozenset({"shutil.copy", "shutil.copy2", "shutil.move", "shutil.copytree"})
# Calls that remove or replace what is there (the folder itself is off limits for these).
DESTRUCTIVE = frozenset({"os.remove", "os.unlink", "os.rmdir", "os.removedirs", "os.rename", "os.renames",
                         "os.replace", "os.truncate", "os.chmod", "os.chown", "shutil.rmtree", "shutil.move",
                         "unlink", "rmdir", "rename", "replace", "chmod"})
# Calls that create a file in the temporary folder unless `dir=` says where.
TEMPFILES = frozenset({"tempfile.mkstemp", "tempfile.mkdtemp", "tempfile.NamedTemporaryFile",
                       "tempfile.TemporaryFile", "tempfile.SpooledTemporaryFile", "tempfile.TemporaryDirectory"})
# Calls that write whatever their arguments are: archive members choose their own paths.
ALWAYS_WRITES = frozenset({"shutil.unpack_archive"})
ARCHIVE_EXTRACT_METHODS = frozenset({"extractall", "extract"})
# Path methods (pathlib, ndarray, profiler): the receiver (or the first argument) is written.
PATH_METHODS_RECEIVER = frozenset({"write_text", "write_bytes", "touch", "mkdir", "unlink", "rmdir", "chmod",
                                   "lchmod"})
PATH_METHODS_BOTH = frozenset({"symlink_to", "hardlink_to", "link_to"})
PATH_METHODS_ARGUMENT = frozenset({"tofile", "dump", "export_chrome_trace", "export_stacks",
                                   "export_memory_timeline", "savefig"})
PATH_METHODS_READ = frozenset({"read_text", "read_bytes"})
PATH_CLASSES = ("pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.PurePosixPath")
# Methods that write wherever their receiver or argument points (taken as values, they hide that).
WRITE_METHODS = PATH_METHODS_RECEIVER | PATH_METHODS_BOTH | PATH_METHODS_ARGUMENT | ARCHIVE_EXTRACT_METHODS
# Openers whose first argument may be a file descriptor instead of a path.
FD_OPENERS = frozenset({"open", "io.open", "io.FileIO", "os.fdopen"})
# Listing folders: outside the candidate's own, that is looking for prepare's data.
LISTERS: dict[str, tuple[int, str]] = {
    "os.listdir": (0, "path"), "os.scandir": (0, "path"), "os.walk": (0, "top"), "os.fwalk": (0, "top"),
    "glob.glob": (0, "pathname"), "glob.iglob": (0, "pathname"),
}
LISTING_METHODS = frozenset({"iterdir", "glob", "rglob", "walk"})
# File descriptors: writes and reads through an fd the candidate did not open itself.
# call -> positions of descriptors it writes / reads
FD_WRITERS = {"os.write": (0,), "os.pwrite": (0,), "os.writev": (0,), "os.ftruncate": (0,), "os.dup2": (1,),
              "os.sendfile": (0,), "os.fchmod": (0,), "os.fchown": (0,), "os.copy_file_range": (1,),
              "os.splice": (1,)}
FD_READERS = {"os.read": (0,), "os.pread": (0,), "os.readv": (0,), "os.fdopen": (0,), "os.dup": (0,),
              "os.fstat": (0,), "os.lseek": (0,), "os.close": (0,), "os.closerange": (0,), "os.sendfile": (1,),
              "os.copy_file_range": (0,), "os.splice": (0,), "os.dup2": (0,)}

# Inside the candidate's folder, names that belong to the harness or that Python imports.
WORKSPACE_FILES = frozenset({".harness", "result.json", "run.log", "prepare.py", "harness.py", "statuses.py",
                             "presets.py", "candidate.json", "requirements.txt", "train.py", "stop.json"})
IMPORTED_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".pyw", ".pyz", ".so", ".pth", ".egg-link", ".dylib")
IMPORTED_NAMES = frozenset({"__pycache__", "sitecustomize", "usercustomize", "__init__", "__main__"})
STREAM_PATHS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})

# ---------------------------------------------------------------------------------------- data and environment

# Strings that only make sense for reaching prepare's data or its settings. Matched on string
# values; a path component ".cache" or "autoresearch" also counts (Path.home() / ".cache" / ...).
DATA_MARKERS = ("climbmix", ".parquet", "/opt/ml/input", "AUTORESEARCH")
DATA_PATH_COMPONENTS = frozenset({".cache", "autoresearch"})
VAL_SPLITS = frozenset({"val", "valid", "validation", "test", "eval"})
# Environment variables a candidate must not change: prepare's settings, what loaders and compilers
# of other processes read (PYTHONPATH, LD_PRELOAD, PATH, CC), which GPUs it gets, how torch.load
# unpickles, and any variable naming a folder or program other code will use.
ENV_PROTECTED_PREFIXES = ("AUTORESEARCH", "PYTHON", "LD_", "DYLD_", "TORCH_FORCE_", "SM_", "TRITON_")
ENV_PROTECTED = frozenset({"PATH", "CC", "CXX", "HOME", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                           "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "TMPDIR"})
ENV_PROTECTED_SUFFIXES = ("PATH", "_DIR", "_HOME", "_ROOT")
HOME_VARIABLES = frozenset({"HOME", "USERPROFILE", "XDG_CACHE_HOME", "XDG_DATA_HOME", "HF_HOME"})


ENV_READS = frozenset({"os.getenv", "os.environ.get", "os.environb.get", "os.getenvb", "os.environ.__getitem__",
                       "os.environ.__contains__", "os.environb.__getitem__"})
ENV_WRITES = frozenset({"os.environ.setdefault", "os.putenv", "os.environ.pop", "os.unsetenv", "os.environb.pop",
                        "os.environb.setdefault"})
ENV_WHOLE = frozenset({"os.environ.items", "os.environ.keys", "os.environ.values", "os.environ.copy",
                       "os.environ.clear", "os.environ.popitem", "os.environ.__iter__", "os.environb.items",
                       "os.environb.keys", "os.environb.values", "os.environb.copy"})

# Loading and processes.
SAFE_LOADERS = frozenset({"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"})
DATALOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})
WORKER_KEYWORDS = frozenset({"num_workers", "multiprocessing_context", "worker_init_fn", "persistent_workers",
                             "prefetch_factor"})


def env_key_problem(key: str) -> str | None:
    if key in ENV_PROTECTED or key.startswith(ENV_PROTECTED_PREFIXES) or key.endswith(ENV_PROTECTED_SUFFIXES) \
            or "CACHE" in key:
        return f"{key!r} is read by the harness, prepare, the compilers or other processes"
    return None


# ---------------------------------------------------------------------------------------- policy

@dataclass(frozen=True)
class Baseline:
    """What the baseline train.py itself does, which candidates may do too."""
    modules: frozenset[str] = frozenset()           # top-level modules it imports
    prepare_names: frozenset[str] = frozenset()     # names it imports from prepare
    uses: frozenset[str] = frozenset()              # dotted names it refers to (sys.exit, torch._foreach_copy_)
    strings: frozenset[str] = frozenset()           # its string literals (the kernel repositories it names)

    @property
    def allowed_prepare_names(self) -> frozenset[str]:
        return PREPARE_EXPORTS | self.prepare_names


def module_problem(top: str, baseline: Baseline) -> str | None:
    """Why importing top-level module `top` is not allowed, or None when it is. What the baseline
    imports is allowed (an incumbent used as the baseline passed this check itself, so the policy
    never widens beyond the project's own train.py)."""
    if top in baseline.modules:
        return None
    if top in DENIED_MODULES:
        return f"'{top}' {DENIED_MODULES[top]}"
    if top in TRAINING_PACKAGES or top in ALLOWED_STDLIB:
        return None
    if top.startswith("_"):
        return f"'{top}' is a private interpreter module"
    if top in sys.stdlib_module_names:
        return (f"'{top}' is not among the standard-library modules a training script needs "
                "(computation, text, time, typing, files); ask for it to be added if it is harmless")
    return (f"'{top}' is a new dependency; allowed: the baseline's imports, the standard library, "
            f"and {', '.join(sorted(TRAINING_PACKAGES))}")


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def reference_problem(dotted: str, baseline: Baseline) -> Refusal | None:
    """Why a reference to the import-rooted name `dotted` (`torch.hub.load`, `sys.modules`) is not
    allowed, or None. Dunder parts are judged elsewhere (dunder-access)."""
    if dotted in baseline.uses:
        return None
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        refusal = REFUSED.get(".".join(parts[:end]))
        if refusal is not None:
            return refusal
    if dotted.startswith("torch.library.") and ".".join(parts[:3]) not in TORCH_LIBRARY_CALLS:
        return Refusal("torch-override", "registers or replaces torch operators")
    allowed = MEMBER_ALLOW_LISTS.get(parts[0])
    if allowed is not None and len(parts) > 1 and parts[1] not in allowed \
            and f"{parts[0]}.{parts[1]}" not in baseline.uses:
        return Refusal("dynamic-access", f"{parts[0]}.{parts[1]} is not among the {parts[0]} names a training "
                       f"script may use ({', '.join(sorted(allowed)[:8])}, ...)")
    for index, part in enumerate(parts[1:], 1):
        if not _is_dunder(part) and (part in MODULE_ATTRIBUTE_NAMES or any(p in part for p in MODULE_ATTRIBUTE_PARTS)):
            return Refusal("dynamic-access", f"reaches the '{part}' module through {'.'.join(parts[:index])}; "
                           f"import what you need directly")
        if part.startswith("_") and not _is_dunder(part) and not _private_allowed(dotted, baseline):
            return Refusal("dynamic-access", f"{'.'.join(parts[:index + 1])} is a private internal of "
                           f"{'.'.join(parts[:index])}")
    return None


def _private_allowed(dotted: str, baseline: Baseline) -> bool:
    for allowed in (*PRIVATE_ALLOWED, *baseline.uses):
        if allowed.endswith("_") and dotted.startswith(allowed):
            return True
        if dotted == allowed or dotted.startswith(allowed + ".") or allowed.startswith(dotted + "."):
            return True
    return False


def switch_allowed(dotted: str) -> bool:
    """Is assigning to `dotted` flipping a documented configuration switch?"""
    if not dotted.startswith(SWITCH_PREFIXES) or any(_is_dunder(part) for part in dotted.split(".")):
        return False
    prefix = next(p for p in SWITCH_PREFIXES if dotted.startswith(p))
    setting = dotted[len(prefix):].lower()
    return bool(setting) and not any(part in setting for part in SWITCH_REFUSED_PARTS)


# ---------------------------------------------------------------------------------------- the baseline

@lru_cache(maxsize=8)
def baseline_policy(baseline_source: str | None) -> Baseline:
    """What `baseline_source` imports and refers to (None: the defaults, which accept the project's
    baseline train.py as written for either version of the prepare contract)."""
    if baseline_source is None:
        return Baseline(prepare_names=PREPARE_EXPORTS)
    try:
        module = cst.parse_module(baseline_source)
    except cst.ParserSyntaxError as exc:
        raise ValueError(f"baseline train.py does not parse: {exc.message}") from None
    reader = _BaselineReader()
    module.visit(reader)
    return Baseline(frozenset(reader.modules - {PREPARE_MODULE}), frozenset(reader.prepare_names),
                    frozenset(reader.uses), frozenset(reader.strings))


def dotted_name(node: cst.CSTNode | None) -> str | None:
    """`a.b.c` of a Name/Attribute chain as written; None for anything else."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted_name(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


class _BaselineReader(cst.CSTVisitor):
    """Imports, prepare names and import-rooted dotted names of the baseline (one libcst visit)."""

    def __init__(self):
        super().__init__()
        self.modules: set[str] = set()
        self.prepare_names: set[str] = set()
        self.aliases: dict[str, str] = {}
        self.chains: list[str] = []
        self.strings: set[str] = set()

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        value = node.evaluated_value
        if isinstance(value, str) and "/" in value and len(value) < 200:
            self.strings.add(value)

    def visit_Import(self, node: cst.Import) -> None:
        for a in node.names:
            name = a.evaluated_name
            top = name.split(".")[0]
            self.modules.add(top)
            self.aliases[a.evaluated_alias or top] = name if a.asname else top

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = dotted_name(node.module)
        top = module.split(".")[0]
        for a in node.names:
            if top == PREPARE_MODULE:
                self.prepare_names.add(a.evaluated_name)
            else:
                self.modules.add(top)
                self.aliases[a.evaluated_alias or a.evaluated_name] = f"{module}.{a.evaluated_name}"

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        chain = dotted_name(node)
        if chain is None:
            return True
        self.chains.append(chain)
        return False

    @property
    def uses(self) -> set[str]:
        out = set()
        for chain in self.chains:
            head, _, rest = chain.partition(".")
            target = self.aliases.get(head)
            if target is not None:
                out.add(f"{target}.{rest}")
        return out
