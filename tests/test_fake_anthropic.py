"""The Messages-API stand-in itself, driven by the real SDK: caching rules, TTLs, refusals,
usage fields, count_tokens and failure modes are as the API documents them."""
from __future__ import annotations

import threading
import time

import anthropic
import pytest

from tests.fake_anthropic import (FakeAnthropic, FakeClock, error_reply, hang_reply, text_reply, tool_reply)

MODEL = "claude-sonnet-5-5"
BIG = "Background the model needs for every request. " * 300      # ~3,500 tokens: above every minimum
TOOL = {"name": "propose_candidates", "description": "Propose.", "strict": True,
        "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"],
                         "additionalProperties": False}}


@pytest.fixture
def clock():
    return FakeClock(1000.0)


@pytest.fixture
def api(clock):
    with FakeAnthropic(clock=clock, latency_s=0.0) as server:
        yield server


def client(server, **kw) -> anthropic.Anthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=server.url, api_key="sk-test", **kw)


def ask(c, *, system=BIG, question="Which knob next?", ttl=None, **kw):
    mark = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    kw.setdefault("max_tokens", 8000)
    return c.messages.create(model=kw.pop("model", MODEL), system=[{"type": "text", "text": system, "cache_control": mark}],
                             messages=[{"role": "user", "content": question}], **kw)


def usage(message) -> dict:
    return message.usage.model_dump()


# ----------------------------------------------------------------------------- caching

def test_a_repeat_reads_what_the_first_request_wrote_with_the_api_usage_fields(api):
    c = client(api)
    first, second = usage(ask(c)), usage(ask(c, question="And after that?"))
    written = first["cache_creation_input_tokens"]
    assert written > 512 and first["cache_read_input_tokens"] == 0
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0}
    assert second["cache_read_input_tokens"] == written and second["cache_creation_input_tokens"] == 0
    # input_tokens is only the part after the last breakpoint (the question)
    assert 0 < first["input_tokens"] < 30 and 0 < second["input_tokens"] < 30
    assert first["service_tier"] == "standard"
    [hit] = [r for r in api.message_requests() if r.cache.hit]
    assert hit.cache.hit == api.message_requests()[0].cache.writes[0]["hash"]


def test_a_prefix_below_the_minimum_is_silently_not_cached(api):
    c = client(api)
    for _ in range(2):
        u = usage(ask(c, system="Short system prompt. " * 20))       # ~100 tokens < 512 (Sonnet 5.5)
        assert u["cache_creation_input_tokens"] == 0 and u["cache_read_input_tokens"] == 0
    # the same prefix is cacheable on a model with a lower bar? Haiku 4.5's is higher (4096)
    u = usage(ask(c, model="claude-haiku-4-5", max_tokens=1000, system="Padding words here. " * 500))
    assert u["cache_creation_input_tokens"] == 0     # ~2,500 tokens < 4,096


