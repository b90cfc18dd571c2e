"""The history digest: deterministic, bounded, most informative first."""
from __future__ import annotations

import difflib
import math
import random
from pathlib import Path

import pytest

from agent.digest import (CHARS_PER_TOKEN, build_digest, estimate_tokens, lineage, noise_sigma, noise_stats,
                          recent_results, strategy_outcomes)
from agent.memory import Memory
from tests.conftest import add, baseline, run

KNOBS = """DEPTH             = {"gpu": 8,     "cpu": 4,     "micro": 2}[PRESET]  # layers
EMBEDDING_LR = 0.6
MATRIX_LR = 0.04  # Muon lr
WEIGHT_DECAY = 0.2
WARMDOWN_RATIO = 0.5
"""
VALUES = {"EMBEDDING_LR": ["0.4", "0.8"], "MATRIX_LR": ["0.03", "0.05", "0.06"], "WEIGHT_DECAY": ["0.1", "0.3"],
          "WARMDOWN_RATIO": ["0.4", "0.6"]}


def _edit(source: str, knob: str, value: str) -> str:
    lines = source.splitlines(True)
    for i, line in enumerate(lines):
        if line.startswith(knob):
            head, _, rest = line.partition("=")
            comment = rest[rest.index("#"):] if "#" in rest else "\n"
            lines[i] = f"{head}= {value}" + ("  " + comment if "#" in rest else comment)
    return "".join(lines)


def _diff(old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/train.py", "b/train.py"))


def build_history(run_dir: Path, generations: int, seed: int = 3) -> Memory:
    """A small realistic run: baseline x2, then generations of knob edits, one rejection and one
    crash per generation, a control of the incumbent, the best candidate becoming incumbent."""
    rng = random.Random(seed)
    memory = Memory.open(run_dir)
    memory.ensure_run(run_dir.name, "micro", "local", "heuristic",
                      {"selection": {"min_delta": 0.0005, "k_sigma": 2.0, "prior_sigma": None}}, "/proj")
    sources = {"g000-baseline": KNOBS}
    b = memory.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint="base", source=KNOBS,
                             check_status="accepted", origin="baseline")

    def execute(cid: str, gen: int, kind: str, value: float | None, status: str = "ok") -> None:
        eid = memory.add_execution(candidate_id=cid, generation=gen, kind=kind, backend="local", preset="micro",
                                   workspace=f"/ws/{cid}")
        memory.finish_execution(eid, result={"status": status, "val_bpb": value,
                                             "failure_reason": None if status == "ok" else "FAIL: loss is NaN"})

    execute(b, 0, "baseline", 2.000)
    execute(b, 0, "baseline", 2.002)
    memory.set_state("incumbent", b)
    level = 2.0
    for gen in range(1, generations + 1):
        incumbent = memory.incumbent_id()
        execute(incumbent, gen, "control", level + rng.uniform(-0.001, 0.001))
        scores = {}
        for i, knob in enumerate(sorted(VALUES)):
            new = _edit(sources[incumbent], knob, rng.choice(VALUES[knob]))
            cid = memory.add_candidate(generation=gen, strategy=["conservative", "moderate", "aggressive", "crossover"][i],
                                       title=f"set {knob} (gen {gen})", hypothesis=f"{knob} is mistuned for the micro budget",
                                       edits=[], parents=[incumbent], diff=_diff(sources[incumbent], new),
                                       fingerprint=f"{gen}-{i}-{new}", source=new, check_status="accepted")
            sources[cid] = new
            scores[cid] = level + rng.uniform(-0.02, 0.02)
            execute(cid, gen, "candidate", scores[cid])
        memory.add_candidate(generation=gen, strategy="aggressive", title=f"flash attention (gen {gen})",
                             parents=[incumbent], fingerprint=f"rej-{gen}", source=None, check_status="rejected",
                             rule="no-new-imports", reason="import of 'flash_attn' is not allowed")
        boom = memory.add_candidate(generation=gen, strategy="aggressive", title=f"lr x10 (gen {gen})",
                                    hypothesis="much higher lr trains faster", parents=[incumbent],
                                    diff=_diff(sources[incumbent], _edit(sources[incumbent], "MATRIX_LR", "0.4")),
                                    fingerprint=f"boom-{gen}", source="x", check_status="accepted")
        execute(boom, gen, "candidate", None, status="crash")
        best = min(scores, key=scores.get)
        if scores[best] < level - 0.005:
            memory.set_state("incumbent", best)
            level = scores[best]
        else:
            memory.record_decision(best, verdict="noise", delta=level - scores[best], threshold=0.005, reason="small")
    return memory


