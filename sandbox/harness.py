"""Run one candidate's train.py and turn what it did into a trustworthy result.json.

STDLIB ONLY: this file is copied into every candidate workspace and runs inside SageMaker
containers where our package is not installed. It must not import anything from `agent` or
`sandbox`.

    python harness.py --workspace WS --preset P [--budget B] [--timeout S] [--threads N]
                      [--out DIR] [--result PATH] [--startup-allowance S] [--eval-allowance S]
                      [--env KEY=VALUE ...] [--no-echo]

What it does:
  * runs WS/train.py in a child process (cwd=WS, same interpreter) in its own session, with a
    scrubbed environment (allowlist, then a deny pass for anything that looks like a secret);
  * streams the child's merged stdout/stderr line by line into OUT/run.log (and to its own stdout
    unless --no-echo, which is what SageMaker ships to CloudWatch);
  * enforces a hard wall-clock limit (--timeout, else budget + startup + eval allowances) by
    killing the child's whole process group (SIGTERM, then SIGKILL);
  * parses the last `---` summary block strictly and cross-checks it against the evaluator record
    that prepare.evaluate_bpb writes to $AUTORESEARCH_EVAL_RECORD, and against the time budget;
  * writes OUT/result.json atomically (or --result PATH) and exits with the status's code.

Statuses and exit codes (0 only for ok, so a SageMaker job of a failed candidate ends Failed):
    ok 0 | crash 3 | timeout 4 | rejected 5 | over_budget 6 | killed 7 | interrupted 8
    (2 = bad command line, from argparse; 1 = a bug in the harness itself)
SIGTERM to the harness -> `killed`; SIGINT -> `interrupted`; both stop the child group first.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import datetime as _dt
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

EXIT_CODES = {"ok": 0, "crash": 3, "timeout": 4, "rejected": 5, "over_budget": 6,
              "killed": 7, "interrupted": 8}
STATUSES = tuple(EXIT_CODES)

SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth")
INT_KEYS = ("num_steps", "depth")

# Fallback budgets when neither --budget nor AUTORESEARCH_TIME_BUDGET says; the evaluator record's
# own `time_budget` (what prepare.py really used) wins for the over-budget check.
DEFAULT_BUDGETS = {"gpu": 300.0, "cpu": 45.0, "micro": 4.0, "auto": 300.0}  # = prepare.PRESETS
DEFAULT_STARTUP_ALLOWANCE = 120.0
LOG_TAIL_LINES = 50
KILL_GRACE_S = 5.0
VAL_BPB_TOLERANCE = 1e-6

# Environment passed to train.py: only these names/prefixes survive ...
ENV_ALLOW_NAMES = {
    "PATH", "HOME", "LANG", "TMPDIR", "TZ", "PYTHONHASHSEED", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "USER", "LOGNAME", "SHELL", "TERM",
    "AUTORESEARCH_PRESET", "AUTORESEARCH_CACHE", "AUTORESEARCH_TIME_BUDGET", "AUTORESEARCH_SOURCE",
    "SM_CURRENT_HOST", "SM_HOSTS", "SM_NUM_GPUS", "SM_NUM_CPUS", "SM_CHANNELS",
    "SM_CHANNEL_DATA", "SM_CHANNEL_TRAINING", "SM_MODEL_DIR", "SM_OUTPUT_DIR",
    "SM_OUTPUT_DATA_DIR", "SM_INPUT_DIR", "SM_CURRENT_INSTANCE_TYPE",
}
ENV_ALLOW_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "PYTORCH_", "TORCH", "TRITON_", "NCCL_")
# ... and then anything that looks like a secret is dropped even if allowlisted above.
ENV_DENY = re.compile(r"^(ANTHROPIC_|AWS_)|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|_KEY$|^KEY$",
                      re.IGNORECASE)


class HarnessError(Exception):
    """A problem with how the harness was asked to run (bad workspace, bad arguments)."""


# --------------------------------------------------------------------------- environment

def scrub_env(parent: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: allowlisted names from `parent` plus `extra`, minus secrets."""
    env = {k: v for k, v in parent.items()
           if k in ENV_ALLOW_NAMES or k.startswith(ENV_ALLOW_PREFIXES)}
    env.update(extra or {})
    return {k: v for k, v in env.items() if not ENV_DENY.search(k)}


def default_budget(preset: str, parent_env: dict[str, str]) -> float:
    override = parent_env.get("AUTORESEARCH_TIME_BUDGET")
    if override:
        try:
            return float(override)
        except ValueError:
            raise HarnessError(f"AUTORESEARCH_TIME_BUDGET={override!r} is not a number of seconds")
    return DEFAULT_BUDGETS.get(preset, DEFAULT_BUDGETS["gpu"])


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


# --------------------------------------------------------------------------- parsing

