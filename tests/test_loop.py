"""The autopilot loop end to end, with real child processes through the LocalRunner.

Most tests use an INSTANT stand-in train.py + prepare.py pair written into a tmp project: the
stand-in follows train.py's output contract (progress lines, `---` summary) and prepare.py's
evaluator record, and computes a deterministic pseudo val_bpb from its knob values plus seeded
noise (seeded by the execution's record path, so identical code still varies between runs like
the real thing). One test runs the real prepare.py/train.py at the micro preset.

Helpers here (`make_project`, `ScriptedProposer`, `open_ctx`) are imported by test_resume.py and
benchmarks/bench_orchestration.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.loop import (EXIT_BUDGET, EXIT_DEADLINE, EXIT_NO_RESULT, EXIT_OK, EXIT_USAGE, autopilot_command,
                        get_phase, propose_generation, run_autopilot, strategy_slots)
from agent.memory import Memory
from agent.proposers.base import STRATEGIES, Proposal
from agent.results_tsv import UPSTREAM_COLUMNS, read_results_tsv
from agent.run_context import open_run
from agent.scheduler import run_executions
from tests.standins import linked_prepare, make_fake_cache

REPO = Path(__file__).resolve().parents[1]

STANDIN_TRAIN = '''\
"""Stand-in train.py for orchestration tests: instant, same output contract as the real one."""
import time

from prepare import PRESET, MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

# Knobs: everything a candidate is expected to tune lives in this block.
DEPTH             = {"gpu": 8,     "cpu": 4,     "micro": 2}[PRESET]
ASPECT_RATIO      = {"gpu": 64,    "cpu": 32,    "micro": 32}[PRESET]
HEAD_DIM          = {"gpu": 128,   "cpu": 64,    "micro": 32}[PRESET]
TOTAL_BATCH_SIZE  = {"gpu": 2**19, "cpu": 2**13, "micro": 2**10}[PRESET]
DEVICE_BATCH_SIZE = {"gpu": 0,     "cpu": 16,    "micro": 8}[PRESET]
WINDOW_PATTERN = "SSSL"
EMBEDDING_LR = 0.6
UNEMBEDDING_LR = 0.004
MATRIX_LR = 0.04
SCALAR_LR = 0.5
WEIGHT_DECAY = 0.2
ADAM_BETAS = (0.8, 0.95)
WARMUP_RATIO = 0.0
WARMDOWN_RATIO = 0.5
FINAL_LR_FRAC = 0.0
SEED = 42

t_start = time.time()
knobs = dict(DEPTH=DEPTH, ASPECT_RATIO=ASPECT_RATIO, HEAD_DIM=HEAD_DIM, TOTAL_BATCH_SIZE=TOTAL_BATCH_SIZE,
             DEVICE_BATCH_SIZE=DEVICE_BATCH_SIZE, WINDOW_PATTERN=WINDOW_PATTERN, EMBEDDING_LR=EMBEDDING_LR,
             UNEMBEDDING_LR=UNEMBEDDING_LR, MATRIX_LR=MATRIX_LR, SCALAR_LR=SCALAR_LR, WEIGHT_DECAY=WEIGHT_DECAY,
             ADAM_BETAS=ADAM_BETAS, WARMUP_RATIO=WARMUP_RATIO, WARMDOWN_RATIO=WARMDOWN_RATIO,
             FINAL_LR_FRAC=FINAL_LR_FRAC, SEED=SEED)
steps = 4
for step in range(1, steps + 1):
    if TIME_BUDGET > 0:
        time.sleep(TIME_BUDGET / steps)
    loss = 4.0 / step if MATRIX_LR < 0.2 else float("nan")
    print(f"step {step:05d} ({100 * step / steps:.1f}%) | loss: {loss:.6f} | lrm: 1.00 | dt: 1ms | "
          f"tok/sec: 1,000 | mfu: 0.0% | epoch: 1 | remaining: 0s", flush=True)
    if loss != loss:
        print("FAIL", flush=True)
        raise SystemExit(1)
training_seconds = time.time() - t_start
val_bpb = evaluate_bpb(knobs, Tokenizer(), DEVICE_BATCH_SIZE)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_seconds:.1f}")
print(f"total_seconds:    {time.time() - t_start:.1f}")
print(f"peak_vram_mb:     {1536.0 + 64 * DEPTH:.1f}")
print(f"mfu_percent:      {0.0:.2f}")
print(f"total_tokens_M:   {0.1:.1f}")
print(f"num_steps:        {steps}")
print(f"num_params_M:     {0.5 * DEPTH:.1f}")
print(f"depth:            {DEPTH}", flush=True)
'''

# The harness accepts only a record sealed down its pipe (tests/standins.py: linked_prepare).
STANDIN_PREPARE = linked_prepare('''
"""The constants train.py imports, and an evaluate_bpb that scores the knobs.