@pytest.fixture
def history(tmp_path: Path):
    memory = build_history(tmp_path / "runs" / "h", generations=12)
    yield memory
    memory.close()


def test_digest_is_deterministic_across_files_and_calls(tmp_path: Path):
    one = build_history(tmp_path / "a" / "run", generations=6)
    two = build_history(tmp_path / "b" / "run", generations=6)   # same content, other timestamps
    try:
        assert build_digest(one, 1500) == build_digest(one, 1500) == build_digest(two, 1500)
        assert build_digest(one, 1500) != build_digest(one, 800)
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("budget", [60, 200, 500, 1000, 3000])
def test_digest_stays_within_its_token_budget(history: Memory, budget: int):
    text = build_digest(history, budget)
    assert len(text) <= budget * CHARS_PER_TOKEN
    assert estimate_tokens(text) <= budget


def test_digest_has_every_section_when_there_is_room(history: Memory):
    text = build_digest(history, 100_000)
    sections = ["## Measured noise", "## Incumbent lineage", "## Best other results",
                "## Rejected and crashed attempts", "## Worst results", "## Outcomes per strategy"]
    positions = [text.index(s) for s in sections]
    assert positions == sorted(positions)
    sigma = noise_sigma(history)
    assert f"{sigma:.6f}" in text
    assert f"max(min_delta 0.0005, 2.0 x sigma)" in text
    assert "import of 'flash_attn' is not allowed" in text and "no-new-imports` (12x" in text
    assert "crashed with status `crash` (12x" in text and "FAIL: loss is NaN" in text
    assert "hypothesis: " in text
    assert "- conservative: proposed 12" in text
    assert "Apparent wins rejected as noise so far" in text
    assert "not shown" not in text


def test_lineage_is_listed_baseline_first_with_its_diffs(history: Memory):
    text = build_digest(history, 100_000)
    steps = lineage(history)
    assert len(steps) >= 3, "the fixture should move the incumbent a few times"
    lineage_text = text[text.index("## Incumbent lineage"):text.index("## Best other results")]
    offsets = [lineage_text.index(f"- {step['id']} ") for step in steps]
    assert offsets == sorted(offsets)
    assert lineage_text.rstrip().count("<- current incumbent") == 1
    assert f"- {steps[-1]['id']} " in lineage_text.split("<- current incumbent")[0]
    for step in steps[1:]:
        changed = [l for l in step["diff"].splitlines() if l.startswith("+") and not l.startswith("+++")]
        assert all(line in lineage_text for line in changed)   # whitespace kept: copyable as search text


@pytest.mark.parametrize("budget", [60, 100, 200, 350, 600, 900, 1500])
def test_shown_sections_are_always_a_prefix_of_the_priority_order(history: Memory, budget: int):
    order = ["## Measured noise", "## Incumbent lineage", "## Best other results",
             "## Rejected and crashed attempts", "## Worst results", "## Outcomes per strategy"]
    text = build_digest(history, budget)
    present = [title in text for title in order]
    assert present == sorted(present, reverse=True), (budget, present)


def test_small_budgets_drop_the_least_informative_end_first(history: Memory):
    full = build_digest(history, 100_000)
    small = build_digest(history, 350)
    assert "## Measured noise" in small and "## Incumbent lineage" in small
    assert "<- current incumbent" in small                  # the incumbent step survives truncation
    assert "## Outcomes per strategy" not in small
    assert "not shown" in small
    assert len(small) < len(full)


def test_digest_of_an_empty_run(tmp_path: Path):
    memory = Memory.open(tmp_path / "empty")
    try:
        text = build_digest(memory, 500)      # no run row, no candidates: still a valid digest
        assert "Not measured yet" in text and "No incumbent yet" in text
        assert len(text) <= 500 * CHARS_PER_TOKEN
    finally:
        memory.close()


@pytest.fixture
def memory(tmp_path: Path):
    m = Memory.open(tmp_path / "runs" / "t1")
    m.ensure_run("t1", "micro", "local", "heuristic", {"selection": {"min_delta": 0.0005}}, "/proj")
    yield m
    m.close()


