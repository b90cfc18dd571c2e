"""The async schedule (agent/async_schedule.py): no generation barrier, results judged against the
incumbent of their moment, controls and confirmations interleaved. Real child processes on the
instant stand-in project where the order of events matters; the simulated backend for scale."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from agent.loop import EXIT_OK, autopilot_command, run_autopilot
from agent.memory import Memory
from agent.phases import get_phase
from tests.conftest import ScriptedProposer, edit, git, make_project, open_ctx

pytestmark = pytest.mark.usefixtures("standin_data")   # the data layout the harness checks

BIG = ("moderate", "matrix lr 0.03", [edit("MATRIX_LR", "0.04", "0.03")])               # -0.0144 val_bpb
MARGINAL = ("conservative", "weight decay 0.13", [edit("WEIGHT_DECAY", "0.2", "0.13")])  # -0.0007
QUIET = Console(file=io.StringIO(), width=200)


def run(project, plan, *, generations=1, population=2, **overrides):
    ctx = open_ctx(project, proposer=ScriptedProposer(plan), console=QUIET, schedule="async", **overrides)
    run_dir = ctx.run_dir
    try:
        assert run_autopilot(ctx, generations=generations, population=population) == EXIT_OK
    finally:
        ctx.close()
    return Memory.open(run_dir, create=False)


def test_a_result_is_judged_against_the_incumbent_current_when_it_arrives(tmp_path):
    """One slot: the big win finishes first and becomes the incumbent at once; the next candidate
    (better than the baseline, worse than the new incumbent) is judged against the new one."""
    project = make_project(tmp_path / "proj", noise=0.0, slots=1)
    worse_than_big = ("conservative", "embedding lr 0.65", [edit("EMBEDDING_LR", "0.6", "0.65")])   # -0.008
    with run(project, {1: [BIG, worse_than_big]}) as mem:
        assert mem.candidate("g001-c01")["verdict"] == "keep"
        # judged against g001-c01: worse (delta < 0), though it beats the baseline by 0.008
        assert mem.candidate("g001-c02")["verdict"] == "discard" and mem.candidate("g001-c02")["verdict_delta"] < 0
        assert mem.incumbent_history() == ["g000-baseline", "g001-c01"]
        assert get_phase(mem, 1)["phase"] == "selected" and get_phase(mem, 1)["winner"] == "g001-c01"


def test_a_confirmation_jumps_the_queue_and_a_confirmed_win_moves_the_branch_at_once(tmp_path):
    project = make_project(tmp_path / "proj", noise=0.0, slots=1, use_git=True)
    plan = {1: [MARGINAL, ("conservative", "weight decay 0.21", [edit("WEIGHT_DECAY", "0.2", "0.21")])]}
    with run(project, plan, population=2) as mem:
        order = [(e["candidate_id"], e["kind"]) for e in mem.executions(generation=1)]
        # the marginal winner's confirmation ran before the round's next candidate
        assert order[:2] == [("g001-c01", "candidate"), ("g001-c01", "confirmation")]
        assert mem.candidate("g001-c01")["verdict"] == "keep" and mem.incumbent_id() == "g001-c01"
        decisions = [e["payload"]["verdict"] for e in mem.events("decision") if e["payload"]["candidate_id"] == "g001-c01"]
        assert decisions == ["confirm", "keep"]
    assert git(project, "rev-parse", "autoresearch/t") == git(project, "rev-parse", "refs/autoresearch/t/g001-c01")
    assert git(project, "rev-parse", "t/gen-001-best") == git(project, "rev-parse", "autoresearch/t")


def test_controls_are_interleaved_at_the_configured_rate(tmp_path):
    # noiseless: which candidate looks like a marginal win must not depend on the noise draws
    project = make_project(tmp_path / "proj", noise=0.0, slots=1,
                           config={"selection": {"control_every": 2}})
    plan = {1: [("conservative", f"weight decay {wd}", [edit("WEIGHT_DECAY", "0.2", wd)])
                for wd in ("0.21", "0.22", "0.23", "0.24")]}
    with run(project, plan, population=4) as mem:
        kinds = [e["kind"] for e in mem.executions(generation=1)]
        assert kinds == ["candidate", "candidate", "control", "candidate", "candidate", "control"]


def test_no_barrier_the_next_round_starts_while_a_straggler_still_runs(tmp_path, capsys):
    """Simulated, slow start-ups for some: round 2 is proposed and launched before round 1's last
    result arrives, and async keeps the slots busier than generations on the same work."""
    sim = {"slots": 4, "startup_median_s": 30.0, "straggler_rate": 0.3, "straggler_factor": 20.0,
           "interruption_rate": 0.0, "crash_rate": 0.0, "proposal_latency_s": 1.0, "seed": 3, "start_at": 0.0,
           "budget_s": {"micro": 4.0}}   # the instant stand-in's prepare.py says 0
    project = make_project(tmp_path / "proj", config={"run": {"backend": "simulated"}, "simulated": sim})
    figures = {}
    for schedule in ("generations", "async"):
        assert autopilot_command(run=schedule, generations=3, population=8, schedule=schedule,
                                 project_dir=project, json_mode=True) == EXIT_OK
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        figures[schedule] = lines[-1]["slot_utilization"]
        if schedule == "async":
            proposed_2 = next(i for i, x in enumerate(lines) if x["event"] == "proposed" and x["generation"] == 2)
            with Memory.open(project / "runs" / "async", create=False) as mem:
                round_1 = {e["id"] for e in mem.executions(generation=1, kind="candidate")}
            last_of_round_1 = max(i for i, x in enumerate(lines) if x["event"] == "finished"
                                  and x["execution"] in round_1)
            assert proposed_2 < last_of_round_1
            assert [x["generation"] for x in lines if x["event"] == "selected"] == [0, 1, 2, 3]
    assert figures["async"] > figures["generations"]


@pytest.mark.parametrize("population", [1, 5])
def test_every_round_closes_and_tags_even_when_its_candidates_are_rejected(tmp_path, population):
    project = make_project(tmp_path / "proj", use_git=True)
    nothing = ("moderate", "an edit that does not apply", [edit("NOT_A_KNOB", "1", "2")])
    with run(project, {1: [nothing], 2: [BIG]}, generations=2, population=population) as mem:
        assert [get_phase(mem, g)["phase"] for g in (1, 2)] == ["selected", "selected"]
        assert mem.incumbent_id() == "g002-c01"
    assert set(git(project, "tag", "--list", "t/*").split()) == {"t/gen-000-best", "t/gen-001-best", "t/gen-002-best"}
