"""sandbox/harness.py with real child processes: the real bootstrap, sandbox, pipes and key, with
a stand-in prepare.py (torch-free, tests/standins.py) and stand-in train.py scripts.

What the real prepare.py measures is tested in test_prepare.py / test_runtime_cheats.py.
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

from sandbox import harness, statuses
from sandbox.workspace import HARNESS_FILES, HARNESS_SOURCE
from tests.standins import make_fake_cache, make_project, standin_workspace


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory) -> Path:
    return make_fake_cache(tmp_path_factory.mktemp("fake-cache"))


@pytest.fixture(autouse=True)
def _cache_env(fake_cache, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(fake_cache))
    monkeypatch.delenv("AUTORESEARCH_TIME_BUDGET", raising=False)


def make_ws(tmp_path: Path, **behaviour) -> Path:
    return standin_workspace(tmp_path / "ws", make_project(tmp_path / "project"), **behaviour)


def run_cli(ws: Path, *extra: str, env: dict | None = None) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-I", str(ws / "harness.py"), "--workspace", str(ws),
                           "--preset", "micro", "--no-echo", *extra],
                          env=env, capture_output=True, text=True, timeout=120)
    assert (ws / "result.json").is_file(), proc.stderr
    return proc.returncode, json.loads((ws / "result.json").read_text())


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (pids inside the child's PID namespace
    mean nothing out here, so the tests find the candidate's processes by what they run)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{name}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z" and int(name) != os.getpid():
            found.append(int(name))
    return found


def assert_all_gone(*markers: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(processes_mentioning(m) for m in markers):
        assert time.monotonic() < deadline, f"processes of the candidate outlived it: {markers}"
        time.sleep(0.05)


CONTRACT_FIELDS = {"status", "failure_reason", "exit_code", "measurement_version", "val_bpb",
                   "training_seconds", "total_seconds", "wall_seconds", "cpu_seconds", "num_steps",
                   "total_tokens_M", "peak_vram_mb", "mfu_percent", "num_params_M", "depth",
                   "tokens_per_second", "clock", "budget_seconds", "startup_allowance_seconds",
                   "timeout_seconds", "threads", "preset", "host", "started_at", "ended_at", "log_path",
                   "log_tail", "curve", "reported", "integrity", "eval_record"}


# ----------------------------------------------------------------------------- verdicts

def test_ok_run_writes_the_contract_and_exits_zero(tmp_path):
    ws = make_ws(tmp_path)
    code, result = run_cli(ws)
    assert code == 0, result["failure_reason"]
    assert CONTRACT_FIELDS <= set(result)
    assert result["status"] == "ok" and result["failure_reason"] is None
    assert result["measurement_version"] == 2 and result["clock"] == "cpu"
    assert result["val_bpb"] == pytest.approx(1.2345671)          # from the record, not the print
    assert result["num_steps"] == 3 and result["num_params_M"] == 0.5
    assert result["reported"]["val_bpb"] == pytest.approx(1.234567)  # advisory
    assert result["depth"] == 2 and result["preset"] == "micro" and result["threads"] == 1
    assert result["training_seconds"] is not None and result["cpu_seconds"] > 0
    assert [p[1] for p in result["curve"]] == pytest.approx([4.0, 3.9, 3.8])
    assert "step 00002" in result["log_tail"]
    assert "val_bpb:" in (ws / "run.log").read_text()
    assert "isolation:" in (ws / "run.log").read_text()            # said plainly in the log
    sandbox = result["integrity"]["sandbox"]
    assert sandbox["level"] in ("namespaces", "uid", "detect") and "unavailable" in sandbox


def test_the_record_is_the_only_source_of_the_score(tmp_path):
    """No summary at all is fine: the printed block is advisory."""
    code, result = run_cli(make_ws(tmp_path, summary=False))
    assert result["status"] == "ok" and result["val_bpb"] == pytest.approx(1.2345671)
    assert result["reported"] is None


def test_crash_reports_last_traceback_line(tmp_path):
    code, result = run_cli(make_ws(tmp_path, **{"raise": "shape mismatch 3 vs 4"}))
    assert (code, result["status"]) == (statuses.HARNESS_EXIT_CODES["crash"], "crash")
    assert result["failure_reason"] == "train.py exited 1: RuntimeError: shape mismatch 3 vs 4"
    assert "Traceback" in result["log_tail"]


def test_nan_loss_fail_is_a_crash_naming_the_nan(tmp_path):
    code, result = run_cli(make_ws(tmp_path, nan_at=1))
    assert result["status"] == "crash" and code == 3
    assert result["failure_reason"] == "train.py exited 1: FAIL (loss is NaN)"
    assert result["val_bpb"] is None


def test_printed_val_bpb_must_match_the_record(tmp_path):
    code, result = run_cli(make_ws(tmp_path, record_val=1.1))
    assert (code, result["status"]) == (statuses.HARNESS_EXIT_CODES["integrity"], "integrity")
    assert result["failure_reason"] == "integrity: printed val_bpb 1.234567 != evaluator computed 1.100000"


def test_a_printed_score_without_a_record_is_an_integrity_failure(tmp_path):
    code, result = run_cli(make_ws(tmp_path, record=False))
    assert result["status"] == "integrity"
    assert result["failure_reason"] == ("integrity: train.py printed val_bpb 1.234567 but evaluate_bpb "
                                        "produced no record")


def test_no_record_and_no_score_is_a_crash(tmp_path):
    code, result = run_cli(make_ws(tmp_path, record=False, summary=False))
    assert result["status"] == "crash"
    assert result["failure_reason"] == "no evaluation record: evaluate_bpb was not called"


def test_a_violation_from_prepare_is_an_integrity_failure(tmp_path):
    code, result = run_cli(make_ws(tmp_path, violation=["causality", "position 3 moved"], record=False))
    assert result["status"] == "integrity" and code == 9
    assert result["failure_reason"] == "integrity: causality: position 3 moved"
    assert result["integrity"]["violation"]["check"] == "causality"


@pytest.mark.parametrize("field,value,message", [
    ("budget", 40.0, "the evaluation ran with budget=40.0"),
    ("preset", "cpu", "the evaluation ran with preset='cpu'"),
    ("nonce", "0" * 16, "the evaluation ran with nonce="),
])
def test_the_record_must_echo_the_settings_handed_over(tmp_path, field, value, message):
    code, result = run_cli(make_ws(tmp_path, record_fields={"settings": {field: value}}))
    assert result["status"] == "integrity"
    assert result["failure_reason"].startswith(f"integrity: {message}")


def test_the_record_must_cover_exactly_eval_tokens(tmp_path):
    code, result = run_cli(make_ws(tmp_path, record_fields={"num_tokens": 4096}))
    assert result["status"] == "integrity"
    assert result["failure_reason"] == "integrity: the evaluation covered 4096 tokens, not 32768"


def test_non_finite_val_bpb_is_a_crash(tmp_path):
    code, result = run_cli(make_ws(tmp_path, record_val=float("nan"), summary=False))
    assert result["status"] == "crash" and "val_bpb is not finite" in result["failure_reason"]


def test_training_over_budget_by_the_harness_clock(tmp_path):
    """The stand-in burns 1.5 CPU seconds before evaluating; its printed training_seconds (9.9)
    is never read."""
    code, result = run_cli(make_ws(tmp_path, burn_cpu=1.5), "--budget", "0.5")
    assert (code, result["status"]) == (statuses.HARNESS_EXIT_CODES["over_budget"], "over_budget")
    assert result["training_seconds"] >= 1.5
    assert result["failure_reason"].startswith(f"training took {result['training_seconds']:.2f}s on the cpu clock "
                                                f"> budget 0.5s")
    code, result = run_cli(make_ws(tmp_path, burn_cpu=0.0), "--budget", "5")
    assert result["status"] == "ok"


def test_budget_from_the_environment_override(tmp_path):
    env = dict(os.environ, AUTORESEARCH_TIME_BUDGET="2.5")
    code, result = run_cli(make_ws(tmp_path), env=env)
    assert result["budget_seconds"] == 2.5 and result["eval_record"]["settings"]["budget"] == 2.5


# ----------------------------------------------------------------------------- the channel

FORGER = r'''
import json, os
from pathlib import Path
fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
line = json.dumps({"payload": {"v": 1, "nonce": "x", "seq": 0, "kind": "record", "body": {"val_bpb": 0.1}},
                   "mac": "00" * 32}) + "\n"
for fd in fds[3:]:
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
(Path(__file__).parent / "forged").write_text("done")
print("---\nval_bpb:          0.100000")
'''


def test_a_forged_record_on_the_pipe_is_an_integrity_failure(tmp_path):
    ws = make_ws(tmp_path)
    (ws / "train.py").write_text(FORGER)
    code, result = run_cli(ws)
    assert (ws / "scratch" / "forged").exists()
    assert result["status"] == "integrity"
    assert "record channel" in result["failure_reason"]
    assert result["val_bpb"] is None


def test_the_child_sees_no_key_and_no_settings(tmp_path):
    """The settings line is consumed by the bootstrap; nothing of it is in the environment."""
    ws = make_ws(tmp_path, dump_env=True)
    code, result = run_cli(ws)
    seen = json.loads((ws / "scratch" / "env_seen.json").read_text())
    assert not any("EVAL_RECORD" in k or "TIME_BUDGET" in k for k in seen)
    assert result["eval_record"]["settings"]["nonce"] not in json.dumps(seen)


# ----------------------------------------------------------------------------- environment, files

def test_secrets_are_scrubbed_and_controls_set(tmp_path):
    ws = make_ws(tmp_path, dump_env=True)
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-x", AWS_SECRET_ACCESS_KEY="s",
               AWS_SESSION_TOKEN="t", AWS_ACCESS_KEY_ID="AKIA", GITHUB_TOKEN="g", MY_PASSWORD="p",
               CUDA_API_KEY="allowlisted-prefix-but-secret", SOME_RANDOM_VAR="x",
               LC_ALL="C.UTF-8", TORCH_HOME="/tmp/th", PYTHONPATH="/evil")
    code, result = run_cli(ws, "--threads", "3", "--env", "AUTORESEARCH_SOURCE=local",
                           "--env", "EXTRA_TOKEN=leak", env=env)
    assert code == 0, result["failure_reason"]
    seen = json.loads((ws / "scratch" / "env_seen.json").read_text())
    for secret in ("ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
                   "GITHUB_TOKEN", "MY_PASSWORD", "CUDA_API_KEY", "SOME_RANDOM_VAR", "EXTRA_TOKEN", "PYTHONPATH"):
        assert secret not in seen, secret
    assert seen["OMP_NUM_THREADS"] == "3" and seen["MKL_NUM_THREADS"] == "3"
    assert seen["HOME"] == str(ws / "scratch" / ".home")
    assert seen["LC_ALL"] == "C.UTF-8" and seen["TORCH_HOME"] == "/tmp/th"
    assert seen["AUTORESEARCH_SOURCE"] == "local"


def test_each_attempt_gets_a_fresh_scratch_folder_with_its_train_py(tmp_path):
    ws = make_ws(tmp_path)
    run_cli(ws)
    (ws / "scratch" / "leftover.pt").write_text("from a killed attempt")
    code, result = run_cli(ws)
    assert result["status"] == "ok"
    assert not (ws / "scratch" / "leftover.pt").exists()
    assert (ws / "scratch" / "train.py").read_text() == (ws / "train.py").read_text()


def test_the_bundle_ships_every_sibling(tmp_path):
    ws = make_ws(tmp_path)
    assert all((ws / name).is_file() for name in HARNESS_FILES)
    assert HARNESS_FILES == harness.HARNESS_FILES


# ----------------------------------------------------------------------------- limits and signals

def test_hang_past_the_wall_backstop_kills_the_whole_group(tmp_path):
    ws = make_ws(tmp_path, sleep=600, spawn_grandchild=str(tmp_path))
    code, result = run_cli(ws, "--wall-timeout", "4")
    assert (code, result["status"]) == (statuses.HARNESS_EXIT_CODES["timeout"], "timeout")
    assert "backstop 4" in result["failure_reason"]
    assert (ws / "scratch" / "grandchild.pid").exists() and (ws / "scratch" / "sleeping").exists()
    assert_all_gone(f"sleep(600)  # {tmp_path}", str(ws / "bootstrap.py"))


def test_the_hard_limit_is_on_the_cpu_clock(tmp_path):
    ws = make_ws(tmp_path, burn_cpu=600)
    code, result = run_cli(ws, "--timeout", "2")
    assert result["status"] == "timeout"
    assert "on the cpu clock (limit 2)" in result["failure_reason"]


def test_default_timeout_is_budget_plus_allowances(tmp_path):
    ws = make_ws(tmp_path)
    code, result = run_cli(ws, "--budget", "0.5", "--startup-allowance", "0.5", "--eval-allowance", "0.5")
    assert result["timeout_seconds"] == pytest.approx(1.5)
    assert result["wall_timeout_seconds"] == pytest.approx(4 * 1.5 + 60)


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, "killed"), (signal.SIGINT, "interrupted")])
def test_signal_to_harness_stops_child_and_records_status(tmp_path, sig, status):
    ws = make_ws(tmp_path, sleep=600)
    proc = subprocess.Popen([sys.executable, "-I", str(ws / "harness.py"), "--workspace", str(ws),
                             "--preset", "micro", "--no-echo"], stderr=subprocess.DEVNULL)
    wait_for(ws / "scratch" / "sleeping")
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == statuses.HARNESS_EXIT_CODES[status]
    result = json.loads((ws / "result.json").read_text())
    assert result["status"] == status
    assert_all_gone(str(ws / "bootstrap.py"))


def test_sigusr1_stops_early_with_the_runners_reason(tmp_path):
    ws = make_ws(tmp_path, sleep=600)
    proc = subprocess.Popen([sys.executable, "-I", str(ws / "harness.py"), "--workspace", str(ws),
                             "--preset", "micro", "--no-echo"], stderr=subprocess.DEVNULL)
    wait_for(ws / "scratch" / "sleeping")
    (ws / "stop.json").write_text(json.dumps({"message": "loss 4.1 > incumbent 3.2 at 40%", "pct": 40}))
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=30) == statuses.HARNESS_EXIT_CODES["stopped_early"]
    result = json.loads((ws / "result.json").read_text())
    assert result["status"] == "stopped_early"
    assert result["early_stop"] == {"message": "loss 4.1 > incumbent 3.2 at 40%", "pct": 40}
    assert result["failure_reason"] == "stopped early: loss 4.1 > incumbent 3.2 at 40%"


def test_a_stop_file_stops_early(tmp_path):
    ws = make_ws(tmp_path, sleep=600)
    stop = tmp_path / "stop-here.json"
    proc = subprocess.Popen([sys.executable, "-I", str(ws / "harness.py"), "--workspace", str(ws),
                             "--preset", "micro", "--no-echo", "--stop-file", str(stop)],
                            stderr=subprocess.DEVNULL)
    wait_for(ws / "scratch" / "sleeping")
    stop.write_text(json.dumps({"rule": "curve", "z": 3.1}))
    assert proc.wait(timeout=30) == statuses.HARNESS_EXIT_CODES["stopped_early"]
    result = json.loads((ws / "result.json").read_text())
    assert result["early_stop"] == {"rule": "curve", "z": 3.1}
    assert result["failure_reason"] == "stopped early: rule=curve, z=3.1"


def test_a_level_that_cannot_be_had_is_refused_not_faked(tmp_path):
    """On this machine `nobody` cannot reach the venv's interpreter (/root is 0700): a required
    uid drop must fail, saying why, rather than run unisolated."""
    from sandbox import isolation
    import pwd
    nobody = pwd.getpwnam("nobody")
    why = isolation.uid_can_read(nobody.pw_uid, nobody.pw_gid, [os.path.realpath(sys.executable)])
    result = harness.run_harness(make_ws(tmp_path), "micro", isolation_level="uid")
    if why is None:
        pytest.skip("nobody can run this interpreter here: the uid level is available")
    assert result["status"] == "crash"
    assert "a uid drop was required but is impossible" in result["failure_reason"]
    assert "not searchable by uid" in result["failure_reason"] or "not readable by uid" in result["failure_reason"]


def test_the_detect_level_catches_a_write_to_a_fixed_file(tmp_path):
    ws = make_ws(tmp_path)
    (ws / "train.py").write_text("import sys, prepare\nfrom pathlib import Path\n"
                                 "Path(sys.modules['prepare'].__file__).with_name('sitecustomize.py').write_text('x = 1')\n"
                                 "prepare.evaluate(1.5)\n")
    result = harness.run_harness(ws, "micro", isolation_level="detect")
    assert result["integrity"]["sandbox"]["level"] == "detect"
    assert result["status"] == "integrity"
    assert result["failure_reason"].startswith("integrity: fixed files changed during the run: ")
    assert "listing" in result["failure_reason"]


def test_uid_can_read_follows_the_mode_bits(tmp_path):
    from sandbox import isolation
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "f").write_text("x")
    public = tmp_path / "public.txt"
    public.write_text("x")
    public.chmod(0o644)
    os.chmod(tmp_path, 0o755)
    assert "not searchable by uid 65534" in isolation.uid_can_read(65534, 65534, [str(private / "f")])
    assert isolation.uid_can_read(0, 0, [str(private / "f")]) is None    # the owner
    if all(os.stat(p).st_mode & 0o001 for p in [*map(str, list(tmp_path.parents)[::-1]), str(tmp_path)]):
        assert isolation.uid_can_read(65534, 65534, [str(public)]) is None


def test_run_harness_in_process_and_custom_paths(tmp_path):
    ws = make_ws(tmp_path)
    out = tmp_path / "out"
    result = harness.run_harness(ws, "micro", out_dir=out, result_path=tmp_path / "r.json")
    assert result["status"] == "ok", result["failure_reason"]
    assert json.loads((tmp_path / "r.json").read_text())["val_bpb"] == result["val_bpb"]
    assert (out / "run.log").is_file() and not (ws / "run.log").exists()
    assert (out / "scratch" / "train.py").is_file()


def test_missing_data_is_a_crash_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "empty"))
    code, result = run_cli(make_ws(tmp_path))
    assert result["status"] == "crash"
    assert "autoresearch prepare --preset micro" in result["failure_reason"]


def test_bad_workspace_is_a_clear_error(tmp_path):
    with pytest.raises(harness.HarnessError, match="train.py not found"):
        harness.run_harness(tmp_path, "micro")
    proc = subprocess.run([sys.executable, "-I", str(HARNESS_SOURCE), "--workspace", str(tmp_path),
                           "--preset", "micro"], capture_output=True, text=True)
    assert proc.returncode == 2 and "train.py not found" in proc.stderr


@pytest.mark.parametrize("name", HARNESS_FILES)
def test_bundle_files_are_stdlib_only(name):
    import ast
    source = (HARNESS_SOURCE.parent / name).read_text()
    tree = ast.parse(source)
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods - {"__future__"} <= set(sys.stdlib_module_names)


def test_statuses_and_budgets_are_not_copied_into_the_harness():
    source = HARNESS_SOURCE.read_text()
    assert "DEFAULT_BUDGETS" not in source and '"over_budget": 6' not in source
    assert harness.EXIT_CODES is statuses.HARNESS_EXIT_CODES


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


def test_curve_is_subsampled_to_200_points():
    lines = [f"step {i:05d} ({i / 10:.1f}%) | loss: {5 - i / 1000:.6f} | dt: 1ms" for i in range(1000)]
    curve = harness._curve(lines)
    assert len(curve) == 200 and curve[0] == [0.0, 5.0] and curve[-1][0] == pytest.approx(99.9)


def test_a_harness_told_to_stop_ends_by_its_deadline_even_when_stuck(tmp_path):
    """The watchdog armed by SIGTERM/SIGINT (also what the orchestrator's death sends): whatever
    blocks the harness, it kills the child's group and exits with the stop's code, so no harness
    outlives the run that started it."""
    script = tmp_path / "stuck.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"sys.path.insert(0, {str(Path(harness.__file__).parents[1])!r})\n"
        "from sandbox import harness\n"
        "child = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "harness._STOP.child_pid = child.pid\n"
        "harness._STOP.request('killed')\n"
        "harness._STOP.arm_watchdog(0.5)\n"
        "time.sleep(60)   # stuck: never returns by itself\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 20
    assert proc.returncode == statuses.HARNESS_EXIT_CODES[statuses.KILLED]
    child = int(proc.stdout.split()[0])
    time.sleep(0.2)
    state = Path(f"/proc/{child}/stat").read_text().split(") ")[-1][:1] if Path(f"/proc/{child}").exists() else "gone"
    assert state in ("gone", "Z"), state