# ------------------------------------------------------------------------------- what memory means
def test_noise_sigma_is_pooled_over_groups_of_identical_code(memory: Memory):
    b = baseline(memory, fingerprint="A")
    twin = add(memory, 1, fingerprint="A")           # identical code proposed again: same group as the baseline
    other = add(memory, 1, fingerprint="B")
    single = add(memory, 1, fingerprint="C")
    assert noise_sigma(memory) is None
    run(memory, b, 1.0, kind="baseline", generation=0)
    run(memory, single, 3.0)
    assert noise_sigma(memory) is None               # no group with two runs yet
    run(memory, b, 1.2, kind="baseline", generation=0)
    run(memory, twin, 1.1)
    run(memory, other, 2.0)
    run(memory, other, 2.4, kind="control")
    run(memory, other, None, status="crash")          # failures are not measurements
    run(memory, other, 5.0, preset="gpu")             # another preset: its own (single-run) group
    run(memory, other, 2.6, kind="replay", backend="sagemaker", instance_type="ml.g5.xlarge")
    # by hand: A = {1.0, 1.2, 1.1}: mean 1.1, SS 0.02, dof 2; B = {2.0, 2.4}: mean 2.2, SS 0.08, dof 1
    expected = math.sqrt((0.02 + 0.08) / 3)
    assert noise_sigma(memory) == pytest.approx(expected, rel=1e-12)
    stats = noise_stats(memory)
    assert (stats["runs"], stats["groups"], stats["dof"]) == (5, 2, 3)


def test_lineage_follows_first_parents_baseline_first(memory: Memory):
    b = baseline(memory)
    run(memory, b, 2.0, kind="baseline", generation=0)
    run(memory, b, 2.2, kind="baseline", generation=0)
    assert lineage(memory) == []                     # no incumbent yet
    c1 = add(memory, 1, fingerprint="f1", parents=[b], diff="diff-1")
    side = add(memory, 1, fingerprint="f-side", parents=[b])
    run(memory, c1, 1.9)
    c2 = add(memory, 2, fingerprint="f2", parents=[c1, side], strategy="crossover", diff="diff-2")
    run(memory, c2, 1.7)
    run(memory, c2, 1.8, kind="confirmation", generation=2)
    for incumbent in (b, c1, c2):
        memory.set_state("incumbent", incumbent)
    chain = lineage(memory)
    assert [step["id"] for step in chain] == [b, c1, c2]
    assert [step["mean_val_bpb"] for step in chain] == pytest.approx([2.1, 1.9, 1.75])
    assert [step["runs"] for step in chain] == [2, 1, 2]
    assert chain[2]["diff"] == "diff-2"
    assert chain[1]["delta_vs_parent"] == pytest.approx(0.2)
    assert memory.incumbent_id() == c2
    assert memory.incumbent_history() == [b, c1, c2]
    memory.set_state("incumbent", c2)                 # unchanged: no new history entry
    assert len(memory.events("incumbent_changed")) == 3


def test_recent_results_best_first_one_per_fingerprint(memory: Memory):
    b = baseline(memory)
    run(memory, b, 2.0, kind="baseline", generation=0)
    good = add(memory, 1, fingerprint="g", title="good", edits=[{"search": "a", "replace": "b"}])
    dup = add(memory, 2, fingerprint="g", title="good again")
    bad = add(memory, 1, fingerprint="x", title="bad")
    crashed = add(memory, 1, fingerprint="c", title="crashed")
    rejected = add(memory, 1, fingerprint="r", check_status="rejected")
    run(memory, good, 1.5)
    run(memory, dup, 1.7, generation=2)
    run(memory, bad, 2.5)
    run(memory, crashed, None, status="crash")
    recent = recent_results(memory)
    assert [(r.candidate_id, r.val_bpb) for r in recent] == [(good, pytest.approx(1.6)), (b, 2.0), (bad, 2.5)]
    assert recent[0].edits == [{"search": "a", "replace": "b"}] and recent[0].title == "good"
    assert [r.candidate_id for r in recent_results(memory, limit=1)] == [good]
    assert rejected not in {r.candidate_id for r in recent}


def test_strategy_outcomes(memory: Memory):
    b = baseline(memory)
    run(memory, b, 2.0, kind="baseline", generation=0)
    kept = add(memory, 1, fingerprint="k", strategy="conservative")
    lost = add(memory, 1, fingerprint="l", strategy="conservative")
    boom = add(memory, 1, fingerprint="b", strategy="aggressive")
    add(memory, 1, fingerprint="r", strategy="aggressive", check_status="rejected", rule="no-new-imports")
    run(memory, kept, 1.9)
    run(memory, lost, 2.1)
    run(memory, boom, None, status="crash")
    memory.set_state("incumbent", b)
    memory.set_state("incumbent", kept)
    outcomes = strategy_outcomes(memory)
    assert list(outcomes) == ["aggressive", "conservative"]
    assert outcomes["conservative"] == {"proposed": 2, "rejected": 0, "ran": 2, "crashed": 0, "stopped": 0,
                                        "kept": 1, "best_delta": pytest.approx(0.1)}
    assert outcomes["aggressive"] == {"proposed": 2, "rejected": 1, "ran": 1, "crashed": 1, "stopped": 0,
                                      "kept": 0, "best_delta": None}


