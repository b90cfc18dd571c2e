"""The autopilot loop end to end, with real child processes through the LocalRunner, on the
instant stand-in project of tests/conftest.py; two tests run the real prepare.py/train.py at the
micro preset."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.loop import EXIT_BUDGET, EXIT_DEADLINE, EXIT_NO_RESULT, EXIT_OK, EXIT_USAGE, autopilot_command, run_autopilot
from agent.memory import Memory
from agent.phases import get_phase
from agent.proposers.base import STRATEGIES
from agent.proposing import propose_round, strategy_slots
from agent.results_tsv import UPSTREAM_COLUMNS, read_results_tsv
from agent.run_context import Limits
from agent.scheduler import Scheduler
from tests.conftest import REPO, STANDIN_TRAIN, ScriptedProposer, config_yaml, edit, git, make_project, open_ctx

pytestmark = pytest.mark.usefixtures("standin_data")   # the data layout the harness checks

def autopilot(ctx, generations=1, population=4, max_hours=None, budget_usd=None) -> int:
    try:
        return run_autopilot(ctx, generations=generations, population=population, max_hours=max_hours,
                             budget_usd=budget_usd)
    finally:
        ctx.close()


# ============================================================================ pure parts
def test_strategy_slots_scale_the_mix_deterministically():
    mix = {"conservative": 3, "moderate": 4, "aggressive": 2, "crossover": 1}
    assert strategy_slots(mix, 10) == {"conservative": 3, "moderate": 4, "aggressive": 2, "crossover": 1}
    assert strategy_slots(mix, 4) == {"conservative": 1, "moderate": 2, "aggressive": 1}
    assert strategy_slots(mix, 1) == {"moderate": 1}
    for n in range(1, 40):
        slots = strategy_slots(mix, n)
        assert sum(slots.values()) == n and set(slots) <= set(STRATEGIES)
        assert slots == strategy_slots(dict(reversed(list(mix.items()))), n)   # order of keys is irrelevant
    assert strategy_slots({"moderate": 1, "crossover": 1}, 3) == {"moderate": 2, "crossover": 1}


# ============================================================================ the loop
WINNER = ("moderate", "matrix lr 0.03", [edit("MATRIX_LR", "0.04", "0.03")])          # -0.0144 val_bpb
CRASHER = ("aggressive", "matrix lr 0.5 (diverges)", [edit("MATRIX_LR", "0.04", "0.5")])
NO_APPLY = ("moderate", "edit that does not apply", [edit("NOT_A_KNOB", "1", "2")])
SMALL = ("conservative", "scalar lr 0.52", [edit("SCALAR_LR", "0.5", "0.52")])          # ~-0.0004: noise


@pytest.mark.parametrize("schedule", ["generations", "async"])
def test_autopilot_two_generations_with_git_and_user_changes(tmp_path, schedule):
    project = make_project(tmp_path / "proj", use_git=True)
    # the user has uncommitted work that must survive untouched
    (project / "program.md").write_text("# Research program\nuncommitted edit\n")
    (project / "notes.txt").write_text("untracked\n")
    head, status = git(project, "rev-parse", "HEAD"), git(project, "status", "--porcelain")
    plan = {1: [WINNER, CRASHER, NO_APPLY, SMALL],
            2: [("conservative", "embedding lr 0.8", [edit("EMBEDDING_LR", "0.6", "0.8")])]}
    ctx = open_ctx(project, "demo", proposer=ScriptedProposer(plan), schedule=schedule)
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=2, population=4) == EXIT_OK

    assert git(project, "rev-parse", "HEAD") == head and git(project, "status", "--porcelain") == status
    assert git(project, "symbolic-ref", "HEAD") == "refs/heads/main"

    mem = Memory.open(run_dir, create=False)
    try:
        assert mem.incumbent_id() == "g002-c01"
        assert mem.incumbent_history() == ["g000-baseline", "g001-c01", "g002-c01"]
        assert [get_phase(mem, g)["phase"] for g in (0, 1, 2)] == ["selected"] * 3
        assert mem.candidate("g001-c01")["verdict"] == "keep"
        assert mem.candidate("g001-c03")["check_status"] == "rejected"
        assert mem.candidate("g001-c03")["rule"] == "edit-apply"
        kinds = [(e["candidate_id"], e["kind"], e["status"]) for e in mem.executions()]
        assert kinds[:2] == [("g000-baseline", "baseline", "ok")] * 2
        assert ("g001-c02", "candidate", "crash") in kinds
        if schedule == "generations":     # a control of the incumbent each generation started with
            assert ("g000-baseline", "control", "ok") in kinds and ("g001-c01", "control", "ok") in kinds
        else:                             # one control per population (4) launches, of the incumbent then
            assert [k for k in kinds if k[1] == "control"] == [("g001-c01", "control", "ok")]
        n_results = len([e for e in mem.executions() if e["status"] in ("ok", "crash")])
    finally:
        mem.close()

    rows = read_results_tsv(run_dir / "results.tsv")
    assert list(rows[0])[:5] == list(UPSTREAM_COLUMNS)
    assert len(rows) == n_results and len({r["execution"] for r in rows}) == n_results
    assert rows[0]["description"] == "baseline" and rows[0]["status"] == "keep"
    by_cand = {(r["candidate"], r["kind"]): r for r in rows}
    assert by_cand[("g001-c01", "candidate")]["status"] == "keep"
    assert by_cand[("g001-c02", "candidate")]["status"] == "crash"
    assert by_cand[("g001-c02", "candidate")]["val_bpb"] == "0.000000"
    control = next(r for r in rows if r["kind"] == "control")
    assert control["description"] == f"control: re-run of incumbent {control['candidate']}"
    assert by_cand[("g001-c01", "candidate")]["memory_gb"] == "1.6"      # (1536 + 128) MB / 1024
    # commit column = the candidate's commit on autoresearch/demo
    for r in rows:
        assert git(project, "rev-parse", f"refs/autoresearch/demo/{r['candidate']}").startswith(r["commit"])

    # git: the branch holds the lineage, tags mark each generation's best
    assert git(project, "show", "autoresearch/demo:train.py").count("MATRIX_LR = 0.03") == 1
    assert git(project, "show", "autoresearch/demo:train.py").count("EMBEDDING_LR = 0.8") == 1
    assert git(project, "rev-list", "--count", "autoresearch/demo") == "4"   # user commit + 3 incumbents
    assert git(project, "show", "demo/gen-000-best:train.py") == (project / "train.py").read_text().strip()
    assert "MATRIX_LR = 0.03" in git(project, "show", "demo/gen-001-best:train.py")
    assert set(git(project, "tag", "--list", "demo/*").split()) == {
        "demo/gen-000-best", "demo/gen-001-best", "demo/gen-002-best"}

    # workspace layout
    gen1 = run_dir / "generations" / "gen_001"
    controls = ["g000-baseline-control-1"] if schedule == "generations" else []
    for folder in ["g001-c01", "g001-c02"] + controls:
        for name in ("train.py", "diff.patch", "run.log", "result.json", "prepare.py", "harness.py"):
            assert (gen1 / folder / name).is_file(), (folder, name)
    assert "+MATRIX_LR = 0.03" in (gen1 / "g001-c01" / "diff.patch").read_text()
    assert json.loads((gen1 / "g001-c02" / "result.json").read_text())["status"] == "crash"
    assert (run_dir / "generations" / "gen_000" / "g000-baseline-repeat-2" / "result.json").is_file()


def test_marginal_winner_is_confirmed_before_it_is_kept(tmp_path):
    # no noise: sigma = 0, threshold = min_delta = 0.0005; a 0.0007 gain is < confirm_margin x threshold
    project = make_project(tmp_path / "proj", noise=0.0)
    plan = {1: [("conservative", "weight decay 0.13", [edit("WEIGHT_DECAY", "0.2", "0.13")])]}
    ctx = open_ctx(project, proposer=ScriptedProposer(plan))
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=1, population=1) == EXIT_OK
    mem = Memory.open(run_dir, create=False)
    try:
        runs = mem.executions(candidate_id="g001-c01")
        assert [e["kind"] for e in runs] == ["candidate", "confirmation"]
        assert mem.candidate("g001-c01")["verdict"] == "keep"
        assert mem.incumbent_id() == "g001-c01"
        assert [e["payload"]["candidate"] for e in mem.events("confirmation")] == ["g001-c01"]
    finally:
        mem.close()
    rows = read_results_tsv(run_dir / "results.tsv")
    confirm = [r for r in rows if r["kind"] == "confirmation"]
    assert len(confirm) == 1 and confirm[0]["description"].startswith("confirmation: re-run of g001-c01")
    assert (run_dir / "generations" / "gen_001" / "g001-c01-confirm-1" / "result.json").is_file()


def test_a_win_within_the_noise_is_not_kept(tmp_path):
    project = make_project(tmp_path / "proj", noise=0.0)
    # 0.0004 better: below min_delta 0.0005
    plan = {1: [("conservative", "weight decay 0.16", [edit("WEIGHT_DECAY", "0.2", "0.16")])]}
    ctx = open_ctx(project, proposer=ScriptedProposer(plan))
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=1, population=1) == EXIT_OK
    with Memory.open(run_dir, create=False) as mem:
        assert mem.candidate("g001-c01")["verdict"] == "noise"
        assert mem.incumbent_id() == "g000-baseline"
        assert not mem.executions(kind="confirmation")


def test_every_candidate_crashing_exits_5(tmp_path):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [CRASHER]}))
    assert autopilot(ctx, generations=1, population=1) == EXIT_NO_RESULT


def test_broken_baseline_exits_5_with_its_reason(tmp_path):
    project = make_project(tmp_path / "proj")
    (project / "train.py").write_text(STANDIN_TRAIN.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.5"))
    ctx = open_ctx(project, proposer=ScriptedProposer({}))
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=1, population=1) == EXIT_NO_RESULT
    with Memory.open(run_dir, create=False) as mem:
        end = mem.events("autopilot_end")[-1]["payload"]
        assert "baseline" in end["reason"] and "FAIL" in end["reason"]
        assert mem.executions(generation=1) == []


def test_budget_admission_leaves_what_does_not_fit_pending(tmp_path):
    project = make_project(tmp_path / "proj", slots=1)
    ctx = open_ctx(project, proposer=ScriptedProposer({}), limits=Limits(budget_usd=1.0))
    try:
        from agent.baseline import add_baseline
        mem = ctx.memory
        cid = add_baseline(ctx)
        mem.record_llm_call(model="m", input_tokens=1, output_tokens=1, cost_usd=0.5, latency_s=0.1, outcome="ok")
        ws = lambda name: str(ctx.run_dir / "generations" / "gen_000" / name)   # noqa: E731
        fits = mem.add_execution(candidate_id=cid, generation=0, kind="baseline", backend="local", preset="micro",
                                 workspace=ws("a"), estimated_cost_usd=0.3)
        too_big = mem.add_execution(candidate_id=cid, generation=0, kind="baseline", backend="local",
                                    preset="micro", workspace=ws("b"), estimated_cost_usd=0.6)
        small = mem.add_execution(candidate_id=cid, generation=0, kind="baseline", backend="local", preset="micro",
                                  workspace=ws("c"), estimated_cost_usd=0.2)
        with Scheduler(ctx) as scheduler:
            outcome = scheduler.drain([fits, too_big, small])
        assert sorted(outcome.finished) == [fits, small]
        assert mem.execution(too_big)["status"] == "pending"
        assert outcome.not_admitted_budget == [too_big]
        refused = mem.events("not_admitted")
        assert [e["payload"]["execution"] for e in refused] == [too_big]
        assert refused[0]["payload"]["reason"] == "budget"
    finally:
        ctx.close()


def test_spent_budget_stops_before_launching_and_exits_3(tmp_path):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}))
    run_dir = ctx.run_dir
    ctx.memory.record_llm_call(model="m", input_tokens=1, output_tokens=1, cost_usd=0.02, latency_s=0.1,
                               outcome="ok")
    assert autopilot(ctx, generations=1, population=1, budget_usd=0.01) == EXIT_BUDGET
    with Memory.open(run_dir, create=False) as mem:
        assert {e["status"] for e in mem.executions()} == {"pending"}    # nothing launched
        assert len(mem.events("not_admitted")) == 2
        assert mem.candidates(generation=1) == []                      # nothing proposed either
    # the same command with more budget resumes and completes
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}))
    assert autopilot(ctx, generations=1, population=1, budget_usd=5.0) == EXIT_OK
    with Memory.open(run_dir, create=False) as mem:
        assert len(mem.executions(generation=0)) == 2     # the pending ones ran; none added twice


def test_max_hours_stops_new_launches(tmp_path):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}))
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=0, population=1) == EXIT_OK     # the baseline only
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}))
    assert autopilot(ctx, generations=1, population=1, max_hours=1e-9) == EXIT_DEADLINE
    with Memory.open(run_dir, create=False) as mem:
        assert mem.candidates(generation=1) == []
        assert mem.events("autopilot_end")[-1]["payload"]["reason"].startswith("max-hours reached")
    # a deadline reached mid-generation: nothing further is launched, the rest stays pending
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}), limits=Limits(deadline=0.0))
    from agent.generations import launch_generation
    try:
        propose_round(ctx, 1, 1)
        with Scheduler(ctx) as scheduler:
            summary = launch_generation(ctx, 1, scheduler)
        assert len(summary["deadline"]) == 2      # candidate + control
        assert {e["status"] for e in ctx.memory.executions(generation=1)} == {"pending"}
    finally:
        ctx.close()


def test_dry_run_local_launches_nothing_and_keeps_the_proposals(tmp_path, capsys):
    project = make_project(tmp_path / "proj")
    proposer = ScriptedProposer({1: [WINNER, NO_APPLY]})
    ctx = open_ctx(project, proposer=proposer, json_mode=True, dry_run=True)
    run_dir = ctx.run_dir
    assert ctx.runner is None
    assert autopilot(ctx, generations=3, population=2) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    plan = [x for x in lines if x["event"] == "plan"]
    assert [(p["candidate"], p["kind"]) for p in plan] == [
        ("g000-baseline", "baseline"), ("g000-baseline", "baseline"), ("g001-c01", "candidate"),
        ("g000-baseline", "control")]
    assert lines[-1]["event"] == "summary" and lines[-1]["executions"] == 4 and lines[-1]["rejected"] == 1
    with Memory.open(run_dir, create=False) as mem:
        assert mem.executions() == []
        assert len(mem.candidates(generation=1)) == 2
    assert not (run_dir / "generations").exists()
    # the real run afterwards re-uses the stored proposals: the proposer is not asked again
    ctx = open_ctx(project, proposer=proposer)
    assert autopilot(ctx, generations=1, population=2) == EXIT_OK
    assert len(proposer.requests) == 1


def sagemaker_project(tmp_path, monkeypatch, sagemaker_extra: str = "") -> Path:
    """A stand-in project configured for the sagemaker backend, with AWS pointed at a closed port
    on 127.0.0.1: any AWS call fails loudly instead of reaching anything."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    project = make_project(tmp_path / "proj")
    with open(project / "config.yaml", "a") as fh:
        fh.write("aws:\n  region: us-east-1\n  role_arn: arn:aws:iam::123456789012:role/x\n"
                 "s3:\n  bucket: my-bucket\n"
                 "sagemaker:\n  image_uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/pt:2.8\n"
                 + sagemaker_extra)
    return project


