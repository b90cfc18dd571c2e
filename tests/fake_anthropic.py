"""A local HTTP server speaking the Anthropic Messages API, as strict as the API documents it.

Tests point the real `anthropic` SDK at it (base_url=http://127.0.0.1:<port>, any key) so the
whole client path — serialisation, headers, retries, timeouts, error mapping — is exercised for
real. Routes: POST /v1/messages and POST /v1/messages/count_tokens.

What it enforces (rules and sources: tests/fake_anthropic_models.py, tests/fake_anthropic_cache.py):
- the model's refusals as 400s with the API's messages (Sonnet 5.5: forced tool_choice, sampling
  parameters, thinking "enabled"/"disabled", prefill, between_tools above high effort), unknown
  or retired models as 404s, a key (x-api-key or bearer), alternating roles, a tool_result for
  every tool_use of the previous assistant turn, thinking blocks passed back unchanged (signatures
  it issued, bound to the conversation before them on models that bind them);
- prompt caching: entries keyed by the exact prefix up to each breakpoint, max 4 breakpoints,
  the minimum cacheable length, TTLs (5 min / 1 h from the start of the request that wrote or
  read the entry, refreshed on read), no read of an entry whose writer has not answered yet (a
  concurrent request pays the write again), thinking/effort/tool_choice changes spoiling entries;
- usage exactly as the API reports it: input_tokens is the uncached remainder, cache_creation
  split into ephemeral_5m/1h, thinking tokens counted in output_tokens (and inside max_tokens:
  a reply that does not fit is cut off with stop_reason "max_tokens").

Scripting: replies are consumed in order; a reply with `match` is only used for a request whose
text contains that string. With nothing scripted the default responder answers: it reads the
incumbent train.py from the first user message and proposes valid knob edits, as many as asked,
each unique for the life of the server (`bad_edits=N`: the first N answers carry one bad edit).
`server.outage = error_reply(529, ...)` or `hang_reply()` answers every request that way until
reset to None. Every request is in `server.requests` (see RecordedRequest: time, stand-in clock,
parameters, prefix hashes, cache hits/writes, usage, status, error).

Time: `clock` (default time.time) runs the TTLs; pass `FakeClock()` and `advance()` it to test
expiry fast. `latency_s` is how long a 200 takes (so that concurrent requests really overlap);
`prefill_s` is the clock time after which a slow writer's entry is readable before it answers.

Standalone (for a check by hand):
    python tests/fake_anthropic.py --port 0 [--script script.json] [--demo] [--log requests.jsonl]
prints `ANTHROPIC_BASE_URL=http://127.0.0.1:<port>` and serves until interrupted. `--demo` answers
the first request with a 529 (retry-after-ms: 50) and the first proposal with one bad edit.
Script file: a JSON list of replies, each one of
    {"candidates": [...]}            a propose_candidates tool call with these candidates
    {"tool_input": {...}}            a tool call with any input (malformed on purpose)
    {"text": "..."}                  a plain text answer (no tool call)
    {"status": 529, "retry_after_ms": 50, "retry_after": 1, "error_type": "overloaded_error"}
    {"hang": true}                   never answer (the client's timeout fires)
    {"default": true, "bad_edit": true}   the default responder's answer
each optionally with "match": "substring", "thinking": "text", "delay_s": 0.1, "headers": {...},
"usage": false (answer without a usage object), "thinking_tokens": N.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):      # run as a script: make `tests.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_anthropic_cache import (CacheOutcome, CacheRequestError, FakeClock, PromptCache,  # noqa: E402,F401
                                        positions_of, prefix_hashes, tokens_of)
from tests.fake_anthropic_models import MODELS, ModelRules, refusal, settings_of, thinking_tokens  # noqa: E402

TOOL_NAME = "propose_candidates"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 503: "api_error", 504: "timeout_error", 529: "overloaded_error"}
# Knobs the default responder may move, and the factors it walks through for each.
DEFAULT_KNOBS = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR", "WEIGHT_DECAY", "WARMDOWN_RATIO")
DEFAULT_FACTORS = (1.25, 0.8, 1.5, 0.67, 1.1, 0.9)
BAD_SEARCH = "THIS_LINE_IS_NOT_IN_TRAIN_PY = 1"
# Internal reasoning the stand-in spends per call at each effort (billed as output, inside max_tokens),
# at most half the prompt's tokens. An assumption of this stand-in, not a documented figure; pass
# `thinking_tokens=` to change it.
DEFAULT_THINKING_TOKENS = {"low": 400, "medium": 1500, "high": 3000, "xhigh": 6000, "max": 12000}
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"


# ----------------------------------------------------------------------------- scripted replies

@dataclass
class Reply:
    """One scripted answer. `kind`: tool | text | error | default | hang."""

    kind: str
    candidates: list[dict] | None = None
    tool_input: Any = None
    text: str = ""
    status: int = 200
    error_type: str | None = None
    retry_after_ms: float | None = None
    retry_after: float | None = None
    bad_edit: bool = False
    thinking: str | None = None
    match: str | None = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None
    usage: bool = True                 # False: answer without a usage object (a broken proxy, say)
    thinking_tokens: int | None = None  # override the effort table for this reply
    message: str | None = None          # an error's message


def tool_reply(candidates: list[dict], **kw) -> Reply:
    return Reply("tool", candidates=candidates, **kw)


def raw_tool_reply(tool_input: Any, **kw) -> Reply:
    return Reply("tool", tool_input=tool_input, **kw)


def text_reply(text: str, **kw) -> Reply:
    return Reply("text", text=text, **kw)


def error_reply(status: int, *, retry_after_ms: float | None = None, retry_after: float | None = None,
                error_type: str | None = None, **kw) -> Reply:
    return Reply("error", status=status, retry_after_ms=retry_after_ms, retry_after=retry_after,
                 error_type=error_type, **kw)


def default_reply(bad_edit: bool = False, **kw) -> Reply:
    return Reply("default", bad_edit=bad_edit, **kw)


def hang_reply(**kw) -> Reply:
    """Never answer: the request stays open until the client gives up (or the server stops)."""
    return Reply("hang", **kw)


def reply_from_json(item: dict) -> Reply:
    """A script-file entry -> Reply (see the module docstring for the format)."""
    common = {k: item[k] for k in ("match", "thinking", "delay_s", "headers", "usage", "thinking_tokens")
              if k in item}
    if "candidates" in item:
        return tool_reply(item["candidates"], **common)
    if "tool_input" in item:
        return raw_tool_reply(item["tool_input"], **common)
    if "text" in item:
        return text_reply(item["text"], **common)
    if "status" in item:
        return error_reply(int(item["status"]), retry_after_ms=item.get("retry_after_ms"),
                           retry_after=item.get("retry_after"), error_type=item.get("error_type"), **common)
    if item.get("hang"):
        return hang_reply(**common)
    if item.get("default"):
        return default_reply(bool(item.get("bad_edit")), **common)
    raise ValueError(f"script entry {item!r}: expected one of candidates, tool_input, text, status, hang, default")


@dataclass
class RecordedRequest:
    """One request as the stand-in saw it; tests assert on these."""

    path: str
    headers: dict[str, str] = field(repr=False)
    body: dict = field(repr=False)
    at: float = 0.0                    # wall time of arrival
    status: int = 0                    # 0 while unanswered (or never answered: a hang)
    number: int = 0                    # arrival order among all events of this server
    clock: float = 0.0                 # the stand-in's clock at arrival (what TTLs are measured in)
    answered_at: float | None = None   # wall time the answer was sent
    error: str | None = None           # the error message answered
    usage: dict | None = None
    cache: CacheOutcome | None = field(default=None, repr=False)  # breakpoints (prefix hashes), hit, writes, conflicts
    settings: dict = field(default_factory=dict)   # effective thinking / effort / tool_choice

    @property
    def text(self) -> str:
        """Every text the request carries (system, messages, tool results), joined."""
        return request_text(self.body)

    @property
    def kind(self) -> str:
        return "count_tokens" if self.path.split("?")[0] == COUNT_TOKENS else "messages"

    @property
    def params(self) -> dict:
        """The generation parameters sent (what a test most often asserts on)."""
        keys = ("model", "max_tokens", "thinking", "output_config", "tool_choice", "temperature", "top_p",
                "top_k", "cache_control", "stream")
        return {k: self.body[k] for k in keys if k in self.body}

    def as_json(self) -> dict:
        cache = None
        if self.cache is not None:
            cache = {"read": self.cache.read, "write_5m": self.cache.write_5m, "write_1h": self.cache.write_1h,
                     "hit": self.cache.hit, "writes": self.cache.writes, "breakpoints": self.cache.breakpoints,
                     "conflicts": self.cache.pending_conflicts}
        return {"path": self.path, "status": self.status, "at": self.at, "clock": self.clock,
                "answered_at": self.answered_at, "error": self.error, "params": self.params,
                "settings": self.settings, "usage": self.usage, "cache": cache, "body": self.body}


# ----------------------------------------------------------------------------- request reading

def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in (content or []) if isinstance(b, dict)]


def _block_text(block: dict) -> str:
    if block.get("type") == "text":
        return block.get("text", "")
    if block.get("type") == "tool_result":
        return "\n".join(_block_text(b) for b in _blocks(block.get("content")))
    return ""


def message_text(message: dict) -> str:
    return "\n".join(_block_text(b) for b in _blocks(message.get("content")))


def request_text(body: dict) -> str:
    system = body.get("system")
    parts = [message_text({"content": system})] if system else []
    parts += [message_text(m) for m in body.get("messages", [])]
    return "\n".join(parts)


_COUNT_RE = re.compile(r"exactly\s+(\d+)\b.*?strategy\s+\"(\w+)\"", re.S)
_KNOB_RE = re.compile(r"^(?P<prefix>(?P<name>[A-Z][A-Z0-9_]*)\s*=\s*)(?P<value>-?\d[\d.eE+-]*)(?P<rest>[ \t]*(#.*)?)$", re.M)


def asked_for(body: dict) -> tuple[int, str]:
    """(how many candidates, which strategy) the last user turn asks for; (1, "moderate") if unsaid."""
    messages = body.get("messages", [])
    last = message_text(messages[-1]) if messages else ""
    m = _COUNT_RE.search(last)
    return (int(m.group(1)), m.group(2)) if m else (1, "moderate")


def incumbent_source(body: dict) -> str:
    messages = body.get("messages", [])
    return message_text(messages[0]) if messages else ""


def _conversation_digest(model: str, messages: list[dict]) -> str:
    """What a thinking block is signed over: the model and the turns before it (cache marks aside)."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    turns = [{"role": m.get("role"), "content": clean(_blocks(m.get("content")))} for m in messages]
    return hashlib.sha256(json.dumps([model, turns], sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- default responder

class KnobProposer:
    """Makes valid, never-repeating knob edits of whatever train.py the request carries."""

    def __init__(self, knobs=DEFAULT_KNOBS, factors=DEFAULT_FACTORS):
        self._moves = itertools.cycle([(f, k) for f in factors for k in knobs])
        self._used: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def candidates(self, source: str, count: int, strategy: str, bad_edit: bool) -> list[dict]:
        lines = {m.group("name"): m for m in _KNOB_RE.finditer(source)
                 if source.count(m.group(0)) == 1}
        out: list[dict] = []
        with self._lock:
            tries = 0
            while len(out) < count and tries < 500:
                tries += 1
                factor, knob = next(self._moves)
                m = lines.get(knob)
                if m is None:
                    continue
                new_value = _scaled(knob, float(m.group("value")), factor)
                if (knob, new_value) in self._used or new_value == m.group("value"):
                    continue
                self._used.add((knob, new_value))
                out.append({"strategy": strategy, "title": f"{knob} x{factor}",
                            "hypothesis": f"Scaling {knob} by {factor} may suit the time budget better.",
                            "edits": [{"search": m.group(0),
                                       "replace": f"{m.group('prefix')}{new_value}{m.group('rest')}"}]})
        if bad_edit and out:
            out[0] = {**out[0], "title": out[0]["title"] + " (bad search)",
                      "edits": [{"search": BAD_SEARCH, "replace": "THIS_LINE_IS_NOT_IN_TRAIN_PY = 2"}]}
        return out


def _scaled(knob: str, value: float, factor: float) -> str:
    new = value * factor if value else 0.05 * factor
    if knob.endswith("_RATIO") or knob.endswith("_FRAC"):
        new = min(new, 0.9)
    return f"{new:.6g}"


# ----------------------------------------------------------------------------- the server

_HANG = object()   # handle()'s answer for "send nothing"


class FakeAnthropic:
    """The stand-in Messages API. Use as a context manager or call start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, bad_edits: int = 0,
                 responder: Callable[[dict, "FakeAnthropic"], Reply] | None = None,
                 clock: Callable[[], float] | None = None, latency_s: float = 0.05,
                 prefill_s: float | None = 1.0, settings_scope: str = "all",
                 thinking_tokens: dict[str, int] | None = None, hang_s: float = 600.0,
                 bind_thinking: bool = True):
        self.requests: list[RecordedRequest] = []
        self.bad_edits_left = bad_edits
        self.knobs = KnobProposer()
        self.clock = clock or time.time
        self.cache = PromptCache(self.clock, prefill_s=prefill_s, settings_scope=settings_scope)
        self.latency_s = latency_s
        self.thinking_table = dict(thinking_tokens or DEFAULT_THINKING_TOKENS)
        self.hang_s = hang_s
        self.bind_thinking = bind_thinking
        self.outage: Reply | None = None     # answers every request while set
        self._responder = responder
        self._script: list[Reply] = []
        self._signatures: dict[str, str] = {}   # signature -> digest of the conversation it was issued on
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeAnthropic":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()               # hung requests return (and send nothing)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # scripting
    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> list[Reply]:
        with self._lock:
            return list(self._script)

    # the request log
    def message_requests(self) -> list[RecordedRequest]:
        """POST /v1/messages requests (not count_tokens), in arrival order."""
        return [r for r in list(self.requests) if r.kind == "messages"]

    def count_requests(self) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.kind == "count_tokens"]

    def write_conflicts(self) -> list[RecordedRequest]:
        """Requests that paid a cache write for a prefix another request was still writing: what a
        client that fans out before the first response has begun pays for."""
        return [r for r in self.message_requests() if r.cache is not None and r.cache.pending_conflicts]

    def total_usage(self) -> dict[str, int]:
        keys = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        total = {k: 0 for k in keys} | {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0,
                                        "thinking_tokens": 0}
        for r in self.message_requests():
            if not r.usage:
                continue
            for k in keys:
                total[k] += r.usage.get(k) or 0
            for k, v in (r.usage.get("cache_creation") or {}).items():
                total[k] += v
            total["thinking_tokens"] += (r.usage.get("output_tokens_details") or {}).get("thinking_tokens", 0)
        return total

    # answering
    def _next_reply(self, body: dict) -> Reply:
        text = request_text(body)
        with self._lock:
            for i, reply in enumerate(self._script):
                if reply.match is None or reply.match in text:
                    return self._script.pop(i)
            bad = self.bad_edits_left > 0
            if bad:
                self.bad_edits_left -= 1
        if self._responder is not None:
            return self._responder(body, self)
        return default_reply(bad_edit=bad)

    def handle(self, path: str, headers: dict[str, str], raw: bytes):
        """-> (status, headers, payload), or _HANG to send nothing."""
        record = RecordedRequest(path, headers, {}, time.time(), number=self.cache.next_event(), clock=self.clock())
        with self._lock:
            self.requests.append(record)
        try:
            record.body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            return self._finish(record, *_error(400, f"request body is not JSON: {exc}"))
        if self.outage is not None:
            return self._answer_failure(record, self.outage)
        route = path.split("?")[0]
        if route not in (MESSAGES, COUNT_TOKENS):
            return self._finish(record, *_error(404, f"no route {path}"))
        if not headers.get("x-api-key") and not headers.get("authorization"):
            return self._finish(record, *_error(401, "x-api-key header is required"))
        body = record.body
        counting = route == COUNT_TOKENS
        problem = self._invalid(body, counting)
        if problem:
            return self._finish(record, *problem)
        rules = MODELS[body["model"]]
        settings = settings_of(rules, body)
        record.settings = {"thinking": settings.thinking, "effort": settings.effort,
                           "tool_choice": settings.tool_choice, "display": settings.display}
        try:
            positions = positions_of(body)
        except CacheRequestError as exc:
            return self._finish(record, *_error(400, str(exc)))
        if counting:   # "token counting provides an estimate without using caching logic" (docs)
            return self._finish(record, 200, {}, {"input_tokens": sum(p.tokens for p in positions)})
        reply = self._next_reply(body)
        if reply.kind in ("error", "hang"):
            return self._answer_failure(record, reply)
        hashes = prefix_hashes(rules.name, positions, settings.cache_key(), settings.tool_choice_key(),
                               self.cache.settings_scope)
        record.cache = self.cache.process(record.number, record.clock, positions, hashes, rules.min_cacheable)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if self.latency_s:
            time.sleep(self.latency_s)
        payload = self._message(body, reply, rules, settings, record.cache)
        record.usage = payload.get("usage")
        self.cache.answered(record.number)
        return self._finish(record, 200, dict(reply.headers), payload)

    def _answer_failure(self, record: RecordedRequest, reply: Reply):
        if reply.kind == "hang":
            record.error = "never answered (hang)"
            return _HANG
        extra = dict(reply.headers)
        if reply.retry_after_ms is not None:
            extra["retry-after-ms"] = str(reply.retry_after_ms)
        if reply.retry_after is not None:
            extra["retry-after"] = str(reply.retry_after)
        status, hdrs, payload = _error(reply.status, reply.message or f"scripted {reply.status}", reply.error_type)
        return self._finish(record, status, {**hdrs, **extra}, payload)

    def _finish(self, record: RecordedRequest, status: int, headers: dict, payload: dict):
        record.status = status
        record.answered_at = time.time()
        if status >= 400:
            record.error = (payload.get("error") or {}).get("message")
        return status, headers, payload

    def _invalid(self, body: dict, counting: bool) -> tuple[int, dict, dict] | None:
        """The request rules the real API enforces that a client can plausibly break."""
        required = ("model", "messages") if counting else ("model", "max_tokens", "messages")
        for key in required:
            if key not in body:
                return _error(400, f"{key}: Field required")
        model = body["model"]
        rules: ModelRules | None = MODELS.get(model)
        if rules is None or rules.retired:
            return _error(404, f"model: {model}")
        if not counting and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 0):
            return _error(400, "max_tokens: Input should be a valid integer greater than or equal to 0")
        if body.get("stream"):
            return _error(400, "stream: this stand-in does not implement streaming")
        messages = body["messages"]
        if not messages or messages[0].get("role") != "user":
            return _error(400, "messages: the first message must use the user role")
        for prev, cur in zip(messages, messages[1:]):
            if prev.get("role") == cur.get("role"):
                return _error(400, "messages: roles must alternate between user and assistant")
            if prev.get("role") == "assistant":
                ids = {b.get("id") for b in _blocks(prev.get("content")) if b.get("type") == "tool_use"}
                answered = {b.get("tool_use_id") for b in _blocks(cur.get("content")) if b.get("type") == "tool_result"}
                if ids - answered:
                    return _error(400, f"messages: tool_use ids were found without tool_result blocks immediately "
                                       f"after: {', '.join(sorted(ids - answered))}")
        for k, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            for block in _blocks(message.get("content")):
                if block.get("type") != "thinking":
                    continue
                issued = self._signatures.get(block.get("signature") or "")
                if issued is None:
                    return _error(400, "messages: thinking block signature is invalid (blocks must be passed "
                                       "back unchanged)")
                if rules.binds_thinking and self.bind_thinking and issued != _conversation_digest(model, messages[:k]):
                    return _error(400, f"messages.{k}: a thinking block was replayed after an edit to the "
                                       f"conversation before it; keep conversations append-only")
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool" and not any(t.get("name") == choice.get("name") for t in body.get("tools", [])):
            return _error(400, f"tool_choice: tool {choice.get('name')!r} not found in tools")
        for tool in body.get("tools") or []:
            if tool.get("strict") and not _strict_schema_ok(tool.get("input_schema") or {}):
                return _error(400, f"tools.{tool.get('name')}: strict tool use needs additionalProperties: false "
                                   f"on every object in input_schema")
        problem = refusal(rules, body, count_tokens=counting)
        return _error(400, problem) if problem else None

    def _message(self, body: dict, reply: Reply, rules: ModelRules, settings, cache: CacheOutcome) -> dict:
        content: list[dict] = []
        max_tokens = body["max_tokens"]
        reasoning = reply.thinking_tokens if reply.thinking_tokens is not None else \
            thinking_tokens(settings, self.thinking_table, cache.total)
        if max_tokens == 0:   # cache pre-warming: nothing generated, nothing billed as output
            reasoning, output, stop = 0, 0, "max_tokens"
        else:
            if reasoning or reply.thinking:
                signature = uuid.uuid4().hex
                with self._lock:
                    self._signatures[signature] = _conversation_digest(body["model"], body["messages"])
                shown = (reply.thinking or "(summary of the reasoning)") if settings.display == "summarized" else ""
                content.append({"type": "thinking", "thinking": shown, "signature": signature})
            answer = self._answer_blocks(body, reply)
            output = reasoning + tokens_of(answer)
            if output > max_tokens:
                # Thinking counts toward max_tokens: a long think leaves no room for the tool call.
                stop, output = "max_tokens", max_tokens
                if max_tokens > reasoning:
                    content.append({"type": "text", "text": "Here are my candid"})
            else:
                content.extend(answer)
                stop = reply.stop_reason or ("tool_use" if answer[-1]["type"] == "tool_use" else "end_turn")
        message = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                   "model": body.get("model"), "content": content, "stop_reason": stop, "stop_sequence": None}
        if reply.usage:
            message["usage"] = {
                "input_tokens": cache.uncached, "cache_creation_input_tokens": cache.created,
                "cache_read_input_tokens": cache.read,
                "cache_creation": {"ephemeral_5m_input_tokens": cache.write_5m,
                                   "ephemeral_1h_input_tokens": cache.write_1h},
                "output_tokens": output, "output_tokens_details": {"thinking_tokens": min(reasoning, output)},
                "service_tier": "standard", "inference_geo": "global"}
        return message

    def _answer_blocks(self, body: dict, reply: Reply) -> list[dict]:
        if reply.kind == "text":
            return [{"type": "text", "text": reply.text}]
        if reply.kind == "default":
            count, strategy = asked_for(body)
            tool_input: Any = {"candidates": self.knobs.candidates(incumbent_source(body), count, strategy,
                                                                  reply.bad_edit)}
        elif reply.candidates is not None:
            tool_input = {"candidates": reply.candidates}
        else:
            tool_input = reply.tool_input
        return [{"type": "text", "text": "Here are my candidates."},
                {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": TOOL_NAME, "input": tool_input}]


def _strict_schema_ok(schema: Any) -> bool:
    if isinstance(schema, dict):
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            return False
        return all(_strict_schema_ok(v) for v in schema.values())
    if isinstance(schema, list):
        return all(_strict_schema_ok(v) for v in schema)
    return True


def _error(status: int, message: str, error_type: str | None = None) -> tuple[int, dict, dict]:
    """The API's error shape: {"type": "error", "error": {"type", "message"}, "request_id"}
    (https://platform.claude.com/docs/en/api/errors#error-shapes)."""
    kind = error_type or ERROR_TYPES.get(status, "api_error")
    return status, {}, {"type": "error", "error": {"type": kind, "message": message},
                        "request_id": f"req_{uuid.uuid4().hex[:24]}"}


def _handler_for(fake: FakeAnthropic):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server naming)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = fake.handle(self.path, headers, raw)
            if answer is _HANG:
                fake._released.wait(fake.hang_s)
                self.close_connection = True
                return
            status, extra, payload = answer
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:16]}")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):   # the client gave up (its timeout)
                self.close_connection = True

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler


