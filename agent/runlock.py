"""Only one process may drive a run's executions at a time.

`RunLock` is an exclusive flock on runs/<TAG>/.lock that the kernel releases even on kill -9, so
the REPL cannot mark an autopilot's live executions lost, and two autopilots cannot launch the
same pending rows. Re-entrant within one process (autopilot holds it, the scheduler asks again).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent.layout import LOCK_NAME


class RunBusyError(RuntimeError):
    """Another live process is driving this run."""


class RunLock:
    """An exclusive flock on runs/<TAG>/.lock, re-entrant within one process."""

    _held: dict[str, "RunLock"] = {}

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fh = None
        self._depth = 0

    @classmethod
    def for_run(cls, run_dir: Path) -> "RunLock":
        key = str(Path(run_dir).resolve())
        if key not in cls._held:
            cls._held[key] = cls(run_dir)
        return cls._held[key]

    def __enter__(self) -> "RunLock":
        if self._depth == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise RunBusyError(f"run {self.path.parent.name!r} is being driven by {holder}; "
                                   f"wait for it to finish (or stop it) before launching here") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            self._fh = fh
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