def test_dry_run_sagemaker_writes_requests_and_makes_no_aws_call(tmp_path, monkeypatch, capsys):
    project = sagemaker_project(tmp_path, monkeypatch)
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}), dry_run=True, backend="sagemaker")
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=1, population=1, budget_usd=0.06) == EXIT_OK
    out = capsys.readouterr().out
    assert "nothing is launched" in out
    # ~$0.025 each (micro on spot ml.g5.xlarge, 180 s start-up): 2 of the 4 fit in $0.06
    assert "budget $0.06: 2 would not be admitted" in out
    requests = {p.parent.name: p for p in run_dir.glob("generations/*/*/create_training_job.json")}
    assert set(requests) == {"g000-baseline", "g000-baseline-repeat-2", "g000-baseline-control-1", "g001-c01"}
    body = json.loads(requests["g001-c01"].read_text())
    assert body["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert body["EnableManagedSpotTraining"] is True
    with Memory.open(run_dir, create=False) as mem:
        assert mem.executions() == []
        assert mem.events("dry_run")[0]["payload"]["estimated_usd"] > 0    # spot estimate of 4 executions


def test_json_mode_prints_only_json_lines(tmp_path, capsys):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER, CRASHER]}), json_mode=True)
    assert autopilot(ctx, generations=1, population=2) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = [x["event"] for x in lines]
    for needed in ("generation_start", "proposed", "started", "finished", "selected", "summary"):
        assert needed in events, needed
    assert events[-1] == "summary"
    summary = lines[-1]
    assert summary["exit_code"] == 0 and summary["incumbent"] == "g001-c01"
    assert summary["improvement"] > 0.005 and summary["results_tsv"].endswith("results.tsv")
    finished = [x for x in lines if x["event"] == "finished"]
    assert len([x for x in finished if x["kind"] != "confirmation"]) == 5
    assert {x["status"] for x in finished} == {"ok", "crash"}
    selected = [x for x in lines if x["event"] == "selected"]
    assert selected[-1]["decisions"] == {"g001-c01": "keep", "g001-c02": "discard"}


