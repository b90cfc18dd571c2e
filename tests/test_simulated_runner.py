"""SimulatedRunner: the Runner protocol on a virtual clock, with the real train.py and prepare.py
in each workspace (the runner reads their knobs and budget table; nothing trains)."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from sandbox import statuses
from sandbox.fingerprint import fingerprint
from sandbox.runners.base import ExecutionSpec, Finished, Progress, Requeued
from sandbox.runners.simulated import SimulatedRunner, SimulatedSettings, VirtualClock
from sandbox.runners.surrogate import OPTIMUM, Surrogate

REPO = Path(__file__).resolve().parents[1]
BASELINE = (REPO / "train.py").read_text()
QUIET = dict(start_at=0.0, interruption_rate=0.0, straggler_rate=0.0, crash_rate=0.0)


def edit(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, old
    return source.replace(old, new)


@pytest.fixture
def make_ws(tmp_path):
    def make(name: str = "ws", source: str = BASELINE) -> Path:
        ws = tmp_path / name
        ws.mkdir(exist_ok=True)
        (ws / "train.py").write_text(source)
        shutil.copyfile(REPO / "prepare.py", ws / "prepare.py")
        return ws
    return make


def runner(**settings) -> SimulatedRunner:
    return SimulatedRunner(SimulatedSettings(**{**QUIET, **settings}), reference_source=BASELINE)


def drain(r: SimulatedRunner, limit: int = 100_000) -> list:
    """Poll (jumping straight to each next event) until nothing runs; every event, in order."""
    events = []
    for _ in range(limit):
        if not r.active():
            return events
        events += r.poll(timeout=float("inf"))
    raise AssertionError("executions never finished")


def finished(events) -> dict[str, Finished]:
    return {e.execution_id: e for e in events if isinstance(e, Finished)}


def test_slots_limit_submissions_and_free_with_the_finished(make_ws):
    r = runner(slots=2)
    ws = make_ws()
    r.submit(ExecutionSpec("a", ws, "micro"))
    r.submit(ExecutionSpec("b", ws, "micro"))
    assert r.free_slots() == 0 and sorted(r.active()) == ["a", "b"]
    with pytest.raises(RuntimeError, match="all 2 slots are busy"):
        r.submit(ExecutionSpec("c", ws, "micro"))
    with pytest.raises(ValueError, match="already running"):
        r.submit(ExecutionSpec("a", ws, "micro"))
    while True:
        events = r.poll(timeout=float("inf"))
        if any(isinstance(e, Finished) for e in events):
            break
    assert r.free_slots() == 1          # the slot is free as soon as its Finished is out
    r.submit(ExecutionSpec("c", ws, "micro"))
    assert set(finished(drain(r))) | set(finished(events)) == {"a", "b", "c"}


def test_a_run_streams_its_curve_and_ends_ok_marked_simulated(make_ws):
    r = runner(startup_median_s=60.0)
    r.submit(ExecutionSpec("a", make_ws(), "gpu"))
    events = drain(r)
    progress = [e for e in events if isinstance(e, Progress)]
    done = finished(events)["a"]
    pcts = [p.pct for p in progress]
    assert pcts == sorted(pcts) and pcts[0] == 0.0 and pcts[-1] == 100.0
    assert progress[-1].loss < progress[0].loss
    assert done.result["curve"] == [[p.pct, p.loss] for p in progress]
    assert done.result["status"] == statuses.OK and done.result["exit_code"] == 0
    assert 0.9 < done.result["val_bpb"] < 1.1
    # marked simulated everywhere a consumer might look
    assert done.backend == "simulated" and done.instance_type == "simulated"
    assert done.result["simulated"] is True and done.result["host"] == "simulated"
    assert done.result["clock"] == "virtual" and done.result["simulation"]["source"] == "surrogate"
    # timing: start-up, then the preset's 300 s budget (prepare.py's table), then evaluation
    budget = done.result["budget_seconds"]
    assert budget == 300.0 and done.result["training_seconds"] == pytest.approx(budget)
    startup = done.result["simulation"]["startup_seconds"]
    assert done.ended_at - done.started_at == pytest.approx(startup + budget * 1.1)
    assert done.billable_seconds == pytest.approx(budget * 1.1)
    assert r.clock.now() == pytest.approx(done.ended_at)


def test_poll_waits_at_most_its_timeout_and_never_sleeps(make_ws):
    r = runner(startup_median_s=100.0, startup_sigma=0.0)
    r.submit(ExecutionSpec("a", make_ws(), "micro"))
    assert r.poll(timeout=0) == [] and r.clock.now() == 0.0
    assert r.poll(timeout=30) == [] and r.clock.now() == 30.0      # nothing due: the time passed
    first = r.poll(timeout=1000)
    assert [type(e) for e in first] == [Progress] and r.clock.now() == pytest.approx(100.0)
    r.clock.advance(1e6)                # e.g. a slow proposal: everything due comes out at once
    events = r.poll(timeout=0)
    assert isinstance(events[-1], Finished) and sum(isinstance(e, Progress) for e in events) > 2


def test_cancel_ends_with_killed_and_nothing_after(make_ws):
    r = runner(stop_latency_s=2.0)
    r.submit(ExecutionSpec("a", make_ws(), "micro"))
    while not any(isinstance(e, Progress) and e.pct > 40 for e in r.poll(timeout=float("inf"))):
        pass
    at = r.clock.now()
    r.cancel("a")
    r.cancel("a")                        # twice is harmless
    events = drain(r)
    assert [type(e) for e in events] == [Finished]
    done = events[0]
    assert done.result["status"] == statuses.KILLED and done.result["exit_code"] == 7
    assert done.ended_at == pytest.approx(at + 2.0)
    assert 40 < done.result["curve"][-1][0] < 100 and done.result["val_bpb"] is None
    assert r.active() == [] and r.poll(timeout=float("inf")) == []
    r.cancel("a")                        # an id that is over: nothing happens


def test_stop_early_records_the_reason(make_ws):
    r = runner(stop_latency_s=0.5)
    r.submit(ExecutionSpec("a", make_ws(), "micro"))
    r.submit(ExecutionSpec("b", make_ws("ws2"), "micro"))
    while not any(isinstance(e, Progress) and e.execution_id == "a" and e.pct >= 50
                  for e in r.poll(timeout=float("inf"))):
        pass
    reason = {"reason": "losing: at 50.0%: loss 5.1 vs reference mean 4.9", "pct": 50.0, "gap": 0.2}
    r.stop_early("a", reason)
    done = finished(drain(r))
    a, b = done["a"].result, done["b"].result
    assert a["status"] == statuses.STOPPED_EARLY and a["exit_code"] == 10
    assert a["early_stop"] == reason and "losing: at 50.0%" in a["failure_reason"]
    assert a["val_bpb"] is None and a["curve"][-1][0] >= 50 and a["training_seconds"] < a["budget_seconds"]
    assert "early_stop" not in b and b["status"] == statuses.OK      # only that candidate stopped


def test_shutdown_kills_everything_still_running(make_ws):
    r = runner(slots=3)
    for eid in ("a", "b", "c"):
        r.submit(ExecutionSpec(eid, make_ws(), "micro"))
    r.poll(timeout=float("inf"))
    done = r.shutdown()
    assert sorted(f.execution_id for f in done) == ["a", "b", "c"]
    assert {f.result["status"] for f in done} == {statuses.KILLED}
    assert r.active() == [] and r.free_slots() == 3 and r.poll(timeout=float("inf")) == []
    assert r.reattach(ExecutionSpec("a", make_ws(), "micro"), "sim:a:1") is False
    r.submit(ExecutionSpec("d", make_ws(), "micro"))
    assert [f.result["status"] for f in r.shutdown(status=statuses.INTERRUPTED)] == [statuses.INTERRUPTED]


def test_interruptions_requeue_then_finish(make_ws):
    r = runner(slots=30, interruption_rate=0.5, max_requeues=3)
    for i in range(30):
        r.submit(ExecutionSpec(f"e{i}", make_ws(), "micro"))
    events = drain(r)
    requeued = [e for e in events if isinstance(e, Requeued)]
    done = finished(events)
    assert requeued and all("spot interruption" in e.reason for e in requeued)
    for e in requeued:        # every Requeued comes before its execution's Finished
        assert events.index(e) < events.index(done[e.execution_id])
    came_back = [eid for eid in {e.execution_id for e in requeued} if done[eid].result["status"] == statuses.OK]
    assert came_back, "some interrupted execution should have finished ok on a later attempt"
    last = done[came_back[0]]
    assert last.result["simulation"]["attempt"] == 1 + sum(e.execution_id == came_back[0] for e in requeued)
    # a lost attempt's training is billed too
    assert last.billable_seconds > last.result["training_seconds"] * 1.1


def test_interrupted_for_good_after_max_requeues(make_ws):
    r = runner(interruption_rate=1.0, max_requeues=2)
    r.submit(ExecutionSpec("a", make_ws(), "micro"))
    events = drain(r)
    assert [e.attempt for e in events if isinstance(e, Requeued)] == [2, 3]
    done = finished(events)["a"]
    assert done.result["status"] == statuses.INTERRUPTED and "gave up after 2 requeues" in done.result["failure_reason"]


def test_same_settings_same_events_other_seed_other_events(make_ws):
    def trace(seed):
        r = runner(slots=4, seed=seed, interruption_rate=0.2, straggler_rate=0.2, crash_rate=0.3)
        ws = [make_ws(f"w{i}", edit(BASELINE, "MATRIX_LR = 0.04", f"MATRIX_LR = 0.0{i + 3}")) for i in range(4)]
        for i, w in enumerate(ws):
            r.submit(ExecutionSpec(f"e{i}", w, "cpu"))
        return [(round(r.clock.now(), 6), repr(e)) for e in drain(r)]
    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_the_surrogate_draws_the_same_numbers_in_another_process():
    import subprocess
    import sys
    code = ("import sys; from sandbox.runners.surrogate import Surrogate; "
            "s = Surrogate(5, crash_rate=0.3); src = open(sys.argv[1]).read(); "
            "print(repr(s.run(src, 'cpu', 'e1#1')))")
    other = subprocess.run([sys.executable, "-c", code, str(REPO / "train.py")], capture_output=True, text=True,
                           cwd=REPO, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert other.strip() == repr(Surrogate(5, crash_rate=0.3).run(BASELINE, "cpu", "e1#1"))


def test_crashes_are_a_property_of_the_code(make_ws):
    r = runner(crash_rate=1.0, slots=2)
    ws = make_ws()
    r.submit(ExecutionSpec("a", ws, "micro"))
    r.submit(ExecutionSpec("b", ws, "micro"))
    done = finished(drain(r))
    a, b = done["a"].result, done["b"].result
    assert a["status"] == b["status"] == statuses.CRASH and a["exit_code"] == 3
    assert "simulated crash" in a["failure_reason"] and a["val_bpb"] is None
    assert a["curve"][-1][0] == b["curve"][-1][0] < 100          # same code, same crash point


def test_better_knobs_really_score_better():
    s = Surrogate(reference_source=BASELINE)
    base = s.quality(BASELINE, "gpu").true_bpb
    nearer = edit(BASELINE, "MATRIX_LR = 0.04", f"MATRIX_LR = {OPTIMUM['MATRIX_LR']}")
    far = edit(BASELINE, "MATRIX_LR = 0.04", "MATRIX_LR = 0.4")
    assert base == pytest.approx(0.998)
    assert s.quality(nearer, "gpu").true_bpb < base < s.quality(far, "gpu").true_bpb
    # a comment is not a different experiment; a real code edit moves quality a little
    assert s.quality(BASELINE + "\n# note\n", "gpu").true_bpb == base
    code = edit(BASELINE, "def norm(x):", "def norm(x):  # edited\n    x = x * 1.0")
    assert s.quality(code, "gpu").true_bpb != base
    # repeated runs of identical code spread by the preset's noise
    vals = [s.run(BASELINE, "gpu", f"r{i}")["val_bpb"] for i in range(200)]
    mean = sum(vals) / len(vals)
    sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    assert mean == pytest.approx(base, abs=0.0005) and 0.001 < sd < 0.002


def test_hostile_knob_values_do_not_hang_or_break_the_surrogate(make_ws):
    hostile = edit(BASELINE, "MATRIX_LR = 0.04", "MATRIX_LR = 10**10**10")       # would never finish
    hostile = edit(hostile, "DEPTH             = {", "DEPTH = int('8')\nDEPTH_UNUSED = {")   # knob made code
    hostile = edit(hostile, "SEED = 42", "SEED = 42\nSEED = 'x' * 3")
    r = runner()
    r.submit(ExecutionSpec("a", make_ws(source=hostile), "gpu"))
    done = finished(drain(r))["a"]
    assert done.result["status"] == statuses.OK and done.result["depth"] is None   # code, not a constant


def test_replay_serves_recorded_runs_of_the_same_train_py(make_ws, tmp_path):
    recorded = [[0.0, 6.2], [50.0, 5.0], [100.0, 4.5]]
    library = tmp_path / "curves.json"
    library.write_text(json.dumps({
        "format": "autoresearch-curves/1", "preset": "micro", "budget_seconds": 4.0,
        "runs": [{"plan": 0, "fingerprint": fingerprint(BASELINE), "kind": "baseline", "status": "ok",
                  "val_bpb": 2.9123, "num_steps": 40, "curve": recorded},
                 {"plan": 1, "fingerprint": fingerprint(BASELINE), "kind": "baseline", "status": "ok",
                  "val_bpb": 2.95, "num_steps": 41, "curve": recorded}]}))
    r = runner(replay=str(library), slots=3)
    other = edit(BASELINE, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    r.submit(ExecutionSpec("a", make_ws("a", BASELINE + "\n# only a comment\n"), "micro"))
    r.submit(ExecutionSpec("b", make_ws("b"), "micro"))
    r.submit(ExecutionSpec("c", make_ws("c", other), "micro"))
    done = finished(drain(r))
    assert done["a"].result["val_bpb"] == 2.9123 and done["b"].result["val_bpb"] == 2.95  # repeats in turn
    assert done["a"].result["curve"] == recorded and done["a"].result["simulation"]["source"] == "replay"
    assert done["c"].result["simulation"]["source"] == "surrogate"
    assert done["a"].result["simulated"] is True


def test_replay_from_a_folder_of_past_runs(make_ws, tmp_path):
    past = tmp_path / "past" / "c1"
    (past / "executions" / "x1").mkdir(parents=True)
    (past / "train.py").write_text(BASELINE)
    (past / "executions" / "x1" / "result.json").write_text(json.dumps(
        {"status": "ok", "val_bpb": 3.01, "preset": "micro", "curve": [[0, 6.0], [100, 4.0]], "num_steps": 9}))
    r = runner(replay=str(tmp_path / "past"))
    assert len(r.library) == 1
    r.submit(ExecutionSpec("a", make_ws(), "micro"))
    assert finished(drain(r))["a"].result["val_bpb"] == 3.01


def test_a_bad_replay_library_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="simulated.replay: .*nope.json does not exist"):
        runner(replay=str(missing))
    wrong = tmp_path / "wrong.json"
    wrong.write_text("[1, 2]")
    with pytest.raises(ValueError, match="wrong.json: not a recording"):
        runner(replay=str(wrong))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: unreadable JSON"):
        runner(replay=str(broken))


def test_settings_are_strict():
    with pytest.raises(ValidationError, match="slotz"):
        SimulatedSettings(slotz=3)
    with pytest.raises(ValidationError, match="unknown preset 'tpu'"):
        SimulatedSettings(budget_s={"tpu": 10})
    with pytest.raises(ValidationError):
        SimulatedSettings(straggler_rate=1.5)
    with pytest.raises(ValueError, match="cannot move"):
        VirtualClock().advance(-1)


def test_a_thousand_candidates_run_through(make_ws):
    r = runner(slots=100, interruption_rate=0.05, straggler_rate=0.03, crash_rate=0.05, progress_points=20)
    sources = [edit(BASELINE, "SCALAR_LR = 0.5", f"SCALAR_LR = {0.3 + i / 5000:.4f}") for i in range(1000)]
    queue = [(f"e{i}", make_ws(f"w{i}", s)) for i, s in enumerate(sources)]
    done: dict[str, Finished] = {}
    while queue or r.active():
        while queue and r.free_slots() > 0:
            eid, ws = queue.pop()
            r.submit(ExecutionSpec(eid, ws, "gpu"))
        done.update(finished(r.poll(timeout=float("inf"))))
    assert len(done) == 1000
    by_status = {s: sum(f.result["status"] == s for f in done.values()) for s in (statuses.OK, statuses.CRASH)}
    assert by_status[statuses.OK] > 900 and by_status[statuses.CRASH] > 10


def test_sandbox_modules_import_nothing_from_agent():
    for name in ("simulated.py", "surrogate.py"):
        tree = ast.parse((REPO / "sandbox" / "runners" / name).read_text())
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m == "agent" or m.startswith("agent.") for m in modules), (name, modules)