val_bpb = a smooth function of the knobs (optimum away from the defaults, so proposals can win)
plus Gaussian noise of NOISE, seeded by the attempt's scratch path (unique per execution)."""
import hashlib
import math
import os
import random

PRESET = SETTINGS.get("preset") or os.environ.get("AUTORESEARCH_PRESET", "micro")
if PRESET == "auto":
    PRESET = "cpu"
MAX_SEQ_LEN = 64
TIME_BUDGET = float(SETTINGS.get("budget", 0) or 0)
EVAL_TOKENS = 2**14
VOCAB_SIZE = 512
NOISE = float(os.environ.get("STANDIN_NOISE", "@NOISE@"))


class Tokenizer:
    pass


def make_dataloader(*args, **kwargs):
    return iter(())


def score(k):
    return (1.0 + 0.01 * k["WEIGHT_DECAY"]
            + 0.05 * abs(math.log(k["MATRIX_LR"] / 0.03))
            + 0.1 * abs(math.log(k["EMBEDDING_LR"] / 0.8))
            + 0.02 * abs(math.log(k["UNEMBEDDING_LR"] / 0.004))
            + 0.01 * abs(math.log(k["SCALAR_LR"] / 0.5))
            + 0.01 * abs(k["WARMDOWN_RATIO"] - 0.6)
            + 0.005 * abs(k["DEPTH"] - 3))


def evaluate_bpb(model, tokenizer, batch_size):
    # seed: the attempt's path below runs/ (<tag>/generations/gen_N/<folder>/executions/<id>/...),
    # so a given execution draws the same noise in every test session, and different ones differ
    seed_text = SETTINGS.get("train", "").split("/runs/")[-1]
    rng = random.Random(hashlib.sha256(seed_text.encode()).hexdigest())
    val_bpb = round(score(model) + (rng.gauss(0.0, NOISE) if NOISE > 0 else 0.0), 6)
    return report(val_bpb, peak_memory_mb=1536.0 + 64 * model["DEPTH"])   # what train.py prints too