def test_autopilot_command_exit_2_on_bad_config_and_bad_tag(tmp_path, capsys):
    project = make_project(tmp_path / "proj")
    (project / "config.yaml").write_text("run:\n  populaton: 3\n")
    assert autopilot_command(run="x", project_dir=project, json_mode=True) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "run.populaton" in captured.err and "unknown key" in captured.err
    assert json.loads(captured.out.splitlines()[-1])["exit_code"] == EXIT_USAGE
    (project / "config.yaml").write_text(config_yaml(slots=1))
    assert autopilot_command(run="bad tag", project_dir=project) == EXIT_USAGE
    assert "run tag" in capsys.readouterr().err


def test_a_run_measured_under_another_measurement_version_is_not_resumed(tmp_path, capsys):
    """prepare.py's MEASUREMENT_VERSION moved on (here: 2 -> 3) after the run's results: autopilot,
    the REPL's launch and replay refuse with what to do, and launch nothing."""
    from agent.replay import run_replay
    from agent.repl import run_repl
    project = make_project(tmp_path / "proj", use_git=True)
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}))
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=1, population=1) == EXIT_OK
    with open(project / "prepare.py", "a") as fh:
        fh.write("MEASUREMENT_VERSION = 3\n")
    with Memory.open(run_dir, create=False) as mem:
        before = len(mem.executions())
        assert mem.measurement_versions() == {2: before}
    capsys.readouterr()
    ctx = open_ctx(project, proposer=ScriptedProposer({}), json_mode=True)
    assert autopilot(ctx, generations=2, population=1) == EXIT_USAGE
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "measurement version 2" in summary["reason"] and "measurement version 3" in summary["reason"]
    assert "another --run tag" in summary["reason"] and "git show autoresearch/t:train.py" in summary["reason"]
    ctx = open_ctx(project, proposer=ScriptedProposer({2: [SMALL]}))
    try:
        out = io.StringIO()
        assert run_repl(ctx, stdin=io.StringIO("propose 1\nlaunch\nquit\n"), stdout=out) == 0
        text = " ".join(out.getvalue().split())
        assert "measurement version 2" in text and "generation 2 done" not in text
        assert run_replay(ctx, candidate="g001-c01") == 2
    finally:
        ctx.close()
    with Memory.open(run_dir, create=False) as mem:
        assert len(mem.executions()) == before                          # nothing launched, nothing planned


