"""The history digest: deterministic, bounded, most informative first."""
from __future__ import annotations

import difflib
import random
from pathlib import Path

import pytest

from agent.digest import CHARS_PER_TOKEN, build_digest, estimate_tokens
from agent.memory import Memory

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
        assert one.digest(1500) == one.digest(1500) == two.digest(1500)
        assert one.digest(1500) != build_digest(one, 800)
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("budget", [60, 200, 500, 1000, 3000])
def test_digest_stays_within_its_token_budget(history: Memory, budget: int):
    text = history.digest(budget)
    assert len(text) <= budget * CHARS_PER_TOKEN
    assert estimate_tokens(text) <= budget


def test_digest_has_every_section_when_there_is_room(history: Memory):
    text = history.digest(100_000)
    sections = ["## Measured noise", "## Incumbent lineage", "## Best other results",
                "## Rejected and crashed attempts", "## Worst results", "## Outcomes per strategy"]
    positions = [text.index(s) for s in sections]
    assert positions == sorted(positions)
    sigma = history.noise_sigma()
    assert f"{sigma:.6f}" in text
    assert f"max(min_delta 0.0005, 2.0 x sigma)" in text
    assert "import of 'flash_attn' is not allowed" in text and "no-new-imports` (12x" in text
    assert "crashed with status `crash` (12x" in text and "FAIL: loss is NaN" in text
    assert "hypothesis: " in text
    assert "- conservative: proposed 12" in text
    assert "Apparent wins rejected as noise so far" in text
    assert "not shown" not in text


def test_lineage_is_listed_baseline_first_with_its_diffs(history: Memory):
    text = history.digest(100_000)
    lineage = history.lineage()
    assert len(lineage) >= 3, "the fixture should move the incumbent a few times"
    lineage_text = text[text.index("## Incumbent lineage"):text.index("## Best other results")]
    offsets = [lineage_text.index(f"- {step['id']} ") for step in lineage]
    assert offsets == sorted(offsets)
    assert lineage_text.rstrip().count("<- current incumbent") == 1
    assert f"- {lineage[-1]['id']} " in lineage_text.split("<- current incumbent")[0]
    for step in lineage[1:]:
        changed = [l for l in step["diff"].splitlines() if l.startswith("+") and not l.startswith("+++")]
        assert all(line in lineage_text for line in changed)   # whitespace kept: copyable as search text


@pytest.mark.parametrize("budget", [60, 100, 200, 350, 600, 900, 1500])
def test_shown_sections_are_always_a_prefix_of_the_priority_order(history: Memory, budget: int):
    order = ["## Measured noise", "## Incumbent lineage", "## Best other results",
             "## Rejected and crashed attempts", "## Worst results", "## Outcomes per strategy"]
    text = history.digest(budget)
    present = [title in text for title in order]
    assert present == sorted(present, reverse=True), (budget, present)


def test_small_budgets_drop_the_least_informative_end_first(history: Memory):
    full = history.digest(100_000)
    small = history.digest(350)
    assert "## Measured noise" in small and "## Incumbent lineage" in small
    assert "<- current incumbent" in small                  # the incumbent step survives truncation
    assert "## Outcomes per strategy" not in small
    assert "not shown" in small
    assert len(small) < len(full)


def test_digest_of_an_empty_run(tmp_path: Path):
    memory = Memory.open(tmp_path / "empty")
    try:
        text = memory.digest(500)      # no run row, no candidates: still a valid digest
        assert "Not measured yet" in text and "No incumbent yet" in text
        assert len(text) <= 500 * CHARS_PER_TOKEN
    finally:
        memory.close()