def test_more_than_four_breakpoints_is_a_400(api):
    mark = {"type": "ephemeral"}
    system = [{"type": "text", "text": f"part {i} " + BIG, "cache_control": mark} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks with cache_control may be provided"):
        client(api).messages.create(model=MODEL, max_tokens=100, system=system,
                                    messages=[{"role": "user", "content": "hi"}])


def test_a_concurrent_request_cannot_read_an_entry_still_being_written(clock):
    with FakeAnthropic(clock=clock, latency_s=1.0) as api:   # long enough that the three overlap
        c = client(api)
        start = threading.Barrier(3)
        results: list[dict] = []

        def one():
            start.wait()
            results.append(usage(ask(c)))
        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(u["cache_creation_input_tokens"] > 0 and u["cache_read_input_tokens"] == 0 for u in results)
        assert len(api.write_conflicts()) == 2            # two of them paid for a write already under way
        later = usage(ask(c))                              # once a response has begun, the entry is readable
        assert later["cache_read_input_tokens"] > 0 and later["cache_creation_input_tokens"] == 0


def test_a_slow_writer_entry_is_readable_after_prefill_before_it_answers(clock):
    with FakeAnthropic(clock=time.time, latency_s=0.0, prefill_s=0.2) as api:
        api.queue(text_reply("slow answer", delay_s=1.0))
        c = client(api)
        slow = threading.Thread(target=lambda: ask(c))
        slow.start()
        time.sleep(0.5)                                   # past prefill, the writer still generating
        u = usage(ask(c))
        slow.join()
        assert u["cache_read_input_tokens"] > 0


def test_ttl_runs_from_the_start_of_the_last_request_that_used_the_entry(api, clock):
    c = client(api)
    assert usage(ask(c))["cache_creation_input_tokens"] > 0
    clock.advance(299)
    assert usage(ask(c))["cache_read_input_tokens"] > 0     # read at 299 s: refreshed to 599 s
    clock.advance(299)
    assert usage(ask(c))["cache_read_input_tokens"] > 0     # 598 s
    clock.advance(301)                                      # 899 s > 598 + 300: expired
    expired = usage(ask(c))
    assert expired["cache_read_input_tokens"] == 0 and expired["cache_creation_input_tokens"] > 0


def test_one_hour_ttl_survives_what_five_minutes_does_not_and_is_billed_as_such(api, clock):
    c = client(api)
    u = usage(ask(c, ttl="1h"))
    assert u["cache_creation"]["ephemeral_1h_input_tokens"] == u["cache_creation_input_tokens"] > 0
    clock.advance(3000)
    assert usage(ask(c, ttl="1h"))["cache_read_input_tokens"] > 0


def test_mixed_ttls_bill_one_hour_up_to_its_breakpoint_and_five_minutes_after(api):
    c = client(api)
    message = c.messages.create(
        model=MODEL, max_tokens=8000,
        system=[{"type": "text", "text": BIG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "History. " * 400,
                                                "cache_control": {"type": "ephemeral"}},
                                               {"type": "text", "text": "Which knob next?"}]}])
    u = usage(message)
    split = u["cache_creation"]
    assert split["ephemeral_1h_input_tokens"] > 0 and split["ephemeral_5m_input_tokens"] > 0
    assert u["cache_creation_input_tokens"] == split["ephemeral_1h_input_tokens"] + split["ephemeral_5m_input_tokens"]
    with pytest.raises(anthropic.BadRequestError, match="1h"):
        c.messages.create(model=MODEL, max_tokens=100,
                          system=[{"type": "text", "text": BIG, "cache_control": {"type": "ephemeral"}}],
                          messages=[{"role": "user", "content": [{"type": "text", "text": "x" * 4000, "cache_control":
                                                                  {"type": "ephemeral", "ttl": "1h"}}]}])


def test_lookback_finds_an_earlier_write_within_twenty_blocks_only(api):
    c = client(api)
    blocks = [{"type": "text", "text": f"block {i} " + "word " * 60} for i in range(40)]

    def send(upto: int, marks: tuple[int, ...]):
        content = [dict(b, cache_control={"type": "ephemeral"}) if i in marks else b for i, b in enumerate(blocks[:upto])]
        return usage(c.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": content}]))
    send(10, (9,))
    assert send(15, (14,))["cache_read_input_tokens"] > 0     # 14 -> 9 is within the window
    assert send(35, (34,))["cache_read_input_tokens"] == 0    # 34 -> 14 is one position too far
    assert send(36, (14, 35))["cache_read_input_tokens"] > 0  # a second breakpoint opens a second window


def test_thinking_or_effort_changes_spoil_the_cache_tool_choice_only_the_messages(clock):
    def hits(scope: str, first: dict, second: dict) -> tuple[int, int]:
        with FakeAnthropic(clock=clock, latency_s=0.0, settings_scope=scope) as api:
            c = client(api)
            prefix = [{"type": "text", "text": "Shared history. " * 400, "cache_control": {"type": "ephemeral"}},
                      {"type": "text", "text": "the ask"}]
            for kw in (first, second):
                message = c.messages.create(model=MODEL, max_tokens=8000, tools=[TOOL],
                                            system=[{"type": "text", "text": BIG, "cache_control": {"type": "ephemeral"}}],
                                            messages=[{"role": "user", "content": prefix}], **kw)
            system_tokens = api.message_requests()[0].cache.breakpoints[0]["tokens"]
            return usage(message)["cache_read_input_tokens"], system_tokens
    low, high = {"output_config": {"effort": "low"}}, {"output_config": {"effort": "high"}}
    read, system_tokens = hits("all", low, high)
    assert read == 0                                         # effort is rendered into the prompt
    read, system_tokens = hits("messages", low, high)
    assert read == system_tokens                             # the documented table: system and tools stay cached
    read, system_tokens = hits("all", {"tool_choice": {"type": "auto"}}, {"tool_choice": {"type": "none"}})
    assert read == system_tokens                             # tool_choice only affects message blocks
    read, _ = hits("all", {}, {"output_config": {"effort": "high"}})
    assert read > system_tokens                              # the default effort IS high: same settings


def test_pre_warming_with_max_tokens_zero_writes_and_generates_nothing(api):
    c = client(api)
    warm = ask(c, max_tokens=0)
    assert warm.content == [] and warm.stop_reason == "max_tokens" and warm.usage.output_tokens == 0
    assert warm.usage.cache_creation_input_tokens > 0
    assert ask(c).usage.cache_read_input_tokens > 0
    with pytest.raises(anthropic.BadRequestError, match="pre-warming"):
        ask(client(api), max_tokens=0, model="claude-haiku-4-5", tools=[TOOL], tool_choice={"type": "any"})


def test_top_level_cache_control_marks_the_last_cacheable_block(api):
    c = client(api)
    messages = [{"role": "user", "content": BIG}]
    first = c.messages.create(model=MODEL, max_tokens=100, messages=messages, cache_control={"type": "ephemeral"})
    assert first.usage.cache_creation_input_tokens > 0
    second = c.messages.create(model=MODEL, max_tokens=100, messages=messages, cache_control={"type": "ephemeral"})
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("kw,message", [
    ({"tool_choice": {"type": "any"}}, 'tool_choice: type "tool" and "any" are not supported for this model.'),
    ({"tool_choice": {"type": "tool", "name": "propose_candidates"}}, 'type "tool" and "any" are not supported'),
    ({"extra_body": {"temperature": 0.7}}, "temperature: non-default sampling parameters"),
    ({"extra_body": {"top_p": 0.9}}, "top_p: non-default sampling parameters"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, '"thinking.type.enabled" is not supported for this model'),
    ({"thinking": {"type": "disabled"}}, 'Use "thinking.type.between_tools" for the lowest thinking setting'),
    ({"thinking": {"type": "between_tools"}, "output_config": {"effort": "xhigh"}}, "between_tools"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ({"max_tokens": 200_000}, "maximum allowed"),
])
def test_sonnet_5_5_refuses_what_its_docs_say_it_refuses(api, kw, message):
    kw = {"max_tokens": 8000, **kw}
    with pytest.raises(anthropic.BadRequestError) as err:
        # an explicit timeout: with the default one the SDK itself refuses max_tokens > ~21k without streaming
        client(api, timeout=30).messages.create(model=MODEL, tools=[TOOL], messages=[{"role": "user", "content": "hi"}],
                                                **kw)
    assert message in err.value.body["error"]["message"]
    assert err.value.body["error"]["type"] == "invalid_request_error" and err.value.body["request_id"]


def test_prefill_and_forced_tools_on_count_tokens_are_refused_too(api):
    c = client(api)
    with pytest.raises(anthropic.BadRequestError, match="prefill"):
        c.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "content": "The answer is"}])
    with pytest.raises(anthropic.BadRequestError, match='"tool" and "any"'):
        c.messages.count_tokens(model=MODEL, tools=[TOOL], tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "hi"}])


