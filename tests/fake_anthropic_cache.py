"""Prompt caching as the Messages API documents it, for the local stand-in (tests/fake_anthropic.py).

Rules reproduced (https://platform.claude.com/docs/en/build-with-claude/prompt-caching):

- The prompt is one prefix in the order tools -> system -> messages. Each content block is a
  position; the hash at a position covers everything up to and including it (cache_control
  markers themselves are not content).
- A write happens only at a breakpoint (a block with cache_control, or the last cacheable block
  for a top-level cache_control), one entry per breakpoint, and only when the prefix up to it has
  at least the model's minimum cacheable length; shorter ones are silently not cached.
- A read looks backward from each breakpoint over at most 20 positions for an entry that an
  EARLIER request wrote and that is readable now: its writer's response has begun (here: the
  writer answered before this request arrived, or `prefill_s` of clock time have passed since the
  writer arrived), and it has not expired. A concurrent request therefore pays the write again.
- An entry lives `ttl` (5 min default, or 1 h) from the START of the latest request that wrote or
  read it; a read refreshes it at no cost.
- Billing positions: A = tokens up to the highest hit, B = tokens at the highest 1-hour breakpoint
  after A, C = tokens at the last (cacheable) breakpoint; read A, 1 h writes B - A, 5 min writes
  C - B; input_tokens is what remains (the tokens after the last breakpoint).
- Settings rendered into the prompt spoil caches: a change of thinking settings or effort
  invalidates message-level entries, and per the current FAQ "can invalidate cached system
  prompts and tools as well" (`settings_scope="all"`, the default here: the strict reading);
  a tool_choice change invalidates message-level entries only.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

LOOKBACK = 20
MAX_BREAKPOINTS = 4
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


class CacheRequestError(ValueError):
    """A cache_control layout the API refuses with a 400; the message is the API's."""


class FakeClock:
    """A settable clock for TTL tests: `advance(301)` instead of waiting five minutes."""

    def __init__(self, start: float = 0.0):
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += float(seconds)


def tokens_of(obj: Any) -> int:
    """The stand-in's tokenizer: ~4 characters of canonical JSON per token (same for every model)."""
    return math.ceil(len(json.dumps(obj, sort_keys=True, ensure_ascii=False)) / 4)


@dataclass
class Position:
    region: str                 # tools | system | messages:<turn>:<role>
    block: dict                 # without cache_control
    tokens: int
    ttl: str | None = None      # "5m" / "1h" when this block is a breakpoint


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in (content or []) if isinstance(b, dict)]


def _ttl_of(marker: Any) -> str:
    if not isinstance(marker, dict) or marker.get("type") != "ephemeral":
        raise CacheRequestError(f"cache_control: expected {{'type': 'ephemeral'}}, got {marker!r}")
    ttl = marker.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise CacheRequestError(f"cache_control.ttl: {ttl!r} is not one of '5m', '1h'")
    return ttl


def _cacheable(block: dict) -> bool:
    return block.get("type") not in ("thinking", "redacted_thinking") and \
        not (block.get("type") == "text" and not block.get("text"))


def positions_of(body: dict) -> list[Position]:
    """The request as cache positions, with its breakpoints; raises CacheRequestError for a 400."""
    out: list[Position] = []

    def add(region: str, block: dict, where: str = "") -> None:
        clean = {k: v for k, v in block.items() if k != "cache_control"}
        ttl = None
        if "cache_control" in block:
            if block.get("type") in ("thinking", "redacted_thinking"):
                raise CacheRequestError("messages: thinking blocks cannot be marked with cache_control")
            if block.get("type") == "text" and not block.get("text"):
                raise CacheRequestError("cache_control cannot be set for empty text blocks")
            ttl = _ttl_of(block["cache_control"])
        out.append(Position(region + where, clean, tokens_of(clean), ttl))

    for tool in body.get("tools") or []:
        add("tools", tool)
    for block in _blocks(body.get("system")):
        add("system", block)
    for i, message in enumerate(body.get("messages") or []):
        for block in _blocks(message.get("content")):
            add("messages", block, f":{i}:{message.get('role')}")
    top = body.get("cache_control")
    if top is not None:                     # automatic caching: the last cacheable block
        ttl = _ttl_of(top)
        for pos in reversed(out):
            if _cacheable(pos.block):
                if pos.ttl is not None and pos.ttl != ttl:
                    raise CacheRequestError("cache_control: the last block already has a cache_control with a "
                                            "different ttl than the top-level cache_control")
                if pos.ttl is None and sum(p.ttl is not None for p in out) >= MAX_BREAKPOINTS:
                    raise CacheRequestError("A maximum of 4 blocks with cache_control may be provided, and the "
                                            "top-level cache_control needs one of them.")
                pos.ttl = ttl
                break
    marked = [p for p in out if p.ttl is not None]
    if len(marked) > MAX_BREAKPOINTS:
        raise CacheRequestError(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                                f"Found {len(marked)}.")
    seen_5m = False
    for p in marked:
        if p.ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise CacheRequestError("cache_control: a ttl='1h' cache breakpoint must come before any ttl='5m' "
                                    "breakpoint")
    return out


