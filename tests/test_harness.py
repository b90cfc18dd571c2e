"""sandbox/harness.py with real child processes: stand-in train.py scripts in tmp workspaces.

The stand-in reads its behaviour from standin.json so each test states only what differs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import harness
from sandbox.workspace import HARNESS_SOURCE

STANDIN = r'''
import json, math, os, sys, time
cfg = json.load(open("standin.json"))
def mark(name, pid):   # atomically: the tests read the pid as soon as the file exists
    open(name + ".tmp", "w").write(str(pid))
    os.replace(name + ".tmp", name)
if cfg.get("dump_env"):
    json.dump(dict(os.environ), open("env_seen.json", "w"))
if cfg.get("spawn_grandchild"):
    import subprocess
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    mark("grandchild.pid", p.pid)
for i in range(cfg.get("steps", 3)):
    loss = float("nan") if cfg.get("nan_at") == i else 4.0 - 0.1 * i
    print(f"step {i:05d} ({100*i/3:.1f}%) | loss: {loss:.6f} | lrm: 1.00 | dt: {cfg.get('dt_ms', 10)}ms | "
          f"tok/sec: 12,345 | mfu: 1.5% | epoch: 1 | remaining: {3-i}s", flush=True)
    if math.isnan(loss):
        print("FAIL", flush=True)
        sys.exit(1)
if cfg.get("raise"):
    raise RuntimeError(cfg["raise"])
if cfg.get("sleep"):
    mark("sleeping", os.getpid())
    time.sleep(cfg["sleep"])
if cfg.get("record", True):
    rec = {"val_bpb": cfg.get("record_val", 1.2345671), "time_budget": cfg.get("budget", 10),
           "preset": os.environ["AUTORESEARCH_PRESET"], "total_nats": 1.0, "total_bytes": 2}
    json.dump(rec, open(os.environ["AUTORESEARCH_EVAL_RECORD"], "w"))
if cfg.get("summary", True):
    values = {"val_bpb": "1.234567", "training_seconds": "9.9", "total_seconds": "11.0",
              "peak_vram_mb": "0.0", "mfu_percent": "1.50", "total_tokens_M": "0.1",
              "num_steps": "3", "num_params_M": "0.5", "depth": "2"}
    values.update(cfg.get("values", {}))
    if cfg.get("early_block"):
        print("---\nval_bpb:          9.999999")
    print("---")
    for k, v in values.items():
        if k not in cfg.get("drop", []):
            print(f"{k + ':':<18}{v}")
sys.exit(cfg.get("exit", 0))
'''


def make_ws(tmp_path: Path, **behaviour) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (ws / "train.py").write_text(STANDIN)
    (ws / "harness.py").write_text(HARNESS_SOURCE.read_text())
    (ws / "standin.json").write_text(json.dumps(behaviour))
    return ws


def run_cli(ws: Path, *extra: str, env: dict | None = None) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, str(ws / "harness.py"), "--workspace", str(ws),
                           "--preset", "micro", "--no-echo", *extra],
                          env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads((ws / "result.json").read_text())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


CONTRACT_FIELDS = {"status", "val_bpb", "peak_vram_mb", "training_seconds", "total_seconds",
                   "num_steps", "mfu_percent", "num_params_M", "total_tokens_M", "depth",
                   "failure_reason", "log_tail", "exit_code", "wall_seconds", "started_at",
                   "ended_at", "preset", "host", "eval_record"}


def test_ok_run_writes_the_contract_and_exits_zero(tmp_path):
    ws = make_ws(tmp_path)
    code, result = run_cli(ws)
    assert code == 0
    assert CONTRACT_FIELDS <= set(result)
    assert result["status"] == "ok" and result["failure_reason"] is None
    assert result["val_bpb"] == pytest.approx(1.234567)
    assert result["num_steps"] == 3 and isinstance(result["num_steps"], int)
    assert result["depth"] == 2 and result["preset"] == "micro"
    assert result["eval_record"]["total_bytes"] == 2
    assert "step 00002" in result["log_tail"]
    # full log captured, stdout+stderr merged
    assert "val_bpb:" in (ws / "run.log").read_text()
    assert not (ws / ".harness" / "eval_record.json.tmp").exists()


def test_crash_reports_last_traceback_line(tmp_path):
    code, result = run_cli(make_ws(tmp_path, **{"raise": "shape mismatch 3 vs 4"}))
    assert (code, result["status"]) == (harness.EXIT_CODES["crash"], "crash")
    assert result["failure_reason"] == "train.py exited 1: RuntimeError: shape mismatch 3 vs 4"
    assert "Traceback" in result["log_tail"]


def test_nan_loss_fail_is_a_crash_naming_the_nan(tmp_path):
    code, result = run_cli(make_ws(tmp_path, nan_at=1))
    assert result["status"] == "crash" and code == 3
    assert result["failure_reason"] == "train.py exited 1: FAIL (loss is NaN)"
    assert result["val_bpb"] is None


def test_hang_past_timeout_kills_the_whole_group(tmp_path):
    ws = make_ws(tmp_path, sleep=600, spawn_grandchild=True)
    t0 = time.monotonic()
    code, result = run_cli(ws, "--timeout", "1.5")
    assert time.monotonic() - t0 < 20
    assert (code, result["status"]) == (harness.EXIT_CODES["timeout"], "timeout")
    assert "limit 1.5s" in result["failure_reason"]
    grandchild = int((ws / "grandchild.pid").read_text())
    sleeper = int((ws / "sleeping").read_text())
    time.sleep(0.2)
    assert not pid_alive(grandchild) and not pid_alive(sleeper)


def test_default_timeout_is_budget_plus_allowances(tmp_path):
    ws = make_ws(tmp_path, sleep=600)
    code, result = run_cli(ws, "--budget", "0.5", "--startup-allowance", "0.5", "--eval-allowance", "0.5")
    assert result["status"] == "timeout"
    assert result["timeout_seconds"] == pytest.approx(1.5)


def test_no_summary_is_a_crash(tmp_path):
    code, result = run_cli(make_ws(tmp_path, summary=False))
    assert result["status"] == "crash" and code == 3
    assert "no summary block" in result["failure_reason"]


def test_missing_key_in_summary_is_a_crash(tmp_path):
    code, result = run_cli(make_ws(tmp_path, drop=["num_params_M"]))
    assert result["status"] == "crash"
    assert result["failure_reason"] == "summary missing key num_params_M"


def test_non_finite_summary_value_is_a_crash(tmp_path):
    code, result = run_cli(make_ws(tmp_path, values={"val_bpb": "nan"}))
    assert result["status"] == "crash"
    assert result["failure_reason"] == "summary key val_bpb is not finite: 'nan'"


def test_last_summary_block_wins(tmp_path):
    code, result = run_cli(make_ws(tmp_path, early_block=True))
    assert result["status"] == "ok" and result["val_bpb"] == pytest.approx(1.234567)


def test_printed_val_bpb_must_match_evaluator_record(tmp_path):
    code, result = run_cli(make_ws(tmp_path, record_val=1.1))
    assert (code, result["status"]) == (harness.EXIT_CODES["rejected"], "rejected")
    assert result["failure_reason"] == "integrity: printed val_bpb 1.234567 != evaluator computed 1.100000"


def test_missing_evaluator_record_is_rejected(tmp_path):
    code, result = run_cli(make_ws(tmp_path, record=False))
    assert result["status"] == "rejected"
    assert result["failure_reason"] == "no evaluator record: evaluate_bpb was not called"


def test_stale_evaluator_record_is_deleted_before_start(tmp_path):
    ws = make_ws(tmp_path, record=False)
    (ws / ".harness").mkdir()
    (ws / ".harness" / "eval_record.json").write_text(json.dumps({"val_bpb": 1.234567}))
    code, result = run_cli(ws)
    assert result["status"] == "rejected"


def test_training_over_budget(tmp_path):
    code, result = run_cli(make_ws(tmp_path, budget=10, values={"training_seconds": "14.2"}))
    assert (code, result["status"]) == (harness.EXIT_CODES["over_budget"], "over_budget")
    assert result["failure_reason"].startswith("training_seconds 14.2 > budget 10s")
    # within tolerance is fine
    code, result = run_cli(make_ws(tmp_path, budget=10, values={"training_seconds": "12.5"}))
    assert result["status"] == "ok"


def test_one_slow_last_step_is_not_over_budget(tmp_path):
    """The loop checks the clock between steps: a 4 s last step (a busy CPU) may overshoot by 4 s."""
    code, result = run_cli(make_ws(tmp_path, budget=10, dt_ms=4000, values={"training_seconds": "16.5"}))
    assert result["status"] == "ok", result["failure_reason"]
    code, result = run_cli(make_ws(tmp_path, budget=10, dt_ms=4000, values={"training_seconds": "17.5"}))
    assert result["status"] == "over_budget"
    # a forged huge dt buys at most a minute
    code, result = run_cli(make_ws(tmp_path, budget=10, dt_ms=10_000_000, values={"training_seconds": "80"}))
    assert result["status"] == "over_budget"


def test_secrets_are_scrubbed_and_controls_set(tmp_path):
    ws = make_ws(tmp_path, dump_env=True)
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-x", AWS_SECRET_ACCESS_KEY="s",
               AWS_SESSION_TOKEN="t", AWS_ACCESS_KEY_ID="AKIA", GITHUB_TOKEN="g", MY_PASSWORD="p",
               CUDA_API_KEY="allowlisted-prefix-but-secret", SOME_RANDOM_VAR="x",
               LC_ALL="C.UTF-8", TORCH_HOME="/tmp/th", AUTORESEARCH_CACHE="/tmp/c")
    code, result = run_cli(ws, "--threads", "3", "--env", "AUTORESEARCH_SOURCE=local",
                           "--env", "EXTRA_TOKEN=leak", env=env)
    assert code == 0
    seen = json.loads((ws / "env_seen.json").read_text())
    for secret in ("ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_ACCESS_KEY_ID", "GITHUB_TOKEN", "MY_PASSWORD", "CUDA_API_KEY",
                   "SOME_RANDOM_VAR", "EXTRA_TOKEN"):
        assert secret not in seen, secret
    assert seen["OMP_NUM_THREADS"] == "3" and seen["AUTORESEARCH_PRESET"] == "micro"
    assert seen["PYTHONPATH"] == str(ws.resolve())
    assert seen["AUTORESEARCH_EVAL_RECORD"] == str(ws.resolve() / ".harness" / "eval_record.json")
    assert seen["LC_ALL"] == "C.UTF-8" and seen["TORCH_HOME"] == "/tmp/th"
    assert seen["AUTORESEARCH_CACHE"] == "/tmp/c" and seen["AUTORESEARCH_SOURCE"] == "local"


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, "killed"), (signal.SIGINT, "interrupted")])
def test_signal_to_harness_stops_child_and_records_status(tmp_path, sig, status):
    ws = make_ws(tmp_path, sleep=600)
    proc = subprocess.Popen([sys.executable, str(ws / "harness.py"), "--workspace", str(ws),
                             "--preset", "micro", "--no-echo"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (ws / "sleeping").exists():
        assert time.monotonic() < deadline, "stand-in never started"
        time.sleep(0.05)
    sleeper = int((ws / "sleeping").read_text())
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == harness.EXIT_CODES[status]
    result = json.loads((ws / "result.json").read_text())
    assert result["status"] == status
    assert not pid_alive(sleeper)


def test_run_harness_in_process_and_custom_paths(tmp_path):
    ws = make_ws(tmp_path)
    out = tmp_path / "out"
    result = harness.run_harness(ws, "micro", out_dir=out, result_path=tmp_path / "r.json")
    assert result["status"] == "ok"
    assert json.loads((tmp_path / "r.json").read_text())["val_bpb"] == result["val_bpb"]
    assert (out / "run.log").is_file() and not (ws / "run.log").exists()


def test_bad_workspace_is_a_clear_error(tmp_path):
    with pytest.raises(harness.HarnessError, match="train.py not found"):
        harness.run_harness(tmp_path, "micro")
    proc = subprocess.run([sys.executable, str(HARNESS_SOURCE), "--workspace", str(tmp_path),
                           "--preset", "micro"], capture_output=True, text=True)
    assert proc.returncode == 2 and "train.py not found" in proc.stderr


def test_harness_is_stdlib_only():
    import ast
    tree = ast.parse(HARNESS_SOURCE.read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods - {"__future__"} <= set(sys.stdlib_module_names)


@pytest.mark.parametrize("lines,reason", [
    (["Traceback (most recent call last):", '  File "x"', "torch.OutOfMemoryError: CUDA out of memory"],
     "train.py exited 1: torch.OutOfMemoryError: CUDA out of memory"),
    (["step 00001 (1.0%) | loss: 123.5 | tok/sec: 1", "FAIL"], "train.py exited 1: FAIL (loss 123.5 > 100)"),
    (["something odd"], "train.py exited 1: something odd"),
])
def test_crash_reason(lines, reason):
    assert harness.crash_reason(1, lines) == reason


def test_crash_reason_for_signals():
    assert harness.crash_reason(-9, []) == "train.py killed by SIGKILL (out of memory?)"