def parse_summary(lines: list[str]) -> dict:
    """Values of the LAST `---` block. Raises ValueError naming the first problem."""
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        raise ValueError("no summary block: train.py printed no `---` line")
    values: dict[str, float] = {}
    for line in lines[starts[-1] + 1:]:
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*):\s+(\S+)\s*$", line)
        if not m or m.group(1) not in SUMMARY_KEYS:
            continue  # stray stderr lines may interleave; unknown keys are allowed extras
        key, raw = m.groups()
        if key in values:
            raise ValueError(f"summary repeats key {key}")
        try:
            val = float(raw)
        except ValueError:
            raise ValueError(f"summary key {key} is not a number: {raw!r}") from None
        if not math.isfinite(val):
            raise ValueError(f"summary key {key} is not finite: {raw!r}")
        values[key] = val
    for key in SUMMARY_KEYS:
        if key not in values:
            raise ValueError(f"summary missing key {key}")
    for key in INT_KEYS:
        if values[key] != int(values[key]):
            raise ValueError(f"summary key {key} is not an integer: {values[key]!r}")
        values[key] = int(values[key])
    return values


_TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


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


# --------------------------------------------------------------------------- running

class _StopRequest:
    """Set from a signal handler (or another thread) to end the run early."""

    def __init__(self):
        self.status: str | None = None
        self.event = threading.Event()

    def request(self, status: str):
        if self.status is None:
            self.status = status
        self.event.set()


_STOP = _StopRequest()


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left of it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; sweep stragglers that share its group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


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