def test_older_models_keep_their_own_rules_and_unknown_ones_are_404(api):
    c = client(api)
    # Haiku 4.5: no thinking by default, so forcing the tool and a temperature are fine ...
    m = c.messages.create(model="claude-haiku-4-5", max_tokens=500, tools=[TOOL], extra_body={"temperature": 0.3},
                          tool_choice={"type": "tool", "name": "propose_candidates"},
                          messages=[{"role": "user", "content": "hi"}])
    assert not any(b.type == "thinking" for b in m.content)
    # ... but not with thinking on
    with pytest.raises(anthropic.BadRequestError, match="Thinking may not be enabled when tool_choice forces tool use"):
        c.messages.create(model="claude-haiku-4-5", max_tokens=5000, tools=[TOOL], tool_choice={"type": "any"},
                          thinking={"type": "enabled", "budget_tokens": 2000}, messages=[{"role": "user", "content": "hi"}])
    for model in ("claude-opus-4-1", "claude-sonnet-9-9"):     # retired on the Claude API; never existed
        with pytest.raises(anthropic.NotFoundError):
            c.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}])


def test_strict_tools_need_closed_objects(api):
    loose = {**TOOL, "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}
    with pytest.raises(anthropic.BadRequestError, match="additionalProperties"):
        client(api).messages.create(model=MODEL, max_tokens=100, tools=[loose], messages=[{"role": "user", "content": "hi"}])


# ----------------------------------------------------------------------------- thinking and output

def test_adaptive_thinking_is_billed_as_output_and_counts_toward_max_tokens(api):
    c = client(api)
    api.queue(tool_reply([{"title": "a"}]))
    full = ask(c, tools=[TOOL], max_tokens=8000)
    thinking = full.usage.output_tokens_details.thinking_tokens
    assert thinking > 0 and full.usage.output_tokens > thinking
    assert [b.type for b in full.content] == ["thinking", "text", "tool_use"]
    assert full.content[0].thinking == "" and full.content[0].signature   # display "omitted" by default
    api.queue(tool_reply([{"title": "a"}]))
    cut = ask(c, tools=[TOOL], max_tokens=thinking // 2)                   # no room left for the answer
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == thinking // 2
    assert not any(b.type == "tool_use" for b in cut.content)
    low = ask(c, tools=[TOOL], output_config={"effort": "low"})
    assert low.usage.output_tokens_details.thinking_tokens < thinking
    off = ask(c, tools=[TOOL], thinking={"type": "between_tools"}, output_config={"effort": "low"})
    assert off.usage.output_tokens_details.thinking_tokens == 0


def test_thinking_blocks_are_bound_to_the_conversation_before_them(api):
    c = client(api)
    question = {"role": "user", "content": "Propose one candidate."}
    first = c.messages.create(model=MODEL, max_tokens=8000, system=BIG, tools=[TOOL], messages=[question])
    tool_use = next(b for b in first.content if b.type == "tool_use")
    follow = [{"role": "assistant", "content": first.content},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "is_error": True,
                                            "content": "edit-apply: search not found"}]}]
    assert c.messages.create(model=MODEL, max_tokens=8000, system=BIG, tools=[TOOL], messages=[question, *follow])
    edited = {"role": "user", "content": "Propose one candidate, please."}
    with pytest.raises(anthropic.BadRequestError, match="append-only"):
        c.messages.create(model=MODEL, max_tokens=8000, system=BIG, tools=[TOOL], messages=[edited, *follow])
    forged = [{"role": "assistant", "content": [{"type": "thinking", "thinking": "", "signature": "forged"},
                                                {"type": "text", "text": "ok"}]}, {"role": "user", "content": "go on"}]
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        c.messages.create(model=MODEL, max_tokens=8000, messages=[question, *forged])


