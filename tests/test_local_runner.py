"""LocalRunner and build_workspace with real harness and stand-in train.py child processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sandbox.runners.base import ExecutionSpec, Finished, Progress
from sandbox.runners.local import LocalRunner, plan_slots, slot_cores
from sandbox.workspace import HARNESS_FILES, WorkspaceError, build_workspace, runtime_imports
from tests.standins import make_fake_cache, make_project, standin_workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory) -> Path:
    return make_fake_cache(tmp_path_factory.mktemp("fake-cache"))


@pytest.fixture(autouse=True)
def _cache_env(fake_cache, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(fake_cache))
    monkeypatch.delenv("AUTORESEARCH_TIME_BUDGET", raising=False)


@pytest.fixture
def project(tmp_path) -> Path:
    """A stand-in project root: the torch-free stand-in prepare.py a workspace copies."""
    return make_project(tmp_path / "project")


def workspace(tmp_path: Path, project: Path, name: str, **behaviour) -> Path:
    return standin_workspace(tmp_path / name, project, **behaviour)


def scratch(ws: Path, execution_id: str) -> Path:
    return ws / "executions" / execution_id / "scratch"


def spec(ws: Path, eid: str, **kw) -> ExecutionSpec:
    return ExecutionSpec(execution_id=eid, workspace=ws, preset="micro", **kw)


def collect(runner: LocalRunner, ids: set[str], timeout: float = 30) -> tuple[dict, list[Progress]]:
    finished, progress = {}, []
    deadline = time.monotonic() + timeout
    while set(finished) != ids:
        assert time.monotonic() < deadline, f"timed out; finished {sorted(finished)}"
        for event in runner.poll(timeout=0.5):
            if isinstance(event, Finished):
                finished[event.execution_id] = event
            elif isinstance(event, Progress):
                progress.append(event)
    return finished, progress


def wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def alive(marker: str) -> bool:
    """Is any process running with `marker` in its command line? (The candidate's own pids are
    those of its PID namespace and mean nothing out here.)"""
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = Path(f"/proc/{name}/stat").read_text().split(")")[-1].split()[0]
            except OSError:
                continue
            if marker in cmd and state != "Z":
                return True
    return False


# ---------------------------------------------------------------------------- workspace

def test_build_workspace_contents_and_idempotence(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "prepare.py").write_text("import numpy\nTIME_BUDGET = 4\n")
    ws = build_workspace(tmp_path / "w", "import torch\nimport tiktoken\nprint('hi')\n", project,
                         {"strategy": "moderate", "title": "deeper"})
    assert sorted(p.name for p in ws.iterdir()) == sorted(["candidate.json", "prepare.py", "requirements.txt",
                                                           "train.py", *HARNESS_FILES])
    assert (ws / "prepare.py").read_text() == (project / "prepare.py").read_text()
    for name in HARNESS_FILES:
        assert (ws / name).read_text() == (REPO / "sandbox" / name).read_text()
    reqs = (ws / "requirements.txt").read_text().splitlines()
    # torch and numpy come with the training image; the rest in ranges, never the orchestrator's pins
    assert reqs == ["tiktoken>=0.7"]
    meta = json.loads((ws / "candidate.json").read_text())
    assert meta["title"] == "deeper" and len(meta["train_sha256"]) == 64
    mtimes = {p.name: p.stat().st_mtime_ns for p in ws.iterdir()}
    time.sleep(0.01)
    assert build_workspace(tmp_path / "w", "import torch\nimport tiktoken\nprint('hi')\n", project,
                           {"strategy": "moderate", "title": "deeper"}) == ws
    assert {p.name: p.stat().st_mtime_ns for p in ws.iterdir()} == mtimes


def test_build_workspace_errors(tmp_path, project):
    with pytest.raises(WorkspaceError, match=r"prepare.py not found"):
        build_workspace(tmp_path / "w", "x = 1\n", tmp_path / "nowhere", {})
    with pytest.raises(WorkspaceError, match="does not parse: line 1"):
        build_workspace(tmp_path / "w", "def (:\n", project, {})


def test_runtime_imports_ignore_stdlib_torch_and_local_modules():
    src = "import os, torch.nn as nn\nfrom prepare import X\nimport pyarrow.parquet\n" \
          "def f():\n    import kernels\n    from . import y\n"
    assert runtime_imports(src) == ["kernels", "pyarrow"]


# ---------------------------------------------------------------------------- slots

@pytest.mark.parametrize("slots,threads,gpus,cores,expected", [
    (0, 0, [], 2, (2, 1)), (0, 0, [], 16, (16, 1)), (0, 0, [], 1, (1, 1)), (3, 0, [], 12, (3, 1)),
    (0, 2, [], 8, (4, 2)), (1, 0, [], 2, (1, 1)), (0, 0, ["0", "1"], 16, (2, 8)), (2, 2, [], 2, (2, 2)),
])
def test_plan_slots(slots, threads, gpus, cores, expected):
    assert plan_slots(slots, threads, gpus, cores) == expected


def test_slot_cores_pin_each_slot_to_its_own_cores():
    assert [slot_cores(s, 1, [0, 1]) for s in range(2)] == [[0], [1]]
    assert [slot_cores(s, 2, [4, 5, 6, 7]) for s in range(2)] == [[4, 5], [6, 7]]
    assert slot_cores(2, 1, [0, 1]) == [0]   # more slots than cores: they share, the clock stays fair


def test_cpu_slots_are_pinned_to_one_core_each(tmp_path, project):
    runner = LocalRunner(slots=2, threads_per_slot=1, gpus=[])
    a, b = (workspace(tmp_path, project, n, dump_env=True) for n in "ab")
    runner.submit(spec(a, "a"))
    runner.submit(spec(b, "b"))
    finished, _ = collect(runner, {"a", "b"})
    cores = runner.cores
    assert [finished[k].result["cpus"] for k in "ab"] == [[cores[0]], [cores[1 % len(cores)]]]
    assert {finished[k].result["threads"] for k in "ab"} == {1}
    sandboxes = [finished[k].result["integrity"]["sandbox"] for k in "ab"]
    assert [s["cpus"] for s in sandboxes] == [[cores[0]], [cores[1 % len(cores)]]]   # what the child got


def test_parallel_slots_and_full_runner_refuses(tmp_path, project):
    runner = LocalRunner(slots=2, threads_per_slot=1, gpus=[])
    a, b, c = (workspace(tmp_path, project, n, sleep=1.0) for n in "abc")
    runner.submit(spec(a, "a"))
    handle = runner.submit(spec(b, "b"))
    assert handle.startswith("local:") and runner.free_slots() == 0
    assert sorted(runner.active()) == ["a", "b"]
    with pytest.raises(RuntimeError, match="all 2 slots are busy"):
        runner.submit(spec(c, "c"))
    finished, _ = collect(runner, {"a", "b"})
    assert all(f.result["status"] == "ok" and f.backend == "local" for f in finished.values()), \
        [f.result["failure_reason"] for f in finished.values()]
    fa, fb = finished["a"], finished["b"]
    assert fa.started_at < fb.ended_at and fb.started_at < fa.ended_at  # they overlapped
    assert runner.free_slots() == 2 and runner.active() == []
    # results live per execution, so re-running one workspace does not collide
    assert Path(fa.result["log_path"]) == a / "executions" / "a" / "run.log"
    assert (a / "executions" / "a" / "result.json").is_file()


def test_same_workspace_twice_concurrently(tmp_path, project):
    runner = LocalRunner(slots=2, threads_per_slot=1, gpus=[])
    ws = workspace(tmp_path, project, "w", sleep=0.3)
    runner.submit(spec(ws, "x/1"))
    runner.submit(spec(ws, "x/2"))
    finished, _ = collect(runner, {"x/1", "x/2"})
    assert [finished[k].result["status"] for k in ("x/1", "x/2")] == ["ok", "ok"]
    assert (ws / "executions" / "x_1" / "result.json").is_file()


def test_a_rerun_never_meets_an_earlier_attempts_files(tmp_path, project):
    runner = LocalRunner(slots=1, threads_per_slot=1, gpus=[])
    ws = workspace(tmp_path, project, "r")
    out = ws / "executions" / "r1"
    (out / "scratch").mkdir(parents=True)
    (out / "scratch" / "checkpoint.pt").write_text("left by a killed attempt")
    (out / "result.json").write_text('{"status": "ok", "val_bpb": 0.1}')
    runner.submit(spec(ws, "r1"))
    finished, _ = collect(runner, {"r1"})
    assert finished["r1"].result["status"] == "ok" and finished["r1"].result["val_bpb"] != 0.1
    assert not (out / "scratch" / "checkpoint.pt").exists()


def test_progress_events(tmp_path, project):
    runner = LocalRunner(slots=1, threads_per_slot=1, gpus=[])
    ws = workspace(tmp_path, project, "p", steps=4, step_s=0.3)
    runner.submit(spec(ws, "p1", label="moderate: deeper"))
    finished, progress = collect(runner, {"p1"})
    assert finished["p1"].result["status"] == "ok"
    assert len(progress) >= 2  # coalesced per poll, but the steps are 0.3 s apart
    steps = [p.step for p in progress]
    assert steps == sorted(steps) and steps[-1] <= 3
    first = progress[0]
    assert first.execution_id == "p1" and first.tok_per_s == 12345.0 and first.mfu == 1.5
    assert first.loss == pytest.approx(4.0 - 0.1 * first.step) and first.elapsed_s > 0


def test_gpu_slots_pin_cuda_visible_devices(tmp_path, project):
    runner = LocalRunner(gpus=["3", "5"], threads_per_slot=1)
    assert runner.slots == 2
    ws = [workspace(tmp_path, project, n, dump_env=True) for n in ("g0", "g1")]
    runner.submit(spec(ws[0], "g0"))
    runner.submit(spec(ws[1], "g1", env={"AUTORESEARCH_SOURCE": "x"}))
    finished, _ = collect(runner, {"g0", "g1"})
    seen = [json.loads((scratch(w, n) / "env_seen.json").read_text()) for w, n in zip(ws, ("g0", "g1"))]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in seen] == ["3", "5"]
    assert seen[1]["AUTORESEARCH_SOURCE"] == "x" and seen[0]["OMP_NUM_THREADS"] == "1"
    assert finished["g0"].instance_type == "local-gpu3"


def test_cancel_kills_and_reports_killed(tmp_path, project):
    runner = LocalRunner(slots=1, threads_per_slot=1, gpus=[])
    ws = workspace(tmp_path, project, "k", sleep=600)
    runner.submit(spec(ws, "k1"))
    wait_for(scratch(ws, "k1") / "sleeping")
    runner.cancel("k1")
    finished, _ = collect(runner, {"k1"}, timeout=30)
    assert finished["k1"].result["status"] == "killed"
    assert not alive(str(ws / "bootstrap.py"))
    runner.cancel("k1")  # already gone: a no-op


def test_stop_early_reports_stopped_early_with_the_reason(tmp_path, project):
    runner = LocalRunner(slots=1, threads_per_slot=1, gpus=[])
    ws = workspace(tmp_path, project, "e", sleep=600)
    runner.submit(spec(ws, "e1"))
    wait_for(scratch(ws, "e1") / "sleeping")
    runner.stop_early("e1", {"rule": "curve", "loss": 4.2, "incumbent": 3.1, "pct": 35.0})
    finished, _ = collect(runner, {"e1"}, timeout=30)
    result = finished["e1"].result
    assert result["status"] == "stopped_early"
    assert result["early_stop"] == {"rule": "curve", "loss": 4.2, "incumbent": 3.1, "pct": 35.0}
    assert result["failure_reason"].startswith("stopped early: ")
    assert not alive(str(ws / "bootstrap.py"))
    runner.stop_early("e1", {})  # already gone: a no-op


def test_shutdown_returns_killed_for_everything_running(tmp_path, project):
    runner = LocalRunner(slots=2, threads_per_slot=1, gpus=[])
    spaces = [workspace(tmp_path, project, n, sleep=600) for n in ("s1", "s2")]
    for ws in spaces:
        runner.submit(spec(ws, ws.name))
    for ws in spaces:
        wait_for(scratch(ws, ws.name) / "sleeping")
    done = runner.shutdown()
    assert sorted(f.execution_id for f in done) == ["s1", "s2"]
    assert {f.result["status"] for f in done} == {"killed"}
    assert runner.active() == [] and runner.poll() == []


def test_harness_that_writes_no_result_is_a_crash(tmp_path, project):
    runner = LocalRunner(slots=1, threads_per_slot=1, gpus=[])
    ws = workspace(tmp_path, project, "h")
    (ws / "harness.py").write_text("import sys; print('boom'); sys.exit(1)\n")
    runner.submit(spec(ws, "h1"))
    finished, _ = collect(runner, {"h1"})
    result = finished["h1"].result
    assert result["status"] == "crash"
    assert result["failure_reason"] == "harness wrote no result.json (harness exit code 1)"
    assert "boom" in result["log_tail"]


def test_submit_needs_a_built_workspace(tmp_path):
    runner = LocalRunner(slots=1, threads_per_slot=1, gpus=[])
    with pytest.raises(FileNotFoundError, match="harness.py not found"):
        runner.submit(spec(tmp_path, "x"))
    assert runner.free_slots() == 1
    assert runner.reattach(spec(tmp_path, "x"), "local:1") is False
    assert runner.simulated is False and runner.clock.now() > 0


# ---------------------------------------------------------------------------- orchestrator death

ORCHESTRATOR = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from sandbox.runners.base import ExecutionSpec
    from sandbox.runners.local import LocalRunner
    runner = LocalRunner(slots=2, threads_per_slot=1, gpus=[])
    for ws in sys.argv[1:]:
        runner.submit(ExecutionSpec(execution_id=Path(ws).name, workspace=Path(ws), preset="micro"))
    while True:
        runner.poll(timeout=1.0)
''')


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "killed"),
                                        (signal.SIGKILL, "killed")])
def test_orchestrator_death_leaves_no_orphans(tmp_path, project, sig, status):
    spaces = [workspace(tmp_path, project, n, sleep=600) for n in ("o1", "o2")]
    orch = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, *map(str, spaces)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    for ws in spaces:
        wait_for(scratch(ws, ws.name) / "sleeping", timeout=60)
    orch.send_signal(sig)
    orch.wait(timeout=30)
    for ws in spaces:
        result_file = ws / "executions" / ws.name / "result.json"
        wait_for(result_file, timeout=30)  # after SIGKILL the harness writes it on its own (PDEATHSIG)
        assert json.loads(result_file.read_text())["status"] == status
        deadline = time.monotonic() + 15
        while alive(str(ws / "bootstrap.py")):
            assert time.monotonic() < deadline, f"train.py of {ws.name} outlived its orchestrator"
            time.sleep(0.05)