def prefix_hashes(model: str, positions: list[Position], settings_key: str, tool_choice_key: str,
                  settings_scope: str) -> list[str]:
    """Cumulative hash per position. Settings enter where the API renders them."""
    hashes, h = [], hashlib.sha256(model.encode())
    for pos in positions:
        in_messages = pos.region.startswith("messages")
        if in_messages or settings_scope == "all":
            salt = settings_key + ("|" + tool_choice_key if in_messages else "")
        else:
            salt = ""
        step = h.copy()
        step.update(json.dumps([pos.region, pos.block], sort_keys=True).encode())
        h = step
        hashes.append(hashlib.sha256((h.hexdigest() + "|" + salt).encode()).hexdigest()[:16])
    return hashes


@dataclass
class Entry:
    key: str
    tokens: int
    ttl: str
    writer: int                 # the writing request's number
    writer_arrived: float       # clock time
    expires: float              # clock time
    answered_before: int | None = None   # event number when the writer's response was sent
    aborted: bool = False


@dataclass
class CacheOutcome:
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    total: int = 0
    hit: str | None = None                           # prefix hash read
    hit_tokens: int = 0
    writes: list[dict] = field(default_factory=list)  # {"hash", "tokens", "ttl", "position"}
    breakpoints: list[dict] = field(default_factory=list)
    pending_conflicts: list[dict] = field(default_factory=list)  # entries still being written by another request

    @property
    def created(self) -> int:
        return self.write_5m + self.write_1h

    @property
    def uncached(self) -> int:
        return self.total - self.read - self.created


class PromptCache:
    """The entries of one stand-in server; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time, prefill_s: float | None = 1.0,
                 settings_scope: str = "all"):
        if settings_scope not in ("all", "messages"):
            raise ValueError("settings_scope: 'all' (thinking/effort spoil every level) or 'messages'")
        self.clock = clock
        self.prefill_s = prefill_s
        self.settings_scope = settings_scope
        self._entries: dict[str, Entry] = {}
        self._events = 0
        self._lock = threading.Lock()

    def next_event(self) -> int:
        with self._lock:
            self._events += 1
            return self._events

    def _readable(self, entry: Entry, request: int, arrived: float) -> bool:
        if entry.aborted or entry.writer >= request or entry.expires <= arrived:
            return False
        if entry.answered_before is not None and entry.answered_before < request:
            return True
        return self.prefill_s is not None and entry.writer_arrived + self.prefill_s <= arrived

    def process(self, request: int, arrived: float, positions: list[Position], hashes: list[str],
                min_cacheable: int) -> CacheOutcome:
        """Reads and (pending) writes of one request that the API accepted."""
        cumulative, running = [], 0
        for pos in positions:
            running += pos.tokens
            cumulative.append(running)
        out = CacheOutcome(total=running)
        breakpoints = [i for i, p in enumerate(positions) if p.ttl is not None]
        with self._lock:
            hit = -1
            for b in breakpoints:
                for i in range(b, max(b - LOOKBACK, -1), -1):
                    entry = self._entries.get(hashes[i])
                    if entry is not None and self._readable(entry, request, arrived):
                        hit = max(hit, i)
                        break
            if hit >= 0:
                out.read, out.hit, out.hit_tokens = cumulative[hit], hashes[hit], cumulative[hit]
                for b in [hit] + [b for b in breakpoints if b < hit]:   # the read prefix is used: refresh it
                    entry = self._entries.get(hashes[b])
                    if entry is not None and self._readable(entry, request, arrived):
                        entry.expires = max(entry.expires, arrived + TTL_SECONDS[entry.ttl])
            writable = [b for b in breakpoints if b > hit and cumulative[b] >= min_cacheable]
            for b in breakpoints:
                out.breakpoints.append({"position": b, "region": positions[b].region, "ttl": positions[b].ttl,
                                        "tokens": cumulative[b], "hash": hashes[b],
                                        "cached": b <= hit or b in writable})
            base = cumulative[hit] if hit >= 0 else 0
            long_ = [b for b in writable if positions[b].ttl == "1h"]
            if long_:
                out.write_1h = cumulative[long_[-1]] - base
                base = cumulative[long_[-1]]
            if writable:
                out.write_5m = max(0, cumulative[writable[-1]] - base)
            for b in writable:
                key, ttl = hashes[b], positions[b].ttl
                current = self._entries.get(key)
                if current is not None and not current.aborted and current.expires > arrived:
                    # Another request is still writing this prefix (or wrote it moments ago and has not
                    # answered): this one pays the write again and its entry replaces nothing.
                    out.pending_conflicts.append({"hash": key, "writer": current.writer})
                    current.expires = max(current.expires, arrived + TTL_SECONDS[ttl])
                    if TTL_SECONDS[ttl] > TTL_SECONDS[current.ttl]:
                        current.ttl = ttl
                else:
                    self._entries[key] = Entry(key, cumulative[b], ttl, request, arrived,
                                               arrived + TTL_SECONDS[ttl])
                out.writes.append({"hash": key, "tokens": cumulative[b], "ttl": ttl, "position": b})
        return out

    def answered(self, request: int) -> None:
        """The request's response has begun: its entries are readable by any later request."""
        event = self.next_event()
        with self._lock:
            for entry in self._entries.values():
                if entry.writer == request and entry.answered_before is None:
                    entry.answered_before = event

    def abort(self, request: int) -> None:
        """The request failed before answering: what it was writing never becomes readable."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                if entry.writer == request and entry.answered_before is None:
                    del self._entries[key]

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
