"""What keeps a candidate's train.py away from everything but its own scratch folder, and how
the harness notices what could not be kept away.

STDLIB ONLY (ctypes for the Linux calls): this file ships next to harness.py in every bundle.
The child's bootstrap uses the first half, the harness the second (`snapshot` / `changes`).

Three levels, the best one the machine allows (the bootstrap says which, in result.json):

  namespaces  root with CAP_SYS_ADMIN (this machine, most CI boxes): new mount, network and PID
              namespaces. The child pivots into a fresh root that holds only what it needs,
              read-only: /usr /etc /lib* /bin /sbin /sys, the Python installation, the data it
              may train on (train shards, tokenizer, manifest) and a minimal /dev; its scratch
              folder, a fresh /tmp and /dev/shm are the only writable places. The validation
              data, the harness's files, other candidates' folders, the run's memory and $HOME
              do not exist in there. No network interface but a down loopback. It is PID 1 of
              its own PID namespace: it sees and signals no other process, and everything it
              spawns dies with it. Then it drops every capability (the bounding set too) and sets
              no_new_privs, so it cannot mount, unmount, remount, chroot or regain privileges;
              the kernel locks the mounts it inherited even inside a user namespace it creates.
  uid         no namespaces (a SageMaker container lacks CAP_SYS_ADMIN), but we are root and an
              unprivileged uid can run the interpreter: after prepare has loaded the validation
              data the child drops to that uid; file modes then protect the fixed files, and the
              harness makes the validation files and its own folder unreadable to it.
  detect      neither: nothing can be prevented, so the harness fingerprints the fixed files, the
              data and the folders' listings before and after, and any change is an integrity
              failure.

Always, whatever the level: PR_SET_DUMPABLE 0 (no ptrace, no /proc/<pid>/mem of this process by
its peers), no core files, a file-size limit, the CPU affinity and thread count of the slot.
"""
from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import os
import platform
import resource
import signal
import stat

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
LEVELS = ("namespaces", "uid", "detect")

_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


class IsolationError(OSError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise IsolationError(code, f"{what}: {os.strerror(code)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _prctl(option: int, arg: int = 0) -> int:
    return _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


# --------------------------------------------------------------------------- every level

def die_with_parent(sig: int = signal.SIGKILL) -> None:
    if _libc is not None:
        _prctl(PR_SET_PDEATHSIG, int(sig))


def pin(cpus: list[int] | None) -> list[int] | None:
    """Run on these cores only (inherited by every thread the candidate starts later)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
        return sorted(os.sched_getaffinity(0))
    return None


def limit_resources(file_size_bytes: int) -> dict:
    """No core files (they could carry memory out); a cap on the size of any file written."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_bytes, file_size_bytes))
    return {"core": 0, "file_size_bytes": file_size_bytes}


def not_dumpable() -> bool:
    return _libc is not None and _prctl(PR_SET_DUMPABLE, 0) == 0


def no_new_privs() -> bool:
    return _libc is not None and _prctl(PR_SET_NO_NEW_PRIVS, 1) == 0


def drop_capabilities() -> bool:
    """Empty the bounding, ambient, effective, permitted and inheritable sets. A uid-0 process
    without CAP_SYS_ADMIN cannot mount, and with an empty bounding set it gets nothing back at
    exec. Returns False when the process had nothing to drop (not root)."""
    if _libc is None:
        return False
    for cap in range(64):
        _prctl(PR_CAPBSET_DROP, cap)          # EINVAL past the last cap, EPERM without CAP_SETPCAP
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    _check(_libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), (Data * 2)()), "capset")
    return True