def test_resumed_run_keeps_its_preset(tmp_path):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project, proposer=ScriptedProposer({}))
    ctx.close()
    with pytest.raises(ValueError, match="preset 'micro'"):
        open_ctx(project, preset="cpu")


# ============================================================================ real train.py


@pytest.mark.timeout(600)
def test_real_micro_autopilot_through_the_cli(tmp_path, micro_cache):
    """`autoresearch autopilot --preset micro --generations 2 --population 4 --proposer heuristic
    --backend local` with the real prepare.py/train.py, in a git project, as a child process."""
    project = make_project(tmp_path / "proj", real=True, use_git=True, slots=0)
    # a 2 s training budget instead of micro's 4 s keeps the test short; everything else is real
    env = {**os.environ, "AUTORESEARCH_CACHE": str(micro_cache), "PYTHONPATH": str(REPO),
           "AUTORESEARCH_TIME_BUDGET": "2"}
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "autopilot", "--run", "demo", "--preset", "micro", "--generations", "2",
         "--population", "4", "--proposer", "heuristic", "--backend", "local", "--json"],
        cwd=project, env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["event"] == "summary" and lines[-1]["exit_code"] == 0
    rows = read_results_tsv(project / "runs" / "demo" / "results.tsv")
    assert rows[0]["description"] == "baseline" and rows[0]["status"] == "keep"
    assert {r["generation"] for r in rows} == {"0", "1", "2"}
    assert all(r["status"] in ("keep", "discard", "crash") for r in rows)
    ok = [r for r in rows if r["status"] != "crash" and not r["description"].startswith("stopped early")]
    assert ok and all(0.5 < float(r["val_bpb"]) < 12 for r in ok)
    assert all(r["val_bpb"] == "" for r in rows if r["description"].startswith("stopped early"))
    for g in (0, 1, 2):
        assert (project / "runs" / "demo" / "generations" / f"gen_{g:03d}").is_dir()
    assert set(git(project, "tag", "--list", "demo/*").split()) == {
        "demo/gen-000-best", "demo/gen-001-best", "demo/gen-002-best"}
    assert git(project, "status", "--porcelain") == ""


