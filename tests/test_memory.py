"""The run memory: real SQLite files in tmp dirs, real child processes taking turns."""
from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.memory import (SCHEMA_VERSION, Memory, MemoryStoreError, SchemaVersionError, UnknownRecordError,
                          UnknownRunError)

from tests.conftest import OK_RESULT, add, baseline, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "t1"


@pytest.fixture
def memory(run_dir: Path):
    m = Memory.open(run_dir)
    m.ensure_run("t1", "micro", "local", "heuristic", {"selection": {"min_delta": 0.0005}}, "/proj")
    yield m
    m.close()


# ------------------------------------------------------------------------------- files and schema
def test_open_creates_a_wal_file_with_the_schema_version(run_dir: Path, memory: Memory):
    path = run_dir / "memory.sqlite"
    assert path.is_file()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == memory.schema_version()
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "candidates", "executions", "llm_calls", "events", "state"} <= tables
    raw.close()


def test_reopening_is_idempotent_and_keeps_the_data(run_dir: Path, memory: Memory):
    b = baseline(memory)
    memory.close()
    for _ in range(3):
        again = Memory.open(run_dir, create=False)
        assert again.schema_version() == SCHEMA_VERSION
        assert [c["id"] for c in again.candidates()] == [b]
        assert again.run_info()["tag"] == "t1"
        again.close()


def test_a_file_from_a_newer_version_is_refused_clearly(run_dir: Path, memory: Memory):
    memory.close()
    raw = sqlite3.connect(run_dir / "memory.sqlite")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 5} is newer"):
        Memory.open(run_dir)


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "memory.sqlite").write_text("this is not a database, just text " * 100)
    with pytest.raises(MemoryStoreError, match="not a usable memory file"):
        Memory.open(tmp_path / "bad")


def test_a_version_1_file_migrates_and_its_results_are_measurement_version_1(tmp_path: Path):
    """A memory written before the measurement_version column: the migration adds it, rows that
    had ended are version 1 (the harness of that time), pending rows are not measured yet."""
    from agent.memory import MIGRATIONS, _split_sql
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    raw = sqlite3.connect(run_dir / "memory.sqlite")
    for statement in _split_sql(MIGRATIONS[0]):
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO candidates (id, generation, idx, strategy, title, fingerprint, check_status, origin,"
                " created_at, updated_at) VALUES ('g000-baseline', 0, 0, 'baseline', 'baseline', 'fp', 'accepted',"
                " 'baseline', 0, 0)")
    for seq, status in ((1, "ok"), (2, "crash"), (3, "pending")):
        raw.execute("INSERT INTO executions (seq, id, candidate_id, generation, kind, backend, preset, workspace,"
                    " status, val_bpb, created_at) VALUES (?, ?, 'g000-baseline', 0, 'baseline', 'local', 'micro',"
                    " '/ws', ?, ?, 0)", (seq, f"e{seq:05d}", status, 1.0 if status == "ok" else None))
    raw.commit()
    raw.close()
    with Memory.open(run_dir) as memory:
        assert memory.schema_version() == SCHEMA_VERSION
        assert [e["measurement_version"] for e in memory.executions()] == [1, 1, None]
        assert memory.measurement_versions() == {1: 1}
        memory.finish_execution("e00003", result={**OK_RESULT, "measurement_version": 2})
        assert memory.measurement_versions() == {1: 1, 2: 1}


def test_results_keep_their_measurement_version(memory: Memory):
    b = baseline(memory)
    eids = [memory.add_execution(candidate_id=b, generation=0, kind="baseline", backend="local", preset="micro",
                                 workspace="/ws") for _ in range(3)]
    memory.finish_execution(eids[0], result={**OK_RESULT, "measurement_version": 2})
    memory.finish_execution(eids[1], result=OK_RESULT)                       # a harness that did not say: v1
    memory.finish_execution(eids[2], result={"status": "killed", "failure_reason": "stopped"})  # no measurement
    assert [memory.execution(e)["measurement_version"] for e in eids] == [2, 1, None]