def test_count_tokens_counts_the_whole_prompt_without_caching(api):
    c = client(api)
    counted = c.messages.count_tokens(model=MODEL, tools=[TOOL], system=[{"type": "text", "text": BIG}],
                                      messages=[{"role": "user", "content": "Which knob next?"}]).input_tokens
    sent = ask(c, tools=[TOOL]).usage
    assert counted == sent.input_tokens + sent.cache_creation_input_tokens + sent.cache_read_input_tokens
    assert api.count_requests() and api.count_requests()[0].cache is None


# ----------------------------------------------------------------------------- failure modes

def test_overload_with_retry_after_ms_is_retried_by_the_sdk_then_raised(api):
    api.outage = error_reply(529, retry_after_ms=100)
    started = time.monotonic()
    with pytest.raises(anthropic.OverloadedError):
        ask(client(api, max_retries=2))
    assert len(api.message_requests()) == 3 and time.monotonic() - started >= 0.2
    assert [r.headers.get("x-stainless-retry-count") for r in api.message_requests()] == ["0", "1", "2"]
    api.outage = None
    assert ask(client(api)).usage.output_tokens > 0


def test_server_errors_are_retried_and_client_errors_are_not(api):
    api.queue(error_reply(500), error_reply(503))
    assert ask(client(api, max_retries=2)).stop_reason
    assert [r.status for r in api.message_requests()] == [500, 503, 200]
    api.queue(error_reply(400, error_type="invalid_request_error"))
    with pytest.raises(anthropic.BadRequestError):
        ask(client(api, max_retries=2))
    assert len(api.message_requests()) == 4


def test_an_api_that_never_answers_costs_max_retries_plus_one_timeouts(api):
    api.outage = hang_reply()
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        ask(client(api, max_retries=1, timeout=0.5))
    elapsed = time.monotonic() - started
    assert len(api.message_requests()) == 2 and all(r.status == 0 for r in api.message_requests())
    assert 1.0 <= elapsed < 5.0        # two 0.5 s timeouts plus one SDK backoff (<= 0.5 s)


def test_an_answer_without_usage_reaches_the_client_without_usage(api):
    api.queue(text_reply("no usage here", usage=False))
    message = ask(client(api))
    assert api.message_requests()[0].usage is None
    assert getattr(message, "usage", None) is None


def test_the_request_log_has_what_tests_assert_on(api, clock):
    c = client(api)
    ask(c, output_config={"effort": "medium"})
    clock.advance(10)
    ask(c, output_config={"effort": "medium"})
    first, second = api.message_requests()
    assert second.clock - first.clock == 10 and second.number > first.number
    assert first.settings["effort"] == "medium" and first.settings["thinking"] == "adaptive"
    assert first.params["output_config"] == {"effort": "medium"}
    [bp] = first.cache.breakpoints
    assert bp["region"] == "system" and bp["cached"] and first.cache.writes[0]["hash"] == bp["hash"]
    assert second.cache.hit == bp["hash"] and second.cache.writes == []
    assert api.total_usage()["cache_read_input_tokens"] == second.usage["cache_read_input_tokens"]
    assert first.as_json()["cache"]["write_5m"] == first.usage["cache_creation_input_tokens"]
