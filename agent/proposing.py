"""Asking the proposer for a round of candidates, and storing every answer.

One `ProposalRequest` rule for everyone (autopilot, the async schedule, the REPL's `add`): the
request is built from the incumbent, program.md, the digest, the strategy slots and
`seed = run.seed * 100_003 + generation`, so the same run, seed and generation propose the same
candidates whoever asks. Every proposal is stored, accepted or rejected, before anything runs.

The time a proposal round takes advances the runner's clock: the wall clock has moved by itself;
the simulated backend's virtual clock moves by the modelled `simulated.proposal_latency_s` per
round (an LLM round-trip; the real seconds the round took would make a simulated run differ
from one invocation to the next), so slots idle while the loop proposes there too.
"""
from __future__ import annotations

from agent import notebook
from agent.allocation import allocate, strategy_slots
from agent.baseline import add_baseline
from agent.digest import build_digest, lineage, recent_results
from agent.experiment_facts import experiment_facts
from agent.novelty import NoveltyIndex
from agent.phases import LAUNCHED, PROPOSED, PROPOSING, SELECTED, get_phase, set_phase
from agent.proposers.base import ProposalRequest

SEED_STRIDE = 100_003       # a prime: run seeds and generations never collide


def request_for(ctx, generation: int, incumbent: dict, slots: dict[str, int]) -> ProposalRequest:
    program = ctx.layout.program_md
    return ProposalRequest(
        incumbent_source=incumbent["source"], incumbent_id=incumbent["id"],
        program_md=program.read_text() if program.is_file() else "",
        digest=build_digest(ctx.memory, ctx.settings.llm.digest_token_budget, experiment=experiment_facts(ctx),
                            notebook=notebook.prompt_lines(ctx.memory)),
        slots=slots, preset=ctx.preset,
        generation=generation, seed=ctx.settings.run.seed * SEED_STRIDE + generation,
        recent=recent_results(ctx.memory), seen_fingerprints=ctx.memory.fingerprints(),
        budget_seconds=_budget_seconds(ctx), novelty=tried_index(ctx),
        lineage_ids={c["id"] for c in lineage(ctx.memory)})


def tried_index(ctx) -> NoveltyIndex:
    """The run's accepted sources (the baseline included), for near-duplicate rejection."""
    index = NoveltyIndex(ctx.settings.novelty)
    for c in ctx.memory.candidates(check_status="accepted"):
        if c.get("source"):
            index.add(c["id"], c["source"])
    return index


def _budget_seconds(ctx) -> float | None:
    """One training run's budget in seconds (prepare.py's preset table, or its override)."""
    from sandbox.presets import time_budget
    try:
        return time_budget(ctx.preset, ctx.layout.prepare_py)
    except Exception:   # an unreadable prepare.py is reported where it is run; here it only tunes caching
        return None


def _crossover_needs_parents(request: ProposalRequest) -> None:
    """Crossover needs two finished parents outside the incumbent's lineage; until then its slots
    go to moderate."""
    slots = request.slots
    parents = [r for r in request.recent
               if r.candidate_id != request.incumbent_id and r.candidate_id not in request.lineage_ids]
    if slots.get("crossover") and len(parents) < 2:
        slots["moderate"] = slots.get("moderate", 0) + slots.pop("crossover")


def _preflight_enabled(ctx) -> bool:
    mode = ctx.settings.run.preflight
    return mode == "always" or (mode == "auto" and ctx.backend == "sagemaker" and not ctx.dry_run)


def _preflight(ctx, proposal) -> tuple[bool, str | None, str | None]:
    """A few micro-preset steps on this machine; a crash here would have crashed the paid job too."""
    from sandbox.preflight import preflight
    result = preflight(proposal.source, ctx.project_dir)
    if result.skipped:
        ctx.memory.log_event("preflight_skipped", {"reason": result.reason})
    if result.ok:
        return True, None, None
    return False, "preflight", result.reason


