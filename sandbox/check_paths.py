"""Where a path lands: the file-write rule judges a write by its target, not by the call's name.

`PathReader.places(node, scope)` evaluates a path expression to the places it can denote, or None
when a piece of it is beyond the checker's sight. It understands what honest code writes:
string literals (bytes too), f-strings and `%`/`.format()` templates, `+`, `os.path.join`,
`pathlib.Path(...)` and `/`, `.parent`, `os.path.dirname/abspath/realpath`, `.with_suffix`,
`__file__`, `os.getcwd()`, and names bound to any of those (through sandbox/check_flow.py: a
helper's parameter is judged by the arguments at its call sites). A piece interpolated into a
name must be a number (a loop counter, `{step:05d}`), one of a few known strings, or a literal:
an unknown string could hold `/../../`.

A write is inside when it lands below the candidate's folder (the working directory, which is
also the folder of `__file__`), and not on a file the harness owns or that Python imports or
runs (`*.py`, `*.pth`, `sitecustomize`, `__pycache__`, ...). Everything else is refused:
absolute paths, `~` and the home folder (prepare's cache), `..` above the folder, the folder's
siblings (`dirname(__file__) + "x"`), and paths built from values the checker cannot see.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import libcst as cst

from sandbox.check_flow import Flow, Scope
from sandbox.check_policy import (HOME_VARIABLES, IMPORTED_NAMES, IMPORTED_SUFFIXES, OPENERS, PRESET_VALUES,
                                  STREAM_PATHS, WORKSPACE_FILES)
from sandbox.check_values import Values, as_text, constant_string, fstring_text, literal, spec_is_numeric

MAX_PLACES = 16

_PATH_CTORS = frozenset({"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.PurePosixPath"})
_SAME_PATH = frozenset({"os.path.abspath", "os.path.realpath", "os.path.normpath", "os.fspath", "str",
                        "os.path.normcase"})
_SAME_PATH_METHODS = frozenset({"resolve", "absolute", "as_posix", "expanduser", "__fspath__"})
_MEMORY = frozenset({"io.BytesIO", "io.StringIO"})
_STREAMS = frozenset({"sys.stdout", "sys.stderr", "os.devnull", "sys.__stdout__", "sys.__stderr__"})
_TEMP_DIRS = frozenset({"tempfile.gettempdir", "tempfile.gettempdirb", "tempfile.mkdtemp"})
_HANDLE_FUNCTIONS = frozenset({"os.open", "os.pipe", "os.dup", "os.openpty", "os.memfd_create", "tempfile.mkstemp"})
_SENSITIVE_READ = re.compile(r"^/(proc/(self|thread-self|\d+)/(?!(status|statm|stat|io|limits|cgroup)$)"
                             r"|proc/(self|thread-self|\d+)/?$|dev/(fd|mem|kmem|port)(/|$))")
_LISTABLE_SYSTEM = ("/proc", "/sys", "/dev")
_READABLE_SYSTEM = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/share/")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OS_CONSTANTS = {"os.sep": None, "os.curdir": None, "os.pardir": None}   # filled below (Place is defined later)


@dataclass(frozen=True)
class Place:
    anchor: str      # cwd | folder | abs | home | stream | memory | handle
    text: str = ""   # cwd: relative path; folder: what follows the folder's absolute path; abs: the path;
                     # home: what follows the home folder


_OS_CONSTANTS.update({"os.sep": Place("abs", "/"), "os.curdir": Place("cwd", "."), "os.pardir": Place("cwd", ".."),
                      "os.path.sep": Place("abs", "/"), "os.path.curdir": Place("cwd", "."),
                      "os.path.pardir": Place("cwd", "..")})


class PathReader:
    def __init__(self, flow: Flow, values: Values, dotted: Callable[[cst.CSTNode, Scope], str | None]):
        self.flow = flow
        self.values = values
        self.dotted = dotted

    # ------------------------------------------------------------------ evaluation
    def places(self, node: cst.CSTNode | None, scope: Scope, depth: int = 0) -> list[Place] | None:
        if node is None or depth > 10:
            return None
        text = as_text(literal(node))
        if text is not None:
            return [_from_text(text)]
        if isinstance(node, cst.FormattedString):
            return self._fstring(node, scope, depth)
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.Add):
                return self._concat([node.left, node.right], scope, depth)
            if isinstance(node.operator, cst.Divide):
                return self._join(node.left, [node.right], scope, depth)
            if isinstance(node.operator, cst.Modulo):
                return self._template(node.left, _modulo_args(node.right), scope, depth, "%")
            return None
        if isinstance(node, cst.Call):
            return self._call(node, scope, depth)
        if isinstance(node, cst.Attribute):
            return self._attribute(node, scope, depth)
        if isinstance(node, (cst.IfExp, cst.BooleanOperation)):
            parts = [node.body, node.orelse] if isinstance(node, cst.IfExp) else [node.left, node.right]
            return self._union([self.places(p, scope, depth + 1) for p in parts])
        if isinstance(node, cst.Subscript):
            if self.dotted(node.value, scope) in ("os.environ", "os.environb"):
                key = node.slice[0].slice if len(node.slice) == 1 else None
                if isinstance(key, cst.Index) and constant_string(key.value) in HOME_VARIABLES:
                    return [Place("home", "")]
                return None
            return self._element(node.value, scope, depth)
        if isinstance(node, cst.Name):
            return self._name(node, scope, depth)
        return None

    def _name(self, node: cst.Name, scope: Scope, depth: int) -> list[Place] | None:
        leaves = self.flow.origins(node, scope)
        if not leaves:
            return None
        out: list[list[Place] | None] = []
        for leaf in leaves:
            if leaf.kind == "free":
                out.append([Place("folder", "/train.py")] if leaf.node.value == "__file__" else None)
            elif leaf.kind == "numeric":
                out.append([Place("cwd", "0")])
            elif leaf.kind == "import":
                out.append(self._imported(leaf.extra))
            elif leaf.kind == "expr":
                if isinstance(leaf.node, cst.Name):
                    out.append(None)
                elif self.values.numeric(leaf.node, leaf.scope):
                    out.append([Place("cwd", "0")])
                else:
                    out.append(self.places(leaf.node, leaf.scope, depth + 1))
            else:
                out.append(None)
        return self._union(out)

    def _imported(self, dotted: str | None) -> list[Place] | None:
        if dotted in _STREAMS:
            return [Place("stream")]
        if dotted in _OS_CONSTANTS:
            return [_OS_CONSTANTS[dotted]]
        if dotted == "prepare.PRESET":
            return [Place("cwd", preset) for preset in PRESET_VALUES]
        return None

    def _piece(self, node: cst.CSTNode, scope: Scope, depth: int) -> list[Place] | None:
        """A piece of a name being built: a literal (kept as text: "/x" after a folder is no
        absolute path), a number, or a path-like value."""
        text = as_text(literal(node))
        if text is not None:
            return [Place("cwd", text)]
        if self.values.numeric(node, scope) or self._stamp(node, scope):
            return [Place("cwd", "0")]
        return self.places(node, scope, depth + 1)

    def _stamp(self, node: cst.CSTNode, scope: Scope, depth: int = 0) -> bool:
        """A time stamp or a hash (strftime of a literal format, isoformat(), hexdigest(), uuid hex):
        no path separators, never a name made of dots only."""
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            method = node.func.attr.value
            if method in ("isoformat", "hexdigest"):
                return True
            if method == "strftime" and node.args:
                fmt = constant_string(node.args[0].value)
                return fmt is not None and "/" not in fmt and not {"%D", "%x", "%c"} & set(re.findall(r"%.", fmt))
            return False
        if isinstance(node, cst.Attribute):
            return node.attr.value == "hex"
        if isinstance(node, cst.Name) and depth < 4:
            leaves = self.flow.origins(node, scope)
            return bool(leaves) and all(leaf.kind == "expr" and self._stamp(leaf.node, leaf.scope, depth + 1)
                                        for leaf in leaves)
        return False

    def _fstring(self, node: cst.FormattedString, scope: Scope, depth: int) -> list[Place] | None:
        pieces: list[list[Place] | None] = []
        for part in node.parts:
            if isinstance(part, cst.FormattedStringText):
                pieces.append([Place("cwd", fstring_text(part, node.start))])
            elif spec_is_numeric(part.format_spec):
                pieces.append([Place("cwd", "0")])
            else:
                pieces.append(self._piece(part.expression, scope, depth))
        return self._combine(pieces)

    def _concat(self, nodes, scope: Scope, depth: int) -> list[Place] | None:
        return self._combine([self._piece(n, scope, depth) for n in nodes])

    def _template(self, template: cst.CSTNode, args: list[cst.CSTNode] | None, scope: Scope, depth: int,
                  style: str) -> list[Place] | None:
        text = constant_string(template)
        if text is None or args is None:
            return None
        pattern = r"%[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]" if style == "%" else r"\{[^{}]*\}"
        literals = re.split(pattern, text)
        holes = re.findall(pattern, text)
        if len(holes) != len(args):
            return None
        pieces: list[list[Place] | None] = [[Place("cwd", literals[0])]]
        for hole, arg, after in zip(holes, args, literals[1:]):
            numeric_hole = hole[-1] in "dfegxi" if style == "%" else hole.rstrip("}")[-1:] in "dfegx%"
            pieces.append([Place("cwd", "0")] if numeric_hole else self._piece(arg, scope, depth))
            pieces.append([Place("cwd", after)])
        return self._combine(pieces)

    def _combine(self, pieces: list[list[Place] | None]) -> list[Place] | None:
        """The places a string built from these pieces (in order) can be."""
        if not pieces or any(p is None for p in pieces):
            return None
        results = pieces[0]
        for piece in pieces[1:]:
            combined = []
            for a in results:
                for b in piece:
                    if b.anchor != "cwd" or a.anchor in ("stream", "memory", "handle"):
                        return None    # a path in the middle of a name: not something honest code builds
                    combined.append(Place(a.anchor, a.text + b.text))
            if len(combined) > MAX_PLACES:
                return None
            results = combined
        return [_from_text(p.text) if p.anchor == "cwd" else p for p in results]

    def _join(self, base: cst.CSTNode, pieces, scope: Scope, depth: int) -> list[Place] | None:
        results = self.places(base, scope, depth + 1)
        for piece in pieces:
            tail = self._piece(piece, scope, depth)
            if results is None or tail is None:
                return None
            results = [_joined(a, b) for a in results for b in tail]
            if any(r is None for r in results) or len(results) > MAX_PLACES:
                return None
        return results

    def _call(self, node: cst.Call, scope: Scope, depth: int) -> list[Place] | None:
        name = self.dotted(node.func, scope)
        args = [a.value for a in node.args if a.keyword is None and not a.star]
        if any(a.star for a in node.args):
            return None
        if name == "os.path.join" and args:
            return self._join(args[0], args[1:], scope, depth)
        if name in _PATH_CTORS:
            return self._join(args[0], args[1:], scope, depth) if args else [Place("cwd", "")]
        if name in _SAME_PATH and len(args) == 1:
            return self.places(args[0], scope, depth + 1)
        if name == "os.path.expanduser" and len(args) == 1:
            return self._mapped(self.places(args[0], scope, depth + 1), _expanded)
        if name == "os.path.dirname" and len(args) == 1:
            return self._mapped(self.places(args[0], scope, depth + 1), _parent)
        if name == "os.path.basename" and len(args) == 1:
            return self._mapped(self.places(args[0], scope, depth + 1), _basename)
        if name in ("os.getcwd", "os.getcwdb", "pathlib.Path.cwd"):
            return [Place("folder", "")]
        if name in ("pathlib.Path.home",) or self._home_variable(node, name):
            return [Place("home", "")]
        if name in _TEMP_DIRS:
            return [Place("abs", "/tmp")]
        if name in _MEMORY:
            return [Place("memory")]
        if name in _HANDLE_FUNCTIONS or name in OPENERS:
            return [Place("handle")]
        if isinstance(node.func, cst.Attribute):
            return self._method(node, args, scope, depth)
        returned = self.flow.returned(node, scope)
        if not returned:
            return None
        return self._union([self.places(leaf.node, leaf.scope, depth + 1) if leaf.kind == "expr" else None
                            for leaf in returned])

    def _home_variable(self, node: cst.Call, name: str | None) -> bool:
        if name not in ("os.getenv", "os.environ.get") or not node.args:
            return False
        return constant_string(node.args[0].value) in HOME_VARIABLES

    def _method(self, node: cst.Call, args, scope: Scope, depth: int) -> list[Place] | None:
        method = node.func.attr.value
        receiver = node.func.value
        if method == "fileno":
            return [Place("handle")]
        if method in ("format", "join") and constant_string(receiver) is not None:
            if method == "format":
                if any(a.keyword is not None for a in node.args):
                    return None
                return self._template(receiver, args, scope, depth, "{}")
            if len(args) == 1 and isinstance(args[0], (cst.List, cst.Tuple)):
                sep = constant_string(receiver)
                elements = [e.value for e in args[0].elements]
                pieces: list[list[Place] | None] = []
                for i, element in enumerate(elements):
                    if i:
                        pieces.append([Place("cwd", sep)])
                    pieces.append(self._piece(element, scope, depth))
                return self._combine(pieces) if pieces else [Place("cwd", "")]
            return None
        if method in _SAME_PATH_METHODS and not args:
            base = self.places(receiver, scope, depth + 1)
            return self._mapped(base, _expanded) if method == "expanduser" else base
        if method == "joinpath":
            return self._join(receiver, args, scope, depth)
        if method in ("with_name", "with_suffix", "with_stem") and len(args) == 1:
            new = constant_string(args[0])
            if new is None or "/" in new:
                return None
            return self._mapped(self.places(receiver, scope, depth + 1), lambda p: _renamed(p, method, new))
        returned = self.flow.returned(node, scope)
        if not returned:
            return None
        return self._union([self.places(leaf.node, leaf.scope, depth + 1) if leaf.kind == "expr" else None
                            for leaf in returned])

    def _attribute(self, node: cst.Attribute, scope: Scope, depth: int) -> list[Place] | None:
        name = self.dotted(node, scope)
        if name in _STREAMS:
            return [Place("stream")]
        if name in _OS_CONSTANTS:
            return [_OS_CONSTANTS[name]]
        if node.attr.value == "parent":
            return self._mapped(self.places(node.value, scope, depth + 1), _parent)
        if node.attr.value == "name":
            return self._mapped(self.places(node.value, scope, depth + 1), _basename)
        if name is None and node.attr.value in self.flow.fields:     # self.out_dir = Path(__file__).parent / ...
            return self._union([self.places(value, owner, depth + 1) if value is not None else None
                                for value, owner in self.flow.fields[node.attr.value]])
        return None

    def _element(self, container: cst.CSTNode, scope: Scope, depth: int) -> list[Place] | None:
        """Any element of a literal list/tuple/dict (whatever the index: the index is a number the
        checker does not read); nothing when the literal is changed in place somewhere."""
        if id(container) in self.flow.mutated:
            return None
        if isinstance(container, (cst.List, cst.Tuple)):
            return self._union([self.places(e.value, scope, depth + 1) for e in container.elements])
        if isinstance(container, cst.Dict):
            return self._union([self.places(e.value, scope, depth + 1) if isinstance(e, cst.DictElement) else None
                                for e in container.elements])
        if isinstance(container, cst.Name):
            leaves = self.flow.origins(container, scope)
            if not leaves:
                return None
            return self._union([self._element(leaf.node, leaf.scope, depth + 1) if leaf.kind == "expr" else None
                                for leaf in leaves])
        return None

    @staticmethod
    def _union(parts: list[list[Place] | None]) -> list[Place] | None:
        if not parts or any(p is None for p in parts):
            return None
        out = [place for part in parts for place in part]
        return out if len(out) <= MAX_PLACES else None

    @staticmethod
    def _mapped(places: list[Place] | None, fn) -> list[Place] | None:
        if places is None:
            return None
        out = [fn(p) for p in places]
        return None if any(p is None for p in out) else out


def _modulo_args(node: cst.CSTNode) -> list[cst.CSTNode] | None:
    if isinstance(node, cst.Tuple):
        if any(isinstance(e, cst.StarredElement) for e in node.elements):
            return None
        return [e.value for e in node.elements]
    return [node]


def _from_text(text: str) -> Place:
    if text in STREAM_PATHS:
        return Place("stream")
    if text.startswith("/"):
        return Place("abs", text)
    if _URL.match(text):
        return Place("url", text)
    return Place("cwd", text)


def _joined(base: Place, piece: Place) -> Place | None:
    if piece.anchor in ("abs", "home", "folder"):
        return piece                       # joining an absolute piece discards the base
    if piece.anchor != "cwd" or base.anchor in ("stream", "memory", "handle"):
        return None
    if piece.text.startswith("/"):
        return Place("abs", piece.text)
    if not base.text:
        return Place(base.anchor, ("/" if base.anchor == "folder" else "") + piece.text)
    separator = "" if base.text.endswith("/") or not piece.text else "/"
    return Place(base.anchor, base.text + separator + piece.text)


def _expanded(place: Place) -> Place:
    if place.anchor == "cwd" and place.text.startswith("~"):
        return Place("home", place.text[1:])
    return place


def _parent(place: Place) -> Place | None:
    if place.anchor not in ("cwd", "folder", "abs", "home"):
        return None
    parts = _parts(place.text)
    if parts is None:                      # already above its start: stays above
        return Place(place.anchor, place.text + "/..")
    if not parts:                          # the anchor itself: its parent is above it
        return {"abs": Place("abs", "/"), "cwd": Place("cwd", "..")}.get(place.anchor, Place(place.anchor, "/.."))
    rest = "/".join(parts[:-1])
    if place.anchor == "cwd":
        return Place("cwd", rest)
    return Place(place.anchor, "/" + rest if rest else ("/" if place.anchor == "abs" else ""))


def _basename(place: Place) -> Place | None:
    if place.anchor not in ("cwd", "folder", "abs", "home"):
        return None
    return Place("cwd", place.text.rstrip("/").rsplit("/", 1)[-1])


def _renamed(place: Place, method: str, new: str) -> Place | None:
    if place.anchor not in ("cwd", "folder", "abs", "home"):
        return None
    head, _, last = place.text.rpartition("/")
    if method == "with_name":
        last = new
    elif method == "with_suffix":
        stem = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
        last = stem + new
    else:
        suffix = "." + last.rsplit(".", 1)[1] if "." in last.lstrip(".") else ""
        last = new + suffix
    return Place(place.anchor, f"{head}/{last}" if head or place.text.startswith("/") else last)


def _parts(text: str) -> list[str] | None:
    """Normalised components of a relative path; None when '..' climbs above its start."""
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return parts


# ---------------------------------------------------------------------------------------- verdicts

def write_problem(place: Place, destructive: bool = False) -> str | None:
    """Why writing at `place` leaves the candidate's own files (None: it does not)."""
    if place.anchor in ("stream", "memory", "handle"):
        return None
    if place.anchor == "url":
        return f"sends data to {place.text[:40]!r} over the network"
    if place.anchor == "home" or (place.anchor == "cwd" and place.text.startswith("~")):
        return "lands in the home folder (where prepare's data and caches live)"
    if place.anchor == "abs" or (place.anchor == "cwd" and place.text.startswith("/")):
        if place.text in STREAM_PATHS:
            return None
        return f"lands at the absolute path {place.text!r}, outside the candidate's folder"
    if place.anchor == "folder" and place.text and not place.text.startswith("/"):
        return "lands next to the candidate's folder, not inside it (a separator is missing)"
    parts = _parts(place.text)
    if parts is None:
        return "climbs above the candidate's folder ('..')"
    if not parts:
        return "is the candidate's folder itself" if destructive else None
    if parts[0] in WORKSPACE_FILES:
        return f"touches '{parts[0]}', which belongs to the harness; use a name of your own"
    for part in parts:
        if part in IMPORTED_NAMES or part.split(".")[0] in ("sitecustomize", "usercustomize"):
            return f"touches '{part}', which Python imports or runs; use a name of your own"
    if parts[-1].lower().endswith(IMPORTED_SUFFIXES):
        return (f"writes '{parts[-1]}', a file Python can import or run (a module, an extension, a .pth); "
                "use a data suffix such as .pt, .json or .txt")
    return None