# --------------------------------------------------------------------------------- execution feedback
TRACEBACK = ["step 3 loss 6.1", "Traceback (most recent call last):", '  File "train.py", line 88, in <module>',
             "    x = model(idx)", "RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x128 and 256x512)"]


def feedback_memory(run_dir: Path) -> Memory:
    memory = Memory.open(run_dir)
    memory.ensure_run(run_dir.name, "micro", "local", "llm", {}, "/proj")
    b = memory.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint="base", source=KNOBS,
                             check_status="accepted", origin="baseline")
    memory.set_state("incumbent", b)
    ok = memory.add_candidate(generation=1, strategy="moderate", title="lr up", parents=[b], fingerprint="ok",
                              source="s", check_status="accepted", diff="-MATRIX_LR = 0.04\n+MATRIX_LR = 0.05\n")
    boom = memory.add_candidate(generation=1, strategy="aggressive", title="wider mlp", parents=[b],
                                fingerprint="boom", source="s", check_status="accepted")
    for cid, status, extra in ((b, "ok", {"val_bpb": 2.0}), (ok, "ok", {"val_bpb": 1.99}),
                               (boom, "crash", {"failure_reason": "train.py exited 1: FAIL (RuntimeError)"})):
        eid = memory.add_execution(candidate_id=cid, generation=1, kind="candidate", backend="local", preset="micro",
                                   workspace="/ws")
        figures = {"num_steps": 412, "training_seconds": 4.01, "total_tokens_M": 0.842, "mfu_percent": 1.7,
                   "peak_vram_mb": 312.0, "curve": [[10, 6.2], [50, 4.1], [100, 3.6]],
                   "log_tail": "\n".join(["noise line"] * 40 + TRACEBACK)} if status == "ok" or cid == boom else {}
        if status != "ok":
            figures = {"num_steps": 3, "log_tail": "\n".join(["noise line"] * 40 + TRACEBACK)}
        memory.finish_execution(eid, result={"status": status, **extra, **figures})
    return memory


def test_digest_carries_experiment_facts_run_figures_curves_and_crash_tracebacks(tmp_path: Path):
    memory = feedback_memory(tmp_path / "fb")
    facts = {"preset": "micro", "budget_seconds": 4.0, "clock": "cpu", "max_seq_len": 64, "vocab_size": 512,
             "hardware": "this machine, 2 CPU core(s)"}
    text = build_digest(memory, 6000, experiment=facts)
    assert "time budget 4 s of training (cpu clock)" in text and "sequence length 64" in text
    assert "vocabulary 512" in text and "hardware: this machine, 2 CPU core(s)" in text
    assert "412 steps" in text and "209,975 tok/s" in text and "MFU 1.7%" in text
    assert "peak mem 312 MiB" in text and "4.0 s training" in text and "loss 10%:6.200" in text
    # the crash's log tail, traceback included, at most CRASH_LOG_LINES lines of it
    assert all(line.strip() in text for line in TRACEBACK)
    crash_block = text.split("## Crash logs")[1].split("##")[0]
    assert 0 < crash_block.count("    | ") <= 30
    # one sign convention: dval, negative = better
    assert "dval -0.010000" in text and "vs parent)" not in text


def test_middle_results_are_summarised_not_dropped(history: Memory):
    text = build_digest(history, 20000)
    assert "results between these and the worst" in text


def test_experiment_facts_come_from_prepare_py_and_the_backend():
    from types import SimpleNamespace

    from agent.config import Settings
    from agent.experiment_facts import experiment_facts
    root = Path(__file__).resolve().parents[1]
    ctx = SimpleNamespace(preset="micro", backend="sagemaker", settings=Settings(),
                          layout=SimpleNamespace(prepare_py=root / "prepare.py"))
    facts = experiment_facts(ctx)
    assert facts["max_seq_len"] == 64 and facts["vocab_size"] == 512 and facts["clock"] == "cpu"
    assert facts["budget_seconds"] > 0 and facts["hardware"] == "SageMaker ml.g5.xlarge (NVIDIA A10G, 24 GB per GPU)"
