"""The autopilot on the simulated backend (sandbox/runners/simulated.py): real memory, real git,
the real heuristic proposer and checker, a virtual clock instead of training. Results are marked
simulated everywhere, never touch git and never mix with real ones; the summary carries the
slot accounting of the runner's clock."""
from __future__ import annotations

import dataclasses
import io
import json

import pytest
from rich.console import Console

from agent.loop import EXIT_OK, autopilot_command, run_autopilot
from agent.memory import Memory
from agent.report import build_report
from agent.results_tsv import read_results_tsv
from tests.conftest import ScriptedProposer, edit, git, make_project, open_ctx

# The stand-in project's prepare.py is instant (a budget of 0): the simulated runs get the real presets'
# budgets here, as the simulated.budget_s section says them.
SIMULATED = {"slots": 4, "startup_median_s": 60.0, "straggler_rate": 0.0, "interruption_rate": 0.0,
             "crash_rate": 0.0, "proposal_latency_s": 2.0, "seed": 1, "start_at": 1_000_000.0,
             "budget_s": {"micro": 4.0, "cpu": 45.0, "gpu": 300.0}}


def simulated_project(tmp_path, **simulated):
    return make_project(tmp_path / "proj", use_git=True,
                        config={"run": {"backend": "simulated"}, "simulated": {**SIMULATED, **simulated}})


def test_a_simulated_run_is_marked_simulated_everywhere_and_never_touches_git(tmp_path, capsys):
    project = simulated_project(tmp_path)
    refs_before = git(project, "for-each-ref")
    assert autopilot_command(run="sim", generations=2, population=4, project_dir=project, json_mode=True) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["simulated"] is True and summary["backend"] == "simulated"
    assert 0 < summary["slot_utilization"] <= 1 and summary["slots"] == 4
    run_dir = project / "runs" / "sim"
    with Memory.open(run_dir, create=False) as mem:
        assert mem.run_info()["backend"] == "simulated"
        executions = mem.executions()
        assert executions and {e["backend"] for e in executions} == {"simulated"}
        assert all(e["result"]["simulated"] is True for e in executions)
        # the virtual clock: a 4 s micro budget plus ~60 s of start-up per execution, not wall time
        assert min(e["started_at"] for e in executions) >= 1_000_000.0
        assert max(e["ended_at"] for e in executions) - 1_000_000.0 > 60
    rows = read_results_tsv(run_dir / "results.tsv")
    assert rows and all(r["backend"] == "simulated" and r["description"].startswith("simulated: ") for r in rows)
    assert git(project, "for-each-ref") == refs_before             # no branch, no ref, no tag
    md, _ = build_report(Memory.open(run_dir, create=False), run_dir)
    assert "Simulated run: nothing was trained" in md.read_text()


def test_simulated_and_real_executions_never_share_a_run(tmp_path):
    project = simulated_project(tmp_path)
    open_ctx(project, "sim").close()
    with pytest.raises(ValueError, match="simulated and real executions never share a run"):
        open_ctx(project, "sim", backend="local")
    open_ctx(project, "real", backend="local").close()
    with pytest.raises(ValueError, match="holds real results"):
        open_ctx(project, "real", backend="simulated")


def test_the_proposal_latency_advances_the_virtual_clock(tmp_path):
    project = simulated_project(tmp_path, proposal_latency_s=1000.0)
    ctx = open_ctx(project, "sim", console=Console(file=io.StringIO()))
    start = ctx.clock.now()
    from agent.proposing import propose_round
    try:
        propose_round(ctx, 1, 2)
        assert ctx.clock.now() - start >= 1000.0
    finally:
        ctx.close()