def test_unknown_run_lists_the_known_tags(tmp_path: Path):
    for tag in ("beta", "alpha"):
        Memory.open(tmp_path / "runs" / tag).close()
    (tmp_path / "runs" / "not-a-run").mkdir()
    with pytest.raises(UnknownRunError, match="known runs in .*: alpha, beta$"):
        Memory.open(tmp_path / "runs" / "gamma", create=False)
    assert not (tmp_path / "runs" / "gamma").exists()


def test_ensure_run_keeps_the_first_row_on_resume(memory: Memory):
    first = memory.run_info()
    again = memory.ensure_run("t1", "gpu", "sagemaker", "llm", {"other": 1}, "/elsewhere")
    assert again == first
    assert again["settings"] == {"selection": {"min_delta": 0.0005}}
    with pytest.raises(MemoryStoreError, match="belongs to run 't1', not 't2'"):
        memory.ensure_run("t2", "micro", "local", "heuristic", {}, "/proj")


# ------------------------------------------------------------------------------- candidates
def test_candidate_ids_and_decoded_fields(memory: Memory):
    b = baseline(memory)
    assert b == "g000-baseline"
    assert baseline(memory) == b                      # resumed runs may add the baseline again
    with pytest.raises(MemoryStoreError, match="refusing a different baseline"):
        baseline(memory, fingerprint="fp-other")
    edits = [{"search": "MATRIX_LR = 0.04", "replace": "MATRIX_LR = 0.05"}]
    c1 = add(memory, 1, edits=edits, hypothesis="higher lr", diff="--- a/train.py\n", proposer="heuristic")
    c2 = add(memory, 1, fingerprint="fp2", check_status="rejected", rule="no-new-imports", reason="import x")
    c3 = add(memory, 2, parents=[c1, c2], strategy="crossover")
    assert (c1, c2, c3) == ("g001-c01", "g001-c02", "g002-c01")
    row = memory.candidate(c1)
    assert row["edits"] == edits and row["parents"] == ["g000-baseline"] and row["hypothesis"] == "higher lr"
    assert row["origin"] == "proposed" and row["attempts"] == 1 and row["index"] == 1
    assert memory.candidate(c3)["parents"] == [c1, c2]
    assert [c["id"] for c in memory.candidates()] == [b, c1, c2, c3]
    assert [c["id"] for c in memory.candidates(generation=1)] == [c1, c2]
    assert [c["id"] for c in memory.candidates(check_status="rejected")] == [c2]
    assert memory.fingerprints() == {"fp-base", "fp"}  # accepted only


def test_bad_candidate_input_names_the_field(memory: Memory):
    with pytest.raises(MemoryStoreError, match="check_status must be one of"):
        add(memory, check_status="maybe")
    with pytest.raises(MemoryStoreError, match="origin must be one of"):
        add(memory, origin="robot")
    with pytest.raises(MemoryStoreError, match="baseline belongs to generation 0"):
        memory.add_candidate(generation=1, strategy="baseline", title="b", fingerprint="f", source="s",
                             check_status="accepted", origin="baseline")


def test_update_candidate(memory: Memory):
    c = add(memory)
    memory.update_candidate(c, check_status="dropped", reason="dropped in the REPL", edits=[{"search": "a", "replace": "b"}])
    row = memory.candidate(c)
    assert row["check_status"] == "dropped" and row["reason"] == "dropped in the REPL"
    assert row["edits"] == [{"search": "a", "replace": "b"}]
    assert memory.fingerprints() == set()
    with pytest.raises(MemoryStoreError, match=r"unknown fields \['colour'\]"):
        memory.update_candidate(c, colour="red")
    with pytest.raises(UnknownRecordError, match="no candidate 'g009-c09'"):
        memory.update_candidate("g009-c09", title="x")
    with pytest.raises(KeyError):
        memory.candidate("g009-c09")


def test_record_decision_stores_the_verdict_and_an_event(memory: Memory):
    c = add(memory)
    memory.record_decision(c, verdict="noise", delta=0.0003, threshold=0.001, reason="inside the noise", generation=1)
    row = memory.candidate(c)
    assert (row["verdict"], row["verdict_delta"], row["verdict_threshold"]) == ("noise", 0.0003, 0.001)
    (event,) = memory.events("decision")
    assert event["payload"]["candidate_id"] == c and event["generation"] == 1
    with pytest.raises(MemoryStoreError, match="verdict must be one of"):
        memory.record_decision(c, verdict="great", delta=0.1, threshold=0.0, reason="")


