"""The LLM proposer: Anthropic's Messages API through the official SDK, one tool, repair rounds.

One call per strategy group, run concurrently (bounded by llm.max_concurrent_calls). Why per
group rather than one call for the whole generation: each strategy has its own instructions and
size of change, the answers stay short (no max_tokens truncation of a ten-candidate answer), a
bad answer only costs its own group a repair round, and the static prefix (tool, system prompt
with program.md, incumbent train.py) is marked for prompt caching so the extra calls mostly
read it from the cache.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import anthropic
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from agent import prompting
from agent.ledger import llm_cost
from agent.proposers.base import STRATEGIES, PastCandidate, Proposal, ProposalRequest, Proposer

TOOL_NAME = "propose_candidates"
CHARS_PER_TOKEN = 4          # rough prompt-size estimate for the dollar cap
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
              cache_read_tokens: int = 0, cache_write_tokens: int = 0) -> float:
    """USD for one call at `prices` (one model's USD-per-million rates), through the ledger."""
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens,
             "cache_read_tokens": cache_read_tokens, "cache_write_tokens": cache_write_tokens}
    return llm_cost("priced", usage, {"priced": prices})


# ----------------------------------------------------------------------------- the proposer

class _Unreachable(Exception):
    """Connection errors have persisted past llm.unreachable_after_s."""


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
        self._unreachable_since: float | None = None
        self._unreachable_error = ""
        self._disabled: str | None = None       # a reason every later call would fail too (no key, 401)
        self._said: set[str] = set()
        self._generation_stop: str | None = None
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
    def propose(self, request: ProposalRequest) -> list[Proposal]:
        with self._lock:
            self._said.clear()
            self._generation_stop = None
        seen = set(request.seen_fingerprints)
        if self._disabled:
            return self._fallback(request, {s: n for s, n in request.slots.items() if n > 0}, seen)
        groups, leftovers = self._groups(request)
        results: list[_GroupResult] = []
        if groups:
            workers = max(1, min(self.settings.max_concurrent_calls, len(groups)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
                results = list(pool.map(lambda g: self._run_group(request, g, seen), groups))
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
        with self._lock:
            self._said.clear()
            self._generation_stop = None
        wanted = [s for s, n in request.slots.items() if n > 0]
        strategy = wanted[0] if len(wanted) == 1 else "moderate"
        group = _Group(strategy, 1, "idea", {"idea": idea.strip(), "strategy": strategy}, [request.incumbent_id])
        result = self._run_group(request, group, set(request.seen_fingerprints), fill_missing=False)
        accepted = [p for p in result.proposals if p.accepted]
        if accepted:
            return accepted[0]
        if result.proposals:
            return result.proposals[-1]
        return Proposal(strategy=strategy, title=idea.strip()[:80], hypothesis=idea.strip(), edits=[],
                        parents=[request.incumbent_id], accepted=False, rule="llm-unavailable",
                        reason=result.why_unfilled or "the LLM gave no candidate", proposer=PROPOSER_NAME)

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
    def _run_group(self, request: ProposalRequest, group: _Group, seen: set[str],
                   fill_missing: bool = True) -> _GroupResult:
        result = _GroupResult()
        try:
            system = [{"type": "text", "text": prompting.render(self.prompts_dir, "system",
                                                                program_md=request.program_md,
                                                                preset=request.preset),
                       "cache_control": {"type": "ephemeral"}}]
            first_turn = [
                {"type": "text", "text": prompting.render(self.prompts_dir, "incumbent",
                                                          incumbent_id=request.incumbent_id,
                                                          incumbent_source=request.incumbent_source),
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": prompting.render(self.prompts_dir, "history",
                                                          generation=request.generation,
                                                          digest=request.digest or "(nothing yet)")},
                {"type": "text", "text": prompting.render(self.prompts_dir, group.template, **group.values)},
            ]
            tool = tool_definition(self.prompts_dir)
        except prompting.PromptError as exc:
            # A broken template is the operator's to fix; say it and let the fallback keep the run going.
            result.unfilled, result.why_unfilled = group.count, f"prompt template error: {exc}"
            return result
        messages: list[dict] = [{"role": "user", "content": first_turn}]
        accepted = 0
        rounds = self.settings.max_repairs + 1
        for attempt in range(1, rounds + 1):
            needed = group.count - accepted
            try:
                response, latency = self._call(system, messages, tool, request.generation, group.strategy)
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
            self._record(response, latency, failures, answer.notes, request.generation, group.strategy)
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
        # One lock for check + claim, so two concurrent groups cannot both accept the same version.
        with self._lock:
            check = build_candidate(request.incumbent_source, edits, seen)
            if check.ok:
                seen.add(check.fingerprint)
        if check.ok:
            return Proposal(**base, accepted=True, source=check.source, diff=check.diff,
                            fingerprint=check.fingerprint)
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

    # -- the API call: cap, unreachable, errors
    def _call(self, system: list[dict], messages: list[dict], tool: dict, generation: int, strategy: str):
        with self._lock:
            stop = self._disabled or self._generation_stop
        if stop:
            raise _Stop(stop)
        kwargs: dict[str, Any] = dict(model=self.settings.model, max_tokens=self.settings.max_tokens,
                                      system=system, messages=_with_moving_breakpoint(messages), tools=[tool],
                                      tool_choice=self._tool_choice())
        if self.settings.temperature is not None:
            # SDK 2.x dropped the sampling parameters (current models refuse them); older models
            # still take one through the raw body.
            kwargs["extra_body"] = {"temperature": self.settings.temperature}
        estimate = self._estimate(kwargs)
        with self._lock:
            spent = self._spent_usd() + self._in_flight_usd
            if spent + estimate > self.settings.usd_cap:
                reason = (f"LLM dollar cap reached (${spent:.2f} spent or committed + ~${estimate:.2f} for the "
                          f"next call > llm.usd_cap ${self.settings.usd_cap:.2f})")
                self._generation_stop = reason
                raise _Stop(reason)
            self._in_flight_usd += estimate
        started = time.monotonic()
        try:
            response = self._create_with_reachability(kwargs)
            return response, time.monotonic() - started
        except _Unreachable as exc:
            self._record_failure("unreachable", str(exc), time.monotonic() - started, generation, strategy)
            raise _Stop(str(exc)) from None
        except anthropic.APIStatusError as exc:
            message = _api_error_text(exc)
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

    def _create_with_reachability(self, kwargs: dict):
        """Connection errors (after the SDK's own retries) are retried here until they have
        persisted llm.unreachable_after_s; then this generation goes to the fallback."""
        def gave_up(state: RetryCallState) -> bool:
            with self._lock:
                since = self._unreachable_since
            return since is not None and time.time() - since >= self.settings.unreachable_after_s

        def note_failure(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            with self._lock:
                if self._unreachable_since is None:
                    self._unreachable_since = time.time()
                self._unreachable_error = str(exc)

        retrying = Retrying(retry=retry_if_exception_type(anthropic.APIConnectionError),
                            stop=gave_up, before_sleep=None, after=note_failure,
                            wait=wait_exponential(multiplier=0.5, max=30), reraise=True)
        try:
            response = retrying(self.client.messages.create, **kwargs)
        except anthropic.APIConnectionError:
            with self._lock:
                since = time.strftime("%H:%M:%S", time.localtime(self._unreachable_since or time.time()))
                reason = f"LLM unreachable since {since} ({self._unreachable_error})"
                self._generation_stop = reason
            raise _Unreachable(reason) from None
        with self._lock:
            self._unreachable_since = None
        return response

    def _estimate(self, kwargs: dict) -> float:
        """Upper-bound dollars for one call: the whole prompt at the uncached input price plus
        max_tokens of output."""
        prompt_chars = len(json.dumps({k: kwargs[k] for k in ("system", "messages", "tools")}, default=str))
        return call_cost(self._prices, prompt_chars // CHARS_PER_TOKEN, self.settings.max_tokens)

    # -- recording
    def _record(self, response, latency: float, failures: list[Failure], notes: list[str],
                generation: int, strategy: str) -> None:
        usage = response.usage
        read = usage.cache_read_input_tokens or 0
        write = usage.cache_creation_input_tokens or 0
        cost = call_cost(self._prices, usage.input_tokens, usage.output_tokens, read, write)
        answer_level = [f for f in failures if f.proposal is None]
        if answer_level:
            outcome = answer_level[0].rule                # llm-no-tool | llm-malformed | llm-too-few
        elif failures:
            outcome = "rejected"                          # some candidates failed their checks
        else:
            outcome = "ok"
        error = "; ".join([f"{f.label}: [{f.rule}] {f.message}" for f in failures] + notes) or None
        self._emit(model=getattr(response, "model", None) or self.settings.model, input_tokens=usage.input_tokens,
                   output_tokens=usage.output_tokens, cache_read_tokens=read, cache_write_tokens=write,
                   cost_usd=cost, latency_s=latency, outcome=outcome, error=error,
                   purpose=f"propose:{strategy}", generation=generation)

    def _record_failure(self, outcome: str, error: str, latency: float, generation: int, strategy: str) -> None:
        self._emit(model=self.settings.model, input_tokens=0, output_tokens=0, cache_read_tokens=0,
                   cache_write_tokens=0, cost_usd=0.0, latency_s=latency, outcome=outcome, error=error,
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
    pool = [c for c in request.recent
            if c.candidate_id != request.incumbent_id and c.diff and c.val_bpb is not None]
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