def read_problem(place: Place) -> tuple[str, str] | None:
    """(rule, why) for reading at `place`. A candidate reads its own folder and system
    information (/proc, /sys, /dev, /etc, /usr/share); anything else outside is someone else's
    data: prepare's cache, other candidates' checkpoints, or the Python installation, whose
    source files are the cpu and micro presets' training AND validation text."""
    if place.anchor == "home" or (place.anchor == "cwd" and place.text.startswith("~")):
        return "val-split", "reads from the home folder, where prepare's data and caches live"
    if place.anchor == "url":
        return "process-network", f"reads {place.text[:40]!r} over the network"
    if place.anchor == "abs" or (place.anchor == "cwd" and place.text.startswith("/")):
        if _SENSITIVE_READ.match(place.text):
            return "dynamic-access", (f"reads {place.text!r}: the process's own memory, file descriptors or "
                                      "environment (where the harness's channel and prepare's key live)")
        if place.text in STREAM_PATHS or place.text.startswith(_READABLE_SYSTEM):
            return None
        return "val-split", (f"reads {place.text[:50]!r}, outside the candidate's folder (prepare's data, other "
                             "candidates' files, the Python installation whose source is the cpu presets' data)")
    if place.anchor == "folder" and place.text and not place.text.startswith("/"):
        return "val-split", "reads next to the candidate's folder, outside it"
    if place.anchor in ("cwd", "folder") and _parts(place.text) is None:
        return "val-split", "reads above the candidate's folder ('..': other candidates' files, prepare's data)"
    return None


def listing_problem(place: Place) -> str | None:
    if place.anchor == "home":
        return "lists the home folder, where prepare's data and caches live"
    if place.anchor == "abs" and not place.text.startswith(_LISTABLE_SYSTEM):
        return f"lists {place.text!r}, outside the candidate's folder (looking for prepare's data?)"
    if place.anchor in ("cwd", "folder") and _parts(place.text.lstrip("/") if place.anchor == "folder"
                                                    else place.text) is None:
        return "lists folders above the candidate's own (looking for prepare's data?)"
    return None


def landing(destination: Place, source: Place) -> Place | None:
    """Where a copy of `source` lands when `destination` is a folder (shutil.copy, move)."""
    name = _basename(source)
    return _joined(destination, name) if name is not None else None