# ------------------------------------------------------------------------------- executions
def test_execution_lifecycle_stores_every_result_field(memory: Memory):
    c = add(memory)
    e1 = memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="local", preset="micro",
                              workspace=Path("/ws/c1"), seed=7, estimated_cost_usd=0.25)
    e2 = memory.add_execution(candidate_id=c, generation=1, kind="confirmation", backend="local", preset="micro",
                              workspace="/ws/c1b", attempt=2)
    assert (e1, e2) == ("e00001", "e00002")
    assert memory.execution(e1)["status"] == "pending"
    assert [e["id"] for e in memory.unfinished_executions()] == [e1, e2]
    memory.mark_started(e1, job_id="pid-1", started_at=100.0, log_path="/ws/c1/run.log")
    row = memory.execution(e1)
    assert (row["status"], row["job_id"], row["started_at"], row["log_path"]) == ("running", "pid-1", 100.0, "/ws/c1/run.log")
    result = {**OK_RESULT, "harness_version": 3, "evaluator": {"num_tokens": 4096}}
    assert memory.finish_execution(e1, result=result, billable_seconds=40.0, cost_usd=0.02, ended_at=150.0)
    row = memory.execution(e1)
    assert row["status"] == "ok" and row["result"] == result
    for key in ("val_bpb", "peak_vram_mb", "training_seconds", "total_seconds", "num_steps", "mfu_percent",
                "num_params_M", "total_tokens_M"):
        assert row[key] == OK_RESULT[key], key
    assert (row["billable_seconds"], row["cost_usd"], row["ended_at"], row["seed"]) == (40.0, 0.02, 150.0, 7)
    assert row["workspace"] == "/ws/c1" and row["estimated_cost_usd"] == 0.25
    assert [e["id"] for e in memory.unfinished_executions()] == [e2]
    assert [e["id"] for e in memory.executions(kind="confirmation")] == [e2]
    assert [e["id"] for e in memory.executions(status="ok", candidate_id=c)] == [e1]


def test_finish_is_exactly_once(memory: Memory):
    c = add(memory)
    e = memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="local", preset="micro", workspace="/ws")
    assert memory.finish_execution(e, result=OK_RESULT, cost_usd=1.0) is True
    assert memory.finish_execution(e, result={**OK_RESULT, "val_bpb": 9.9}, cost_usd=5.0) is False
    row = memory.execution(e)
    assert row["val_bpb"] == OK_RESULT["val_bpb"] and row["cost_usd"] == 1.0
    with pytest.raises(MemoryStoreError, match="already ended"):
        memory.mark_started(e, job_id="again", started_at=1.0)


def test_crash_with_nan_values_is_stored_as_null(memory: Memory):
    c = add(memory)
    e = memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="local", preset="micro", workspace="/ws")
    assert memory.finish_execution(e, result={"status": "crash", "val_bpb": math.nan, "num_steps": "n/a",
                                              "failure_reason": "FAIL: loss is NaN", "log_tail": "FAIL"})
    row = memory.execution(e)
    assert row["status"] == "crash" and row["val_bpb"] is None and row["num_steps"] is None
    assert row["failure_reason"] == "FAIL: loss is NaN" and row["result"]["val_bpb"] is None
    json.dumps(row["result"], allow_nan=False)


def test_bad_results_are_refused(memory: Memory):
    c = add(memory)
    e = memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="local", preset="micro", workspace="/ws")
    with pytest.raises(MemoryStoreError, match="result status must be one of"):
        memory.finish_execution(e, result={"val_bpb": 1.0})
    with pytest.raises(MemoryStoreError, match="result must be a dict"):
        memory.finish_execution(e, result="ok")
    with pytest.raises(UnknownRecordError, match="no execution 'e99999'"):
        memory.finish_execution("e99999", result=OK_RESULT)
    with pytest.raises(UnknownRecordError, match="unknown candidate"):
        memory.add_execution(candidate_id="g404-c01", generation=1, kind="candidate", backend="local",
                             preset="micro", workspace="/ws")
    with pytest.raises(MemoryStoreError, match="kind must be one of"):
        memory.add_execution(candidate_id=c, generation=1, kind="warmup", backend="local", preset="micro", workspace="/ws")
    assert memory.execution(e)["status"] == "pending"


