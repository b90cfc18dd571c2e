"""The LLM proposer against the fake Messages API: real SDK, real HTTP, real checker, real memory."""
from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import pytest
from rich.console import Console

from agent.config import LLMSettings, Settings
from agent.memory import Memory
from agent.proposers.base import PastCandidate, ProposalRequest
from agent.proposers.factory import make_proposer
from agent.proposers.heuristic import HeuristicProposer
from agent.proposers.llm import TOOL_NAME, LLMProposer
from tests.fake_anthropic import (BAD_SEARCH, default_reply, error_reply, fake_anthropic,  # noqa: F401
                            raw_tool_reply, text_reply, tool_reply)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "prompts"
INCUMBENT = (ROOT / "train.py").read_text()
PROGRAM = (ROOT / "program.md").read_text()
DIGEST = "Noise: sigma 0.0021 over 2 runs.\nBest so far: g000-baseline 1.812345 (baseline).\nDIGEST-MARKER-7731"


@pytest.fixture
def api_env(fake_anthropic, monkeypatch):
    """The SDK finds the fake server and a dummy key through the environment, as in production."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-dummy")
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    return fake_anthropic


def settings(**overrides) -> LLMSettings:
    base = dict(max_retries=2, timeout_s=20, max_repairs=2, usd_cap=5.0)
    return LLMSettings(**{**base, **overrides})


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=400, color_system=None), out


def proposer(llm: LLMSettings | None = None, **kw) -> LLMProposer:
    kw.setdefault("fallback", HeuristicProposer(seed=0))
    return LLMProposer(llm or settings(), prompts_dir=PROMPTS, **kw)


def request(slots: dict[str, int], generation: int = 1, **kw) -> ProposalRequest:
    base = dict(incumbent_source=INCUMBENT, incumbent_id="g000-baseline", program_md=PROGRAM, digest=DIGEST,
                slots=slots, preset="micro", generation=generation, seed=0)
    return ProposalRequest(**{**base, **kw})


def user_blocks(body: dict, index: int = -1) -> list[dict]:
    content = body["messages"][index]["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def test_request_carries_program_incumbent_digest_tool_and_cache_marks(api_env):
    calls = []
    proposals = proposer(record_call=lambda **c: calls.append(c)).propose(request({"moderate": 2}))

    [req] = api_env.message_requests()
    body = req.body
    # SDK 2.x sends the key as a bearer token; older ones as x-api-key
    assert "sk-test-dummy" in (req.headers.get("x-api-key", ""), req.headers.get("authorization", "").removeprefix("Bearer "))
    assert body["model"] == "claude-sonnet-5-5" and "temperature" not in body
    # system prompt: program.md verbatim, marked for caching
    [system] = body["system"]
    assert PROGRAM.strip() in system["text"] and system["cache_control"] == {"type": "ephemeral"}
    # first user turn: the incumbent (cached), the digest, the strategy ask
    blocks = user_blocks(body, 0)
    assert INCUMBENT.strip() in blocks[0]["text"] and blocks[0]["cache_control"] == {"type": "ephemeral"}
    assert "DIGEST-MARKER-7731" in blocks[1]["text"]
    assert 'exactly 2 candidate(s) with strategy "moderate"' in blocks[2]["text"]
    # one tool, offered through tool_choice
    assert [t["name"] for t in body["tools"]] == [TOOL_NAME]
    schema = body["tools"][0]["input_schema"]["properties"]["candidates"]["items"]
    assert set(schema["required"]) == {"strategy", "title", "hypothesis", "edits"}
    assert body["tool_choice"]["type"] == "auto"
    # no template placeholder left anywhere outside the pasted train.py / program.md
    prompt_text = req.text.replace(INCUMBENT.strip(), "").replace(PROGRAM.strip(), "")
    assert not re.search(r"\$[a-z_]+\b", prompt_text)

    assert len(proposals) == 2 and all(p.accepted and p.proposer == "llm" for p in proposals)
    for p in proposals:
        assert p.strategy == "moderate" and p.parents == ["g000-baseline"] and p.attempts == 1
        assert p.source != INCUMBENT and p.diff.startswith("--- a/train.py") and p.fingerprint
    assert len({p.fingerprint for p in proposals}) == 2
    assert [c["outcome"] for c in calls] == ["ok"]


def test_unappliable_edit_gets_is_error_tool_result_and_repair_is_accepted(api_env):
    # The first answer carries a thinking block (adaptive thinking) and one edit that cannot apply.
    api_env.queue(default_reply(bad_edit=True, thinking="Let me look at the learning rates."))
    calls = []
    proposals = proposer(record_call=lambda **c: calls.append(c)).propose(request({"conservative": 2}))

    first, second = api_env.message_requests()
    assert second.status == 200  # the fake checks thinking blocks and tool_use ids are passed back intact
    assistant = second.body["messages"][1]
    assert assistant["role"] == "assistant"
    tool_use = next(b for b in assistant["content"] if b["type"] == "tool_use")
    assert any(b["type"] == "thinking" for b in assistant["content"])
    [result] = user_blocks(second.body)
    assert result["type"] == "tool_result" and result["tool_use_id"] == tool_use["id"]
    assert result["is_error"] is True
    text = result["content"][0]["text"]
    bad_title = tool_use["input"]["candidates"][0]["title"]
    assert bad_title in text and "[edit-apply]" in text and BAD_SEARCH.split(" =")[0] in text
    assert "exactly 1 replacement candidate(s)" in text

    accepted = [p for p in proposals if p.accepted]
    rejected = [p for p in proposals if not p.accepted]
    assert len(accepted) == 2 and sorted(p.attempts for p in accepted) == [1, 2]
    [bad] = rejected
    assert bad.rule == "edit-apply" and bad.title == bad_title and bad.reason and bad.attempts == 1
    assert bad.proposer == "llm" and bad.parents == ["g000-baseline"]
    assert [c["outcome"] for c in calls] == ["rejected", "ok"]
    assert "edit-apply" in calls[0]["error"]


# 0.8 s is longer than the SDK's own first backoff (<= 0.5 s), so the gap proves the header was read.
@pytest.mark.parametrize("status,headers", [(529, {"retry_after_ms": 800}), (429, {"retry_after": 0.8}),
                                            (500, {"retry_after_ms": 800})])
def test_overloaded_rate_limited_and_server_errors_are_retried_honouring_retry_after(api_env, status, headers):
    api_env.queue(error_reply(status, **headers))
    proposals = proposer().propose(request({"moderate": 1}))

    first, second = api_env.message_requests()
    assert (first.status, second.status) == (status, 200)
    assert second.headers.get("x-stainless-retry-count") == "1"
    assert 0.75 <= second.at - first.at < 3.0
    assert [p.accepted for p in proposals] == [True]


def test_no_tool_and_malformed_answers_are_recorded_with_reasons_and_asked_again(api_env):
    api_env.queue(text_reply("I would raise the learning rate."),
                  raw_tool_reply({"candidates": "[{not json"}))
    calls = []
    proposals = proposer(record_call=lambda **c: calls.append(c)).propose(request({"aggressive": 1}))

    reqs = api_env.message_requests()
    assert len(reqs) == 3 and all(r.status == 200 for r in reqs)
    # after a text answer there is no tool_use to answer: the repair is a plain user turn
    [repair1] = user_blocks(reqs[1].body)
    assert repair1["type"] == "text" and "[llm-no-tool]" in repair1["text"]
    [repair2] = user_blocks(reqs[2].body)
    assert repair2["type"] == "tool_result" and repair2["is_error"] is True
    assert "[llm-malformed]" in repair2["content"][0]["text"]

    assert [c["outcome"] for c in calls] == ["llm-no-tool", "llm-malformed", "ok"]
    assert "raise the learning rate" in calls[0]["error"] and "not valid JSON" in calls[1]["error"]
    [p] = proposals
    assert p.accepted and p.attempts == 3


def test_wrong_strategy_and_shapeless_candidates_are_rejected_with_llm_rules(api_env):
    good_search = "MATRIX_LR = 0.04"
    api_env.queue(tool_reply([
        {"strategy": "aggressive", "title": "wrong class", "hypothesis": "h",
         "edits": [{"search": good_search, "replace": "MATRIX_LR = 0.05"}]},
        {"strategy": "moderate", "title": "no edits field", "hypothesis": "h"},
    ]))
    proposals = proposer().propose(request({"moderate": 2}))

    rules = sorted((p.title, p.rule) for p in proposals if not p.accepted)
    assert rules == [("no edits field", "llm-malformed"), ("wrong class", "llm-wrong-strategy")]
    assert sum(p.accepted for p in proposals) == 2


def test_candidates_still_failing_after_repairs_are_rejected_and_the_fallback_fills_the_slot(api_env):
    bad = {"strategy": "moderate", "title": "typo search", "hypothesis": "h",
           "edits": [{"search": "MATRIX_LR = 0.0400000", "replace": "MATRIX_LR = 0.05"}]}
    api_env.queue(tool_reply([bad]), tool_reply([{**bad, "title": "typo search again"}]))
    con, out = console()
    proposals = proposer(settings(max_repairs=1), console=con).propose(request({"moderate": 1}))

    assert len(api_env.message_requests()) == 2
    rejected = [p for p in proposals if not p.accepted]
    assert [(p.title, p.rule, p.attempts) for p in rejected] == [("typo search", "edit-apply", 1),
                                                                 ("typo search again", "edit-apply", 2)]
    filled = [p for p in proposals if p.accepted]
    assert len(filled) == 1 and filled[0].proposer == "heuristic" and filled[0].strategy == "moderate"
    assert "still failing after 1 repair round(s)" in out.getvalue()


def test_dollar_cap_hands_the_generation_to_the_fallback_and_says_so(api_env):
    con, out = console()
    proposals = proposer(settings(usd_cap=0.01), console=con).propose(request({"conservative": 2, "moderate": 1}))
    assert api_env.message_requests() == []
    assert len(proposals) == 3 and all(p.proposer == "heuristic" for p in proposals)
    assert "dollar cap" in out.getvalue() and "heuristic proposer for this generation" in out.getvalue()

    # the run's spend so far (from memory) counts against the cap too
    con, out = console()
    proposals = proposer(settings(usd_cap=1.0), spent_usd=lambda: 0.999, console=con).propose(request({"moderate": 1}))
    assert api_env.message_requests() == [] and proposals[0].proposer == "heuristic"


def test_no_key_falls_back_to_the_heuristic_with_a_plain_message(monkeypatch, fake_anthropic):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    con, out = console()
    proposals = proposer(console=con).propose(request({"moderate": 2}))
    assert fake_anthropic.requests == []
    assert len(proposals) == 2 and all(p.proposer == "heuristic" for p in proposals)
    assert "No ANTHROPIC_API_KEY is set: using the heuristic proposer for this generation." in out.getvalue()


def test_unreachable_api_falls_back_after_the_sdks_retries_and_says_so(monkeypatch):
    with socket.socket() as sock:   # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-dummy")
    calls = []
    con, out = console()
    prop = proposer(settings(max_retries=0), console=con, record_call=lambda **c: calls.append(c))
    started = time.monotonic()
    proposals = prop.propose(request({"moderate": 1, "aggressive": 1}))
    assert time.monotonic() - started < 5
    assert len(proposals) == 2 and all(p.proposer == "heuristic" for p in proposals)
    assert re.search(r"LLM unreachable since \d\d:\d\d:\d\d: connection failed .*1 attempt\(s\).*: using the "
                     r"heuristic proposer for this generation", out.getvalue())
    # a refused connection was never processed: booked, at $0
    assert calls and {c["outcome"] for c in calls} == {"unreachable"} and sum(c["cost_usd"] for c in calls) == 0
    # the next generation tries again, and falls back at once while it stays unreachable
    started = time.monotonic()
    assert all(p.proposer == "heuristic" for p in prop.propose(request({"moderate": 1}, generation=2)))
    assert time.monotonic() - started < 2


def test_usage_and_cost_are_recorded_in_memory_with_cache_tokens(api_env, tmp_path):
    memory = Memory.open(tmp_path / "run")
    memory.ensure_run("T", "micro", "local", "llm", {}, str(tmp_path))
    llm = settings()
    prop = proposer(llm, record_call=memory.record_llm_call, spent_usd=lambda: memory.spend()["llm_usd"])
    prop.propose(request({"moderate": 1}, generation=1))
    prop.propose(request({"moderate": 1}, generation=2))

    first, second = memory.llm_calls()
    assert first["cache_write_tokens"] > 0 and first["cache_read_tokens"] == 0
    assert second["cache_read_tokens"] > 0   # system + incumbent came from the cache
    prices = llm.prices[llm.model]
    for row in (first, second):
        assert row["input_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"] > 1000
        assert row["output_tokens"] > 0 and row["latency_s"] > 0
        expected = (row["input_tokens"] * prices["input"] + row["output_tokens"] * prices["output"]
                    + row["cache_read_tokens"] * prices["cache_read"]
                    + row["cache_write_tokens"] * prices["cache_write"]) / 1e6
        assert row["cost_usd"] == pytest.approx(expected) and row["cost_usd"] > 0
        assert row["model"] == llm.model and row["outcome"] == "ok" and row["purpose"] == "propose:moderate"
    assert [r["generation"] for r in (first, second)] == [1, 2]
    assert memory.spend()["llm_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"])
    memory.close()


def test_groups_run_concurrently_and_fill_every_slot_without_duplicates(api_env):
    slots = {"conservative": 3, "moderate": 4, "aggressive": 2}
    proposals = proposer(settings(max_concurrent_calls=2)).propose(request(slots))
    warm_up, *reqs = api_env.message_requests()
    # one max_tokens-0 warm-up writes the shared prefix before the three strategy calls read it
    assert warm_up.body["max_tokens"] == 0 and "with strategy" not in warm_up.text
    assert len(reqs) == 3 and all(r.cache.read > 0 for r in reqs) and api_env.write_conflicts() == []
    assert min(r.at for r in reqs) >= warm_up.answered_at
    asked = sorted(re.search(r'with strategy "(\w+)"', r.text).group(1) for r in reqs)
    assert asked == ["aggressive", "conservative", "moderate"]
    assert all(p.accepted and p.proposer == "llm" for p in proposals)
    assert {s: sum(p.strategy == s for p in proposals) for s in slots} == slots
    assert len({p.fingerprint for p in proposals}) == 9


def test_duplicates_of_earlier_versions_are_rejected(api_env):
    edit = {"search": "MATRIX_LR = 0.04", "replace": "MATRIX_LR = 0.05"}
    api_env.queue(tool_reply([{"strategy": "moderate", "title": "again", "hypothesis": "h", "edits": [edit]}]),
                  tool_reply([{"strategy": "moderate", "title": "same again", "hypothesis": "h", "edits": [edit]}]))
    first = proposer(settings(max_repairs=0)).propose(request({"moderate": 1}, seen_fingerprints=set()))
    assert first[0].accepted
    again = proposer(settings(max_repairs=0)).propose(
        request({"moderate": 1}, seen_fingerprints={first[0].fingerprint}))
    assert (again[0].title, again[0].rule, again[0].accepted) == ("same again", "duplicate", False)
    assert again[1].accepted and again[1].proposer == "heuristic"   # the slot is still filled


def test_crossover_carries_both_parents_diffs(api_env):
    a = PastCandidate("g001-c01", "moderate", "lower matrix lr", [], 1.80, diff="--- a/train.py\n+++ b/train.py\n@@ A-DIFF @@\n",
                      hypothesis="less noise")
    b = PastCandidate("g001-c02", "conservative", "more warmdown", [], 1.81, diff="--- a/train.py\n+++ b/train.py\n@@ B-DIFF @@\n")
    base = PastCandidate("g000-baseline", "baseline", "baseline", [], 1.82, diff="")
    proposals = proposer().propose(request({"crossover": 1}, recent=[a, b, base]))
    [req] = api_env.message_requests()
    ask = user_blocks(req.body, 0)[2]["text"]
    for marker in ("g001-c01", "A-DIFF", "lower matrix lr", "1.800000", "g001-c02", "B-DIFF", "less noise"):
        assert marker in ask
    [p] = proposals
    assert p.accepted and p.strategy == "crossover" and p.parents == ["g000-baseline", "g001-c01", "g001-c02"]


def test_crossover_without_two_parents_goes_to_the_fallback(api_env):
    con, out = console()
    proposals = proposer(console=con).propose(request({"crossover": 1, "moderate": 1}))
    assert len(api_env.message_requests()) == 1
    assert {p.proposer for p in proposals} == {"llm", "heuristic"}
    assert "crossover needs two finished candidates" in out.getvalue()


def test_propose_from_idea_sends_the_idea_and_returns_one_checked_candidate(api_env):
    p = proposer().propose_from_idea("try a slightly higher matrix learning rate", request({"moderate": 1}))
    [req] = api_env.message_requests()
    assert "try a slightly higher matrix learning rate" in req.text
    assert p.accepted and p.strategy == "moderate" and p.source != INCUMBENT


def test_auth_error_disables_the_llm_for_the_rest_of_the_run(api_env):
    api_env.queue(error_reply(401, error_type="authentication_error"))
    calls = []
    con, out = console()
    prop = proposer(console=con, record_call=lambda **c: calls.append(c))
    assert all(p.proposer == "heuristic" for p in prop.propose(request({"moderate": 1})))
    assert all(p.proposer == "heuristic" for p in prop.propose(request({"moderate": 1}, generation=2)))
    assert len(api_env.message_requests()) == 1
    assert calls[0]["outcome"] == "error" and "401" in calls[0]["error"]
    assert "authentication_error" in out.getvalue()


def test_forced_tool_choice_and_temperature_follow_the_config_on_a_model_that_takes_them(api_env):
    # claude-sonnet-4-5 thinks only when asked, so it takes a forced tool and a temperature;
    # claude-sonnet-5-5 refuses both, and config refuses them for it (test_llm_proposer_strict_api.py)
    llm = settings(model="claude-sonnet-4-5", tool_choice="tool", temperature=0.7)
    proposals = proposer(llm).propose(request({"moderate": 1}))
    [req] = api_env.message_requests()
    assert req.body["tool_choice"] == {"type": "tool", "name": TOOL_NAME, "disable_parallel_tool_use": True}
    assert req.body["temperature"] == 0.7 and "output_config" not in req.body   # 4.5 takes no effort
    assert req.status == 200 and [p.proposer for p in proposals] == ["llm"]


def test_factory_picks_the_proposer_and_says_which(monkeypatch, fake_anthropic, tmp_path):
    cfg = Settings()
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    con, out = console()
    assert isinstance(make_proposer("auto", cfg, console=con, prompts_dir=PROMPTS), HeuristicProposer)
    assert "ANTHROPIC_API_KEY is not set" in out.getvalue()
    assert isinstance(make_proposer("heuristic", cfg, prompts_dir=PROMPTS), HeuristicProposer)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-dummy")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    memory = Memory.open(tmp_path / "run")
    memory.ensure_run("T", "micro", "local", "llm", {}, str(tmp_path))
    prop = make_proposer("auto", cfg, memory=memory, console=con, prompts_dir=PROMPTS)
    assert isinstance(prop, LLMProposer)
    prop.propose(request({"moderate": 1}))
    assert len(memory.llm_calls()) == 1
    with pytest.raises(ValueError, match="unknown proposer 'gpt'"):
        make_proposer("gpt", cfg, prompts_dir=PROMPTS)
    memory.close()


def test_fake_server_runs_standalone_with_a_script(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"status": 529, "retry_after_ms": 50}, {"text": "plain answer"}]))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_anthropic.py"), "--port", "0",
                             "--script", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("ANTHROPIC_BASE_URL=http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=line.split("=", 1)[1], api_key="dummy", max_retries=2)
        message = client.messages.create(model="claude-sonnet-5-5", max_tokens=100,
                                          messages=[{"role": "user", "content": "hi"}])
        # Sonnet 5.5 thinks by default: the answer may begin with a thinking block, so read by type
        assert [b.text for b in message.content if b.type == "text"] == ["plain answer"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
