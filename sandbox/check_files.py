"""Where reads and writes land: the file rules of the judgement (mixed into
sandbox/check_judge.py's Judge, whose name questions they use: `self.flag`, `self.site`,
`self.paths`, `self.values`, `self.flow`, `self.dotted`, `self.code`, `self.prepare_object`).

A write is judged by the place its target evaluates to (sandbox/check_paths.py), whatever the
primitive: open modes, os.open flags, pathlib methods (called on an object or on the class),
shutil (a copy also lands at dst/basename(src)), numpy and torch savers, archives, tempfile,
logging handlers, file descriptors. A read is judged only where it reaches someone else's data.
"""
from __future__ import annotations

import libcst as cst

from sandbox.check_paths import landing, listing_problem, read_problem, write_problem
from sandbox.check_policy import (ARCHIVE_EXTRACT_METHODS, COPIES, DESTRUCTIVE, FD_OPENERS, FD_READERS, FD_WRITERS,
                                  LISTING_METHODS, MUTATING_METHODS, OPENERS, PATH_METHODS_ARGUMENT,
                                  PATH_METHODS_BOTH, PATH_METHODS_READ, PATH_METHODS_RECEIVER, PATH_WRITERS)
from sandbox.check_values import STAR, argument, positional


class FileRules:
    def _method_value(self, method: str, receiver: cst.CSTNode) -> None:
        """`w = path.write_text` (or getattr(path, "write_text")): a write whose arguments are unseen."""
        if method in PATH_METHODS_RECEIVER:
            self._write_at(receiver, f".{method} (taken as a value)")
        else:
            self.flag("file-write", f".{method} taken as a value: call it directly so the checker sees where "
                      "it writes")

    def _method(self, call: cst.Call) -> None:
        """Calls of methods whose receiver is not an import: pathlib, ndarray and archive methods."""
        self._path_method(call.func.attr.value, call.func.value, call, offset=0)

    def _path_method(self, method: str, receiver, call: cst.Call, offset: int) -> None:
        """`receiver.method(...)`, or `Path.method(receiver, ...)` (offset 1: the receiver is argument 0)."""
        if receiver in (None, STAR):
            if method in PATH_METHODS_RECEIVER | PATH_METHODS_BOTH | PATH_METHODS_READ:
                self.flag("file-write", f"{method}() with a hidden path")
            return
        func = call.func
        scope = self.site.scope
        given = [a.value for a in positional(call)][offset:]
        if method in PATH_METHODS_READ:
            self._read_at(receiver, f".{method}()")
        elif method in PATH_METHODS_RECEIVER:
            self._write_at(receiver, f".{method}()", destructive=method in DESTRUCTIVE)
        elif method in PATH_METHODS_BOTH:
            self._write_at(receiver, f".{method}()")
            if given:
                self._write_at(given[0], f".{method}()")
        elif method in ("rename", "replace") and len(call.args) == 1 + offset and given \
                and not self.values.numeric(given[0], scope):
            self._write_at(receiver, f".{method}()", destructive=True)
            self._write_at(given[0], f".{method}()")
        elif method == "open":
            mode = argument(call, offset, "mode")
            modes = {"r"} if mode is None else (self.values.strings(mode, scope) if mode is not STAR else None)
            if self._is_archive(receiver, scope):
                return
            if modes is not None and not any(set(m) & set("wax+") for m in modes):
                if self.paths.places(receiver, scope) is not None:
                    self._read_at(receiver, ".open()")
                return
            self._write_at(receiver, ".open()")
        elif method in PATH_METHODS_ARGUMENT:
            if given:
                self._write_at(given[0], f".{method}()")
        elif method == "save" and given:
            if self.paths.places(given[0], scope) is not None:
                self._write_at(given[0], ".save()")
        elif method in ARCHIVE_EXTRACT_METHODS and not self.values.numeric(receiver, scope):
            self.flag("file-write", f".{method}() writes archive members wherever their names point")
        elif method in LISTING_METHODS:
            for place in self.paths.places(receiver, scope) or ():
                problem = listing_problem(place)
                if problem:
                    self.flag("val-split", f".{method}() on {self.code(receiver)} {problem}")
        elif (method in MUTATING_METHODS or method == "__init__") and self.prepare_object(receiver, scope):
            self.flag("prepare-rebind", f"{self.code(func)}(...) changes prepare's object in place")

    def _is_archive(self, node: cst.CSTNode, scope) -> bool:
        for leaf in self.flow.origins(node, scope) or ():
            if leaf.kind == "expr" and isinstance(leaf.node, cst.Call):
                name = self.dotted(leaf.node.func, leaf.scope)
                if name in ("zipfile.ZipFile", "tarfile.open", "tarfile.TarFile", "zipfile.PyZipFile"):
                    return True
        return False

    def _write_at(self, node, what: str, destructive: bool = False) -> None:
        if node is STAR:
            self.flag("file-write", f"{what}: the path is hidden in *args/**kwargs")
            return
        places = self.paths.places(node, self.site.scope)
        if places is None:
            self.flag("file-write", f"{what} on {self.code(node)}: the checker cannot see where this lands "
                      "(build it from literals, numbers, __file__, os.path.join or Path, inside the "
                      "candidate's folder)")
            return
        for place in places:
            problem = write_problem(place, destructive)
            if problem:
                self.flag("file-write", f"{what} on {self.code(node)} {problem}")
                return

    def _read_at(self, node, what: str) -> None:
        if node in (None, STAR):
            return
        for place in self.paths.places(node, self.site.scope) or ():
            problem = read_problem(place)
            if problem:
                self.flag(problem[0], f"{what} {problem[1]}")
                return

    def _opener(self, name: str, call: cst.Call) -> None:
        opener = OPENERS[name]
        scope = self.site.scope
        if opener.mode is None:
            modes = {opener.default}
        else:
            mode = argument(call, *opener.mode)
            modes = {opener.default} if mode is None else None if mode is STAR else self.values.strings(mode, scope)
        writes = modes is None or any(opener.writes(m) for m in modes if m is not None)
        path = argument(call, *opener.path)
        if path is None:
            return
        if path is not STAR and name in FD_OPENERS and self.values.numeric(path, scope):
            self._fd_origin(path, f"{name}()", writes)
            return
        if writes:
            what = f"{name}() with mode {sorted(modes)[0]!r}" if modes else f"{name}() with a computed mode"
            self._write_at(path, what)
        else:
            self._read_at(path, f"{name}()")

    def _writer(self, name: str, call: cst.Call) -> None:
        for index, keyword in PATH_WRITERS[name]:
            path = argument(call, index, keyword)
            if path is not None:
                self._write_at(path, f"{name}()", destructive=name in DESTRUCTIVE)
        if name.startswith("shutil.copy") or name == "shutil.move":
            self._read_at(argument(call, 0, "src"), f"{name}()")
        if name in ("shutil.copytree", "shutil.move"):
            source = argument(call, 0, "src")
            for place in (self.paths.places(source, self.site.scope) or []) if source not in (None, STAR) else []:
                if write_problem(place):
                    self.flag("file-write", f"{name}() brings a folder from outside ({self.code(source)}) into the "
                              "candidate's folder, where it could shadow a module")
                    return
        if name in COPIES:
            source, destination = argument(call, 0, "src"), argument(call, 1, "dst")
            if source in (None, STAR) or destination in (None, STAR):
                return
            sources = self.paths.places(source, self.site.scope)
            destinations = self.paths.places(destination, self.site.scope)
            if sources is None or destinations is None:
                if destinations is not None:
                    self.flag("file-write", f"{name}() copies {self.code(source)} into a folder under a name the "
                              "checker cannot see")
                return
            for d in destinations:
                for s in sources:
                    place = landing(d, s)
                    problem = write_problem(place) if place is not None else "lands where the checker cannot see"
                    if problem:
                        self.flag("file-write", f"{name}() into {self.code(destination)} {problem}")
                        return

    def _tempfile(self, name: str, call: cst.Call) -> None:
        folder = argument(call, None, "dir")
        if folder is None:
            self.flag("file-write", f"{name}() creates its file in the system's temporary folder, outside the "
                      "candidate's folder; pass dir= inside it")
        else:
            self._write_at(folder, f"{name}(dir=...)")

    def _listing(self, name: str, call: cst.Call, spec) -> None:
        path = argument(call, *spec)
        if path in (None, STAR):
            return
        for place in self.paths.places(path, self.site.scope) or ():
            problem = listing_problem(place)
            if problem:
                self.flag("val-split", f"{name}() {problem}")
                return

    def _descriptor(self, name: str, call: cst.Call) -> None:
        for writes, table in ((True, FD_WRITERS), (False, FD_READERS)):
            for index in table.get(name, ()):
                fd = argument(call, index, "fd")
                if fd is not None:
                    self._fd_origin(fd, f"{name}()", writes)

    def _fd_origin(self, node, what: str, writes: bool) -> None:
        """A file descriptor must come from the candidate's own os.open/pipe/fileno()."""
        if node is not STAR:
            leaves = self.flow.origins(node, self.site.scope) or []
            if leaves and all(self._own_descriptor(leaf) for leaf in leaves):
                return
        if writes:
            self.flag("file-write", f"{what} writes to a file descriptor it did not open itself")
        else:
            self.flag("dynamic-access", f"{what} uses a file descriptor it did not open itself (the harness's "
                      "channel?); open files by path")

    def _own_descriptor(self, leaf) -> bool:
        if leaf.kind != "expr" or not isinstance(leaf.node, (cst.Call, cst.Subscript)):
            return False
        node = leaf.node.value if isinstance(leaf.node, cst.Subscript) else leaf.node
        if not isinstance(node, cst.Call):
            return False
        if isinstance(node.func, cst.Attribute) and node.func.attr.value == "fileno":
            return True
        return self.dotted(node.func, leaf.scope) in ("os.open", "os.pipe", "os.dup", "os.openpty", "os.memfd_create",
                                            "tempfile.mkstemp")

