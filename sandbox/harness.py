"""Run one candidate's train.py in a sandbox and turn what prepare measured into result.json.

STDLIB ONLY: this file and its siblings (bootstrap, channel, isolation, statuses, presets) are
copied into every candidate's bundle and run inside SageMaker containers where our package is
not installed. Runners start it with `python -I` so nothing written next to it can shadow a module.

    python -I harness.py --workspace WS --preset P [--budget B] [--timeout S] [--wall-timeout S]
                         [--threads N] [--cpus 0,1] [--out DIR] [--result PATH] [--stop-file PATH]
                         [--isolation auto|namespaces|uid|detect] [--env KEY=VALUE ...] [--no-echo]

What it does:
  * makes a fresh scratch folder OUT/scratch for this attempt with a copy of WS/train.py in it;
  * starts `python -I -u bootstrap.py` with a scrubbed environment and two pipes (see
    channel.py): the settings go down one (preset, budget, eval size, data paths, a fresh key),
    prepare's sealed messages come back on the other. The bootstrap sandboxes the process
    (isolation.py) before train.py runs;
  * streams the child's output into OUT/run.log (and to stdout unless --no-echo);
  * reads the budget clock from outside - the CPU time of the child's whole process tree from
    /proc on CPU presets, its wall clock on GPU presets - when prepare says the evaluation starts
    (prepare waits for that reading), and enforces its limits on the same clock (--timeout, in
    that clock's seconds), with a wall-clock backstop (--wall-timeout);
  * on SIGUSR1, or when --stop-file appears, stops the child early (status stopped_early, with
    the runner's reason from OUT/stop.json or that file);
  * judges from prepare's authenticated record and its own readings only; what train.py prints
    is advisory, except that a printed val_bpb other than the record's is an integrity failure;
  * writes OUT/result.json atomically (or --result PATH) and exits with the status's code
    (statuses.HARNESS_EXIT_CODES; 2 = bad command line, 1 = a bug in the harness).
SIGTERM -> `killed`; SIGINT -> `interrupted`; both stop the child's group first.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import datetime as _dt
import importlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sibling(name: str):
    """statuses, presets, channel, isolation: from the package when imported as sandbox.harness,
    else from this file's folder (the bundle; sys.path holds nothing of ours under -I), compiled
    from the source itself: a bytecode cache in the folder is never read (a candidate without a
    sandbox could have planted one)."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    path = HERE / f"{name}.py"
    module = types.ModuleType(f"_harness_{name}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module   # dataclasses and the like look modules up by name
    exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    return module


statuses = _sibling("statuses")
presets = _sibling("presets")
channel = _sibling("channel")
isolation = _sibling("isolation")

EXIT_CODES = statuses.HARNESS_EXIT_CODES
# The bundle: what every workspace carries next to train.py and prepare.py (workspace.py copies
# these; sm_entry ships them). bootstrap.py is what the child runs.
HARNESS_FILES = ("harness.py", "bootstrap.py", "channel.py", "isolation.py", "statuses.py", "presets.py")

SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth")
DEFAULT_STARTUP_ALLOWANCE = 120.0    # for the hard limit only; the clock's own allowance is in PRESETS
LOG_TAIL_LINES = 50
LOG_MAX_BYTES = 64 << 20             # run.log stops growing here (the child is still drained)
CURVE_MAX_POINTS = 200
KILL_GRACE_S = 5.0
# Told to stop, the harness ends within this many seconds whatever blocks it (kill grace, thread
# joins, fingerprints and the result normally take a few); SageMaker allows 120 s after SIGTERM.
STOP_DEADLINE_S = 90.0
VAL_BPB_TOLERANCE = 1e-6
POLL_S = 0.1
CLOCK_POLL_S = 0.5
FILE_SIZE_LIMIT = 16 << 30           # RLIMIT_FSIZE of the child
# The budget check allows the loop's last step: the loop looks at the clock between steps.
# At most this share of the budget, so that ticking rarely buys little.
OVERSHOOT_FLOOR_S = 0.05
OVERSHOOT_MAX_FRACTION = 0.05
# Evaluation work beyond what its forward passes need counts as training (see _eval_excess).
FORWARD_COST_FACTOR = 1.0            # an eval forward may cost up to a training step's per-token cost
OUTLIER_FACTOR = 2.0                 # a forward beyond 2x the median (+ allowance) is not a forward
OTHER_THREADS_FLOOR_S = 0.1

# Environment passed to train.py: only these names/prefixes survive ...
ENV_ALLOW_NAMES = {
    "PATH", "LANG", "TZ", "PYTHONHASHSEED", "LD_LIBRARY_PATH", "USER", "LOGNAME", "SHELL", "TERM",
    "AUTORESEARCH_PRESET", "AUTORESEARCH_CACHE", "AUTORESEARCH_SOURCE",
    "SM_CURRENT_HOST", "SM_HOSTS", "SM_NUM_GPUS", "SM_NUM_CPUS", "SM_CURRENT_INSTANCE_TYPE",
}
ENV_ALLOW_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "PYTORCH_", "TORCH", "TRITON_", "NCCL_")
# ... and then anything that looks like a secret is dropped even if allowlisted above.
ENV_DENY = re.compile(r"^(ANTHROPIC_|AWS_)|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|_KEY$|^KEY$",
                      re.IGNORECASE)
