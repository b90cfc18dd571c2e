"""Near-duplicate rejection: the distance, and the LLM round that must not train two near twins."""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import LLMSettings
from agent.novelty import NoveltyIndex, NoveltySettings, compare, shape_of
from agent.proposers.base import PastCandidate, ProposalRequest
from agent.proposers.heuristic import HeuristicProposer
from agent.proposers.llm import LLMProposer
from tests.fake_anthropic import FakeAnthropic, tool_reply

ROOT = Path(__file__).resolve().parents[1]
INCUMBENT = (ROOT / "train.py").read_text()
LR = "MATRIX_LR = 0.04  # Muon lr of the 2-D block matrices"


def lr(value: str, comment: str = "# Muon lr of the 2-D block matrices") -> str:
    return INCUMBENT.replace(LR, f"MATRIX_LR = {value}  {comment}")


@pytest.mark.parametrize("a,b,twins", [
    ("0.036", "0.0360108", True),           # x0.9 and x0.9003
    ("0.036", "0.044", False),              # x0.9 and x1.1
    ("0.036", "0.0365", True),              # 1.4 % apart: within the default 2 %
    ("0.036", "0.0375", False),             # 4 % apart
])
def test_numbers_within_the_tolerance_are_twins(a, b, twins):
    assert (compare(shape_of(lr(a)), shape_of(lr(b)), NoveltySettings()) is not None) is twins


def test_comments_and_spacing_do_not_make_a_new_candidate_but_code_does():
    assert compare(shape_of(lr("0.036")), shape_of(lr("0.036", "# a different comment")), NoveltySettings())
    other = INCUMBENT.replace("WEIGHT_DECAY = 0.2", "WEIGHT_DECAY = 0.2 * 1")
    assert compare(shape_of(lr("0.036")), shape_of(other), NoveltySettings()) is None
    assert compare(shape_of(lr("0.036")), shape_of(lr("0.0361")), NoveltySettings(enabled=True, knob_tolerance=0.0)) is None


def test_the_index_names_the_nearest_twin_and_can_be_switched_off():
    index = NoveltyIndex()
    index.add("g001-c01", lr("0.036"))
    index.add("g001-c02", lr("0.0362"))
    twin = index.twin(lr("0.03619"))
    assert twin.other == "g001-c02" and "near twin of g001-c02" in twin.reason(0.02)
    assert NoveltyIndex(NoveltySettings(enabled=False)).fork().twin(lr("0.036")) is None


@pytest.fixture
def api(monkeypatch):
    with FakeAnthropic(latency_s=0.3) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-dummy")
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        yield server


def candidate(strategy: str, value: str) -> dict:
    return {"strategy": strategy, "title": f"MATRIX_LR {value}", "hypothesis": "h",
            "edits": [{"search": LR, "replace": LR.replace("0.04", value)}]}


def request(slots, **kw) -> ProposalRequest:
    index = NoveltyIndex()
    index.add("g000-baseline", INCUMBENT)
    base = dict(incumbent_source=INCUMBENT, incumbent_id="g000-baseline", program_md="", digest="d", slots=slots,
                preset="micro", generation=1, seed=0, novelty=index)
    return ProposalRequest(**{**base, **kw})


def test_two_near_twins_in_one_answer_are_not_both_accepted_and_the_repair_replaces_one(api):
    api.queue(tool_reply([candidate("moderate", "0.036"), candidate("moderate", "0.0360108")]))
    proposals = LLMProposer(LLMSettings(), prompts_dir=ROOT / "prompts",
                            fallback=HeuristicProposer(seed=0)).propose(request({"moderate": 2}))
    accepted = [p for p in proposals if p.accepted]
    [twin] = [p for p in proposals if not p.accepted]
    assert twin.rule == "near-duplicate" and "near twin of this round's moderate candidate 'MATRIX_LR 0.036'" in twin.reason
    assert len(accepted) == 2 and all(p.proposer == "llm" for p in accepted)
    assert "[near-duplicate]" in api.message_requests()[-1].text      # the model was told why
    assert compare(shape_of(accepted[0].source), shape_of(accepted[1].source), NoveltySettings()) is None


def test_near_twins_from_concurrent_calls_of_one_round_are_not_both_accepted(api):
    api.queue(tool_reply([candidate("moderate", "0.036")], match='strategy "moderate"'),
              tool_reply([candidate("aggressive", "0.0360108")], match='strategy "aggressive"'))
    proposals = LLMProposer(LLMSettings(max_repairs=0), prompts_dir=ROOT / "prompts",
                            fallback=HeuristicProposer(seed=0)).propose(request({"moderate": 1, "aggressive": 1}))
    llm = [p for p in proposals if p.proposer == "llm"]
    assert sorted(p.accepted for p in llm) == [False, True]
    assert [p.rule for p in llm if not p.accepted] == ["near-duplicate"]


def test_crossover_parents_are_never_the_incumbents_ancestors(api):
    ancestor = PastCandidate("g001-c01", "moderate", "ancestor", [], 1.79, diff="--- a\n+++ b\n@@ ANCESTOR @@\n")
    a = PastCandidate("g002-c03", "moderate", "a", [], 1.80, diff="--- a\n+++ b\n@@ A-DIFF @@\n")
    b = PastCandidate("g002-c04", "moderate", "b", [], 1.81, diff="--- a\n+++ b\n@@ B-DIFF @@\n")
    req = request({"crossover": 1}, incumbent_id="g002-c01", recent=[ancestor, a, b],
                  lineage_ids={"g000-baseline", "g001-c01", "g002-c01"})
    [p] = LLMProposer(LLMSettings(), prompts_dir=ROOT / "prompts", fallback=HeuristicProposer(seed=0)).propose(req)
    assert p.parents == ["g002-c01", "g002-c03", "g002-c04"]
    assert "ANCESTOR" not in api.message_requests()[-1].text


def test_the_heuristic_draws_again_rather_than_propose_a_near_twin():
    slots = {"conservative": 3, "moderate": 3}
    first = HeuristicProposer(seed=0).propose(request(slots, novelty=None))
    tried = NoveltyIndex()
    for p in first:      # what it proposed: its next draws with the same seed are twins of these
        tried.add(p.title, p.source)
    # without the index the same seed draws the same candidates again: twins of what was tried
    again = HeuristicProposer(seed=0).propose(request(slots, novelty=None))
    assert all(tried.twin(p.source) is not None for p in again)
    proposals = HeuristicProposer(seed=0).propose(request(slots, novelty=tried.fork()))
    assert len(proposals) == 6 and all(p.accepted for p in proposals)
    check = tried.fork()
    for p in proposals:
        assert check.claim(p.title, p.source) is None, p.title     # no twin of the tried ones, nor of each other