def _pump(stream, log_fh, echo, tail: collections.deque, all_lines: list):
    """Copy the child's output line by line to run.log (flushed, for live tailing) and echo."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace")
        log_fh.write(text)
        log_fh.flush()
        if echo:
            sys.stdout.write(text)
            sys.stdout.flush()
        # progress lines may use \r; keep each piece as its own line for parsing
        for piece in text.replace("\r", "\n").split("\n"):
            if piece.strip():
                tail.append(piece)
                all_lines.append(piece)
    stream.close()


def run_harness(workspace, preset: str, *, budget: float | None = None, timeout: float | None = None,
                threads: int = 0, out_dir=None, result_path=None,
                startup_allowance: float = DEFAULT_STARTUP_ALLOWANCE,
                eval_allowance: float | None = None, extra_env: dict[str, str] | None = None,
                echo: bool = False, python: str = sys.executable, kill_grace: float = KILL_GRACE_S,
                stop: _StopRequest | None = None) -> dict:
    """Run WS/train.py once and return (and write) the result dict. Never raises for a bad
    candidate; raises HarnessError only for a bad workspace or arguments."""
    ws = Path(workspace).resolve()
    if not (ws / "train.py").is_file():
        raise HarnessError(f"{ws}/train.py not found: not a candidate workspace")
    out = Path(out_dir).resolve() if out_dir else ws
    result_file = Path(result_path).resolve() if result_path else out / "result.json"
    private = out / ".harness"
    private.mkdir(parents=True, exist_ok=True)
    record_path = private / "eval_record.json"
    log_path = out / "run.log"
    for stale in (record_path, result_file):
        stale.unlink(missing_ok=True)
    stop = stop or _STOP

    parent_env = dict(os.environ)
    explicit_budget = budget is not None or "AUTORESEARCH_TIME_BUDGET" in parent_env
    if budget is None:
        budget = default_budget(preset, parent_env)
    if eval_allowance is None:
        eval_allowance = max(60.0, 0.5 * budget)  # the GPU eval pass takes ~0.1-0.5x the budget
    limit = float(timeout) if timeout else budget + startup_allowance + eval_allowance

    forced = {"AUTORESEARCH_PRESET": preset, "AUTORESEARCH_EVAL_RECORD": str(record_path),
              "PYTHONPATH": str(ws), "PYTHONUNBUFFERED": "1"}
    if threads and threads > 0:
        forced["OMP_NUM_THREADS"] = forced["MKL_NUM_THREADS"] = str(threads)
    if explicit_budget:  # otherwise prepare.py keeps its own default for the preset
        forced["AUTORESEARCH_TIME_BUDGET"] = f"{budget:g}"
    env = scrub_env(parent_env, {**(extra_env or {}), **forced})

    started = time.time()
    t0 = time.monotonic()
    tail: collections.deque = collections.deque(maxlen=LOG_TAIL_LINES)
    all_lines: list[str] = []
    end_status: str | None = None
    with open(log_path, "w", encoding="utf-8") as log_fh:
        proc = subprocess.Popen([python, "train.py"], cwd=ws, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent())
        (private / "child.pid").write_text(str(proc.pid))
        pump = threading.Thread(target=_pump, args=(proc.stdout, log_fh, echo, tail, all_lines),
                                daemon=True)
        pump.start()
        while proc.poll() is None:
            if stop.event.is_set():
                end_status = stop.status
                break
            if time.monotonic() - t0 > limit:
                end_status = "timeout"
                break
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        if end_status:
            _kill_group(proc, kill_grace)
        else:  # normal exit: sweep anything train.py left running in its group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        pump.join(timeout=10)
    wall = time.monotonic() - t0
    ended = time.time()

    result: dict = {k: None for k in SUMMARY_KEYS}
    result.update(status=None, failure_reason=None, exit_code=proc.returncode,
                  wall_seconds=round(wall, 3), started_at=_iso(started), ended_at=_iso(ended),
                  preset=preset, host=socket.gethostname(), budget_seconds=budget,
                  timeout_seconds=limit, threads=threads or None, log_path=str(log_path),
                  eval_record=None, log_tail="\n".join(tail))
    record = _read_record(record_path)
    result["eval_record"] = record

    if end_status == "timeout":
        status, reason = "timeout", f"timed out after {wall:.1f}s (limit {limit:g}s); process group killed"
    elif end_status in ("killed", "interrupted"):
        how = "SIGTERM" if end_status == "killed" else "SIGINT"
        status, reason = end_status, f"harness received {how} after {wall:.1f}s; train.py stopped"
    elif proc.returncode != 0:
        status, reason = "crash", crash_reason(proc.returncode, all_lines)
    else:
        status, reason = _judge(all_lines, record, budget, preset, result)
    result["status"], result["failure_reason"] = status, reason
    _atomic_write_json(result_file, result)
    return result


def _read_record(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        return {"error": f"unreadable evaluator record: {exc}"}


def _judge(lines, record, budget, preset, result) -> tuple[str, str | None]:
    """Status of a train.py that exited 0: summary, integrity and budget checks, in that order."""
    try:
        summary = parse_summary(lines)
    except ValueError as exc:
        return "crash", str(exc)
    result.update(summary)
    if record is None:
        return "rejected", "no evaluator record: evaluate_bpb was not called"
    computed = record.get("val_bpb") if isinstance(record, dict) else None
    if not isinstance(computed, (int, float)) or not math.isfinite(computed):
        return "rejected", f"integrity: evaluator record has no valid val_bpb ({record!r:.200})"
    printed = summary["val_bpb"]
    if abs(round(printed, 6) - round(float(computed), 6)) > VAL_BPB_TOLERANCE:
        return "rejected", f"integrity: printed val_bpb {printed:.6f} != evaluator computed {computed:.6f}"
    rec_preset = record.get("preset")
    if preset != "auto" and rec_preset not in (None, preset):
        return "rejected", f"integrity: evaluator ran preset {rec_preset!r}, harness asked for {preset!r}"
    real_budget = record.get("time_budget")
    if isinstance(real_budget, (int, float)) and real_budget > 0:
        budget = float(real_budget)
        result["budget_seconds"] = budget
    # The loop looks at the clock between steps, so an honest run overshoots by up to one step:
    # on a busy CPU one step can take seconds. Allow the last step's own duration on top.
    allowed = budget + max(3.0, 0.05 * budget) + _last_step_seconds(lines)
    if summary["training_seconds"] > allowed:
        return "over_budget", (f"training_seconds {summary['training_seconds']:g} > budget {budget:g}s "
                               f"(+{allowed - budget:.1f}s tolerance incl. the last step)")
    return "ok", None


_STEP_DT = re.compile(r"^step \d+ .*\| dt: (\d+(?:\.\d+)?)ms")


def _last_step_seconds(lines) -> float:
    """dt of the last progress line (0 when there is none); capped at a minute so a forged
    line cannot buy a candidate unlimited training time."""
    for line in reversed(lines):
        match = _STEP_DT.match(line.strip())
        if match:
            return min(float(match.group(1)) / 1000.0, 60.0)
    return 0.0


# --------------------------------------------------------------------------- CLI

def _parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run a candidate's train.py and write result.json.")
    ap.add_argument("--workspace", required=True, help="folder holding train.py and prepare.py")
    ap.add_argument("--preset", required=True, choices=["gpu", "cpu", "micro", "auto"])
    ap.add_argument("--budget", type=float, help="training time budget (s); default from env/preset")
    ap.add_argument("--timeout", type=float, help="hard wall-clock limit (s) for train.py")
    ap.add_argument("--threads", type=int, default=0, help="OMP/MKL threads for train.py (0 = leave)")
    ap.add_argument("--out", help="folder for run.log, result.json, .harness/ (default: workspace)")
    ap.add_argument("--result", help="path of result.json (default: OUT/result.json)")
    ap.add_argument("--startup-allowance", type=float, default=DEFAULT_STARTUP_ALLOWANCE)
    ap.add_argument("--eval-allowance", type=float)
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for train.py")
    ap.add_argument("--no-echo", action="store_true", help="do not copy train.py output to stdout")
    args = ap.parse_args(argv)

    def on_signal(signum, _frame):
        _STOP.request("interrupted" if signum == signal.SIGINT else "killed")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        result = run_harness(args.workspace, args.preset, budget=args.budget, timeout=args.timeout,
                             threads=args.threads, out_dir=args.out, result_path=args.result,
                             startup_allowance=args.startup_allowance,
                             eval_allowance=args.eval_allowance, extra_env=_parse_env_pairs(args.env),
                             echo=not args.no_echo)
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