def test_lost_executions_are_kept_and_never_finished_later(memory: Memory):
    c = add(memory)
    e = memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="local", preset="micro", workspace="/ws")
    memory.mark_started(e, job_id="pid-9", started_at=1.0)
    memory.mark_lost(e, "orchestrator was killed; local child died with it")
    row = memory.execution(e)
    assert row["status"] == "lost" and "killed" in row["failure_reason"]
    assert memory.unfinished_executions() == []
    assert memory.finish_execution(e, result=OK_RESULT) is False
    assert memory.executions(status="lost")[0]["id"] == e
    done = run(memory, c, 1.0)
    memory.mark_lost(done, "late")                 # an ended execution keeps its result
    assert memory.execution(done)["status"] == "ok"


def test_finish_fills_runner_details_only_when_missing(memory: Memory):
    c = add(memory)
    e = memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="sagemaker", preset="gpu",
                             workspace="/ws", instance_type="ml.g5.xlarge")
    memory.finish_execution(e, result=OK_RESULT, job_id="job-1", instance_type="ml.p5.48xlarge", started_at=5.0)
    row = memory.execution(e)
    assert (row["job_id"], row["instance_type"], row["started_at"]) == ("job-1", "ml.g5.xlarge", 5.0)


# ------------------------------------------------------------------------------- processes and threads
CHILD = r"""
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from agent.memory import Memory
m = Memory.open(Path({run_dir!r}), create=False)
mode = sys.argv[1]
if mode == "finish":
    won = 0
    for eid in sys.argv[2:]:
        won += m.finish_execution(eid, result={{"status": "ok", "val_bpb": 1.0, "who": sys.argv[0]}})
    print(won)
else:
    ids = [m.add_execution(candidate_id="g001-c01", generation=1, kind="candidate", backend="local",
                           preset="micro", workspace="/ws") for _ in range(int(sys.argv[2]))]
    m.log_event("child", {{"n": len(ids)}})
    print(" ".join(ids))
m.close()
"""


def _children(run_dir: Path, args_list: list[list[str]]) -> list[str]:
    code = CHILD.format(root=str(ROOT), run_dir=str(run_dir))
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for args in args_list]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outs.append(out.strip())
    return outs


def test_two_processes_finishing_the_same_executions_count_each_once(run_dir: Path, memory: Memory):
    c = add(memory)
    ids = [memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="local", preset="micro",
                                workspace="/ws") for _ in range(40)]
    wins = _children(run_dir, [["finish", *ids], ["finish", *reversed(ids)]])
    assert sum(int(w) for w in wins) == 40
    assert all(e["status"] == "ok" for e in memory.executions())
    assert len(memory.executions()) == 40


def test_two_processes_adding_at_once_get_distinct_ids(run_dir: Path, memory: Memory):
    add(memory)
    outs = _children(run_dir, [["add", "25"], ["add", "25"]])
    ids = [i for out in outs for i in out.split()]
    assert len(ids) == len(set(ids)) == 50
    assert sorted(ids) == [e["id"] for e in memory.executions()]
    assert len(memory.events("child")) == 2


def test_two_handles_take_turns(run_dir: Path, memory: Memory):
    other = Memory.open(run_dir, create=False)
    try:
        c = add(memory)
        assert other.candidate(c)["title"] == "t"              # autopilot wrote, repl reads
        other.update_candidate(c, title="edited in the repl")
        other.set_state("phase", {"generation": 1, "step": "launch"})
        assert memory.candidate(c)["title"] == "edited in the repl"
        assert memory.get_state("phase") == {"generation": 1, "step": "launch"}
    finally:
        other.close()