def capabilities() -> dict:
    """The process's capability sets as /proc shows them (for the report and the tests)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Cap"):
                key, value = line.split(":")
                out[key] = value.strip()
    return out


# --------------------------------------------------------------------------- namespaces

def unshare_namespaces() -> str | None:
    """New mount, network and PID namespaces; None on success, else why not."""
    if _libc is None or not hasattr(os, "fork"):
        return "not Linux"
    if _libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) != 0:
        return f"unshare: {os.strerror(ctypes.get_errno())}"
    return None


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            raw = line.split()[4]
            points.append(raw.encode().decode("unicode_escape"))   # \040 etc. are octal escapes
    return points


class RootBuilder:
    """Builds the candidate's root under `base` (an empty folder) and pivots into it."""

    def __init__(self, base: str):
        self.base = os.path.realpath(base)
        self.visible: list[str] = []          # the paths bound in, for the report
        self.writable: list[str] = []

    def _target(self, path: str) -> str:
        return self.base + path

    def _covered(self, path: str) -> bool:
        return any(path == v or path.startswith(v.rstrip("/") + "/") for v in self.visible)

    def start(self) -> None:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)     # nothing we do propagates to the host
        _mount("tmpfs", self.base, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")

    def bind(self, path: str, writable: bool = False, at: str | None = None) -> bool:
        """Make `path` (resolved) visible at `at` (default: its own path). False if missing."""
        at = os.path.abspath(at or path)
        real = os.path.realpath(path)
        if not os.path.exists(real) or (not writable and self._covered(at)):
            return False
        target = self._target(at)
        if os.path.isdir(real):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                open(target, "w").close()
        _mount(real, target, None, MS_BIND | MS_REC)
        (self.writable if writable else self.visible).append(at)
        return True

    def link_or_bind(self, path: str) -> None:
        """/bin, /lib ...: the same symlink when the host has one, else a read-only bind."""
        if os.path.islink(path):
            target = self._target(path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.lexists(target):
                os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            self.bind(path)

    def symlink(self, path: str, points_to: str) -> None:
        target = self._target(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(points_to, target)

    def tmpfs(self, path: str, size: str, mode: str = "1777") -> None:
        target = self._target(path)
        os.makedirs(target, exist_ok=True)
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
        self.writable.append(path)

    def minimal_dev(self, shm_size: str) -> None:
        """A /dev with the ordinary character devices and the GPUs only: no disks, no /dev/mem,
        no host /dev/shm (other processes' shared memory)."""
        dev = self._target("/dev")
        os.makedirs(dev, exist_ok=True)
        _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "size=64k,mode=755")
        for name in ["null", "zero", "full", "random", "urandom", "tty"] + \
                [os.path.basename(p) for p in sorted(glob.glob("/dev/nvidia*"))]:
            src = "/dev/" + name
            if os.path.exists(src) and (stat.S_ISCHR(os.stat(src).st_mode) or os.path.isdir(src)):
                target = os.path.join(dev, name)
                if os.path.isdir(src):
                    os.makedirs(target, exist_ok=True)
                else:
                    open(target, "w").close()
                _mount(src, target, None, MS_BIND | MS_REC)
        for name, points_to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(points_to, os.path.join(dev, name))
        self.tmpfs("/dev/shm", shm_size)

    def proc(self) -> None:
        """A /proc of the new PID namespace; the kernel knobs in it stay read-only (uid 0 may
        write most of /proc/sys by file mode alone, capabilities or not)."""
        target = self._target("/proc")
        os.makedirs(target, exist_ok=True)
        _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for name in ("sys", "sysrq-trigger", "irq", "bus", "fs"):
            path = os.path.join(target, name)
            if os.path.exists(path):
                _mount(path, path, None, MS_BIND | MS_REC)
        for name in ("kcore", "keys", "timer_list", "sched_debug"):
            path = os.path.join(target, name)
            if os.path.isfile(path):
                _mount("/dev/null", path, None, MS_BIND)

    def finish(self, writable: list[str]) -> None:
        """Pivot into the new root, detach the old one, make every mount read-only except
        `writable` (and /dev's nodes keep working: no nodev there)."""
        old = self._target("/.old-root")
        os.makedirs(old, exist_ok=True)
        if _SYS_PIVOT_ROOT is not None:
            _check(_libc.syscall(_SYS_PIVOT_ROOT, self.base.encode(), old.encode()), "pivot_root")
            os.chdir("/")
            _check(_libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
            os.rmdir("/.old-root")
        else:                                  # an architecture we have no syscall number for
            os.chroot(self.base)
            os.chdir("/")
        keep = {os.path.abspath(p) for p in writable}
        for point in sorted(set(_mount_points())):
            if point in keep:
                continue
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
            if not (point == "/dev" or point.startswith("/dev/")):
                flags |= MS_NODEV
            try:
                _mount(None, point, None, flags)
            except IsolationError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):   # gone or not a mount: fine
                    raise


# --------------------------------------------------------------------------- uid drop

def uid_can_read(uid: int, gid: int, paths: list[str]) -> str | None:
    """None when `uid` can traverse to and read every path (dirs need x, files r); else the
    first one it cannot. By mode bits, as the kernel will judge after the drop."""
    def allowed(st, bits_other, bits_group, bits_user):
        if st.st_uid == uid:
            return st.st_mode & bits_user == bits_user
        if st.st_gid == gid:
            return st.st_mode & bits_group == bits_group
        return st.st_mode & bits_other == bits_other

    for path in paths:
        path = os.path.realpath(path)
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i]) or "/"
            if not allowed(os.stat(parent), 0o001, 0o010, 0o100):
                return f"{parent} is not searchable by uid {uid}"
        st = os.stat(path)
        need = (0o005, 0o050, 0o500) if stat.S_ISDIR(st.st_mode) else (0o004, 0o040, 0o400)
        if not allowed(st, *need):
            return f"{path} is not readable by uid {uid}"
    return None


def drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)        # real, effective and saved: no way back; capabilities are cleared too


# --------------------------------------------------------------------------- detection

HASH_LIMIT_BYTES = 64 << 20   # files up to this size are hashed; bigger ones by stat


def snapshot(files: list[str], folders: list[str]) -> dict[str, str]:
    """A fingerprint of fixed files (content hash, or size/mtime/inode for big data files) and
    of folders' listings (names, recursively, with the same per-file fingerprint)."""
    out: dict[str, str] = {}

    def one(path: str) -> str:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "missing"
        if stat.S_ISLNK(st.st_mode):
            return "link:" + os.readlink(path)
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        if st.st_size <= HASH_LIMIT_BYTES:
            with open(path, "rb") as fh:
                return "sha256:" + hashlib.sha256(fh.read()).hexdigest()
        return f"stat:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    for path in files:
        out[path] = one(path)
    for folder in folders:
        if not os.path.isdir(folder):
            out[folder] = "missing"
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                out.setdefault(path, one(path))
    return out


def changes(before: dict[str, str], after: dict[str, str], limit: int = 5) -> list[str]:
    found = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path, "absent"), after.get(path, "absent")
        if a != b:
            what = "created" if a == "absent" else "deleted" if b in ("absent", "missing") else "changed"
            found.append(f"{path} {what}")
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])
