"""LocalRunner: candidate executions as child processes on this machine, one per slot.

A slot is one visible GPU (each child pinned with CUDA_VISIBLE_DEVICES), or, without GPUs, one
CPU core by default: one compute thread, pinned to that core (the CPU budget clock is only honest
with one compute thread per candidate; two cores train two candidates at once). Every execution
is `python -I WS/harness.py ...` - the same harness SageMaker runs - in its own session, writing
into WS/executions/<execution_id>/, which is emptied first: a re-run never meets the files of an
earlier attempt, and repeated runs of one workspace (controls) never collide.

stop_early(execution_id, reason) writes the reason to that folder's stop.json and sends the
harness SIGUSR1; the harness stops train.py and reports `stopped_early` with the reason.

No orphans: children are started from one long-lived launcher thread with PR_SET_PDEATHSIG =
SIGTERM (the harness then stops train.py and writes `killed`), so even a SIGKILLed orchestrator
takes them down; on a normal exit, Ctrl-C or SIGTERM an atexit hook cancels everything that is
still running (SIGINT -> `interrupted`, otherwise `killed`) and waits for the result files.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.progress import parse_progress_line, to_progress
from sandbox.runners.base import ExecutionSpec, Finished, Progress, RunnerEvent, WallClock

CANCEL_GRACE_S = 15.0        # harness gets this long to stop train.py and write result.json
TAIL_INTERVAL_S = 0.2        # how often run.log is read for progress


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else what `nvidia-smi -L` lists.

    Not torch.cuda.device_count(): importing torch costs the orchestrator ~200 MB and makes every
    submit slower, and the orchestrator itself never touches a GPU."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):  # a broken driver: no GPUs
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def core_ids() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def available_cores() -> int:
    return len(core_ids())


def plan_slots(slots: int, threads_per_slot: int, gpus: list[str], cores: int) -> tuple[int, int]:
    """(slots, threads per slot). GPUs: one slot each unless told otherwise, the cores shared
    among them. CPU: one thread per slot unless told otherwise (the CPU clock counts every
    thread, and OpenMP threads spin while a sibling is descheduled), one slot per core."""
    if gpus:
        n = slots or len(gpus)
        return n, threads_per_slot or max(1, cores // n)
    threads = threads_per_slot or 1
    return slots or max(1, cores // threads), threads


def slot_cores(slot: int, threads: int, cores: list[int]) -> list[int]:
    """The cores slot `slot` is pinned to: `threads` consecutive ones (wrapping around when there
    are more slots than cores: they then share, and the CPU clock keeps their budgets fair)."""
    return [cores[(slot * threads + i) % len(cores)] for i in range(threads)]


def _safe_name(execution_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", execution_id) or "_"


def _pdeathsig_hook(sig: int):
    parent = os.getpid()

    def hook():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if os.getppid() != parent:
            os._exit(1)
    return hook if sys.platform.startswith("linux") else None


class _Launcher:
    """One thread that lives as long as the process and starts every child. PR_SET_PDEATHSIG
    fires when the *thread* that forked a child ends, so children must not come from short-lived
    caller threads."""

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="local-runner-launcher", daemon=True).start()

    def _loop(self):
        while True:
            args, kwargs, fut = self._jobs.get()
            try:
                fut.set_result(subprocess.Popen(*args, **kwargs))
            except BaseException as exc:  # hand the error to the caller
                fut.set_exception(exc)

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((args, kwargs, fut))
        return fut.result()


_launcher: _Launcher | None = None
_launcher_lock = threading.Lock()


def _get_launcher() -> _Launcher:
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            _launcher = _Launcher()
        return _launcher


@dataclass
class _Execution:
    spec: ExecutionSpec
    proc: subprocess.Popen
    slot: int
    out_dir: Path
    started_at: float
    started_mono: float
    cancel_status: str | None = None
    early_stop: dict | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LocalRunner:
    """Runner protocol over local child processes. See the module docstring."""

    name = "local"
    simulated = False

    def __init__(self, slots: int = 0, threads_per_slot: int = 0, gpus: list[str] | None = None,
                 python: str = sys.executable, startup_allowance_s: float = 120.0,
                 cancel_grace_s: float = CANCEL_GRACE_S, pin_cores: bool = True):
        self.gpus = [str(g) for g in gpus] if gpus is not None else visible_gpus()
        self.cores = core_ids()
        self.slots, self.threads_per_slot = plan_slots(slots, threads_per_slot, self.gpus, len(self.cores))
        self.pin_cores = pin_cores
        self.clock = WallClock()
        self.python = python
        self.startup_allowance_s = startup_allowance_s
        self.cancel_grace_s = cancel_grace_s
        self._events: queue.Queue[RunnerEvent] = queue.Queue()
        self._running: dict[str, _Execution] = {}
        self._busy_slots: set[int] = set()
        self._lock = threading.Lock()
        _live_runners.add(self)
        _install_signal_handlers()

    # ------------------------------------------------------------------ protocol
    def free_slots(self) -> int:
        with self._lock:
            return self.slots - len(self._busy_slots)

    def active(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def submit(self, spec: ExecutionSpec) -> str:
        ws = Path(spec.workspace).resolve()
        harness = ws / "harness.py"
        if not harness.is_file():
            raise FileNotFoundError(f"{harness} not found: build the workspace with "
                                    f"sandbox.workspace.build_workspace before submitting")
        with self._lock:
            if spec.execution_id in self._running:
                raise ValueError(f"execution {spec.execution_id!r} is already running")
            free = [s for s in range(self.slots) if s not in self._busy_slots]
            if not free:
                raise RuntimeError(f"LocalRunner: all {self.slots} slots are busy; "
                                   f"check free_slots() before submit (queueing is the caller's job)")
            slot = free[0]
            self._busy_slots.add(slot)
        try:
            execution = self._start(spec, ws, slot)
        except BaseException:
            with self._lock:
                self._busy_slots.discard(slot)
            raise
        return f"local:{execution.proc.pid}"

    def poll(self, timeout: float = 0.0) -> list[RunnerEvent]:
        events: list[RunnerEvent] = []
        try:
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        return _coalesce_progress(events)

    def cancel(self, execution_id: str) -> None:
        self._cancel(execution_id, "killed")

    def stop_early(self, execution_id: str, reason: dict) -> bool:
        """Stop one execution because its curve is losing: its Finished has status
        `stopped_early` and the result carries `reason` under `early_stop`."""
        with self._lock:
            execution = self._running.get(execution_id)
        if execution is None:
            return True        # already over: its Finished is on its way
        execution.cancel_status = "stopped_early"
        execution.early_stop = dict(reason)
        stop = execution.out_dir / "stop.json"
        tmp = stop.with_name(f".stop.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(reason, default=str))
        os.replace(tmp, stop)    # complete before the signal: the harness reads it in its handler
        self._signal(execution, signal.SIGUSR1)
        return True

    def reattach(self, spec: ExecutionSpec, job_id: str) -> bool:
        return False  # a local child does not outlive its orchestrator

    def shutdown(self, status: str = "killed", timeout: float | None = None) -> list[Finished]:
        """Cancel every running execution, wait for them, return their Finished events (their
        events are taken out of the poll queue). `status` is `killed` or `interrupted`."""
        with self._lock:
            ids = list(self._running)
            executions = [self._running[i] for i in ids]
        for execution_id in ids:
            self._cancel(execution_id, status)
        deadline = time.monotonic() + (timeout if timeout is not None else self.cancel_grace_s + 10)
        for execution in executions:
            execution.done.wait(max(0.0, deadline - time.monotonic()))
        finished, others = [], []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.execution_id not in ids:
                others.append(event)
            elif isinstance(event, Finished):
                finished.append(event)
            # stale Progress of an execution that is over is dropped
        for event in others:
            self._events.put(event)
        return finished

    # ------------------------------------------------------------------ internals
    def _start(self, spec: ExecutionSpec, ws: Path, slot: int) -> _Execution:
        out_dir = ws / "executions" / _safe_name(spec.execution_id)
        shutil.rmtree(out_dir, ignore_errors=True)   # an earlier attempt's files never meet this one
        out_dir.mkdir(parents=True)
        cmd = [self.python, "-I", str(ws / "harness.py"), "--workspace", str(ws), "--preset", spec.preset,
               "--out", str(out_dir), "--threads", str(self.threads_per_slot), "--no-echo",
               "--startup-allowance", f"{self.startup_allowance_s:g}"]
        if self.pin_cores and not self.gpus:
            cmd += ["--cpus", ",".join(map(str, slot_cores(slot, self.threads_per_slot, self.cores)))]
        if spec.timeout_s:
            cmd += ["--timeout", f"{spec.timeout_s:g}"]
        for key, value in spec.env.items():
            cmd += ["--env", f"{key}={value}"]
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        harness_out = open(out_dir / "harness.out", "wb")
        try:
            proc = _get_launcher().popen(cmd, cwd=ws, env=env, stdin=subprocess.DEVNULL,
                                         stdout=harness_out, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_pdeathsig_hook(signal.SIGTERM))
        finally:
            harness_out.close()
        execution = _Execution(spec=spec, proc=proc, slot=slot, out_dir=out_dir,
                               started_at=time.time(), started_mono=time.monotonic())
        with self._lock:
            self._running[spec.execution_id] = execution
        tail_stop = threading.Event()
        tailer = threading.Thread(target=self._tail, args=(execution, tail_stop), daemon=True,
                                  name=f"tail-{spec.execution_id}")
        tailer.start()
        threading.Thread(target=self._wait, args=(execution, tailer, tail_stop), daemon=True,
                         name=f"wait-{spec.execution_id}").start()
        return execution

    def _tail(self, execution: _Execution, stop: threading.Event) -> None:
        """Follow run.log and emit one Progress per new progress line."""
        log = execution.out_dir / "run.log"
        pos, partial = 0, ""
        while True:
            stopping = stop.wait(TAIL_INTERVAL_S)
            try:
                with open(log, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                pos += len(chunk)
                lines = (partial + chunk.decode("utf-8", errors="replace")).replace("\r", "\n").split("\n")
                partial = lines.pop()
                elapsed = time.monotonic() - execution.started_mono
                for line in lines:
                    fields = parse_progress_line(line)
                    if fields is not None:
                        self._events.put(to_progress(fields, execution.spec.execution_id, elapsed))
            if stopping:
                return

    def _wait(self, execution: _Execution, tailer: threading.Thread, tail_stop: threading.Event):
        returncode = execution.proc.wait()
        tail_stop.set()
        tailer.join()
        result = self._read_result(execution, returncode)
        finished = Finished(execution_id=execution.spec.execution_id, result=result,
                            backend=self.name, job_id=f"local:{execution.proc.pid}",
                            instance_type=self._slot_label(execution.slot),
                            started_at=execution.started_at, ended_at=time.time())
        with self._lock:
            self._running.pop(execution.spec.execution_id, None)
            self._busy_slots.discard(execution.slot)
        # a slot is free before its Finished is visible, so a caller may resubmit at once
        self._events.put(finished)
        execution.done.set()

    def _read_result(self, execution: _Execution, returncode: int) -> dict:
        path = execution.out_dir / "result.json"
        try:
            result = json.loads(path.read_text())
            if isinstance(result, dict) and result.get("status"):
                return result
            problem = "harness wrote an invalid result.json"
        except FileNotFoundError:
            problem = "harness wrote no result.json"
        except ValueError as exc:
            problem = f"harness wrote an unreadable result.json ({exc})"
        status = execution.cancel_status or "crash"
        harness_out = (execution.out_dir / "harness.out")
        tail = harness_out.read_text(errors="replace")[-4000:] if harness_out.is_file() else ""
        result = {"status": status, "val_bpb": None, "peak_vram_mb": None, "training_seconds": None,
                  "total_seconds": None, "num_steps": None, "mfu_percent": None, "num_params_M": None,
                  "total_tokens_M": None, "depth": None,
                  "failure_reason": f"{problem} (harness exit code {returncode})",
                  "log_tail": tail, "exit_code": returncode, "preset": execution.spec.preset,
                  "log_path": str(execution.out_dir / "run.log"), "eval_record": None}
        if status == "stopped_early":
            result["early_stop"] = execution.early_stop
        return result

    def _slot_label(self, slot: int) -> str:
        if self.gpus:
            return f"local-gpu{self.gpus[slot % len(self.gpus)]}"
        return f"local-cpu{self.threads_per_slot}t"

    def _cancel(self, execution_id: str, status: str) -> None:
        with self._lock:
            execution = self._running.get(execution_id)
        if execution is None:
            return
        execution.cancel_status = status
        self._signal(execution, signal.SIGINT if status == "interrupted" else signal.SIGTERM)

    def _signal(self, execution: _Execution, sig: int) -> None:
        try:
            execution.proc.send_signal(sig)
        except ProcessLookupError:
            return

        def escalate():
            if execution.done.wait(self.cancel_grace_s):
                return
            _kill_harness_and_child(execution)
        threading.Thread(target=escalate, daemon=True, name=f"cancel-{execution.spec.execution_id}").start()


def _kill_harness_and_child(execution: _Execution) -> None:
    """Last resort: SIGKILL the harness group and the train.py group it recorded."""
    groups = [execution.proc.pid]
    try:
        groups.append(int((execution.out_dir / ".harness" / "child.pid").read_text()))
    except (OSError, ValueError):
        pass
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _coalesce_progress(events: list[RunnerEvent]) -> list[RunnerEvent]:
    """Keep only the latest Progress per execution in one batch (fast steps flood otherwise),
    in its original position relative to other events."""
    last_index = {e.execution_id: i for i, e in enumerate(events) if isinstance(e, Progress)}
    return [e for i, e in enumerate(events)
            if not isinstance(e, Progress) or last_index[e.execution_id] == i]


# ---------------------------------------------------------------------- process exit
_live_runners: "weakref.WeakSet[LocalRunner]" = weakref.WeakSet()
_exit_status = "killed"


def _shutdown_all() -> None:
    for runner in list(_live_runners):
        try:
            runner.shutdown(_exit_status)
        except Exception:
            pass


def _install_signal_handlers() -> None:
    """Remember how the orchestrator is being stopped, and make SIGTERM run atexit hooks
    (by default it kills Python without them). Only replaces default handlers."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigint(signum, frame):
        global _exit_status
        _exit_status = "interrupted"
        signal.default_int_handler(signum, frame)

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_sigterm)


atexit.register(_shutdown_all)
