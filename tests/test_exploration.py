"""Branch and repair slots: which non-incumbent is promising, which crash is worth a repair."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from agent.config import Settings
from agent.exploration import promising_branch, promising_crash, repair_idea
from agent.memory import Memory


def run_memory(tmp_path: Path) -> Memory:
    memory = Memory.open(tmp_path / "x")
    memory.ensure_run("x", "micro", "local", "llm", {}, "/p")
    b = memory.add_candidate(generation=0, strategy="baseline", title="b", fingerprint="b", source="s0",
                             check_status="accepted", origin="baseline")
    memory.set_state("incumbent", b)
    specs = [("close", 1.9995, "ok", None), ("far", 2.05, "ok", None),
             ("nan", None, "crash", "train.py exited 1: FAIL (loss is NaN)"),
             ("typo", None, "crash", "train.py exited 1: NameError: name 'x' is not defined")]
    for i, (title, value, status, reason) in enumerate(specs, 1):
        cid = memory.add_candidate(generation=1, strategy="moderate", title=title, parents=[b], fingerprint=title,
                                   source=f"src-{title}", check_status="accepted")
        eid = memory.add_execution(candidate_id=cid, generation=1, kind="candidate", backend="local",
                                   preset="micro", workspace="/ws")
        memory.finish_execution(eid, result={"status": status, "val_bpb": value, "failure_reason": reason,
                                             "log_tail": "Traceback (most recent call last):\nNameError: x"})
    for value in (2.0, 2.001):
        eid = memory.add_execution(candidate_id=b, generation=0, kind="baseline", backend="local", preset="micro",
                                   workspace="/ws")
        memory.finish_execution(eid, result={"status": "ok", "val_bpb": value})
    return memory


def test_the_branch_is_the_best_non_incumbent_within_the_selection_bar(tmp_path: Path):
    memory = run_memory(tmp_path)
    ctx = SimpleNamespace(memory=memory, settings=Settings())
    assert promising_branch(ctx, "g000-baseline")["title"] == "close"
    memory.set_state("incumbent", "g001-c01")        # once it is the incumbent, nothing else is close
    assert promising_branch(ctx, "g001-c01") is None


def test_a_diverged_crash_is_not_repaired_a_simple_one_is_once(tmp_path: Path):
    memory = run_memory(tmp_path)
    ctx = SimpleNamespace(memory=memory, settings=Settings())
    candidate, execution = promising_crash(ctx)
    assert candidate["title"] == "typo"
    idea = repair_idea(candidate, execution)
    assert "NameError" in idea and "Traceback" in idea and "repair:" in idea
    memory.add_candidate(generation=2, strategy="moderate", title="repair: define x", parents=[candidate["id"]],
                         fingerprint="r", source="s", check_status="accepted")
    assert promising_crash(ctx) is None                # the NaN one stays unrepaired: it diverged