def test_threads_share_one_handle(memory: Memory):
    def worker(n: int) -> None:
        for i in range(25):
            memory.record_llm_call(model="claude-sonnet-4-5", input_tokens=1000 + i, output_tokens=100,
                                   cost_usd=0.001, latency_s=0.5, outcome="ok", purpose=f"t{n}", generation=1)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = memory.llm_calls()
    assert len(calls) == 100
    assert memory.spend()["llm_usd"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------- reads
def test_val_bpbs_are_ok_runs_without_replays(memory: Memory):
    c = add(memory)
    run(memory, c, 1.5)
    run(memory, c, None, status="timeout")
    run(memory, c, 1.7, kind="confirmation")
    run(memory, c, 1.9, kind="replay")
    assert memory.val_bpbs(c) == [1.5, 1.7]
    assert memory.val_bpbs(c, include_replays=True) == [1.5, 1.7, 1.9]
    assert memory.val_bpbs(c, preset="gpu") == []


def test_spend_adds_compute_and_llm_per_generation(memory: Memory):
    c = add(memory)
    run(memory, c, 1.0, cost=0.5, generation=1)
    run(memory, c, 1.0, cost=0.25, generation=2)
    memory.add_execution(candidate_id=c, generation=2, kind="candidate", backend="local", preset="micro",
                         workspace="/ws", estimated_cost_usd=0.4)
    memory.record_llm_call(model="m", input_tokens=10, output_tokens=5, cache_read_tokens=3, cache_write_tokens=2,
                           cost_usd=0.1, latency_s=1.0, outcome="ok", generation=1)
    memory.record_llm_call(model="m", input_tokens=10, output_tokens=5, cost_usd=0.05, latency_s=1.0,
                           outcome="error", error="529 overloaded")
    spend = memory.spend()
    assert spend["compute_usd"] == pytest.approx(0.75) and spend["llm_usd"] == pytest.approx(0.15)
    assert spend["total_usd"] == pytest.approx(0.9) and spend["committed_usd"] == pytest.approx(0.4)
    assert spend["by_generation"] == {1: {"compute_usd": 0.5, "llm_usd": 0.1}, 2: {"compute_usd": 0.25, "llm_usd": 0.0}}
    call = memory.llm_calls()[0]
    assert (call["cache_read_tokens"], call["cache_write_tokens"], call["generation"]) == (3, 2, 1)
    assert memory.llm_calls()[1]["error"] == "529 overloaded"


def test_events_and_state(memory: Memory):
    memory.log_event("generation_started", {"generation": 1}, generation=1)
    memory.log_event("note")
    assert [e["kind"] for e in memory.events()] == ["generation_started", "note"]
    assert memory.events("note")[0]["payload"] == {}
    assert memory.events(generation=1)[0]["payload"] == {"generation": 1}
    assert memory.get_state("missing", default=[]) == []
    memory.set_state("phase", ["g1", 2])
    memory.set_state("phase", {"g": 2})
    assert memory.get_state("phase") == {"g": 2}
    assert memory.incumbent_id() is None


def test_charges_add_to_the_row_before_and_after_its_finish_and_move_the_state_with_them(memory: Memory):
    """Billed seconds that arrive apart from the Finished (an earlier attempt, a job settled after
    a shutdown) are added, never overwritten, and a settlement list changes in the same write."""
    c = add(memory)
    e = memory.add_execution(candidate_id=c, generation=1, kind="candidate", backend="sagemaker", preset="gpu",
                             workspace="/ws")
    memory.add_charges([{"execution_id": e, "billable_seconds": 40.0, "cost_usd": 0.02, "reason": "requeued"}])
    memory.finish_execution(e, result={"status": "killed", "failure_reason": "runner shut down"},
                            billable_seconds=None, cost_usd=0.0)
    row = memory.execution(e)
    assert row["billable_seconds"] == 40.0 and row["cost_usd"] == pytest.approx(0.02)
    memory.set_state("unsettled_jobs", [{"job": "j1", "executions": [e]}])
    memory.add_charges([{"execution_id": e, "billable_seconds": 130.0, "cost_usd": 0.05, "reason": "settled"}],
                       state=("unsettled_jobs", []))
    row = memory.execution(e)
    assert row["billable_seconds"] == 170.0 and row["cost_usd"] == pytest.approx(0.07)
    assert memory.get_state("unsettled_jobs") == [] and memory.spend()["compute_usd"] == pytest.approx(0.07)
    assert [ev["payload"]["reason"] for ev in memory.events("charge")] == ["requeued", "settled"]
    with pytest.raises(Exception, match="no execution"):
        memory.add_charges([{"execution_id": "nope", "billable_seconds": 1.0}])
