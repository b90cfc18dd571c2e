"""The first code of a candidate's process: settings, sandbox, prepare, then train.py.

STDLIB ONLY: this file ships next to harness.py in every bundle. The harness runs

    python -I -u bootstrap.py --settings-fd S --message-fd M

`-I` (isolated mode) ignores PYTHON* variables and the user's site-packages and, with -P, puts
neither this folder nor the working directory on sys.path: nothing the candidate writes
anywhere can shadow a module (a sitecustomize.py, an os.py, a prepare.py).

In order, before any candidate code runs:
  1. read the settings line from the settings pipe (the candidate cannot read it later: a pipe's
     data is gone once read); pin the CPU cores; no core files, a file-size limit;
  2. new mount/network/PID namespaces when the kernel allows (see isolation.py); then fork: this
     process waits for the child (PID 1 of the namespace) and relays its exit status;
  3. import prepare.py from the bundle by path, handing it the link (settings without the key,
     and the signing closures) through its module namespace; prepare loads the validation rows
     into memory and captures the torch functions it uses;
  4. hide everything the candidate must not touch (a fresh read-only root, or a uid drop), drop
     every capability, no_new_privs, not dumpable;
  5. say `ready` to the harness (what isolation was and was not available), then run the
     candidate's train.py - a copy in the fresh scratch folder, which is the working directory
     and not on sys.path - as __main__.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import time
import types

HERE = os.path.dirname(os.path.realpath(__file__))


def _from_source(name: str, path: str, extra: dict | None = None) -> types.ModuleType:
    """A module compiled from its source file: no bytecode cache next to it is read or written
    (without a sandbox, an earlier candidate could have planted one)."""
    module = types.ModuleType(name)
    module.__file__ = path
    module.__dict__.update(extra or {})
    with open(path, "rb") as fh:
        code = compile(fh.read(), path, "exec")
    return module, code


def _sibling(name: str):
    """A module of the bundle, NOT registered in sys.modules, so that the candidate has no
    importable handle on it."""
    module, code = _from_source(f"_autoresearch_{name}", os.path.join(HERE, f"{name}.py"))
    exec(code, module.__dict__)
    return module


class Link:
    """What prepare receives: the settings (without the key) and two closures."""

    __slots__ = ("settings", "send", "wait_go", "cpu_offset")

    def __init__(self, settings, send, wait_go, cpu_offset):
        self.settings, self.send, self.wait_go, self.cpu_offset = settings, send, wait_go, cpu_offset


def _relay(pid: int) -> None:
    """The outer process: wait for the namespace's PID 1 and exit as it did. SIGTERM from the
    harness is forwarded as SIGKILL (a PID 1 ignores signals it has no handler for)."""
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.signal(signal.SIGINT, lambda *_: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _import_prepare(path: str, link: Link):
    module, code = _from_source("prepare", path, {"__autoresearch_link__": link})
    sys.modules["prepare"] = module          # what train.py's `from prepare import ...` finds
    exec(code, module.__dict__)
    return module


def _python_paths() -> list[str]:
    """The interpreter, its standard library and site-packages: what `import` needs later."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    return sorted(p for p in paths if p and os.path.isdir(p))


def _library_paths(hidden: list[str]) -> list[str]:
    """LD_LIBRARY_PATH folders (CUDA, EFA in a training image), unless hidden."""
    out = []
    for p in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        real = os.path.realpath(p) if p else ""
        if real and os.path.isdir(real) and not any(real == h or real.startswith(h + "/") for h in hidden):
            out.append(p)
    return out


def _build_root(isolation, settings: dict) -> dict:
    root = isolation.RootBuilder(settings["root_dir"])
    root.start()
    # the fresh file systems first: a bind below /tmp (a scratch or cache folder there) must
    # land on top of the new /tmp, not under it
    root.tmpfs("/tmp", settings["tmp_size"])
    root.minimal_dev(settings["shm_size"])
    root.proc()
    for path in ("/usr", "/etc", "/sys"):
        root.bind(path)
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        root.link_or_bind(path)
    hidden = [os.path.realpath(h) for h in settings.get("hidden", [])]
    for path in _python_paths() + _library_paths(hidden):
        root.bind(path)
    for path in settings["visible_data"]:
        root.bind(path)
    root.bind(settings["scratch"], writable=True)
    root.finish(writable=[settings["scratch"], "/tmp", "/dev/shm"])
    return {"visible": root.visible, "writable": root.writable}


def main(argv: list[str]) -> None:
    settings_fd = int(argv[argv.index("--settings-fd") + 1])
    message_fd = int(argv[argv.index("--message-fd") + 1])
    channel, isolation = _sibling("channel"), _sibling("isolation")
    settings = channel.read_settings(settings_fd)
    requested = settings.get("isolation", "auto")
    report: dict = {"requested": requested, "unavailable": []}

    isolation.die_with_parent()
    report["cpus"] = isolation.pin(settings.get("cpus"))
    report["rlimits"] = isolation.limit_resources(int(settings["file_size_limit"]))

    level, cpu_offset = "detect", 0.0
    if requested in ("auto", "namespaces"):
        why_not = isolation.unshare_namespaces()
        if why_not is None:
            cpu_offset = time.process_time()      # the outer's CPU so far counts too
            pid = os.fork()
            if pid:
                _relay(pid)
            isolation.die_with_parent()           # PID 1 must not outlive the relay
            level = "namespaces"
        else:
            report["unavailable"].append(f"namespaces ({why_not})")
            if requested == "namespaces":
                raise SystemExit(f"sandbox: namespaces were required but are unavailable: {why_not}")

    send, wait_go = channel.make_link(settings, message_fd, settings_fd)
    _import_prepare(settings["prepare"], Link(dict(settings), send, wait_go, cpu_offset))

    if level == "namespaces":
        report["root"] = _build_root(isolation, settings)
        report["network"] = "none (own network namespace, loopback down)"
        report["pid_namespace"] = True
    else:
        report["network"] = "host"
        report["pid_namespace"] = False
        uid, gid = int(settings.get("uid", 65534)), int(settings.get("gid", 65534))
        if requested in ("auto", "uid") and os.getuid() == 0:
            needed = [os.path.realpath(sys.executable), *_python_paths(), *settings["visible_data"]]
            why_not = isolation.uid_can_read(uid, gid, needed)
            if why_not is None:
                for path in settings.get("hidden", []):   # validation files, the harness's folder
                    if os.path.exists(path):
                        os.chmod(path, 0o711 if os.path.isdir(path) else 0o600)
                for dirpath, _dirs, files in os.walk(settings["scratch"]):
                    for p in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                        os.chown(p, uid, gid)
                isolation.drop_to(uid, gid)
                level = "uid"
                report["uid"] = uid
            else:
                report["unavailable"].append(f"uid drop ({why_not})")
                if requested == "uid":
                    raise SystemExit(f"sandbox: a uid drop was required but is impossible: {why_not}")
        elif requested == "uid":
            raise SystemExit("sandbox: a uid drop was required but the harness does not run as root")
    report["capabilities_dropped"] = isolation.drop_capabilities()
    report["no_new_privs"] = isolation.no_new_privs()
    report["dumpable"] = not isolation.not_dumpable()
    report["capabilities"] = isolation.capabilities()
    report["level"] = level

    os.chdir(settings["scratch"])
    train = settings["train"]
    sys.argv = [train]
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != HERE]
    send("ready", {"isolation": report, "cpu_seconds": cpu_offset + time.process_time(),
                   "python": sys.version.split()[0]})
    del send, wait_go, settings
    runpy.run_path(train, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
