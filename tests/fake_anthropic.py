"""A small local HTTP server speaking the Anthropic Messages API (POST /v1/messages).

Tests point the real `anthropic` SDK at it (base_url=http://127.0.0.1:<port>, any key) so the
whole client path — serialisation, headers, retries, error mapping — is exercised for real.

- Scripted replies are consumed in order; a reply with `match` is only used for a request whose
  text contains that string (so concurrent per-strategy calls can be scripted deterministically).
  With nothing scripted for a request, the default responder answers.
- The default responder reads the incumbent train.py from the first user message and proposes
  valid knob edits (MATRIX_LR, EMBEDDING_LR, ...), as many as the prompt asks for, each unique
  for the life of the server; `bad_edits=N` makes the first N answers carry one edit that
  cannot apply.
- Every request is recorded (path, lower-cased headers, JSON body, time, status answered).
- Usage is emulated, prompt caching included: the prefix up to each `cache_control` breakpoint
  is remembered, a repeat reads it (`cache_read_input_tokens`), a new one writes it.
- It enforces the API rules a client most easily gets wrong: a key (x-api-key or bearer), alternating roles,
  a `tool_result` for every `tool_use` of the previous assistant turn, and thinking blocks passed
  back unchanged (signatures it issued).

Standalone (for a check by hand):
    python tests/fake_anthropic.py --port 0 [--script script.json] [--demo]
prints `ANTHROPIC_BASE_URL=http://127.0.0.1:<port>` and serves until interrupted. `--demo` answers
the first request with a 529 (retry-after-ms: 50) and the first proposal with one bad edit.
Script file: a JSON list of replies, each one of
    {"candidates": [...]}            a propose_candidates tool call with these candidates
    {"tool_input": {...}}            a tool call with any input (malformed on purpose)
    {"text": "..."}                  a plain text answer (no tool call)
    {"status": 529, "retry_after_ms": 50, "retry_after": 1, "error_type": "overloaded_error"}
    {"default": true, "bad_edit": true}   the default responder's answer
each optionally with "match": "substring", "thinking": "text", "delay_s": 0.1, "headers": {...}.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

TOOL_NAME = "propose_candidates"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
# Knobs the default responder may move, and the factors it walks through for each.
DEFAULT_KNOBS = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR", "WEIGHT_DECAY", "WARMDOWN_RATIO")
DEFAULT_FACTORS = (1.25, 0.8, 1.5, 0.67, 1.1, 0.9)
BAD_SEARCH = "THIS_LINE_IS_NOT_IN_TRAIN_PY = 1"


# ----------------------------------------------------------------------------- scripted replies

@dataclass
class Reply:
    """One scripted answer. `kind`: tool | text | error | default."""

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


def reply_from_json(item: dict) -> Reply:
    """A script-file entry -> Reply (see the module docstring for the format)."""
    common = {k: item[k] for k in ("match", "thinking", "delay_s", "headers") if k in item}
    if "candidates" in item:
        return tool_reply(item["candidates"], **common)
    if "tool_input" in item:
        return raw_tool_reply(item["tool_input"], **common)
    if "text" in item:
        return text_reply(item["text"], **common)
    if "status" in item:
        return error_reply(int(item["status"]), retry_after_ms=item.get("retry_after_ms"),
                           retry_after=item.get("retry_after"), error_type=item.get("error_type"), **common)
    if item.get("default"):
        return default_reply(bool(item.get("bad_edit")), **common)
    raise ValueError(f"script entry {item!r}: expected one of candidates, tool_input, text, status, default")


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict
    at: float
    status: int = 0

    @property
    def text(self) -> str:
        """Every text the request carries (system, messages, tool results), joined."""
        return request_text(self.body)


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

class FakeAnthropic:
    """The fake Messages API. Use as a context manager or call start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, bad_edits: int = 0,
                 responder: Callable[[dict, "FakeAnthropic"], Reply] | None = None):
        self.requests: list[RecordedRequest] = []
        self.bad_edits_left = bad_edits
        self.knobs = KnobProposer()
        self._responder = responder
        self._script: list[Reply] = []
        self._cache: set[str] = set()
        self._signatures: set[str] = set()
        self._lock = threading.Lock()
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

    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/v1/messages")]

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

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], dict]:
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            body = {}
            record = RecordedRequest(path, headers, body, time.time())
            return self._finish(record, *_error(400, f"request body is not JSON: {exc}"))
        record = RecordedRequest(path, headers, body, time.time())
        with self._lock:
            self.requests.append(record)
        if not path.startswith("/v1/messages"):
            return self._finish(record, *_error(404, f"no route {path}"))
        if not headers.get("x-api-key") and not headers.get("authorization"):
            return self._finish(record, *_error(401, "x-api-key header is required"))
        problem = self._invalid(body)
        if problem:
            return self._finish(record, *_error(400, problem))
        reply = self._next_reply(body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.kind == "error":
            extra = dict(reply.headers)
            if reply.retry_after_ms is not None:
                extra["retry-after-ms"] = str(reply.retry_after_ms)
            if reply.retry_after is not None:
                extra["retry-after"] = str(reply.retry_after)
            status, hdrs, payload = _error(reply.status, f"scripted {reply.status}", reply.error_type)
            return self._finish(record, status, {**hdrs, **extra}, payload)
        return self._finish(record, 200, dict(reply.headers), self._message(body, reply))

    def _finish(self, record: RecordedRequest, status: int, headers: dict, payload: dict):
        record.status = status
        return status, headers, payload

    def _invalid(self, body: dict) -> str | None:
        """The request rules the real API enforces that a client can plausibly break."""
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return f"{key}: Field required"
        messages = body["messages"]
        if not messages or messages[0].get("role") != "user":
            return "messages: the first message must use the user role"
        for prev, cur in zip(messages, messages[1:]):
            if prev.get("role") == cur.get("role"):
                return "messages: roles must alternate between user and assistant"
            if prev.get("role") == "assistant":
                ids = {b.get("id") for b in _blocks(prev.get("content")) if b.get("type") == "tool_use"}
                answered = {b.get("tool_use_id") for b in _blocks(cur.get("content")) if b.get("type") == "tool_result"}
                if ids - answered:
                    return (f"messages: tool_use ids were found without tool_result blocks immediately after: "
                            f"{', '.join(sorted(ids - answered))}")
        for message in messages:
            if message.get("role") != "assistant":
                continue
            for block in _blocks(message.get("content")):
                if block.get("type") == "thinking" and block.get("signature") not in self._signatures:
                    return "messages: thinking block signature is invalid (blocks must be passed back unchanged)"
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool" and not any(t.get("name") == choice.get("name") for t in body.get("tools", [])):
            return f"tool_choice: tool {choice.get('name')!r} not found in tools"
        return None

    def _message(self, body: dict, reply: Reply) -> dict:
        content: list[dict] = []
        if reply.thinking:
            signature = uuid.uuid4().hex
            with self._lock:
                self._signatures.add(signature)
            content.append({"type": "thinking", "thinking": reply.thinking, "signature": signature})
        if reply.kind == "text":
            content.append({"type": "text", "text": reply.text})
        else:
            if reply.kind == "default":
                count, strategy = asked_for(body)
                tool_input: Any = {"candidates": self.knobs.candidates(incumbent_source(body), count, strategy,
                                                                      reply.bad_edit)}
            elif reply.candidates is not None:
                tool_input = {"candidates": reply.candidates}
            else:
                tool_input = reply.tool_input
            content.append({"type": "text", "text": "Here are my candidates."})
            content.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": TOOL_NAME,
                            "input": tool_input})
        stop = reply.stop_reason or ("tool_use" if content[-1]["type"] == "tool_use" else "end_turn")
        return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": body.get("model"), "content": content, "stop_reason": stop,
                "stop_sequence": None, "usage": self._usage(body, content)}

    def _usage(self, body: dict, content: list[dict]) -> dict:
        """Token counts at ~4 characters a token, with prompt caching emulated per breakpoint."""
        segments = [("tools", t) for t in body.get("tools", [])]
        segments += [("system", b) for b in _blocks(body.get("system"))]
        for i, message in enumerate(body.get("messages", [])):
            segments += [(f"m{i}", b) for b in _blocks(message.get("content"))]
        sizes = [len(json.dumps(seg, sort_keys=True)) for seg in segments]
        total = _tokens(sum(sizes))
        breakpoints = [i for i, (_, seg) in enumerate(segments) if seg.get("cache_control")]
        read = write = 0
        with self._lock:
            longest_hit = 0
            keys = []
            for i in breakpoints:
                key = hashlib.sha256(json.dumps([body.get("model"), segments[: i + 1]], sort_keys=True).encode()).hexdigest()
                keys.append(key)
                if key in self._cache:
                    longest_hit = _tokens(sum(sizes[: i + 1]))
            if breakpoints:
                cached_upto = _tokens(sum(sizes[: breakpoints[-1] + 1]))
                read = longest_hit
                write = cached_upto - longest_hit
                self._cache.update(keys)
        return {"input_tokens": total - read - write, "output_tokens": _tokens(len(json.dumps(content))),
                "cache_read_input_tokens": read, "cache_creation_input_tokens": write}


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def _error(status: int, message: str, error_type: str | None = None) -> tuple[int, dict, dict]:
    kind = error_type or ERROR_TYPES.get(status, "api_error")
    return status, {}, {"type": "error", "error": {"type": kind, "message": message}}


def _handler_for(fake: FakeAnthropic):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server naming)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = fake.handle(self.path, headers, raw)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:16]}")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

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
    parser = argparse.ArgumentParser(description="A local fake of the Anthropic Messages API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="JSON file: a list of scripted replies (see the module docstring)")
    parser.add_argument("--demo", action="store_true",
                        help="answer the first request with 529 (retry-after-ms: 50) and the first proposal with one bad edit")
    parser.add_argument("--log", help="append every request (JSON lines) to this file")
    args = parser.parse_args(argv)

    server = FakeAnthropic(args.host, args.port, bad_edits=1 if args.demo else 0)
    if args.demo:
        server.queue(error_reply(529, retry_after_ms=50))
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
                        fh.write(json.dumps({"path": rec.path, "status": rec.status, "at": rec.at,
                                             "body": rec.body}) + "\n")
                logged += len(done)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