''')


@pytest.fixture(scope="module", autouse=True)
def _standin_data(tmp_path_factory):
    """The harness checks the data layout before it starts a child: the stand-ins get a fake one
    (tests that run the real prepare.py set their own AUTORESEARCH_CACHE)."""
    with pytest.MonkeyPatch.context() as mp:   # module scope: module-scoped fixtures run the harness too
        mp.setenv("AUTORESEARCH_CACHE", str(make_fake_cache(tmp_path_factory.getbasetemp() / "standin-cache")))
        yield


CONFIG = """\
run:
  preset: micro
  backend: local
  proposer: heuristic
  seed: 0
local:
  slots: {slots}
  threads_per_slot: 1
  startup_allowance_s: 30
selection:
  baseline_repeats: 2
  controls_per_generation: 1
  min_delta: 0.0005
  k_sigma: 2.0
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def make_project(root: Path, *, noise: float = 0.001, use_git: bool = False, slots: int = 2,
                 real: bool = False) -> Path:
    """A project folder: stand-in (or the real) train.py/prepare.py, program.md, config.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    if real:
        shutil.copy(REPO / "train.py", root / "train.py")
        shutil.copy(REPO / "prepare.py", root / "prepare.py")
    else:
        (root / "train.py").write_text(STANDIN_TRAIN)
        (root / "prepare.py").write_text(STANDIN_PREPARE.replace("@NOISE@", repr(noise)))
    (root / "program.md").write_text("# Research program\nMake val_bpb lower.\n")
    (root / "config.yaml").write_text(CONFIG.format(slots=slots))
    if use_git:
        git(root, "init", "-q", "-b", "main")
        git(root, "config", "user.name", "Test User")
        git(root, "config", "user.email", "test@example.com")
        (root / ".gitignore").write_text("runs/\n")
        git(root, "add", ".")
        git(root, "commit", "-q", "-m", "project")
    return root


def edit(name: str, old, new) -> dict:
    return {"search": f"{name} = {old}\n", "replace": f"{name} = {new}\n"}


class ScriptedProposer:
    """A Proposer that proposes given edits per generation, checked by the real
    sandbox.candidate.build_candidate (the same gates as the real proposers)."""

    name = "scripted"

    def __init__(self, plan: dict[int, list[tuple[str, str, list[dict]]]]):
        self.plan = plan
        self.requests = []

    def propose(self, request):
        from sandbox.candidate import build_candidate
        self.requests.append(request)
        out = []
        for strategy, title, edits in self.plan.get(request.generation, []):
            check = build_candidate(request.incumbent_source, edits, request.seen_fingerprints)
            out.append(Proposal(strategy=strategy, title=title, hypothesis=f"scripted: {title}", edits=edits,
                                parents=[request.incumbent_id], accepted=check.ok, source=check.source,
                                diff=check.diff, fingerprint=check.fingerprint, rule=check.rule,
                                reason=check.message, proposer="scripted"))
        return out


def open_ctx(project: Path, tag: str = "t", *, proposer=None, json_mode=False, dry_run=False, preset=None,
             backend=None, **overrides):
    settings = load_settings(project / "config.yaml", {f"run.{k}": v for k, v in overrides.items()})
    ctx = open_run(settings, tag, project, json_mode=json_mode, dry_run=dry_run, preset=preset, backend=backend)
    if proposer is not None:
        ctx.proposer = proposer
    return ctx


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


def test_autopilot_two_generations_with_git_and_user_changes(tmp_path):
    project = make_project(tmp_path / "proj", use_git=True)
    # the user has uncommitted work that must survive untouched
    (project / "program.md").write_text("# Research program\nuncommitted edit\n")
    (project / "notes.txt").write_text("untracked\n")
    head, status = git(project, "rev-parse", "HEAD"), git(project, "status", "--porcelain")
    plan = {1: [WINNER, CRASHER, NO_APPLY, SMALL],
            2: [("conservative", "embedding lr 0.8", [edit("EMBEDDING_LR", "0.6", "0.8")])]}
    ctx = open_ctx(project, "demo", proposer=ScriptedProposer(plan))
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
        assert ("g000-baseline", "control", "ok") in kinds and ("g001-c01", "control", "ok") in kinds
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
    assert by_cand[("g000-baseline", "control")]["description"] == "control: re-run of incumbent g000-baseline"
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
    for folder in ("g001-c01", "g001-c02", "g000-baseline-control-1"):
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
    ctx = open_ctx(project, proposer=ScriptedProposer({}))
    try:
        from agent.loop import add_baseline
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
        ctx.budget_usd = 1.0
        finished = run_executions(ctx, [fits, too_big, small], live=False)
        assert sorted(e["id"] for e in finished) == [fits, small]
        assert mem.execution(too_big)["status"] == "pending"
        assert ctx.last_schedule.not_admitted_budget == [too_big]
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
    ctx = open_ctx(project, proposer=ScriptedProposer({1: [WINNER]}))
    ctx.deadline = 0.0
    from agent.loop import launch_generation, propose_generation
    try:
        propose_generation(ctx, 1, 1)
        launch_generation(ctx, 1)
        assert len(ctx.last_schedule.not_launched_deadline) == 2      # candidate + control
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
    (project / "config.yaml").write_text(CONFIG.format(slots=1))
    assert autopilot_command(run="bad tag", project_dir=project) == EXIT_USAGE
    assert "run tag" in capsys.readouterr().err


def test_resumed_run_keeps_its_preset(tmp_path):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project, proposer=ScriptedProposer({}))
    ctx.close()
    with pytest.raises(ValueError, match="preset 'micro'"):
        open_ctx(project, preset="cpu")


# ============================================================================ real train.py


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("autoresearch-cache")
    env = {**os.environ, "AUTORESEARCH_CACHE": str(cache)}
    subprocess.run([sys.executable, str(REPO / "prepare.py"), "--preset", "micro"], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)
    return cache


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
    ok = [r for r in rows if r["status"] != "crash"]
    assert ok and all(0.5 < float(r["val_bpb"]) < 12 for r in ok)
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
        ids = propose_generation(ctx, 1, 2)
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