def test_a_simulated_run_resumes_like_any_other(tmp_path):
    """Simulated work in flight dies with its process (the runner cannot re-attach): it is kept as
    lost and re-run, and the run completes."""
    project = simulated_project(tmp_path)
    ctx = open_ctx(project, "sim", console=Console(file=io.StringIO()))
    assert run_autopilot(ctx, generations=1, population=3) == EXIT_OK
    ctx.close()
    ctx = open_ctx(project, "sim", console=Console(file=io.StringIO()))
    try:
        mem = ctx.memory
        row = mem.executions(generation=1, kind="candidate")[0]
        with mem._write() as conn:      # as if the process had died while it ran
            conn.execute("UPDATE executions SET status = 'running', val_bpb = NULL WHERE id = ?", (row["id"],))
        ctx.memory.set_state("generation/001", {"phase": "launched", "incumbent": "g000-baseline"})
        assert run_autopilot(ctx, generations=1, population=3) == EXIT_OK
        again = [e for e in mem.executions(generation=1, kind="candidate") if e["workspace"] == row["workspace"]]
        assert [e["status"] for e in again] == ["lost", "ok"]
    finally:
        ctx.close()


# far from the surrogate's optimum: sure losers whose curves stay above the incumbent's
LOSERS = [("aggressive", f"matrix lr {lr}", [edit("MATRIX_LR", "0.04", lr)]) for lr in ("0.4", "0.6", "0.9")] + \
    [("aggressive", f"embedding lr {lr}", [edit("EMBEDDING_LR", "0.6", lr)]) for lr in ("6.0", "9.0")]
FINE = [("conservative", "weight decay 0.18", [edit("WEIGHT_DECAY", "0.2", "0.18")])]


def test_losing_candidates_are_stopped_early_with_their_figures_and_never_a_control(tmp_path, capsys):
    project = simulated_project(tmp_path, slots=3, noise_sigma=0.002)
    ctx = open_ctx(project, "es", proposer=ScriptedProposer({1: LOSERS + FINE}), json_mode=True,
                   schedule="async", preset="gpu")
    assert run_autopilot(ctx, generations=1, population=6) == EXIT_OK
    ctx.close()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    run_dir = project / "runs" / "es"
    with Memory.open(run_dir, create=False) as mem:
        stopped = mem.executions(status="stopped_early")
        assert stopped and summary["early_stopped"] == len(stopped) and summary["compute_saved_s"] > 0
        assert {e["kind"] for e in stopped} == {"candidate"}       # never baseline, control, confirmation
        for e in stopped:
            why = e["result"]["early_stop"]
            assert why["rule"] == "early_stop/v1" and why["candidate_loss"] > why["reference_mean"]
            assert why["pct"] >= ctx.settings.early_stop.min_progress
            assert why["incumbent"] and why["n_references"] >= 2
            verdict = mem.candidate(e["candidate_id"])
            assert verdict["verdict"] == "discard" and verdict["verdict_reason"].startswith("stopped early against")
        events = [x for x in lines if x["event"] == "early_stop"]
        assert sorted(x["execution"] for x in events) == sorted(e["id"] for e in stopped)
    rows = {r["execution"]: r for r in read_results_tsv(run_dir / "results.tsv")}
    assert all(rows[e["id"]]["status"] == "discard" for e in stopped)
    md, _ = build_report(Memory.open(run_dir, create=False), run_dir)
    assert "## Stopped early" in md.read_text()


