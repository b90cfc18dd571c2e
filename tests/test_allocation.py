"""Strategy allocation that learns: the mix until a gain is measured, then gain per compute, with a floor."""
from __future__ import annotations

from pathlib import Path

from agent.allocation import AllocationSettings, rates, slots_for, weights
from agent.memory import Memory
from agent.proposing import strategy_slots
from agent.report import render_report

MIX = {"conservative": 3, "moderate": 4, "aggressive": 2, "crossover": 1}


def test_without_measured_gains_the_mix_stands():
    assert weights(MIX, {}, 0.5) == {s: n / 10 for s, n in MIX.items()}


def test_a_class_that_pays_gets_more_slots_and_none_starves():
    measured = {"aggressive": {"rate": 1e-4}, "moderate": {"rate": 0.0}}
    slots = slots_for(MIX, 10, measured, AllocationSettings())
    assert sum(slots.values()) == 10 and slots["aggressive"] > strategy_slots(MIX, 10)["aggressive"]
    assert all(slots.get(s, 0) >= 1 for s in MIX)
    # learning off in effect: the mix's shares (floors aside)
    assert slots_for(MIX, 10, measured, AllocationSettings(learning_weight=0, floor=0)) == strategy_slots(MIX, 10)


def test_rates_are_confirmed_gain_per_training_second(tmp_path: Path):
    memory = Memory.open(tmp_path / "a")
    memory.ensure_run("a", "micro", "local", "heuristic", {}, "/p")
    b = memory.add_candidate(generation=0, strategy="baseline", title="b", fingerprint="b", source="s",
                             check_status="accepted", origin="baseline")
    won = memory.add_candidate(generation=1, strategy="aggressive", title="w", parents=[b], fingerprint="w",
                               source="s", check_status="accepted")
    lost = memory.add_candidate(generation=1, strategy="moderate", title="l", parents=[b], fingerprint="l",
                                source="s", check_status="accepted")
    for cid, kind, value in ((b, "baseline", 2.0), (won, "candidate", 1.9), (lost, "candidate", 2.1)):
        eid = memory.add_execution(candidate_id=cid, generation=1, kind=kind, backend="local", preset="micro",
                                   workspace="/ws")
        memory.finish_execution(eid, result={"status": "ok", "val_bpb": value, "training_seconds": 50.0})
    memory.set_state("incumbent", b)
    memory.set_state("incumbent", won)
    measured = rates(memory)
    assert measured["aggressive"]["gain"] == 0.1 or abs(measured["aggressive"]["gain"] - 0.1) < 1e-9
    assert abs(measured["aggressive"]["rate"] - 0.1 / 50) < 1e-12 and measured["moderate"]["rate"] == 0
    memory.log_event("allocation", {"slots": {"aggressive": 2, "moderate": 1}, "rates": {"aggressive": 0.002},
                                    "unit": "s", "learned": True}, 2)
    report = render_report(memory, tmp_path / "a")
    assert "## Strategy allocation" in report and "learned" in report