# Names of the workspace's top level that others legitimately change while we run.
_WS_CHANGING = {"executions", "run.log", "result.json", ".harness", "scratch", ".sandbox-root",
                "stop.json", "harness.out", "create_training_job.json", "diff.patch"}


class HarnessError(Exception):
    """A problem with how the harness was asked to run (bad workspace, bad arguments)."""


# --------------------------------------------------------------------------- environment

def scrub_env(parent: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: allowlisted names from `parent` plus `extra`, minus secrets."""
    env = {k: v for k, v in parent.items()
           if k in ENV_ALLOW_NAMES or k.startswith(ENV_ALLOW_PREFIXES)}
    env.update(extra or {})
    return {k: v for k, v in env.items() if not ENV_DENY.search(k)}


def _die_with_parent(sig: int = signal.SIGKILL):
    """preexec_fn: ask Linux to signal the child when the harness dies (even by SIGKILL)."""
    parent = os.getpid()  # evaluated in the harness; the hook runs in the child

    def hook():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except Exception:
            pass  # not Linux: the process-group kill on exit still applies
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)
    return hook if sys.platform.startswith("linux") else None


def resolve_preset(preset: str) -> str:
    """`auto` without torch: gpu when nvidia-smi lists a GPU, else cpu."""
    if preset != "auto":
        return preset
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
            if any(line.startswith("GPU ") for line in out.splitlines()):
                return "gpu"
        except (OSError, subprocess.SubprocessError):
            pass
    return "cpu"


# --------------------------------------------------------------------------- parsing (advisory)

def parse_summary(lines: list[str]) -> dict:
    """Values of the LAST `---` block (advisory: what train.py says). Raises ValueError naming
    the first problem; an absent key is simply absent."""
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        raise ValueError("no summary block")
    values: dict[str, float] = {}
    for line in lines[starts[-1] + 1:]:
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*):\s+(\S+)\s*$", line)
        if not m or m.group(1) not in SUMMARY_KEYS:
            continue  # stray stderr lines may interleave; unknown keys are allowed extras
        key, raw = m.groups()
        if key in values:
            raise ValueError(f"summary repeats key {key}")
        try:
            values[key] = float(raw)
        except ValueError:
            raise ValueError(f"summary key {key} is not a number: {raw!r}") from None
    return values


_TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
_PROGRESS = re.compile(r"^\s*step\s+(\d+)\s*\(\s*([\d.]+)\s*%\s*\).*?\|\s*loss:\s*([-+\w.]+)")


def crash_reason(exit_code: int, lines: list[str]) -> str:
    """A one-line, specific reason for a train.py that exited badly."""
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        hint = " (out of memory?)" if -exit_code == signal.SIGKILL else ""
        return f"train.py killed by {name}{hint}"
    text = [line.strip() for line in lines if line.strip()]
    if any(line == "FAIL" for line in text):
        return f"train.py exited {exit_code}: FAIL ({_fail_detail(text)})"
    if any(line.startswith("Traceback (most recent call last)") for line in text):
        for line in reversed(text):
            if _TRACEBACK_END.match(line):
                return f"train.py exited {exit_code}: {line[:300]}"
    last = text[-1][:300] if text else "no output"
    return f"train.py exited {exit_code}: {last}"


def _fail_detail(text: list[str]) -> str:
    for line in reversed(text):
        m = re.search(r"\bloss:\s*([^\s|]+)", line)
        if m:
            try:
                loss = float(m.group(1).replace(",", ""))
            except ValueError:
                break
            if math.isnan(loss):
                return "loss is NaN"
            if loss > 100:
                return f"loss {loss:g} > 100"
            return f"last loss {loss:g}"
    return "loss is NaN or > 100"


def _curve(lines: list[str]) -> list[list[float]]:
    """[[pct, loss], ...] from the progress lines, at most CURVE_MAX_POINTS (advisory)."""
    points = []
    for line in lines:
        m = _PROGRESS.match(line)
        if m:
            try:
                pct, loss = float(m.group(2)), float(m.group(3))
            except ValueError:
                continue
            if math.isfinite(pct) and math.isfinite(loss):
                points.append([min(max(pct, 0.0), 100.0), loss])
    if len(points) > CURVE_MAX_POINTS:
        stride = len(points) / CURVE_MAX_POINTS
        points = [points[int(i * stride)] for i in range(CURVE_MAX_POINTS - 1)] + [points[-1]]
    return points


# --------------------------------------------------------------------------- the child's clock

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and every live descendant, each with its reaped children, from
    /proc: what the child's processes computed, however many threads or processes they used."""
    procs: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        # after the comm: state ppid ... utime(14) stime(15) cutime(16) cstime(17) (1-based)
        procs[int(name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _) in procs.items():
        children[ppid].append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            total += procs[pid][1]
            todo.extend(children.get(pid, ()))
    return total / _CLK_TCK


class _Clock:
    """The harness's own reading of the budget clock for one child."""

    def __init__(self, kind: str, pid: int, spawned: float):
        self.kind, self.pid, self.spawned = kind, pid, spawned
        self.last_cpu = 0.0

    def read(self) -> float:
        if self.kind == "cpu":
            try:
                self.last_cpu = tree_cpu_seconds(self.pid)
            except OSError:
                pass
            return self.last_cpu
        return time.monotonic() - self.spawned


# --------------------------------------------------------------------------- running

class _StopRequest:
    """Set from a signal handler (or another thread) to end the run early."""

    def __init__(self):
        self.status: str | None = None
        self.reason: dict | None = None
        self.event = threading.Event()
        self.child_pid: int | None = None     # the child's process group, once spawned
        self._watchdog: threading.Timer | None = None

    def request(self, status: str, reason: dict | None = None):
        if self.status is None:
            self.status, self.reason = status, reason
        self.event.set()

    def arm_watchdog(self, seconds: float) -> None:
        """Told to stop from outside (SIGTERM, SIGINT; PR_SET_PDEATHSIG when the orchestrator dies):
        end within `seconds` even if something below blocks, so that no harness outlives the run
        that started it. The normal path writes its result well inside that time."""
        if self._watchdog is None:
            self._watchdog = threading.Timer(seconds, self._force_exit)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _force_exit(self) -> None:
        if self.child_pid:
            try:
                os.killpg(self.child_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        os._exit(statuses.HARNESS_EXIT_CODES.get(self.status or statuses.KILLED, 1))


_STOP = _StopRequest()


def _read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable {path.name}: {exc}"}
    return value if isinstance(value, dict) else {"value": value}


def _kill_group(pid: int, grace: float):
    """SIGTERM the child's process group, then SIGKILL whatever is left of it; returns the
    leader's (wait status, rusage) once reaped, or None."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                reaped, status, rusage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if reaped:
                try:
                    os.killpg(pid, signal.SIGKILL)  # sweep stragglers that share its group
                except ProcessLookupError:
                    pass
                return status, rusage
            time.sleep(0.02)
    return None


def _atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds")


class _Output:
    """The child's merged stdout/stderr: to run.log (flushed, for live tailing; capped), echo,
    a tail for result.json, and the lines kept for the summary and the curve."""

    def __init__(self, log_path: Path, echo: bool):
        self.log = open(log_path, "w", encoding="utf-8")
        self.echo, self.written = echo, 0
        self.tail: collections.deque = collections.deque(maxlen=LOG_TAIL_LINES)
        self.lines: collections.deque = collections.deque(maxlen=20000)

    def pump(self, stream) -> None:
        for raw in iter(lambda: stream.readline(1 << 16), b""):
            text = raw.decode("utf-8", errors="replace")
            if self.written < LOG_MAX_BYTES:
                self.log.write(text)
                self.log.flush()
                self.written += len(raw)
                if self.written >= LOG_MAX_BYTES:
                    self.log.write(f"\n[harness: run.log truncated at {LOG_MAX_BYTES} bytes]\n")
                    self.log.flush()
            if self.echo:
                sys.stdout.write(text)
                sys.stdout.flush()
            for piece in text.replace("\r", "\n").split("\n"):   # progress lines may use \r
                if piece.strip():
                    self.tail.append(piece)
                    self.lines.append(piece)
        stream.close()

    def note(self, text: str) -> None:
        """A harness line in run.log (what isolation was available, why a run ended)."""
        self.log.write(f"[harness] {text}\n")
        self.log.flush()
        if self.echo:
            sys.stdout.write(f"[harness] {text}\n")
            sys.stdout.flush()


class _Messages:
    """Reads the message pipe, verifies every line, answers eval_start after reading the clock."""

    def __init__(self, opener: channel.Opener, go_fd: int):
        self.opener, self.go_fd = opener, go_fd
        self.clock: _Clock | None = None
        self.ready: dict | None = None
        self.eval_start: dict | None = None
        self.eval_start_clock: float | None = None
        self.record: dict | None = None
        self.record_clock: float | None = None
        self.violations: list[dict] = []
        self.errors: list[str] = []
        self.fatal = threading.Event()   # the run cannot end ok any more: stop the child now
        self.lock = threading.Lock()

    def run(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as stream:
            for line in iter(lambda: stream.readline(channel.MAX_LINE_BYTES + 1), b""):
                try:
                    kind, body = self.opener.open(line.rstrip(b"\n"))
                except channel.ChannelError as exc:
                    self.errors.append(str(exc))
                    self.fatal.set()
                    continue
                self._handle(kind, body)

    def _handle(self, kind: str, body: dict) -> None:
        if kind == "ready":
            self.ready = body
        elif kind == "eval_start":
            if self.eval_start is not None:
                self.errors.append("a second eval_start: evaluate_bpb ran twice (two processes?)")
                self.fatal.set()
            else:
                self.eval_start = body
                self.eval_start_clock = self.clock.read() if self.clock else None
            self._go()
        elif kind == "record":
            if self.record is not None:
                self.errors.append("a second evaluation record")
                self.fatal.set()
            else:
                self.record = body
                self.record_clock = self.clock.read() if self.clock else None
        elif kind == "violation":
            self.violations.append(body)
            self.fatal.set()
        else:
            self.errors.append(f"unknown message kind {kind!r}")
            self.fatal.set()

    def _go(self) -> None:
        with self.lock:
            if self.go_fd is None:      # closed by the harness: never write to a reused fd number
                return
            try:
                os.write(self.go_fd, channel.GO)
            except OSError:
                pass

    def close_go(self) -> None:
        with self.lock:
            if self.go_fd is not None:
                os.close(self.go_fd)
                self.go_fd = None


def _fixed_snapshot(ws: Path, data_files: list[str]) -> dict[str, str]:
    """Fixed files (bundle, prepare, data) by content or stat; the workspace's top-level names;
    and the top level of every sys.path folder (a written sitecustomize.py / .pth / module there
    would run in every later Python process, isolated or not)."""
    files = [str(ws / name) for name in ("prepare.py", *HARNESS_FILES)] + list(data_files)
    snap = isolation.snapshot(files, [])
    names = sorted(p for p in os.listdir(ws) if p not in _WS_CHANGING and not p.startswith(".result"))
    snap[f"{ws}/ (listing)"] = ",".join(names)
    prefixes = tuple(os.path.realpath(p) + "/" for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    for folder in sorted({p for p in sys.path if p and os.path.isdir(p)
                          and (os.path.realpath(p) + "/").startswith(prefixes)}):
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        sig = []
        for name in entries:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            sig.append(f"{name}:{st.st_size}:{st.st_mtime_ns}" if not os.path.isdir(os.path.join(folder, name))
                       else name)
        snap[f"{folder}/ (listing)"] = ",".join(sig)
    return snap


def _data_layout(cache_root: Path, preset: str) -> dict:
    data_dir, tok_dir = cache_root / preset / "data", cache_root / preset / "tokenizer"
    try:
        manifest = json.loads((data_dir / "manifest.json").read_text())
        train, val = [str(data_dir / n) for n in manifest["train"]], str(data_dir / manifest["val"])
    except (OSError, ValueError, KeyError, TypeError):
        raise FileNotFoundError(f"the {preset} preset's data is not prepared under {cache_root / preset} "
                                f"(run `autoresearch prepare --preset {preset}`)") from None
    missing = [p for p in [*train, val, str(tok_dir / "tokenizer.pkl"), str(tok_dir / "token_bytes.pt")]
               if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{missing[0]} is missing (run `autoresearch prepare --preset {preset}`)")
    rows = data_dir / "val_rows.npy"
    return {"train": train, "val": val, "manifest": str(data_dir / "manifest.json"), "tokenizer": str(tok_dir),
            "val_rows": str(rows) if rows.is_file() else None,
            "val_rows_meta": str(data_dir / "val_rows.json")}


def run_harness(workspace, preset: str, *, budget: float | None = None, timeout: float | None = None,
                wall_timeout: float | None = None, threads: int = 0, cpus: list[int] | None = None,
                out_dir=None, result_path=None, startup_allowance: float = DEFAULT_STARTUP_ALLOWANCE,
                eval_allowance: float | None = None, extra_env: dict[str, str] | None = None,
                echo: bool = False, python: str = sys.executable, kill_grace: float = KILL_GRACE_S,
                stop: _StopRequest | None = None, stop_file=None, isolation_level: str = "auto",
                cache_dir=None) -> dict:
    """Run WS/train.py once and return (and write) the result dict. Never raises for a bad
    candidate; raises HarnessError only for a bad workspace or arguments."""
    ws = Path(workspace).resolve()
    for name in ("train.py", "prepare.py", "bootstrap.py", "channel.py", "isolation.py"):
        if not (ws / name).is_file():
            raise HarnessError(f"{ws}/{name} not found: not a candidate workspace "
                               f"(build it with sandbox.workspace.build_workspace)")
    if isolation_level not in ("auto", *isolation.LEVELS):
        raise HarnessError(f"--isolation must be auto or one of {', '.join(isolation.LEVELS)}")
    preset = resolve_preset(preset)
    try:
        facts = presets.preset_facts(preset, ws / "prepare.py")
        version = presets.measurement_version(ws / "prepare.py")
    except (presets.PrepareFactsError, OSError) as exc:
        raise HarnessError(str(exc)) from None
    out = Path(out_dir).resolve() if out_dir else ws
    result_file = Path(result_path).resolve() if result_path else out / "result.json"
    private = out / ".harness"
    private.mkdir(parents=True, exist_ok=True)
    log_path = out / "run.log"
    result_file.unlink(missing_ok=True)
    stop = stop or _STOP
    stop_file = Path(stop_file) if stop_file else None

    extra_env = dict(extra_env or {})
    parent_env = dict(os.environ)
    try:
        budget = float(budget) if budget is not None else presets.time_budget(preset, ws / "prepare.py",
                                                                              {**parent_env, **extra_env})
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    clock_kind = facts.get("clock", "wall")
    clock_allowance = float(facts.get("startup_allowance", 0))
    if eval_allowance is None:
        eval_allowance = max(60.0, 0.5 * budget)  # the GPU eval pass takes ~0.1-0.5x the budget
    limit = float(timeout) if timeout else budget + clock_allowance + startup_allowance + eval_allowance
    backstop = float(wall_timeout) if wall_timeout else (4 * limit + 60 if clock_kind == "cpu" else limit + 60)
    if not threads:
        threads = 1 if clock_kind == "cpu" else 0   # the CPU clock is honest with one compute thread

    result: dict = {k: None for k in ("val_bpb", "training_seconds", "total_seconds", "wall_seconds",
                                      "cpu_seconds", "num_steps", "total_tokens_M", "peak_vram_mb",
                                      "mfu_percent", "num_params_M", "depth", "tokens_per_second",
                                      "exit_code", "eval_record", "reported")}
    result.update(status=None, failure_reason=None, measurement_version=version, preset=preset,
                  host=socket.gethostname(), clock=clock_kind, budget_seconds=budget,
                  startup_allowance_seconds=clock_allowance, timeout_seconds=limit,
                  wall_timeout_seconds=backstop, threads=threads or None, cpus=cpus or None,
                  log_path=str(log_path), log_tail="", curve=[], started_at=_iso(time.time()),
                  integrity={"probes": None, "sandbox": None})

    cache_root = Path(extra_env.get("AUTORESEARCH_CACHE") or cache_dir or parent_env.get("AUTORESEARCH_CACHE")
                      or "~/.cache/autoresearch").expanduser().resolve()
    try:
        data = _data_layout(cache_root, preset)
    except FileNotFoundError as exc:
        log_path.write_text(f"[harness] {exc}\n")
        result.update(status=statuses.CRASH, failure_reason=f"data not prepared: {exc}",
                      ended_at=_iso(time.time()))
        _atomic_write_json(result_file, result)
        return result

    # a fresh scratch folder for this attempt: a killed attempt's leftovers never meet the next
    scratch = out / "scratch"
    root_dir = out / ".sandbox-root"
    for path in (scratch, root_dir):
        shutil.rmtree(path, ignore_errors=True)
    (scratch / ".home").mkdir(parents=True)
    (scratch / ".tmp").mkdir()
    root_dir.mkdir()
    shutil.copyfile(ws / "train.py", scratch / "train.py")

    key, nonce = secrets.token_hex(32), secrets.token_hex(8)
    data_files = [*data["train"], data["manifest"], data["val"], *filter(None, [data["val_rows"]]),
                  data["val_rows_meta"], str(Path(data["tokenizer"]) / "tokenizer.pkl"),
                  str(Path(data["tokenizer"]) / "token_bytes.pt")]
    settings = {
        "key": key, "nonce": nonce, "preset": preset, "budget": budget, "clock": clock_kind,
        "startup_allowance": clock_allowance, "eval_tokens": facts.get("eval_tokens"),
        "first_forward_allowance": facts.get("first_forward_allowance", 0.0),
        "max_seq_len": facts.get("max_seq_len"), "measurement_version": version,
        "cache_root": str(cache_root), "data": data, "prepare": str(ws / "prepare.py"),
        "train": str(scratch / "train.py"), "scratch": str(scratch), "root_dir": str(root_dir),
        "visible_data": [*data["train"], data["manifest"], data["tokenizer"]],
        "hidden": [data["val"], *filter(None, [data["val_rows"]]), str(out), str(ws)],
        "isolation": isolation_level, "cpus": cpus or None, "threads": threads,
        "file_size_limit": FILE_SIZE_LIMIT, "tmp_size": "4g", "shm_size": "2g", "uid": 65534, "gid": 65534,
    }
    forced = {"PYTHONUNBUFFERED": "1", "HOME": str(scratch / ".home"), "TMPDIR": str(scratch / ".tmp")}
    if threads:
        forced["OMP_NUM_THREADS"] = forced["MKL_NUM_THREADS"] = str(threads)
    # OpenMP workers sleep rather than spin between parallel regions: a spinning worker burns CPU
    # time (the CPU clock counts it) whenever a sibling is descheduled by other load
    forced["OMP_WAIT_POLICY"], forced["KMP_BLOCKTIME"] = "PASSIVE", "0"
    # glibc keeps freed memory instead of unmapping it and faulting it in again at every step
    # (at the cpu preset that was ~20% of the process's CPU time, in the kernel, and the part
    # that grows most when other load competes for memory)
    forced.update(MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30),
                  MALLOC_TOP_PAD_=str(64 << 20))
    env = scrub_env(parent_env, {**extra_env, **forced})
    before = _fixed_snapshot(ws, data_files)

    output = _Output(log_path, echo)
    opener = channel.Opener(bytes.fromhex(key), nonce)
    settings_r, settings_w = os.pipe()
    message_r, message_w = os.pipe()
    messages = _Messages(opener, settings_w)
    end_status: str | None = None
    started = time.time()
    spawned = time.monotonic()
    settings["t_spawn"] = spawned
    try:
        proc = subprocess.Popen(
            [python, "-I", "-u", str(ws / "bootstrap.py"), "--settings-fd", str(settings_r),
             "--message-fd", str(message_w)],
            cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(settings_r, message_w), start_new_session=True, preexec_fn=_die_with_parent())
    finally:
        os.close(settings_r)
        os.close(message_w)
    stop.child_pid = proc.pid
    clock = _Clock(clock_kind, proc.pid, spawned)
    messages.clock = clock
    (private / "child.pid").write_text(str(proc.pid))
    os.write(settings_w, channel.canonical(settings) + b"\n")
    pump = threading.Thread(target=output.pump, args=(proc.stdout,), daemon=True)
    reader = threading.Thread(target=messages.run, args=(message_r,), daemon=True)
    pump.start()
    reader.start()

    rusage = None
    next_clock = 0.0
    clock_reading = 0.0
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if stop.event.is_set():
            end_status = stop.status
            break
        if messages.fatal.is_set():   # an integrity failure: nothing the child does now can count
            end_status = "fatal"
            break
        now = time.monotonic()
        if now >= next_clock:
            next_clock = now + CLOCK_POLL_S
            clock_reading = clock.read()
            if stop_file is not None and stop_file.exists():
                stop.request(statuses.STOPPED_EARLY, _read_json_object(stop_file))
                continue
            if clock_reading > limit:
                end_status = "timeout"
                break
        if now - spawned > backstop:
            end_status = "wall_timeout"
            break
        time.sleep(POLL_S)
    if end_status:
        clock_reading = clock.read()
        reaped = _kill_group(proc.pid, kill_grace)
        if reaped:
            proc.returncode = os.waitstatus_to_exitcode(reaped[0])
            rusage = reaped[1]
    else:  # normal exit: sweep anything train.py left running in its group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    lifetime = time.monotonic() - spawned
    pump.join(timeout=10)
    reader.join(timeout=10)
    messages.close_go()
    after = _fixed_snapshot(ws, data_files)
    shutil.rmtree(root_dir, ignore_errors=True)

    result.update(exit_code=proc.returncode, wall_seconds=round(lifetime, 3), total_seconds=round(lifetime, 3),
                  cpu_seconds=round(rusage.ru_utime + rusage.ru_stime, 3) if rusage else None,
                  ended_at=_iso(time.time()), started_at=_iso(started))
    sandbox = (messages.ready or {}).get("isolation")
    result["integrity"]["sandbox"] = sandbox
    if sandbox:
        output.note(f"isolation: {sandbox.get('level')}"
                    + (f"; unavailable: {'; '.join(sandbox['unavailable'])}" if sandbox.get("unavailable") else "")
                    + f"; network: {sandbox.get('network')}; capabilities dropped: {sandbox.get('capabilities_dropped')}")
    status, reason = _judge(end_status, proc.returncode, messages, before, after, settings, result,
                            list(output.lines), clock_reading, limit, backstop, stop)
    result["status"], result["failure_reason"] = status, reason
    result["log_tail"] = "\n".join(output.tail)
    result["curve"] = _curve(list(output.lines))
    output.note(f"status={status}" + (f" reason={reason}" if reason else ""))
    output.log.close()
    _atomic_write_json(result_file, result)
    return result


def _judge(end_status, exit_code, messages: _Messages, before, after, settings, result, lines,
           clock_reading, limit, backstop, stop) -> tuple[str, str | None]:
    """The status, from the harness's own readings and prepare's authenticated record only."""
    try:
        reported = parse_summary(lines)
    except ValueError:
        reported = {}
    result["reported"] = reported or None
    result["mfu_percent"] = reported.get("mfu_percent")
    result["depth"] = int(reported["depth"]) if "depth" in reported and float(reported["depth"]).is_integer() else None
    record = messages.record
    if record is not None:
        result["eval_record"] = record
        result["integrity"]["probes"] = record.get("probes")
        result["val_bpb"] = record.get("val_bpb")
        result["num_steps"] = (record.get("clock") or {}).get("ticks")
        result["total_tokens_M"] = round(record.get("train_tokens", 0) / 1e6, 6)
        result["peak_vram_mb"] = record.get("peak_memory_mb")
        result["num_params_M"] = round(record.get("num_params", 0) / 1e6, 6)
    if messages.eval_start_clock is not None:
        training = messages.eval_start_clock - settings["startup_allowance"]
        result["training_seconds"] = round(training, 3)
        if record and training > 0:
            result["tokens_per_second"] = round(record.get("train_tokens", 0) / training, 1)

    unit = "CPU seconds" if settings["clock"] == "cpu" else "seconds"
    if end_status == "timeout":
        return statuses.TIMEOUT, (f"timed out: {clock_reading:.1f} {unit} on the {settings['clock']} clock "
                                  f"(limit {limit:g}); process group killed")
    if end_status == "wall_timeout":
        return statuses.TIMEOUT, (f"timed out: {result['wall_seconds'] or backstop:.1f} wall seconds "
                                  f"(backstop {backstop:g}); process group killed")
    if end_status == statuses.STOPPED_EARLY:
        reason = stop.reason or {}
        result["early_stop"] = reason
        why = reason.get("message") or reason.get("reason") or ", ".join(
            f"{k}={v}" for k, v in list(reason.items())[:6]) or "no reason given"
        return statuses.STOPPED_EARLY, f"stopped early: {why}"
    if end_status in (statuses.KILLED, statuses.INTERRUPTED):
        how = "SIGTERM" if end_status == statuses.KILLED else "SIGINT"
        return end_status, f"harness received {how} after {result['wall_seconds']:.1f}s; train.py stopped"

    if messages.errors:
        result["integrity"]["channel"] = messages.errors[:5]
        return statuses.INTEGRITY, f"integrity: record channel: {messages.errors[0]}"
    if messages.violations:
        v = messages.violations[0]
        result["integrity"]["violation"] = v
        return statuses.INTEGRITY, f"integrity: {v.get('check')}: {v.get('message')}"
    changed = isolation.changes(before, after)
    if changed:
        result["integrity"]["changed_files"] = changed
        return statuses.INTEGRITY, f"integrity: fixed files changed during the run: {'; '.join(changed)}"
    if messages.ready is None:
        return statuses.CRASH, f"the sandbox did not start train.py: {crash_reason(exit_code or 1, lines)}"
    if exit_code != 0:
        return statuses.CRASH, crash_reason(exit_code, lines)
    if record is None:
        if "val_bpb" in reported:
            return statuses.INTEGRITY, (f"integrity: train.py printed val_bpb {reported['val_bpb']:.6f} but "
                                        f"evaluate_bpb produced no record")
        return statuses.CRASH, "no evaluation record: evaluate_bpb was not called"

    echo = record.get("settings") or {}
    for key in ("preset", "budget", "eval_tokens", "max_seq_len", "measurement_version", "clock",
                "startup_allowance", "nonce"):
        if echo.get(key) != settings[key]:
            return statuses.INTEGRITY, (f"integrity: the evaluation ran with {key}={echo.get(key)!r}, "
                                        f"the harness asked for {settings[key]!r}")
    if record.get("num_tokens") != settings["eval_tokens"]:
        return statuses.INTEGRITY, (f"integrity: the evaluation covered {record.get('num_tokens')} tokens, "
                                    f"not {settings['eval_tokens']}")
    computed = record.get("val_bpb")
    if not isinstance(computed, (int, float)) or not math.isfinite(computed):
        return statuses.CRASH, f"val_bpb is not finite ({computed!r}): the model's logits overflow or are NaN"
    printed = reported.get("val_bpb")
    if printed is not None and abs(round(printed, 6) - round(float(computed), 6)) > VAL_BPB_TOLERANCE:
        return statuses.INTEGRITY, f"integrity: printed val_bpb {printed:.6f} != evaluator computed {computed:.6f}"

    excess, figures = _eval_excess(record, messages, settings, result["training_seconds"])
    result["integrity"]["evaluation"] = figures
    training = result["training_seconds"] or 0.0
    budget = settings["budget"]
    median_step = (record.get("clock") or {}).get("median_step") or 0.0
    overshoot = OVERSHOOT_FLOOR_S + min(1.5 * median_step, OVERSHOOT_MAX_FRACTION * budget)
    result["integrity"]["budget"] = {"training_seconds": training, "eval_excess_seconds": round(excess, 3),
                                     "allowed_seconds": round(budget + overshoot, 3)}
    if training + excess > budget + overshoot:
        extra = f" + {excess:.2f}s of work during evaluate_bpb that counts as training ({figures['why']})" \
            if excess > 0 else ""
        return statuses.OVER_BUDGET, (f"training took {training:.2f}s{extra} on the {settings['clock']} clock "
                                      f"> budget {budget:g}s + {overshoot:.2f}s for the last step")
    return statuses.OK, None


def _eval_excess(record: dict, messages: _Messages, settings: dict, training: float | None):
    """Work done during evaluate_bpb beyond what its forward passes need counts as training:
      other threads/processes (CPU clock): the child's CPU during the evaluation minus the
        evaluating thread's (and its intra-op workers');
      slow forwards: any beyond OUTLIER_FACTOR x the median (+ the preset's first-forward
        allowance for the first one) - a first call that trains a shadow copy;
      expensive forwards: per token beyond FORWARD_COST_FACTOR x a training step's per-token
        cost (honest forwards cost ~0.3 of it)."""
    ev = record.get("eval") or {}
    forwards = [float(v) for v in ev.get("forward_seconds") or []]
    figures: dict = {"why": ""}
    if not forwards:
        return 0.0, figures
    median = sorted(forwards)[len(forwards) // 2]   # from prepare's list, not its summary
    first_allowance = float(settings.get("first_forward_allowance") or 0.0)
    outlier = sum(max(0.0, f - (OUTLIER_FACTOR * median + (first_allowance if i == 0 else OVERSHOOT_FLOOR_S)))
                  for i, f in enumerate(forwards))
    threads = max(1, int(ev.get("threads") or 1))
    other = 0.0
    if settings["clock"] == "cpu" and messages.eval_start_clock is not None and messages.record_clock is not None:
        eval_cpu = messages.record_clock - messages.eval_start_clock
        own = float(ev.get("thread_cpu_seconds") or 0.0) + (threads - 1) * sum(forwards)
        other = max(0.0, eval_cpu - own - OTHER_THREADS_FLOOR_S)
        figures["eval_cpu_seconds"] = round(eval_cpu, 3)
    expensive = 0.0
    train_tokens = record.get("train_tokens") or 0
    if training and training > 0 and train_tokens > 0 and ev.get("forward_tokens"):
        step_cost = training / train_tokens * float(ev["forward_tokens"])   # a training step's cost for as many tokens
        cost = median * (threads if settings["clock"] == "cpu" else 1)
        expensive = len(forwards) * max(0.0, cost - FORWARD_COST_FACTOR * step_cost)
        figures["forward_vs_training_cost"] = round(cost / step_cost, 3) if step_cost > 0 else None
    figures.update(other_threads_seconds=round(other, 3), slow_forwards_seconds=round(outlier, 3),
                   expensive_forwards_seconds=round(expensive, 3), forward_median_seconds=median,
                   forwards=len(forwards))
    parts = [f"{name} {value:.2f}s" for name, value in (("other threads", other), ("slow forwards", outlier),
                                                         ("forwards costlier than training", expensive)) if value > 0]
    figures["why"] = ", ".join(parts)
    return other + outlier + expensive, figures


# --------------------------------------------------------------------------- CLI

def _parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _parse_cpus(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise HarnessError(f"--cpus expects a comma-separated list of core numbers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run a candidate's train.py and write result.json.")
    ap.add_argument("--workspace", required=True, help="folder holding train.py, prepare.py and the harness")
    ap.add_argument("--preset", required=True, choices=["gpu", "cpu", "micro", "auto"])
    ap.add_argument("--budget", type=float, help="training budget (s); default: AUTORESEARCH_TIME_BUDGET or prepare's")
    ap.add_argument("--timeout", type=float, help="hard limit for train.py, in the preset's clock's seconds")
    ap.add_argument("--wall-timeout", type=float, help="wall-clock backstop (s)")
    ap.add_argument("--threads", type=int, default=0, help="compute threads for train.py (0: 1 on CPU presets)")
    ap.add_argument("--cpus", help="cores to pin train.py to, e.g. 0 or 2,3")
    ap.add_argument("--out", help="folder for run.log, result.json, scratch/ (default: workspace)")
    ap.add_argument("--result", help="path of result.json (default: OUT/result.json)")
    ap.add_argument("--stop-file", help="stop early (status stopped_early) when this file appears")
    ap.add_argument("--isolation", default="auto", choices=["auto", *isolation.LEVELS])
    ap.add_argument("--startup-allowance", type=float, default=DEFAULT_STARTUP_ALLOWANCE,
                    help="extra seconds the hard limit allows for start-up")
    ap.add_argument("--eval-allowance", type=float)
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for train.py")
    ap.add_argument("--no-echo", action="store_true", help="do not copy train.py output to stdout")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve() if args.out else Path(args.workspace).resolve()

    def on_signal(signum, _frame):
        _STOP.request(statuses.INTERRUPTED if signum == signal.SIGINT else statuses.KILLED)
        _STOP.arm_watchdog(STOP_DEADLINE_S)

    def on_stop_early(_signum, _frame):   # the runner wrote OUT/stop.json just before
        _STOP.request(statuses.STOPPED_EARLY, _read_json_object(out / "stop.json"))
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_stop_early)
    try:
        result = run_harness(args.workspace, args.preset, budget=args.budget, timeout=args.timeout,
                             wall_timeout=args.wall_timeout, threads=args.threads, cpus=_parse_cpus(args.cpus),
                             out_dir=args.out, result_path=args.result,
                             startup_allowance=args.startup_allowance, eval_allowance=args.eval_allowance,
                             extra_env=_parse_env_pairs(args.env), echo=not args.no_echo,
                             stop_file=args.stop_file, isolation_level=args.isolation)
    except HarnessError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    line = f"harness: status={result['status']} val_bpb={result['val_bpb']}"
    if result["failure_reason"]:
        line += f" reason={result['failure_reason']}"
    print(line, file=sys.stderr, flush=True)
    return EXIT_CODES[result["status"]]


if __name__ == "__main__":
    sys.exit(main())