# ----------------------------------------------------------------------------- pytest fixture

try:
    import pytest
except ImportError:  # standalone use without pytest installed
    pytest = None

if pytest is not None:
    @pytest.fixture
    def fake_anthropic():
        """A started FakeAnthropic; import this name into a test module to use it."""
        with FakeAnthropic() as server:
            yield server


# ----------------------------------------------------------------------------- standalone

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local stand-in of the Anthropic Messages API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="JSON file: a list of scripted replies (see the module docstring)")
    parser.add_argument("--demo", action="store_true",
                        help="answer the first request with 529 (retry-after-ms: 50) and the first proposal with one bad edit")
    parser.add_argument("--hang", action="store_true", help="never answer any request (timeout tests by hand)")
    parser.add_argument("--log", help="append every answered request (JSON lines) to this file")
    args = parser.parse_args(argv)

    server = FakeAnthropic(args.host, args.port, bad_edits=1 if args.demo else 0)
    if args.demo:
        server.queue(error_reply(529, retry_after_ms=50))
    if args.hang:
        server.outage = hang_reply()
    if args.script:
        with open(args.script, encoding="utf-8") as fh:
            items = json.load(fh)
        if not isinstance(items, list):
            parser.error(f"{args.script}: expected a JSON list of replies")
        server.queue(*(reply_from_json(item) for item in items))
    server.start()
    print(f"ANTHROPIC_BASE_URL={server.url}", flush=True)
    logged = 0
    try:
        while True:
            time.sleep(0.2)
            # a request is logged once answered (status set), in arrival order
            done = list(itertools.takewhile(lambda r: r.status, server.requests[logged:]))
            if args.log and done:
                with open(args.log, "a", encoding="utf-8") as fh:
                    for rec in done:
                        fh.write(json.dumps(rec.as_json()) + "\n")
                logged += len(done)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