def test_preflight_rejects_a_candidate_that_crashes_before_it_is_launched(tmp_path, micro_cache, monkeypatch):
    """run.preflight: a few micro steps of the real train.py on this machine; the crashing
    candidate is recorded as rejected with rule `preflight` and the traceback's last line."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(micro_cache))
    project = make_project(tmp_path / "proj", real=True)
    good = [{"search": "MATRIX_LR = 0.04", "replace": "MATRIX_LR = 0.05"}]
    broken = [{"search": "SEED = 42\n", "replace": "SEED = 42\nHEAD_DIM = HEAD_DIM + 1  # odd head dim\n"}]
    proposer = ScriptedProposer({1: [("conservative", "matrix lr up", good),
                                     ("moderate", "odd head dim", broken)]})
    ctx = open_ctx(project, proposer=proposer, preflight="always", preset="micro")
    try:
        ids = propose_round(ctx, 1, 2)
        by_title = {c["title"]: c for c in (ctx.memory.candidate(i) for i in ids)}
    finally:
        ctx.close()
    assert by_title["matrix lr up"]["check_status"] == "accepted"
    bad = by_title["odd head dim"]
    assert bad["check_status"] == "rejected" and bad["rule"] == "preflight"
    assert bad["reason"].startswith("crash: ")


def test_unreachable_aws_stops_the_run_with_the_fix_and_loses_nothing(tmp_path, monkeypatch, capsys):
    """No AWS behind the endpoint: one clear message naming the fix, exit 2, nothing counted as a
    crash or a success; the executions stay pending for the same command to resume."""
    project = sagemaker_project(tmp_path, monkeypatch, "  api_max_attempts: 1\n")
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}), backend="sagemaker")
    run_dir = ctx.run_dir
    assert autopilot(ctx, generations=1, population=1) == EXIT_USAGE
    out = capsys.readouterr().out
    assert "AWS unreachable" in out and "autoresearch doctor" in out and "resumes" in out
    with Memory.open(run_dir, create=False) as mem:
        statuses = {e["status"] for e in mem.executions()}
    assert statuses == {"pending"}