def test_a_backend_no_stop_can_reach_gets_the_rule_and_is_asked_once(tmp_path, capsys):
    """A network-isolated packed job: the scheduler hands each watched candidate the rule with the
    incumbent's curves at submission, and a stop it cannot deliver is not pretended: no `stopping`,
    no early_stop event, asked once per execution, said on the console."""
    from sandbox.runners.simulated import SimulatedRunner

    class Unreachable(SimulatedRunner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.rules, self.asked = {}, []

        def submit(self, spec):
            self.rules[spec.execution_id] = spec.stop_rule
            return super().submit(spec)

        def stop_early(self, execution_id, reason):
            self.asked.append(execution_id)
            return False

    project = simulated_project(tmp_path, slots=3, noise_sigma=0.002)
    ctx = open_ctx(project, "iso", proposer=ScriptedProposer({1: LOSERS + FINE}), json_mode=True,
                   schedule="async", preset="gpu")
    built = ctx.runner
    runner = Unreachable(built.settings, reference_source=(project / "train.py").read_text(), clock=built.clock)
    ctx = dataclasses.replace(ctx, runner=runner)
    assert run_autopilot(ctx, generations=1, population=6) == EXIT_OK
    ctx.close()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with Memory.open(project / "runs" / "iso", create=False) as mem:
        rows = {e["id"]: e for e in mem.executions()}
        assert mem.executions(status="stopped_early") == []            # nobody could stop them
    watched = {e for e, rule in runner.rules.items() if rule}
    assert watched and all(rows[e]["kind"] == "candidate" for e in watched)
    for e in watched:
        rule = runner.rules[e]
        assert rule["incumbent"] and len(rule["references"]) >= 2 and rule["settings"]["min_progress"] == 40.0
    # asked once each, candidates only (one launched before the incumbent had two finished curves
    # is asked too, but carried no rule: its job could not have decided either)
    assert runner.asked and len(runner.asked) == len(set(runner.asked))
    assert all(rows[e]["kind"] == "candidate" for e in runner.asked)
    assert not [x for x in lines if x["event"] == "early_stop"]


def test_early_stopping_can_be_switched_off(tmp_path, capsys):
    project = make_project(tmp_path / "proj", config={"run": {"backend": "simulated"},
                                                      "simulated": {**SIMULATED, "slots": 6},
                                                      "early_stop": {"enabled": False}})
    assert autopilot_command(run="off", generations=2, population=12, project_dir=project, json_mode=True) == EXIT_OK
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["early_stopped"] == 0 and summary["executions"].get("stopped_early") is None


def test_slot_utilization_counts_busy_and_idle_slot_seconds_on_the_runner_clock(tmp_path):
    """Two equal runs on two slots keep both busy (1.0); idle virtual time afterwards counts as
    available and not busy."""
    from agent.baseline import baseline_executions
    from agent.scheduler import Scheduler
    project = simulated_project(tmp_path, slots=2, startup_median_s=10.0, startup_sigma=0.0, eval_fraction=0.0,
                                noise_sigma=0.0)
    ctx = open_ctx(project, "u", console=Console(file=io.StringIO()))
    try:
        with Scheduler(ctx) as scheduler:
            start = ctx.clock.now()
            outcome = scheduler.drain(baseline_executions(ctx))
            assert len(outcome.finished) == 2
            run_s = ctx.clock.now() - start
            assert run_s == pytest.approx(10.0 + 4.0)          # start-up + the micro budget, virtual
            assert scheduler.usage.utilization == pytest.approx(1.0)
            ctx.clock.advance(run_s)                            # as long again with nothing running
        assert scheduler.usage.utilization == pytest.approx(0.5)
        assert scheduler.usage.capacity == 2
    finally:
        ctx.close()


def test_without_a_run_tag_each_autopilot_starts_a_new_run(tmp_path, capsys):
    """The command of the issue has no --run: each invocation is a new run, named in the summary."""
    project = simulated_project(tmp_path)
    runs = []
    for schedule in ("async", "generations"):
        assert autopilot_command(generations=1, population=2, schedule=schedule, project_dir=project,
                                 json_mode=True) == EXIT_OK
        captured = capsys.readouterr()
        summary = json.loads(captured.out.splitlines()[-1])
        assert summary["run"].startswith("sim-") and f"--run {summary['run']}" in captured.err
        assert summary["schedule"] == schedule and summary["slot_utilization"] > 0
        runs.append(summary["run"])
    assert runs[0] != runs[1] and all((project / "runs" / tag / "memory.sqlite").is_file() for tag in runs)


def test_the_same_settings_and_seed_give_the_same_simulated_run(tmp_path, capsys):
    outcomes = []
    for name in ("one", "two"):
        project = make_project(tmp_path / name, config={"run": {"backend": "simulated"},
                                                       "simulated": {**SIMULATED, "interruption_rate": 0.2}})
        assert autopilot_command(run="same", generations=2, population=5, project_dir=project,
                                 json_mode=True) == EXIT_OK
        capsys.readouterr()
        with Memory.open(project / "runs" / "same", create=False) as mem:
            outcomes.append(([(e["candidate_id"], e["kind"], e["status"], e["val_bpb"], e["started_at"], e["ended_at"])
                              for e in mem.executions()],
                             [(c["id"], c["fingerprint"], c["verdict"]) for c in mem.candidates()]))
    assert outcomes[0] == outcomes[1]