def propose_round(ctx, generation: int, population: int, *, incumbent_id: str | None = None) -> list[str]:
    """Ask the proposer for `population` candidates against the incumbent (the generation's own,
    else `incumbent_id`, else the current one, else the baseline) and store every proposal.
    Launches nothing. Each call adds to the generation (the REPL may call it again)."""
    mem = ctx.memory
    incumbent = get_phase(mem, generation).get("incumbent") or incumbent_id or mem.incumbent_id() \
        or add_baseline(ctx)
    set_phase(mem, generation, phase=PROPOSING, incumbent=incumbent)
    write_notebook(ctx, generation - 1)
    # the slots that do not start from the incumbent go first, so that whatever they fail to fill
    # the main round fills (a silent LLM never loses a slot)
    side = _side_proposals(ctx, generation, incumbent, population)
    main = population - sum(1 for p in side if p.accepted)
    request = request_for(ctx, generation, mem.candidate(incumbent), allocate(ctx, generation, main))
    _crossover_needs_parents(request)
    slots = request.slots
    proposals = side + ctx.proposer.propose(request)
    if ctx.simulated:
        ctx.clock.advance(ctx.settings.simulated.proposal_latency_s)
    seen = set(request.seen_fingerprints)
    tried = request.novelty.fork() if request.novelty is not None else None
    preflight = _preflight_enabled(ctx)
    ids, listing = [], []
    for p in proposals:
        accepted, rule, reason = p.accepted, p.rule, p.reason
        twin = None
        if accepted and p.fingerprint in seen:   # belt and braces: never train identical code twice
            accepted, rule, reason = False, "duplicate", "identical to a candidate already tried in this run"
        elif accepted and tried is not None and p.source and (twin := tried.twin(p.source)) is not None:
            # whoever proposed it (the LLM checks within its round too), a near twin gets no slot
            accepted, rule, reason = False, "near-duplicate", twin.reason(ctx.settings.novelty.knob_tolerance)
        if accepted and preflight:
            accepted, rule, reason = _preflight(ctx, p)
        if accepted:
            seen.add(p.fingerprint)
        cid = mem.add_candidate(generation=generation, strategy=p.strategy, title=p.title or "(untitled)",
                                hypothesis=p.hypothesis or "", edits=list(p.edits or []),
                                parents=list(p.parents or [incumbent]), diff=p.diff or "",
                                fingerprint=p.fingerprint or "", source=p.source,
                                check_status="accepted" if accepted else "rejected", rule=rule, reason=reason,
                                proposer=p.proposer or getattr(ctx.proposer, "name", ""), origin="proposed",
                                attempts=p.attempts or 1)
        if accepted and tried is not None and p.source:
            tried.add(cid, p.source)
        if twin is not None:
            mem.log_event("near_duplicate", {"candidate": cid, "twin": twin.other, "distance": twin.distance,
                                             "detail": twin.detail}, generation)
        ids.append(cid)
        listing.append({"id": cid, "strategy": p.strategy, "title": p.title, "accepted": accepted, "rule": rule})
    set_phase(mem, generation, phase=PROPOSED, incumbent=incumbent)
    n_ok = sum(1 for x in listing if x["accepted"])
    mem.log_event("proposed", {"slots": slots, "accepted": n_ok, "rejected": len(listing) - n_ok}, generation)
    ctx.emit("proposed", generation=generation, accepted=n_ok, rejected=len(listing) - n_ok, candidates=listing)
    if not ctx.json_mode:
        ctx.say(f"generation {generation}: {n_ok} candidate(s) accepted, {len(listing) - n_ok} rejected "
                f"(slots {slots})")
        for x in listing:
            if not x["accepted"]:
                ctx.say(f"  rejected {x['id']} [{x['strategy']}] {x['title']}: {x['rule']}", "dim")
    return ids


def _side_proposals(ctx, generation: int, incumbent: str, population: int) -> list:
    """A repair of a promising crash (one slot, proposers that take an idea) and the branch share
    from a promising non-incumbent (agent/exploration.py); [] when there is nothing promising or
    the population leaves no room beside the main round."""
    from agent import exploration
    settings = ctx.settings.exploration
    out: list = []
    room = population - 1                       # the main round keeps at least one slot
    if settings.repair_crashes and room >= 1 and hasattr(ctx.proposer, "propose_from_idea"):
        crash = exploration.promising_crash(ctx)
        if crash is not None:
            candidate, execution = crash
            request = request_for(ctx, generation, candidate, {"moderate": 1})
            proposal = ctx.proposer.propose_from_idea(exploration.repair_idea(candidate, execution), request)
            if not str(proposal.title).startswith("repair:"):
                proposal.title = f"repair: {proposal.title}"   # how later rounds know it was repaired
            out.append(proposal)
            room -= 1
    n = int(population * settings.branch_share)
    branch = exploration.promising_branch(ctx, incumbent) if n >= 1 and room >= n else None
    if branch is not None:
        mix = {s: w for s, w in ctx.settings.strategy_mix.items() if s != "crossover" and w > 0} \
            or {"moderate": 1}
        request = request_for(ctx, generation, branch, strategy_slots(mix, n))
        ctx.memory.log_event("branch", {"from": branch["id"], "slots": request.slots}, generation)
        out.extend(ctx.proposer.propose(request))
    return out


def write_notebook(ctx, through_generation: int, *, force: bool = False) -> None:
    """The lab notebook's entry for what finished so far, when one is due; never stops the run."""
    try:
        entry = notebook.update(ctx, through_generation, force=force)
    except Exception as exc:   # lessons are a help, not a condition of the run
        ctx.say(f"lab notebook: could not write an entry ({exc})", "yellow")
        return
    if entry is not None and not ctx.json_mode:
        ctx.say(f"lab notebook ({entry['author']}), through generation {through_generation}:", "dim")
        for line in entry["lines"]:
            ctx.say(f"  - {line}", "dim")


def ensure_proposed(ctx, generation: int, population: int, *, incumbent_id: str | None = None) -> None:
    """Propose once per generation: a generation whose proposals are stored (even partly, after a
    crash mid-way) is not proposed again, so LLM dollars are never spent twice."""
    phase = get_phase(ctx.memory, generation)
    if phase.get("phase") in (PROPOSED, LAUNCHED, SELECTED):
        return
    if phase.get("phase") == PROPOSING and ctx.memory.candidates(generation=generation):
        set_phase(ctx.memory, generation, phase=PROPOSED)
        ctx.memory.log_event("resumed_partial_proposals", {}, generation)
        return
    propose_round(ctx, generation, population, incumbent_id=incumbent_id)
