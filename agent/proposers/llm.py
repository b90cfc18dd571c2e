"""The LLM proposer: Anthropic's Messages API through the official SDK, one tool, repair rounds.

One call per strategy group, run concurrently (bounded by llm.max_concurrent_calls). Why per
group rather than one call for the whole generation: each strategy has its own instructions and
size of change, the answers stay short (no max_tokens truncation of a ten-candidate answer), a
bad answer only costs its own group a repair round, and the prefix every call shares (tool,
system prompt with program.md, incumbent train.py, the history) ends at a cache breakpoint and is
written once per round by a max_tokens-0 warm-up before the calls start, so they read it (a
concurrent sibling cannot read an entry still being written). The TTL is 1h when rounds are more
than 5 minutes apart. Costs come from the usage fields (1h writes at their own price); a call
without usage is booked at an estimate, marked as such.

Retries are the SDK's alone (llm.max_retries, llm.timeout_s). A call that still fails to connect
or times out stops the round's LLM calls: the slots go to the fallback within about
(max_retries + 1) x timeout_s, and the console says so.

Every candidate is applied and checked (`sandbox.candidate.build_candidate`); failures go back
to the model as an `is_error` tool_result naming each failing candidate and the exact failure,
up to llm.max_repairs times. Every failed candidate is returned as a rejected Proposal (memory
keeps it, the digest warns later generations); slots still empty after the repairs, and whole
generations when there is no key, the API stays unreachable or the dollar cap would be passed,
are filled by the fallback (heuristic) proposer, and the console says so. Nothing here raises
for a bad answer or an API error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import anthropic
from pydantic import BaseModel, ConfigDict, ValidationError

from agent import llm_models, prompting
from agent.ledger import llm_cost
from agent.proposers.base import STRATEGIES, PastCandidate, Proposal, ProposalRequest, Proposer

TOOL_NAME = "propose_candidates"
CHARS_PER_TOKEN = 4          # rough prompt-size estimate for the dollar cap
FIVE_MINUTES = 300.0         # the default cache TTL: rounds further apart than this need the 1h one
PROPOSER_NAME = "llm"


# ----------------------------------------------------------------------------- the tool contract

def tool_definition(prompts_dir: Path) -> dict:
    """The one tool the model answers through (DESIGN.md "LLM tool")."""
    return {
        "name": TOOL_NAME,
        "description": prompting.render(prompts_dir, "tool"),
        "strict": True,
        "input_schema": {
            "type": "object",
            "properties": {
                "candidates": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "strategy": {"type": "string", "enum": list(STRATEGIES)},
                            "title": {"type": "string"},
                            "hypothesis": {"type": "string"},
                            "edits": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {"search": {"type": "string"}, "replace": {"type": "string"}},
                                    "required": ["search", "replace"],
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "required": ["strategy", "title", "hypothesis", "edits"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["candidates"],
            "additionalProperties": False,
        },
    }


class _Edit(BaseModel):
    model_config = ConfigDict(extra="ignore")
    search: str
    replace: str


class _Candidate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    strategy: Literal["conservative", "moderate", "aggressive", "crossover"]
    title: str
    hypothesis: str = ""
    edits: list[_Edit]


@dataclass
class Failure:
    """Something in an answer that could not be used; `label` names it for the repair text."""

    label: str
    rule: str
    message: str
    proposal: Proposal | None = None   # the rejected candidate, when there was one


@dataclass
class ParsedAnswer:
    tool_use_ids: list[str] = field(default_factory=list)
    candidates: list[tuple[str, _Candidate]] = field(default_factory=list)   # (label, candidate)
    failures: list[Failure] = field(default_factory=list)                   # answer- and shape-level
    notes: list[str] = field(default_factory=list)


def parse_answer(content: list[Any], strategy: str, needed: int, stop_reason: str | None) -> ParsedAnswer:
    """Pull the candidates out of a response's content blocks, validating their shape.

    Answer-level problems (no tool call, input not an object of candidates, too few) and
    per-candidate shape problems (missing field, wrong strategy) become Failures with llm-* rules.
    """
    answer = ParsedAnswer()
    raw_items: list[Any] = []
    for block in content:
        if getattr(block, "type", None) != "tool_use":
            continue
        answer.tool_use_ids.append(block.id)
        if block.name != TOOL_NAME:
            answer.failures.append(Failure("the answer", "llm-malformed",
                                           f"called an unknown tool {block.name!r}; the only tool is {TOOL_NAME}"))
            continue
        items, problem = _candidate_list(block.input)
        if problem:
            answer.failures.append(Failure("the answer", "llm-malformed", problem))
        raw_items.extend(items)
    if not answer.tool_use_ids:
        text = " ".join(getattr(b, "text", "") for b in content if getattr(b, "type", None) == "text").strip()
        why = "was cut off at max_tokens before calling" if stop_reason == "max_tokens" else "did not call"
        answer.failures.append(Failure("the answer", "llm-no-tool",
                                       f"{why} {TOOL_NAME}" + (f" (it said: {text[:200]!r})" if text else "")))
        return answer
    for index, item in enumerate(raw_items, 1):
        title = item.get("title") if isinstance(item, dict) else None
        label = f"candidate {index}" + (f" {str(title)!r}" if title else "")
        try:
            candidate = _Candidate.model_validate(item)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'candidate'}: {e['msg']}"
                                 for e in err.errors())
            answer.failures.append(Failure(label, "llm-malformed", problems,
                                           _rejected_shape(item, strategy, "llm-malformed", problems)))
            continue
        if candidate.strategy != strategy:
            message = f"strategy {candidate.strategy!r}, but {strategy!r} was asked for"
            answer.failures.append(Failure(label, "llm-wrong-strategy", message,
                                           _rejected_shape(item, strategy, "llm-wrong-strategy", message)))
            continue
        if not candidate.edits:
            message = "no edits: a candidate must change train.py"
            answer.failures.append(Failure(label, "llm-malformed", message,
                                           _rejected_shape(item, strategy, "llm-malformed", message)))
            continue
        answer.candidates.append((label, candidate))
    if len(raw_items) > needed:
        answer.notes.append(f"sent {len(raw_items)} candidates, {needed} asked for; the extra ones were ignored")
    elif len(raw_items) < needed:
        answer.failures.append(Failure("the answer", "llm-too-few",
                                       f"sent {len(raw_items)} candidate(s), {needed} were asked for"))
    return answer


def _candidate_list(tool_input: Any) -> tuple[list[Any], str | None]:
    if not isinstance(tool_input, dict) or "candidates" not in tool_input:
        return [], f"the tool input must be an object with a 'candidates' list, got {json.dumps(tool_input)[:200]}"
    items = tool_input["candidates"]
    if isinstance(items, str):
        # Models sometimes send the list as a JSON string; accept it when it parses.
        try:
            items = json.loads(items)
        except json.JSONDecodeError as exc:
            return [], f"'candidates' is a string that is not valid JSON ({exc})"
    if not isinstance(items, list):
        return [], f"'candidates' must be a list, got {type(items).__name__}"
    return items, None


def _rejected_shape(item: Any, strategy: str, rule: str, reason: str) -> Proposal:
    item = item if isinstance(item, dict) else {}
    edits = item.get("edits") if isinstance(item.get("edits"), list) else []
    return Proposal(strategy=str(item.get("strategy") or strategy), title=str(item.get("title") or "(untitled)"),
                    hypothesis=str(item.get("hypothesis") or ""),
                    edits=[e for e in edits if isinstance(e, dict)], accepted=False, rule=rule, reason=reason,
                    proposer=PROPOSER_NAME)


# ----------------------------------------------------------------------------- dollars

def model_prices(prices: dict[str, dict[str, float]], model: str) -> tuple[dict[str, float], bool]:
    """(USD per million tokens, known). An unlisted model is priced at the dearest listed rates,
    so the dollar cap errs on the safe side."""
    if model in prices:
        return prices[model], True
    keys = ("input", "output", "cache_write", "cache_read")
    return {k: max((p.get(k, 0.0) for p in prices.values()), default=0.0) for k in keys}, False


def call_cost(prices: dict[str, float], input_tokens: int, output_tokens: int,
              cache_read_tokens: int = 0, cache_write_tokens: int = 0, cache_write_1h_tokens: int = 0) -> float:
    """USD for one call at `prices` (one model's USD-per-million rates), through the ledger.
    `cache_write_tokens` are all writes (as usage's cache_creation_input_tokens reports them);
    the 1-hour share of them is billed at cache_write_1h (2x input) instead of cache_write (1.25x)."""
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens,
             "cache_read_tokens": cache_read_tokens,
             "cache_write_tokens": max(0, cache_write_tokens - cache_write_1h_tokens)}
    cost = llm_cost("priced", usage, {"priced": prices})
    if cache_write_1h_tokens:
        rate = prices.get("cache_write_1h", 2.0 * prices.get("input", 0.0))
        cost += cache_write_1h_tokens * rate / 1e6
    return cost


# ----------------------------------------------------------------------------- the proposer

class _Stop(Exception):
    """The group cannot call the API (cap, unreachable, disabled); the fallback takes its slots."""


@dataclass
class _Group:
    """One call's worth of work: `count` candidates of one strategy."""

    strategy: str
    count: int
    template: str                      # prompts/<template>.md asks for them
    values: dict[str, Any]             # that template's placeholders
    parents: list[str]


@dataclass
class _Shared:
    """The round's prefix every strategy call repeats verbatim (tools, system, train.py, history)."""

    system: list[dict]
    blocks: list[dict]                 # the first user turn's shared blocks, the last one a breakpoint
    tool: dict
    ttl: str
    tokens: int = 0                    # its exact size, once a warm-up's usage has said it


@dataclass
class _GroupResult:
    proposals: list[Proposal] = field(default_factory=list)
    unfilled: int = 0
    why_unfilled: str = ""


class LLMProposer:
    name = PROPOSER_NAME

    def __init__(self, settings, *, prompts_dir: Path, fallback: Proposer,
                 record_call: Callable[..., None] | None = None,
                 spent_usd: Callable[[], float] | None = None,
                 client: anthropic.Anthropic | None = None, console=None):
        self.settings = settings
        self.prompts_dir = Path(prompts_dir)
        self.fallback = fallback
        self._record_call = record_call
        self._local_spent = 0.0
        # Without a memory-backed total, the cap counts this proposer's own calls.
        self._spent_usd = spent_usd if spent_usd is not None else (lambda: self._local_spent)
        self._console = console
        self._lock = threading.Lock()
        self._in_flight_usd = 0.0
        self._last_round_at: float | None = None   # when the previous round asked (the cache TTL choice)
        self._unreachable: tuple[float, str] | None = None   # (monotonic time, reason) of the last verdict
        self._round_effort: str | None = None        # set before a round's calls start, read by them
        self._round_index = None                     # agent.novelty.NoveltyIndex for this round, or None
        self._disabled: str | None = None       # a reason every later call would fail too (no key, 401)
        self._said: set[str] = set()
        self._generation_stop: str | None = None
        self._warm_up_refused: str | None = None   # the API refused a max_tokens-0 warm-up: none again
        self.client = client if client is not None else self._make_client()
        self._prices, known = model_prices(settings.prices, settings.model)
        if not known:
            self._say(f"No price for model {settings.model} in llm.prices: costs are estimated at the "
                      f"dearest listed rates.")

    # -- set-up
    def _make_client(self) -> anthropic.Anthropic | None:
        if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
            self._disabled = "no ANTHROPIC_API_KEY is set"
            return None
        # The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL itself; it retries 408/409/429/5xx
        # (529 included) and connection errors, honouring retry-after-ms / retry-after.
        return anthropic.Anthropic(max_retries=self.settings.max_retries, timeout=self.settings.timeout_s)

    def _say(self, message: str) -> None:
        with self._lock:
            if message in self._said:
                return
            self._said.add(message)
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    # -- Proposer protocol
    def _new_round(self) -> None:
        """Forget the last round's stop, except an unreachable verdict reached moments ago: the
        calls of one round (a repair, a branch, the main one) must not each wait out the SDK's
        retries again. The next round, later, tries again."""
        with self._lock:
            self._said.clear()
            self._generation_stop = None
            if self._unreachable is not None:
                at, reason = self._unreachable
                if time.monotonic() - at < (self.settings.max_retries + 1) * self.settings.timeout_s:
                    self._generation_stop = reason
                else:
                    self._unreachable = None

    def propose(self, request: ProposalRequest) -> list[Proposal]:
        self._new_round()
        seen = set(request.seen_fingerprints)
        if self._disabled:
            return self._fallback(request, {s: n for s, n in request.slots.items() if n > 0}, seen)
        groups, leftovers = self._groups(request)
        self._set_round_effort([g.strategy for g in groups])
        self._round_index = request.novelty.fork() if request.novelty is not None else None
        results: list[_GroupResult] = []
        if groups:
            try:
                shared = self._shared_prefix(request)
            except prompting.PromptError as exc:
                # A broken template is the operator's to fix; say it and let the fallback keep the run going.
                self._say(f"LLM: prompt template error: {exc}")
                shared = None
            if shared is None:
                results = [_GroupResult(unfilled=g.count, why_unfilled="prompt template error") for g in groups]
            else:
                # The round's shared prefix is written first, so that the strategy calls read it: one
                # warm-up per effort that two or more calls share (the setting is part of what is
                # cached); a call alone with its effort writes the prefix itself at the same price.
                efforts = Counter(self._effort(g.strategy) or "" for g in groups)
                self._warm_up(request, shared, sorted(e for e, n in efforts.items() if n >= 2))
                workers = max(1, min(self.settings.max_concurrent_calls, len(groups)))
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
                    results = list(pool.map(lambda g: self._run_group(request, g, seen, shared), groups))
        with self._lock:
            generation_wide = self._disabled or self._generation_stop
        proposals: list[Proposal] = []
        unfilled: dict[str, int] = dict(leftovers)
        for group, result in zip(groups, results):
            proposals.extend(result.proposals)
            if result.unfilled:
                unfilled[group.strategy] = unfilled.get(group.strategy, 0) + result.unfilled
                if result.why_unfilled != generation_wide:   # that one is said once, by _fallback
                    self._say(f"LLM: {result.why_unfilled}: the {self.fallback.name} proposer fills "
                              f"{result.unfilled} {group.strategy} slot(s) of generation {request.generation}.")
        if unfilled:
            proposals.extend(self._fallback(request, unfilled, seen))
        return proposals

    def propose_from_idea(self, idea: str, request: ProposalRequest) -> Proposal:
        """One candidate from a human's idea in words (the REPL's `add "..."`); never raises."""
        self._new_round()
        wanted = [s for s, n in request.slots.items() if n > 0]
        strategy = wanted[0] if len(wanted) == 1 else "moderate"
        group = _Group(strategy, 1, "idea", {"idea": idea.strip(), "strategy": strategy}, [request.incumbent_id])
        self._set_round_effort([strategy])
        self._round_index = request.novelty.fork() if request.novelty is not None else None
        try:
            shared = self._shared_prefix(request)
        except prompting.PromptError as exc:
            shared, why = None, f"prompt template error: {exc}"
        result = (self._run_group(request, group, set(request.seen_fingerprints), shared, fill_missing=False)
                  if shared is not None else _GroupResult(why_unfilled=why))
        accepted = [p for p in result.proposals if p.accepted]
        if accepted:
            return accepted[0]
        if result.proposals:
            return result.proposals[-1]
        return Proposal(strategy=strategy, title=idea.strip()[:80], hypothesis=idea.strip(), edits=[],
                        parents=[request.incumbent_id], accepted=False, rule="llm-unavailable",
                        reason=result.why_unfilled or "the LLM gave no candidate", proposer=PROPOSER_NAME)

    def write_lessons(self, digest: str, figures: list[str], generation: int) -> tuple[list[str], str | None]:
        """The lab notebook's lines for what finished through `generation`: a short call without
        tools at low effort. ([], why) when the model cannot be asked or says nothing usable."""
        from agent.notebook import parse_lessons
        with self._lock:
            # an API that was unreachable in the last round is not waited on again for the notebook
            stop = self._disabled or self._generation_stop
        if stop:
            return [], stop
        try:
            text = prompting.render(self.prompts_dir, "notebook", generation=generation, digest=digest,
                                    figures="\n".join(f"- {line}" for line in figures))
        except prompting.PromptError as exc:
            return [], f"prompt template error: {exc}"
        kwargs: dict[str, Any] = dict(model=self.settings.model, max_tokens=self._max_tokens("low") // 4,
                                      messages=[{"role": "user", "content": [{"type": "text", "text": text}]}])
        if self._effort_supported("low"):
            kwargs["extra_body"] = {"output_config": {"effort": "low"}}
        estimate = self._estimate({**kwargs, "system": [], "tools": []})
        with self._lock:
            if self._spent_usd() + self._in_flight_usd + estimate > self.settings.usd_cap:
                return [], "the LLM dollar cap would be passed"
        started = time.monotonic()
        try:
            response = self.client.messages.create(**kwargs)
        except anthropic.APIError as exc:
            if isinstance(exc, anthropic.APIConnectionError):
                with self._lock:   # the round that follows does not wait out the retries again
                    self._unreachable = (time.monotonic(), f"LLM unreachable: the notebook call failed ({exc})")
            self._record_failure("error", str(exc), time.monotonic() - started, generation, "notebook")
            return [], f"the API call failed ({exc.__class__.__name__})"
        # an answer that calls a tool (none was offered) is not a notebook entry
        called = any(getattr(b, "type", None) == "tool_use" for b in response.content)
        lines = [] if called else parse_lessons("\n".join(getattr(b, "text", "") for b in response.content
                                                            if getattr(b, "type", None) == "text"))
        self._record(response, time.monotonic() - started, [], [] if lines else ["no lesson lines in the answer"],
                     generation, "notebook", kwargs={**kwargs, "system": [], "tools": []})
        return lines, None if lines else "the LLM's answer held no lesson lines"

    def _effort_supported(self, effort: str) -> bool:
        model = llm_models.facts(self.settings.model)
        return model is not None and effort in model.efforts

    # -- planning
    def _groups(self, request: ProposalRequest) -> tuple[list[_Group], dict[str, int]]:
        groups: list[_Group] = []
        leftovers: dict[str, int] = {}
        for strategy in STRATEGIES:
            count = int(request.slots.get(strategy, 0))
            if count <= 0:
                continue
            if strategy != "crossover":
                groups.append(_Group(strategy, count, f"strategy_{strategy}", {"count": count},
                                     [request.incumbent_id]))
                continue
            parents = _crossover_parents(request)
            if parents is None:
                leftovers[strategy] = count
                self._say(f"LLM: crossover needs two finished candidates besides the incumbent; the "
                          f"{self.fallback.name} proposer fills {count} crossover slot(s).")
                continue
            a, b = parents
            values = {"count": count, **_parent_values("a", a), **_parent_values("b", b)}
            groups.append(_Group(strategy, count, "strategy_crossover", values,
                                 [request.incumbent_id, a.candidate_id, b.candidate_id]))
        return groups, leftovers

    # -- one group: call, check, repair
    def _run_group(self, request: ProposalRequest, group: _Group, seen: set[str], shared: "_Shared",
                   fill_missing: bool = True) -> _GroupResult:
        result = _GroupResult()
        try:
            ask = {"type": "text", "text": prompting.render(self.prompts_dir, group.template, **group.values)}
        except prompting.PromptError as exc:
            result.unfilled, result.why_unfilled = group.count, f"prompt template error: {exc}"
            return result
        first_turn = [*shared.blocks, ask]
        system, tool = shared.system, shared.tool
        messages: list[dict] = [{"role": "user", "content": first_turn}]
        accepted = 0
        rounds = self.settings.max_repairs + 1
        for attempt in range(1, rounds + 1):
            needed = group.count - accepted
            try:
                response, latency, sent = self._call(system, messages, tool, request.generation,
                                                     group.strategy, shared=shared)
            except _Stop as stop:
                result.unfilled, result.why_unfilled = needed, str(stop)
                return result
            answer = parse_answer(response.content, group.strategy, needed, response.stop_reason)
            failures = list(answer.failures)
            accepted_titles: list[str] = []
            for label, candidate in answer.candidates:
                if accepted >= group.count:
                    break
                proposal = self._check(request, group, candidate, attempt, seen)
                if proposal.accepted:
                    accepted += 1
                    accepted_titles.append(proposal.title)
                    result.proposals.append(proposal)
                else:
                    failures.append(Failure(label, proposal.rule or "rejected", proposal.reason or "", proposal))
            for failure in failures:
                if failure.proposal is not None:
                    failure.proposal.attempts = attempt
                    failure.proposal.parents = list(group.parents)
                    result.proposals.append(failure.proposal)
            self._record(response, latency, failures, answer.notes, request.generation, group.strategy,
                         kwargs=sent)
            if accepted >= group.count:
                return result
            if attempt == rounds:
                break
            messages.append({"role": "assistant", "content": response.content})
            messages.append({"role": "user", "content": self._repair_turn(answer, failures, group,
                                                                          group.count - accepted, accepted_titles)})
        missing = group.count - accepted
        if fill_missing and missing:
            result.unfilled = missing
            result.why_unfilled = (f"{missing} {group.strategy} candidate(s) still failing after "
                                   f"{self.settings.max_repairs} repair round(s)")
        else:
            result.why_unfilled = "no acceptable candidate after the repair rounds"
        return result

    def _check(self, request: ProposalRequest, group: _Group, candidate: _Candidate, attempt: int,
               seen: set[str]) -> Proposal:
        from sandbox.candidate import build_candidate
        edits = [{"search": e.search, "replace": e.replace} for e in candidate.edits]
        base = dict(strategy=group.strategy, title=candidate.title.strip() or "(untitled)",
                    hypothesis=candidate.hypothesis.strip(), edits=edits, parents=list(group.parents),
                    attempts=attempt, proposer=PROPOSER_NAME)
        # One lock for check + claim, so two concurrent groups cannot both accept the same version
        # (or two near twins: the round's index holds what this round accepted so far).
        twin = None
        with self._lock:
            check = build_candidate(request.incumbent_source, edits, seen)
            if check.ok and self._round_index is not None:
                twin = self._round_index.claim(f"this round's {group.strategy} candidate {base['title']!r}",
                                               check.source)
            if check.ok and twin is None:
                seen.add(check.fingerprint)
        if check.ok and twin is None:
            return Proposal(**base, accepted=True, source=check.source, diff=check.diff,
                            fingerprint=check.fingerprint)
        if twin is not None:
            return Proposal(**base, accepted=False, diff=check.diff or "", fingerprint=check.fingerprint or "",
                            rule="near-duplicate", reason=twin.reason(self._round_index.settings.knob_tolerance))
        return Proposal(**base, accepted=False, diff=check.diff or "", fingerprint=check.fingerprint or "",
                        rule=check.rule, reason=check.message)

    def _repair_turn(self, answer: ParsedAnswer, failures: list[Failure], group: _Group, count: int,
                     accepted_titles: list[str]) -> list[dict]:
        items = "\n".join(prompting.render(self.prompts_dir, "repair_item", label=f.label, rule=f.rule,
                                           message=f.message) for f in failures)
        text = prompting.render(self.prompts_dir, "repair", failures=items, count=count, strategy=group.strategy,
                                accepted=", ".join(repr(t) for t in accepted_titles) or "none")
        if not answer.tool_use_ids:
            return [{"type": "text", "text": text}]
        # Every tool_use needs its tool_result; is_error tells the model the call did not succeed.
        return [{"type": "tool_result", "tool_use_id": tid, "is_error": True,
                 "content": [{"type": "text", "text": text}]} for tid in answer.tool_use_ids]

    # -- the shared prefix and its warm-up
    def _ttl(self, request: ProposalRequest) -> str:
        """The cache lifetime: 1h when rounds are more than 5 minutes apart (measured between this
        proposer's rounds, or foreseen: one training run of the preset's budget already takes that
        long), else 5m, whose writes are cheaper (1.25x input against 2x)."""
        if self.settings.cache_ttl != "auto":
            return self.settings.cache_ttl
        now = time.monotonic()
        with self._lock:
            gap = None if self._last_round_at is None else now - self._last_round_at
            self._last_round_at = now
        foreseen = (request.budget_seconds or 0.0) >= FIVE_MINUTES
        return "1h" if (gap is not None and gap > FIVE_MINUTES) or (gap is None and foreseen) else "5m"

    def _shared_prefix(self, request: ProposalRequest) -> "_Shared":
        """tools -> system (program.md) -> train.py -> history: identical for every call of a round,
        with a breakpoint at its end so the per-strategy asks after it do not spoil it."""
        ttl = self._ttl(request)
        mark = {"type": "ephemeral", **({"ttl": ttl} if ttl != "5m" else {})}
        system = [{"type": "text", "text": prompting.render(self.prompts_dir, "system", program_md=request.program_md,
                                                            preset=request.preset), "cache_control": mark}]
        # train.py keeps its own breakpoint: the next round's history differs, its incumbent often not
        blocks = [{"type": "text", "text": prompting.render(self.prompts_dir, "incumbent",
                                                            incumbent_id=request.incumbent_id,
                                                            incumbent_source=request.incumbent_source),
                   "cache_control": mark},
                  {"type": "text", "text": prompting.render(self.prompts_dir, "history", generation=request.generation,
                                                            digest=request.digest or "(nothing yet)"),
                   "cache_control": mark}]
        return _Shared(system=system, blocks=blocks, tool=tool_definition(self.prompts_dir), ttl=ttl)

    def _warm_up(self, request: ProposalRequest, shared: "_Shared", efforts: list[str]) -> None:
        """max_tokens 0: the API writes the prefix and generates nothing (billed: the write). Why not
        let the first strategy call write it: the others would wait for its whole answer."""
        if not self.settings.warm_up or self.settings.tool_choice in ("any", "tool") or self._warm_up_refused:
            return      # max_tokens 0 cannot be combined with a forced tool choice (a 400)
        for effort in efforts:
            messages = [{"role": "user", "content": list(shared.blocks)}]
            try:
                response, latency, sent = self._call(shared.system, messages, shared.tool, request.generation,
                                                     "warm-up", shared=shared, effort=effort or None, warm=True)
            except _Stop as stop:
                if str(stop).startswith("API error") and not self._disabled:
                    # Refused (a 4xx, billed nothing): the API may not take max_tokens 0 with these
                    # settings (e.g. thinking). The calls still run, each writing the prefix itself;
                    # asking again every round would only add a refused request.
                    self._warm_up_refused = str(stop)
                    self._say(f"LLM: the cache warm-up was refused ({stop}); later rounds skip it, so each "
                              f"strategy call writes the shared prefix itself (llm.warm_up: false says the same)")
                return      # said and recorded; the strategy calls see the generation stop
            usage = getattr(response, "usage", None)
            if usage is not None:
                with self._lock:
                    shared.tokens = (usage.input_tokens or 0) + (usage.cache_creation_input_tokens or 0) \
                        + (usage.cache_read_input_tokens or 0)
            self._record(response, latency, [], [], request.generation, "warm-up", kwargs=sent)

    # -- the API call: cap, unreachable, errors
    def _effort(self, strategy: str) -> str | None:
        """The effort sent for `strategy`'s call: its own, or the round's (one_effort_per_round)."""
        model = llm_models.facts(self.settings.model)
        effort = self._round_effort if self._round_effort else \
            self.settings.effort.get(strategy) or self.settings.effort.get("moderate")
        return effort if model is not None and effort in model.efforts else None

    def _set_round_effort(self, strategies: list[str]) -> None:
        self._round_effort = None
        if self.settings.one_effort_per_round and strategies:
            wanted = [self.settings.effort.get(s) or self.settings.effort.get("moderate") for s in strategies]
            known = [e for e in wanted if e in llm_models.EFFORTS]
            self._round_effort = max(known, key=llm_models.EFFORTS.index) if known else None

    def _max_tokens(self, effort: str | None) -> int:
        model = llm_models.facts(self.settings.model)
        room = self.settings.max_tokens
        if model is not None and model.thinking_default_on:
            room += llm_models.THINKING_ROOM.get(effort or "high", llm_models.THINKING_ROOM["high"])
        return min(room, model.max_output) if model is not None else room

    def _call(self, system: list[dict], messages: list[dict], tool: dict, generation: int, strategy: str, *,
              shared: "_Shared | None" = None, effort: str | None = None, warm: bool = False):
        with self._lock:
            stop = self._disabled or self._generation_stop
        if stop:
            raise _Stop(stop)
        if not warm:
            effort = self._effort(strategy)
        kwargs: dict[str, Any] = dict(model=self.settings.model, max_tokens=0 if warm else self._max_tokens(effort),
                                      system=system, messages=messages if warm else _with_moving_breakpoint(messages),
                                      tools=[tool], tool_choice=self._tool_choice())
        extra: dict[str, Any] = {}
        facts = llm_models.facts(self.settings.model)
        if facts is not None and facts.thinking_default_on:
            # said explicitly rather than left to a default that may change; the same on every call
            # of a round (warm-up included), since a settings change spoils the cached prefix
            extra["thinking"] = {"type": "adaptive"}
        if effort:
            extra["output_config"] = {"effort": effort}
        if self.settings.temperature is not None:
            # SDK 2.x dropped the sampling parameters (current models refuse them, and config refuses
            # them for those); older models still take one through the raw body.
            extra["temperature"] = self.settings.temperature
        if extra:
            kwargs["extra_body"] = extra
        estimate = self._estimate(kwargs, shared)
        with self._lock:
            spent = self._spent_usd() + self._in_flight_usd
            if spent + estimate > self.settings.usd_cap:
                reason = (f"LLM dollar cap reached (${spent:.2f} spent or committed + ~${estimate:.2f} for the "
                          f"next call > llm.usd_cap ${self.settings.usd_cap:.2f})")
                self._generation_stop = reason
                raise _Stop(reason)
            self._in_flight_usd += estimate
        started = time.monotonic()
        attempts = self.settings.max_retries + 1
        try:
            # The SDK is the one retry layer (max_retries, timeout_s): nothing here retries again.
            response = self.client.messages.create(**kwargs)
            with self._lock:
                self._unreachable = None
            return response, time.monotonic() - started, kwargs
        except anthropic.APIConnectionError as exc:   # APITimeoutError included, after the SDK's retries
            took = time.monotonic() - started
            timed_out = isinstance(exc, anthropic.APITimeoutError)
            since = time.strftime("%H:%M:%S", time.localtime(time.time() - took))
            what = (f"no answer within llm.timeout_s {self.settings.timeout_s:g}s" if timed_out
                    else f"connection failed ({exc})")
            reason = (f"LLM unreachable since {since}: {what}, {attempts} attempt(s) in {took:.1f}s "
                      f"(llm.max_retries {self.settings.max_retries})")
            with self._lock:
                self._generation_stop = reason
                self._unreachable = (time.monotonic(), reason)
            # A request that timed out may have been processed and billed: booked at an estimate
            # (the prompt at the uncached input price, per attempt); a refused connection cost nothing.
            cost = self._prompt_tokens(kwargs) * self._prices.get("input", 0.0) / 1e6 * attempts if timed_out else 0.0
            self._record_failure("unreachable", reason + ("; cost estimated: no usage" if timed_out else ""),
                                 took, generation, strategy, cost_usd=cost)
            raise _Stop(reason) from None
        except anthropic.APIStatusError as exc:
            message = _api_error_text(exc)
            # refused (4xx) and failed (5xx) requests are not billed
            self._record_failure("error", message, time.monotonic() - started, generation, strategy)
            if exc.status_code in (401, 403, 404):
                # Bad key, no access, unknown model: every later call would fail the same way.
                with self._lock:
                    self._disabled = f"the API refused the request ({message})"
            raise _Stop(f"API error {message}") from None
        except anthropic.APIError as exc:
            self._record_failure("error", str(exc), time.monotonic() - started, generation, strategy)
            raise _Stop(f"API error {exc}") from None
        finally:
            with self._lock:
                self._in_flight_usd -= estimate

    def _tool_choice(self) -> dict:
        kind = self.settings.tool_choice
        if kind == "tool":
            return {"type": "tool", "name": TOOL_NAME, "disable_parallel_tool_use": True}
        return {"type": kind, "disable_parallel_tool_use": True}

    @staticmethod
    def _prompt_tokens(kwargs: dict) -> int:
        return len(json.dumps({k: kwargs[k] for k in ("system", "messages", "tools")}, default=str)) // CHARS_PER_TOKEN

    def _estimate(self, kwargs: dict, shared: "_Shared | None" = None) -> float:
        """Upper-bound dollars for one call, for the cap. Once a warm-up has reported the shared
        prefix's exact size, that part is priced as a cache read and only the rest is estimated
        (~4 chars a token, uncached); before that, everything is priced as a cache write."""
        prompt = self._prompt_tokens(kwargs)
        prefix = shared.tokens if shared is not None and shared.tokens else 0
        if prefix:
            rest = max(0, prompt - prefix)
            return call_cost(self._prices, rest, kwargs["max_tokens"], cache_read_tokens=prefix)
        write = self._prices.get("cache_write_1h" if shared is not None and shared.ttl == "1h" else "cache_write",
                                 self._prices.get("input", 0.0))
        return prompt * max(write, self._prices.get("input", 0.0)) / 1e6 + \
            call_cost(self._prices, 0, kwargs["max_tokens"])

    def _counted_tokens(self, kwargs: dict) -> tuple[int, str]:
        """The request's input tokens from count_tokens (free; no retries: this is only for the books),
        else the ~4-chars estimate; with the word saying which."""
        try:
            counted = self.client.with_options(max_retries=0).messages.count_tokens(
                **{k: v for k, v in kwargs.items() if k in ("model", "system", "messages", "tools", "tool_choice")})
            return int(counted.input_tokens), "count_tokens"
        except Exception:   # the books must not lose the candidates: fall back to the estimate
            return self._prompt_tokens(kwargs), "~4 chars/token"

    # -- recording
    def _record(self, response, latency: float, failures: list[Failure], notes: list[str],
                generation: int, strategy: str, shared: "_Shared | None" = None, kwargs: dict | None = None) -> None:
        usage = getattr(response, "usage", None)
        notes = list(notes)
        if usage is None:
            # A proxy that drops usage must not make the call free: the prompt at the uncached input
            # price and the answer's text, marked as an estimate.
            tokens, how = self._counted_tokens(kwargs) if kwargs else (0, "none")
            answer = len(json.dumps([b.model_dump() if hasattr(b, "model_dump") else str(b)
                                     for b in (response.content or [])], default=str)) // CHARS_PER_TOKEN
            input_tokens, output_tokens, read, write, write_1h = tokens, answer, 0, 0, 0
            notes.append(f"cost estimated: the response carried no usage (input by {how}, output ~4 chars/token)")
        else:
            input_tokens, output_tokens = usage.input_tokens or 0, usage.output_tokens or 0
            read = usage.cache_read_input_tokens or 0
            write = usage.cache_creation_input_tokens or 0
            split = getattr(usage, "cache_creation", None)
            write_1h = (getattr(split, "ephemeral_1h_input_tokens", 0) or 0) if split is not None else 0
        cost = call_cost(self._prices, input_tokens, output_tokens, read, write, write_1h)
        answer_level = [f for f in failures if f.proposal is None]
        if answer_level:
            outcome = answer_level[0].rule                # llm-no-tool | llm-malformed | llm-too-few
        elif failures:
            outcome = "rejected"                          # some candidates failed their checks
        else:
            outcome = "ok"
        error = "; ".join([f"{f.label}: [{f.rule}] {f.message}" for f in failures] + notes) or None
        self._emit(model=getattr(response, "model", None) or self.settings.model, input_tokens=input_tokens,
                   output_tokens=output_tokens, cache_read_tokens=read, cache_write_tokens=write,
                   cost_usd=cost, latency_s=latency, outcome=outcome, error=error,
                   purpose=f"propose:{strategy}", generation=generation)

    def _record_failure(self, outcome: str, error: str, latency: float, generation: int, strategy: str,
                        cost_usd: float = 0.0) -> None:
        self._emit(model=self.settings.model, input_tokens=0, output_tokens=0, cache_read_tokens=0,
                   cache_write_tokens=0, cost_usd=cost_usd, latency_s=latency, outcome=outcome, error=error,
                   purpose=f"propose:{strategy}", generation=generation)

    def _emit(self, **call) -> None:
        with self._lock:
            self._local_spent += call["cost_usd"]
        if self._record_call is None:
            return
        try:
            self._record_call(**call)
        except Exception as exc:  # recording must not lose the generation's candidates
            self._say(f"LLM: could not record a call in memory: {exc}")

    # -- fallback
    def _fallback(self, request: ProposalRequest, slots: dict[str, int], seen: set[str]) -> list[Proposal]:
        with self._lock:
            stop = self._disabled or self._generation_stop
        if stop:
            self._say(f"{stop[0].upper()}{stop[1:]}: using the {self.fallback.name} proposer for this generation.")
        sub = dataclasses.replace(request, slots=slots, seen_fingerprints=set(seen))
        try:
            return list(self.fallback.propose(sub))
        except Exception as exc:  # the fallback failing must not stop the run either
            self._say(f"The {self.fallback.name} proposer failed too ({exc}); {sum(slots.values())} slot(s) stay empty.")
            return []


# ----------------------------------------------------------------------------- helpers

def _with_moving_breakpoint(messages: list[dict]) -> list[dict]:
    """Mark the last block of the conversation for caching (repair rounds then read the earlier
    turns from the cache). Breakpoints: system, incumbent, this one: three of the four allowed."""
    out = [dict(m) for m in messages]
    last = out[-1]
    blocks = list(last["content"])
    final = dict(blocks[-1])
    final["cache_control"] = {"type": "ephemeral"}
    blocks[-1] = final
    out[-1] = {**last, "content": blocks}
    return out


def _crossover_parents(request: ProposalRequest) -> tuple[PastCandidate, PastCandidate] | None:
    """The two best finished candidates outside the incumbent's lineage: an ancestor's changes are
    in the incumbent already, so crossing with it would re-propose the incumbent."""
    excluded = set(request.lineage_ids) | {request.incumbent_id}
    pool = [c for c in request.recent
            if c.candidate_id not in excluded and c.diff and c.val_bpb is not None]
    return (pool[0], pool[1]) if len(pool) >= 2 else None


def _parent_values(tag: str, parent: PastCandidate) -> dict[str, Any]:
    return {f"parent_{tag}_id": parent.candidate_id, f"parent_{tag}_strategy": parent.strategy,
            f"parent_{tag}_title": parent.title, f"parent_{tag}_hypothesis": parent.hypothesis or "(none given)",
            f"parent_{tag}_val_bpb": f"{parent.val_bpb:.6f}" if parent.val_bpb is not None else "n/a",
            f"parent_{tag}_diff": parent.diff.rstrip("\n")}


def _api_error_text(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
    return f"{exc.status_code} {detail.get('type', '')}: {detail.get('message', exc.message)}".strip()
