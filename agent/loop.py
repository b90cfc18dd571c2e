"""The autopilot: baseline, then generation after generation of propose -> check -> run -> select.

    autoresearch autopilot --run TAG [--generations M] [--population N] [--preset P]
        [--backend local|sagemaker] [--proposer llm|heuristic|auto] [--config PATH]
        [--budget-usd X] [--max-hours H] [--dry-run] [--json]

Generation 0 runs the unmodified project train.py `selection.baseline_repeats` times, so noise is
measured, not assumed. Every later generation proposes `population` candidates in the configured
strategy mix, re-runs the incumbent `selection.controls_per_generation` times as a control, and
selects with agent.selection.decide against sigma = memory.noise_sigma(); a marginal winner is
re-run once ("confirmation") before it may replace the incumbent. The incumbent of every generation
is committed on the git branch `autoresearch/<TAG>` and tagged `<TAG>/gen-NNN-best` when the
project folder is a git repository (the user's branch, index and working tree are left alone).

Everything is written to runs/<TAG>/memory.sqlite before it is acted on; the phase of each
generation (proposing -> proposed -> launched -> selected) lives there too, so running the same
command again continues where it stopped: finished results are kept exactly once, stored proposals
are not re-proposed (no double LLM spend), SageMaker jobs still running are re-attached, and work
that died with the process is marked `lost` and re-run as a new attempt.

Exit codes (the same with and without --json):
    0    completed: every requested generation was run and selected
    2    bad configuration or usage (the message names the file/key or the problem)
    3    budget exhausted before completion (--budget-usd / run.budget_usd): some executions were
         not launched; they stay pending and run when the command is repeated with more budget
    4    --max-hours reached: no new launches after the deadline, running ones finished
    5    no result: the baseline never produced a val_bpb, or every candidate execution crashed
    130  interrupted (Ctrl-C / SIGTERM): running executions were stopped and recorded `killed`;
         the same command resumes

--json prints one JSON object per line on stdout, each with an "event" key:
    generation_start {generation, population, incumbent, incumbent_val_bpb, sigma}
    proposed         {generation, accepted, rejected, candidates: [{id, strategy, title, accepted, rule}]}
    started          {execution, candidate, kind, strategy, title, job_id, attempt}
    progress         {execution, candidate, step, pct, loss, tok_per_s, elapsed_s, cost_usd}
    finished         {execution, candidate, kind, status, val_bpb, training_seconds, cost_usd, failure_reason}
    not_admitted     {execution, candidate, reason: budget|deadline}
    selected         {generation, previous, incumbent, changed, decisions: {candidate: verdict}, ...}
    plan             (dry run) {generation, candidate, kind, strategy, title, estimated_cost_usd}
    summary          {exit_code, reason, incumbent, incumbent_val_bpb, baseline_val_bpb, generations_done,
                      executions, spend, not_admitted, results_tsv}
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from agent.gitops import GitError, RunRepo
from agent.memory import MemoryStoreError
from agent.live import LiveView
from agent.proposers.base import STRATEGIES, ProposalRequest
from agent.results_tsv import write_results_tsv as _render_tsv, run_commits
from agent.scheduler import Pricing, RunBusyError, RunLock, ensure_workspace, recover_unfinished, \
    run_executions, spec_for
from sandbox.runners.base import BackendError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_DEADLINE = 4
EXIT_NO_RESULT = 5
EXIT_INTERRUPTED = 130

BASELINE_ID = "g000-baseline"
INEFFECTIVE = ("lost", "killed", "interrupted")   # did not measure the code: run it again
RESULT_STATUSES = ("ok", "crash", "timeout", "rejected", "over_budget")
FOLDER_SUFFIX = {"control": "control", "confirmation": "confirm", "replay": "replay", "baseline": "repeat",
                 "candidate": "rerun"}


class NoResultError(RuntimeError):
    """The baseline produced no val_bpb: nothing can be compared against it."""


# ============================================================================ small helpers
def write_results_tsv(memory, path: Path) -> None:
    """Render results.tsv from memory (atomic replace); commits resolved from the run's git repo."""
    _render_tsv(memory, Path(path), run_commits(memory))


def strategy_slots(mix: dict[str, int], population: int) -> dict[str, int]:
    """Scale the strategy weights to `population` slots: floors first, then the largest remainders
    (ties in STRATEGIES order), so the result is deterministic and sums to `population`."""
    total = sum(mix.values())
    order = [s for s in STRATEGIES if mix.get(s, 0) > 0]
    exact = {s: population * mix[s] / total for s in order}
    slots = {s: math.floor(exact[s]) for s in order}
    left = population - sum(slots.values())
    for s in sorted(order, key=lambda s: (-(exact[s] - slots[s]), STRATEGIES.index(s)))[:left]:
        slots[s] += 1
    return {s: n for s, n in slots.items() if n > 0}


def _phase_key(generation: int) -> str:
    return f"generation/{generation:03d}"


def get_phase(memory, generation: int) -> dict:
    return memory.get_state(_phase_key(generation), {}) or {}


def set_phase(memory, generation: int, **fields) -> dict:
    phase = {**get_phase(memory, generation), **fields}
    memory.set_state(_phase_key(generation), phase)
    return phase


def generation_dir(ctx, generation: int) -> Path:
    return ctx.run_dir / "generations" / f"gen_{generation:03d}"


def _folder(candidate_id: str, kind: str, slot: int) -> str:
    if kind in ("candidate", "baseline") and slot == 1:
        return candidate_id
    return f"{candidate_id}-{FOLDER_SUFFIX[kind]}-{slot}"


def _mean(values):
    return sum(values) / len(values) if values else None


def _say(ctx, text: str, style: str | None = None) -> None:
    ctx.console.print(text, style=style, highlight=False, soft_wrap=True, markup=False)


def _emit(ctx, event: str, **fields) -> None:
    if ctx.json_mode:
        import json
        sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        sys.stdout.flush()


def ensure_slots(ctx, candidate_id: str, generation: int, kind: str, count: int) -> list[str]:
    """Make sure `candidate_id` has `count` executions of `kind` in `generation` that measure (or
    will measure) the code; an execution that was lost/killed/interrupted gets a new attempt in
    the same folder. Returns the ids of the executions that are not finished (to run)."""
    mem = ctx.memory
    rows = mem.executions(generation=generation, candidate_id=candidate_id, kind=kind)
    pricing = Pricing(ctx)
    instance = ctx.settings.sagemaker.instance_type if ctx.backend == "sagemaker" else None
    to_run = []
    for slot in range(1, count + 1):
        ws = generation_dir(ctx, generation) / _folder(candidate_id, kind, slot)
        mine = [r for r in rows if Path(r["workspace"]) == ws]
        live = [r for r in mine if r["status"] not in INEFFECTIVE]
        if not live:
            eid = mem.add_execution(candidate_id=candidate_id, generation=generation, kind=kind,
                                    backend=ctx.backend, preset=ctx.preset, workspace=str(ws),
                                    instance_type=instance, attempt=len(mine) + 1,
                                    estimated_cost_usd=pricing.estimate(ctx.backend, ctx.preset, instance))
            to_run.append(eid)
        else:
            to_run += [r["id"] for r in live if r["status"] in ("pending", "running")]
    return to_run


def _repo(ctx) -> RunRepo | None:
    if not hasattr(ctx, "_run_repo"):
        try:
            ctx._run_repo = RunRepo.find(ctx.project_dir, ctx.tag)
        except (GitError, ValueError):
            ctx._run_repo = None
    return ctx._run_repo


def _git_safe(ctx, what: str, fn, *args):
    """Git bookkeeping must never stop the research: failures become an event and a warning."""
    try:
        return fn(*args)
    except (GitError, OSError) as exc:
        ctx.memory.log_event("git_error", {"what": what, "error": str(exc)})
        _say(ctx, f"warning: git {what} failed: {exc}", "yellow")
        return None


def commit_candidate(ctx, candidate_id: str, commits: dict[str, str] | None = None) -> str | None:
    """The candidate's commit (created once): its train.py on top of its first parent's commit.
    `commits` (candidate id -> sha, from repo.candidate_commits()) saves a git call per candidate
    and is updated in place."""
    repo = _repo(ctx)
    if repo is None:
        return None
    if commits is None:
        commits = repo.candidate_commits()
    if candidate_id in commits:
        return commits[candidate_id]
    cand = ctx.memory.candidate(candidate_id)
    parent = None
    if cand["parents"]:
        parent = commits.get(cand["parents"][0]) or commit_candidate(ctx, cand["parents"][0], commits)
    parent = parent or repo.branch_tip() or repo.user_head()
    sha = _git_safe(ctx, f"commit of {candidate_id}", repo.record_candidate, candidate_id,
                    cand["source"] or "", parent, _commit_message(ctx, cand))
    if sha:
        commits[candidate_id] = sha
    return sha


def _commit_message(ctx, cand: dict) -> str:
    title = cand["title"] if cand["id"] != BASELINE_ID else "baseline (project train.py)"
    message = f"autoresearch {ctx.tag} {cand['id']}: {title}"
    if cand.get("hypothesis"):
        message += f"\n\n{cand['hypothesis']}"
    return message


def commit_candidates(ctx, candidates: list[dict]) -> dict[str, str]:
    """Commit a generation's candidates in one git fast-import (parents committed first)."""
    repo = _repo(ctx)
    if repo is None:
        return {}
    commits = repo.candidate_commits()
    items = []
    for cand in candidates:
        if cand["id"] in commits:
            continue
        first = cand["parents"][0] if cand["parents"] else None
        parent = (commits.get(first) or commit_candidate(ctx, first, commits)) if first else None
        parent = parent or repo.branch_tip() or repo.user_head()
        items.append((cand["id"], cand["source"] or "", parent, _commit_message(ctx, cand)))
    if items:
        made = _git_safe(ctx, f"commit of {len(items)} candidate(s)", repo.record_candidates, items)
        commits.update(made or {})
    return commits


def _promote(ctx, generation: int, incumbent: str) -> None:
    """Advance autoresearch/<TAG> to the incumbent's commit and tag the generation."""
    repo = _repo(ctx)
    if repo is None:
        return
    sha = commit_candidate(ctx, incumbent)
    if sha:
        _git_safe(ctx, "branch update", repo.advance_branch, sha)
        _git_safe(ctx, "tag", repo.tag_generation, generation, sha)


# ============================================================================ generation 0
def baseline_source(ctx) -> str:
    path = ctx.project_dir / "train.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the project's train.py is the baseline")
    return path.read_text()


def add_baseline(ctx) -> str:
    from sandbox.fingerprint import fingerprint
    source = baseline_source(ctx)
    return ctx.memory.add_candidate(generation=0, strategy="baseline", title="baseline",
                                    hypothesis="the unmodified project train.py", fingerprint=fingerprint(source),
                                    source=source, check_status="accepted", origin="baseline")


def ensure_baseline(ctx, view: LiveView | None = None) -> None:
    """Generation 0: the baseline candidate run `baseline_repeats` times, then it is the incumbent.
    Raises NoResultError when none of its runs produced a val_bpb."""
    mem = ctx.memory
    cid = add_baseline(ctx)
    phase = get_phase(mem, 0)
    if phase.get("phase") == "selected" and phase.get("complete", True):
        return
    repeats = ctx.settings.selection.baseline_repeats
    _emit(ctx, "generation_start", generation=0, population=repeats, incumbent=None,
          incumbent_val_bpb=None, sigma=mem.noise_sigma())
    set_phase(mem, 0, phase="launched", incumbent=cid)
    ids = ensure_slots(ctx, cid, 0, "baseline", repeats)
    run_executions(ctx, ids, view=view)
    bpbs = mem.val_bpbs(cid, preset=ctx.preset)
    if not bpbs:
        left = getattr(ctx, "last_schedule", None)
        if left is not None and (left.not_admitted_budget or left.not_launched_deadline):
            return   # the loop reports budget/deadline; nothing to select yet
        failures = [e.get("failure_reason") for e in mem.executions(candidate_id=cid) if e["status"] != "ok"]
        raise NoResultError(f"the baseline train.py produced no val_bpb in {len(failures)} run(s): "
                            f"{failures[-1] if failures else 'no run finished'}")
    if mem.incumbent_id() is None:
        mem.set_state("incumbent", cid)
    pending = [e for e in mem.executions(generation=0) if e["status"] in ("pending", "running")]
    _promote(ctx, 0, cid)       # before the phase is marked: a kill in between re-does it (idempotent)
    set_phase(mem, 0, phase="selected", incumbent=cid, complete=not pending)
    mem.log_event("selected", {"generation": 0, "incumbent": cid, "val_bpb": _mean(bpbs)}, 0)
    _emit(ctx, "selected", generation=0, previous=None, incumbent=cid, changed=True,
          incumbent_val_bpb=_mean(bpbs), sigma=mem.noise_sigma(), decisions={})


# ============================================================================ proposing
def _program_md(ctx) -> str:
    path = ctx.project_dir / "program.md"
    return path.read_text() if path.is_file() else ""


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


def propose_generation(ctx, generation: int, population: int) -> list[str]:
    """Ask the proposer for `population` candidates and store every proposal (accepted and
    rejected). Launches nothing. Each call adds to the generation (the REPL may call it again)."""
    mem = ctx.memory
    incumbent = get_phase(mem, generation).get("incumbent") or mem.incumbent_id() or add_baseline(ctx)
    set_phase(mem, generation, phase="proposing", incumbent=incumbent)
    inc = mem.candidate(incumbent)
    recent = mem.recent_results()
    slots = strategy_slots(ctx.settings.strategy_mix, population)
    # crossover needs two finished parents besides the incumbent; until then those slots go to moderate
    if slots.get("crossover") and len([r for r in recent if r.candidate_id != incumbent]) < 2:
        slots["moderate"] = slots.get("moderate", 0) + slots.pop("crossover")
    request = ProposalRequest(
        incumbent_source=inc["source"], incumbent_id=incumbent, program_md=_program_md(ctx),
        digest=mem.digest(ctx.settings.llm.digest_token_budget), slots=slots, preset=ctx.preset,
        generation=generation, seed=ctx.settings.run.seed * 100_003 + generation, recent=recent,
        seen_fingerprints=mem.fingerprints())
    proposals = ctx.proposer.propose(request)
    seen = set(request.seen_fingerprints)
    preflight = _preflight_enabled(ctx)
    ids, listing = [], []
    for p in proposals:
        accepted, rule, reason = p.accepted, p.rule, p.reason
        if accepted and p.fingerprint in seen:   # belt and braces: never train identical code twice
            accepted, rule, reason = False, "duplicate", "identical to a candidate already tried in this run"
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
        ids.append(cid)
        listing.append({"id": cid, "strategy": p.strategy, "title": p.title, "accepted": accepted, "rule": rule})
    set_phase(mem, generation, phase="proposed", incumbent=incumbent)
    n_ok = sum(1 for x in listing if x["accepted"])
    mem.log_event("proposed", {"slots": slots, "accepted": n_ok, "rejected": len(listing) - n_ok}, generation)
    _emit(ctx, "proposed", generation=generation, accepted=n_ok, rejected=len(listing) - n_ok, candidates=listing)
    if not ctx.json_mode:
        _say(ctx, f"generation {generation}: {n_ok} candidate(s) accepted, {len(listing) - n_ok} rejected "
                  f"(slots {slots})")
        for x in listing:
            if not x["accepted"]:
                _say(ctx, f"  rejected {x['id']} [{x['strategy']}] {x['title']}: {x['rule']}", "dim")
    return ids


def _ensure_proposed(ctx, generation: int, population: int) -> None:
    """Propose once per generation: a generation whose proposals are stored (even partly, after a
    crash mid-way) is not proposed again, so LLM dollars are never spent twice."""
    phase = get_phase(ctx.memory, generation)
    if phase.get("phase") in ("proposed", "launched", "selected"):
        return
    if phase.get("phase") == "proposing" and ctx.memory.candidates(generation=generation):
        set_phase(ctx.memory, generation, phase="proposed")
        ctx.memory.log_event("resumed_partial_proposals", {}, generation)
        return
    propose_generation(ctx, generation, population)


# ============================================================================ launching + selection
def _generation_executions(ctx, generation: int, start_incumbent: str) -> list[str]:
    mem = ctx.memory
    ids = []
    accepted = [c for c in mem.candidates(generation=generation, check_status="accepted")
                if c["origin"] != "baseline"]
    commit_candidates(ctx, accepted)
    for cand in accepted:
        ids += ensure_slots(ctx, cand["id"], generation, "candidate", 1)
    ids += ensure_slots(ctx, start_incumbent, generation, "control",
                        ctx.settings.selection.controls_per_generation)
    # confirmations created by an earlier, interrupted selection still have to run
    ids += [e["id"] for e in mem.executions(generation=generation, kind="confirmation")
            if e["status"] in ("pending", "running")]
    return ids


def _judgeable(mem, generation: int) -> list[dict]:
    """Accepted candidates of the generation whose candidate executions all ended with a result."""
    out = []
    for cand in mem.candidates(generation=generation, check_status="accepted"):
        if cand["origin"] == "baseline":
            continue
        rows = [e for e in mem.executions(generation=generation, candidate_id=cand["id"])
                if e["kind"] in ("candidate", "confirmation")]
        if rows and all(e["status"] in RESULT_STATUSES + INEFFECTIVE for e in rows) \
                and any(e["status"] in RESULT_STATUSES for e in rows):
            out.append(cand)
    return out


def _decide_all(ctx, generation: int, start_incumbent: str) -> dict:
    from agent.selection import decide
    mem = ctx.memory
    inc_bpbs = mem.val_bpbs(start_incumbent, preset=ctx.preset)
    sigma = mem.noise_sigma()
    return {c["id"]: decide(mem.val_bpbs(c["id"], preset=ctx.preset), inc_bpbs, sigma,
                            ctx.settings.selection, candidate_id=c["id"])
            for c in _judgeable(mem, generation)}


def select_generation(ctx, generation: int, start_incumbent: str, view: LiveView | None = None) -> dict:
    """Judge the generation's candidates against the incumbent it started with; re-run marginal
    winners once; promote the best clear winner."""
    from agent.selection import count_noise, pick_winner
    mem = ctx.memory
    if not mem.val_bpbs(start_incumbent, preset=ctx.preset):
        raise NoResultError(f"incumbent {start_incumbent} has no ok run to compare against")
    decisions = _decide_all(ctx, generation, start_incumbent)
    # a marginal winner gets one confirmation run (a new attempt if the earlier one was lost/killed)
    marginal = [cid for cid, d in decisions.items() if d.verdict == "confirm"
                and not any(e["status"] not in INEFFECTIVE for e in
                            mem.executions(generation=generation, candidate_id=cid, kind="confirmation"))]
    if marginal:
        ids = []
        for cid in marginal:
            mem.log_event("confirmation", {"candidate": cid, "reason": decisions[cid].reason}, generation)
            ids += ensure_slots(ctx, cid, generation, "confirmation", 1)
        run_executions(ctx, ids, view=view)
        decisions = _decide_all(ctx, generation, start_incumbent)
    for cid, d in decisions.items():
        verdict, reason = d.verdict, d.reason
        if verdict == "confirm":   # the confirmation run failed or was not admitted: not proven
            verdict, reason = "noise", f"confirmation run did not produce a result; not kept; {d.reason}"
        mem.record_decision(cid, verdict=verdict, delta=d.delta, threshold=d.threshold, reason=reason,
                            generation=generation)
        decisions[cid] = d if verdict == d.verdict else dataclasses.replace(d, verdict=verdict, reason=reason)
    winner = pick_winner(decisions)
    previous = mem.incumbent_id()
    new_incumbent = winner.candidate_id if winner else start_incumbent
    if new_incumbent != previous:
        mem.set_state("incumbent", new_incumbent)
    accepted = [c for c in mem.candidates(generation=generation, check_status="accepted")]
    counted = {c["id"] for c in accepted} | {start_incumbent}     # a dropped candidate's leftovers do not count
    unfinished = [e for e in mem.executions(generation=generation)
                  if e["status"] in ("pending", "running") and e["candidate_id"] in counted]
    complete = not unfinished and len(_judgeable(mem, generation)) + _never_ran(mem, generation) >= len(accepted)
    _promote(ctx, generation, new_incumbent)   # before the phase is marked: a kill in between re-does it
    set_phase(mem, generation, phase="selected", incumbent=start_incumbent, winner=new_incumbent,
              complete=complete)
    inc_bpbs = mem.val_bpbs(new_incumbent, preset=ctx.preset)
    summary = {"generation": generation, "previous": previous, "incumbent": new_incumbent,
               "changed": new_incumbent != previous, "incumbent_val_bpb": _mean(inc_bpbs),
               "delta": winner.delta if winner else None, "sigma": mem.noise_sigma(),
               "threshold": winner.threshold if winner else (next(iter(decisions.values())).threshold
                                                             if decisions else None),
               "noise_rejected": count_noise(decisions), "complete": complete,
               "decisions": {cid: d.verdict for cid, d in decisions.items()}}
    mem.log_event("selected", summary, generation)
    _emit(ctx, "selected", **summary)
    if not ctx.json_mode:
        if winner:
            _say(ctx, f"generation {generation}: new incumbent {new_incumbent} "
                      f"(val_bpb {_mean(inc_bpbs):.6f}, delta {winner.delta:+.6f} > threshold {winner.threshold:.6f})",
                 "bold green")
        else:
            _say(ctx, f"generation {generation}: incumbent {new_incumbent} stays "
                      f"({summary['noise_rejected']} apparent win(s) rejected as noise)", "bold")
    return summary


def _never_ran(mem, generation: int) -> int:
    """Accepted candidates that were dropped before running (REPL) count as done."""
    return sum(1 for c in mem.candidates(generation=generation, check_status="accepted")
               if c["origin"] != "baseline" and not mem.executions(generation=generation, candidate_id=c["id"]))


def launch_generation(ctx, generation: int, view: LiveView | None = None) -> dict:
    """Run the generation's accepted, not-yet-run candidates plus the incumbent's controls, then
    select, commit/tag and render results.tsv. Returns the selection summary (with
    `not_admitted`/`deadline` lists when the budget or deadline left executions pending)."""
    mem = ctx.memory
    phase = get_phase(mem, generation)
    start_incumbent = phase.get("incumbent") or mem.incumbent_id()
    if start_incumbent is None:
        raise NoResultError("no incumbent yet: run the baseline (generation 0) first")
    set_phase(mem, generation, phase="launched", incumbent=start_incumbent)
    inc_bpb = _mean(mem.val_bpbs(start_incumbent, preset=ctx.preset))
    _emit(ctx, "generation_start", generation=generation,
          population=len(mem.candidates(generation=generation, check_status="accepted")),
          incumbent=start_incumbent, incumbent_val_bpb=inc_bpb, sigma=mem.noise_sigma())
    if not ctx.json_mode:
        _say(ctx, f"generation {generation}: running against incumbent {start_incumbent}"
                  + (f" (val_bpb {inc_bpb:.6f})" if inc_bpb is not None else ""), "bold")
    ids = _generation_executions(ctx, generation, start_incumbent)
    run_executions(ctx, ids, view=view)
    left = ctx.last_schedule
    summary = select_generation(ctx, generation, start_incumbent, view=view)
    if view is not None:
        view.set_header(incumbent=summary["incumbent"], incumbent_bpb=summary["incumbent_val_bpb"],
                        sigma=summary["sigma"])
    summary["not_admitted"] = list(left.not_admitted_budget)
    summary["deadline"] = list(left.not_launched_deadline)
    if getattr(ctx, "last_schedule", None) is not left:   # confirmations ran: merge what they left
        summary["not_admitted"] += ctx.last_schedule.not_admitted_budget
        summary["deadline"] += ctx.last_schedule.not_launched_deadline
    write_results_tsv(mem, ctx.run_dir / "results.tsv")
    return summary


# ============================================================================ autopilot
def _budget_left(ctx) -> float | None:
    if ctx.budget_usd is None:
        return None
    return ctx.budget_usd - ctx.memory.spend()["total_usd"]


def run_autopilot(ctx, *, generations: int, population: int, max_hours: float | None,
                  budget_usd: float | None) -> int:
    """Run (or resume) the loop; returns the exit code (see the module docstring)."""
    ctx.budget_usd = budget_usd
    ctx.deadline = ctx.started_at + max_hours * 3600 if max_hours else None
    ctx.memory.log_event("autopilot_start", {"generations": generations, "population": population,
                                             "budget_usd": budget_usd, "max_hours": max_hours,
                                             "dry_run": ctx.dry_run})
    if ctx.dry_run:
        return dry_run_plan(ctx, population)
    code, reason = EXIT_OK, "completed"
    try:
        with RunLock.for_run(ctx.run_dir):
            view = LiveView(ctx.console, json_mode=ctx.json_mode)
            with view:
                recovered = recover_unfinished(ctx)
                if recovered["lost"] or recovered["reattached"]:
                    view.say(f"resume: {len(recovered['lost'])} execution(s) lost with the previous process "
                             f"(re-run as new attempts), {len(recovered['reattached'])} re-attached", "yellow")
                code, reason = _drive(ctx, generations, population, view)
    except (RunBusyError, MemoryStoreError, FileNotFoundError) as exc:
        # another process drives the run, or the run cannot continue as asked (e.g. train.py
        # changed under a resumed run: its baseline would no longer be the baseline)
        _say(ctx, str(exc), "red")
        code, reason = EXIT_USAGE, str(exc)
    except NoResultError as exc:
        _say(ctx, str(exc), "red")
        code, reason = EXIT_NO_RESULT, str(exc)
    except BackendError as exc:
        # the backend is not usable as configured: nothing was the candidates' fault; executions
        # not started stay pending, jobs already running are re-attached when the command is repeated
        _say(ctx, f"{exc}\nthe same command resumes once this is fixed", "red")
        code, reason = EXIT_USAGE, str(exc)
    except (KeyboardInterrupt, SystemExit):
        code, reason = EXIT_INTERRUPTED, "interrupted; run the same command again to resume"
    ctx.memory.log_event("autopilot_end", {"exit_code": code, "reason": reason})
    write_results_tsv(ctx.memory, ctx.run_dir / "results.tsv")
    print_summary(ctx, code, reason)
    return code


def _drive(ctx, generations: int, population: int, view: LiveView) -> tuple[int, str]:
    mem = ctx.memory
    ensure_baseline(ctx, view)
    stop = _stopped(ctx)
    if stop:
        return stop
    if mem.incumbent_id() is None:
        return EXIT_BUDGET, "budget exhausted before the baseline finished"
    for generation in range(1, generations + 1):
        phase = get_phase(mem, generation)
        if phase.get("phase") == "selected" and phase.get("complete", True):
            continue
        if ctx.deadline is not None and time.time() >= ctx.deadline:
            return EXIT_DEADLINE, f"max-hours reached before generation {generation}"
        left = _budget_left(ctx)
        if left is not None and left <= 0:
            return EXIT_BUDGET, f"budget exhausted before generation {generation}"
        _ensure_proposed(ctx, generation, population)
        launch_generation(ctx, generation, view)
        stop = _stopped(ctx)
        if stop:
            return stop
    ran = [e for e in mem.executions(kind="candidate") if e["status"] in RESULT_STATUSES]
    if generations >= 1 and ran and not any(e["status"] == "ok" for e in ran):
        return EXIT_NO_RESULT, f"every candidate execution ({len(ran)}) crashed or was rejected"
    return EXIT_OK, "completed"


def _stopped(ctx) -> tuple[int, str] | None:
    left = getattr(ctx, "last_schedule", None)
    if left is None:
        return None
    if left.not_launched_deadline:
        return EXIT_DEADLINE, f"max-hours reached: {len(left.not_launched_deadline)} execution(s) not launched"
    if left.not_admitted_budget:
        return EXIT_BUDGET, f"budget exhausted: {len(left.not_admitted_budget)} execution(s) not launched"
    return None


# ============================================================================ dry run
def dry_run_plan(ctx, population: int) -> int:
    """Propose and check the next generation, show what would run and its estimated cost, launch
    nothing. With the SageMaker backend, write each CreateTrainingJob request next to its candidate."""
    mem = ctx.memory
    pricing = Pricing(ctx)
    instance = ctx.settings.sagemaker.instance_type if ctx.backend == "sagemaker" else None
    each = pricing.estimate(ctx.backend, ctx.preset, instance)
    baseline = add_baseline(ctx)
    plan: list[dict] = []
    if get_phase(mem, 0).get("phase") != "selected":
        for slot in range(1, ctx.settings.selection.baseline_repeats + 1):
            plan.append({"generation": 0, "candidate": baseline, "kind": "baseline", "strategy": "baseline",
                         "title": "baseline", "folder": _folder(baseline, "baseline", slot)})
    generation = next(g for g in range(1, 10_000)
                      if not (get_phase(mem, g).get("phase") == "selected" and get_phase(mem, g).get("complete", True)))
    _ensure_proposed(ctx, generation, population)
    start = get_phase(mem, generation).get("incumbent") or baseline
    rejected = []
    for cand in mem.candidates(generation=generation):
        if cand["check_status"] == "accepted":
            if not mem.executions(generation=generation, candidate_id=cand["id"], kind="candidate"):
                plan.append({"generation": generation, "candidate": cand["id"], "kind": "candidate",
                             "strategy": cand["strategy"], "title": cand["title"], "folder": cand["id"]})
        else:
            rejected.append(cand)
    for slot in range(1, ctx.settings.selection.controls_per_generation + 1):
        plan.append({"generation": generation, "candidate": start, "kind": "control", "strategy": "control",
                     "title": f"control: re-run of incumbent {start}", "folder": _folder(start, "control", slot)})
    left = _budget_left(ctx)
    for row in plan:
        row["estimated_cost_usd"] = each
        row["admitted"] = left is None or each <= left + 1e-12
        if left is not None and row["admitted"]:
            left -= each
        _emit(ctx, "plan", **row)
    written = _dry_run_requests(ctx, plan) if ctx.backend == "sagemaker" else []
    total = each * len(plan)
    if not ctx.json_mode:
        table = Table(title=f"dry run: {ctx.tag} ({ctx.backend}, preset {ctx.preset}) - nothing is launched")
        for col in ("gen", "candidate", "kind", "strategy", "title", "est. $", "budget"):
            table.add_column(col, justify="right" if col in ("gen", "est. $") else "left")
        for row in plan:
            table.add_row(str(row["generation"]), row["candidate"], row["kind"], escape(row["strategy"]),
                          escape(row["title"][:60]), f"{row['estimated_cost_usd']:.4f}",
                          "fits" if row["admitted"] else "[yellow]over[/yellow]")
        ctx.console.print(table)
        for cand in rejected:
            _say(ctx, f"rejected {cand['id']} [{cand['strategy']}] {cand['title']}: {cand['rule']} "
                      f"{(cand.get('reason') or '')[:120]}", "dim")
        over = sum(1 for row in plan if not row["admitted"])
        _say(ctx, f"{len(plan)} execution(s), estimated ${total:.4f}"
                  + (f"; budget ${ctx.budget_usd:.2f}: {over} would not be admitted" if ctx.budget_usd else ""))
        for path in written:
            _say(ctx, f"wrote {path}")
    mem.log_event("dry_run", {"generation": generation, "executions": len(plan), "estimated_usd": total,
                              "requests": [str(p) for p in written]})
    _emit(ctx, "summary", exit_code=EXIT_OK, reason="dry run: nothing launched", dry_run=True,
          executions=len(plan), estimated_cost_usd=total, rejected=len(rejected),
          not_admitted=sum(1 for row in plan if not row["admitted"]),
          requests=[str(p) for p in written])
    return EXIT_OK


def _dry_run_requests(ctx, plan: list[dict]) -> list[Path]:
    """Build each planned workspace and write its CreateTrainingJob request JSON (no AWS call)."""
    from sandbox.runners.base import ExecutionSpec
    from sandbox.runners.sagemaker import write_dry_run_requests
    specs = []
    for i, row in enumerate(plan, 1):
        ws = generation_dir(ctx, row["generation"]) / row["folder"]
        fake = {"id": f"dry{i:04d}", "candidate_id": row["candidate"], "generation": row["generation"],
                "kind": row["kind"], "workspace": str(ws), "preset": ctx.preset}
        cand = ctx.memory.candidate(row["candidate"])
        ensure_workspace(ctx, fake, cand)
        spec = spec_for(ctx, fake, cand)
        specs.append(ExecutionSpec(execution_id=f"{row['folder']}", workspace=spec.workspace,
                                   preset=spec.preset, label=spec.label, tags=spec.tags))
    try:
        return write_dry_run_requests(specs, ctx.settings, run_tag=ctx.tag)
    except Exception as exc:   # e.g. no bucket configured: say so, the plan is still useful
        _say(ctx, f"could not write the SageMaker requests: {exc}", "yellow")
        ctx.memory.log_event("dry_run_requests_failed", {"error": str(exc)})
        return []


# ============================================================================ summary
def summary_data(ctx, code: int, reason: str) -> dict:
    mem = ctx.memory
    inc = mem.incumbent_id()
    spend = mem.spend()
    base = mem.val_bpbs(BASELINE_ID, preset=ctx.preset) if _has_candidate(mem, BASELINE_ID) else []
    inc_bpbs = mem.val_bpbs(inc, preset=ctx.preset) if inc else []
    not_admitted = [e["payload"] for e in mem.events("not_admitted")
                    if mem.execution(e["payload"]["execution"])["status"] == "pending"]
    executions = mem.executions()
    done, g = [], 0
    while get_phase(mem, g).get("phase") == "selected":
        done.append(g)
        g += 1
    by_status: dict[str, int] = {}
    for e in executions:
        by_status[e["status"]] = by_status.get(e["status"], 0) + 1
    return {"exit_code": code, "reason": reason, "run": ctx.tag, "incumbent": inc,
            "incumbent_val_bpb": _mean(inc_bpbs), "baseline_val_bpb": _mean(base),
            "improvement": (_mean(base) - _mean(inc_bpbs)) if base and inc_bpbs else None,
            "sigma": mem.noise_sigma(), "generations_done": len([g for g in done if g > 0]),
            "executions": by_status, "spend": {k: v for k, v in spend.items() if k != "by_generation"},
            "not_admitted": not_admitted, "results_tsv": str(ctx.run_dir / "results.tsv")}


def _has_candidate(mem, cid: str) -> bool:
    try:
        mem.candidate(cid)
        return True
    except KeyError:
        return False


def print_summary(ctx, code: int, reason: str) -> dict:
    data = summary_data(ctx, code, reason)
    _emit(ctx, "summary", **data)
    if ctx.json_mode:
        return data
    table = Table(title=escape(f"run {ctx.tag}: {reason} (exit {code})"), show_header=False)
    table.add_column("what")
    table.add_column("value")
    fmt = lambda v: "-" if v is None else f"{v:.6f}"   # noqa: E731
    table.add_row("incumbent", f"{data['incumbent'] or '-'} (val_bpb {fmt(data['incumbent_val_bpb'])})")
    table.add_row("baseline val_bpb", fmt(data["baseline_val_bpb"]))
    table.add_row("improvement", "-" if data["improvement"] is None else f"{data['improvement']:+.6f}")
    table.add_row("noise sigma", fmt(data["sigma"]))
    table.add_row("generations done", str(data["generations_done"]))
    table.add_row("executions", ", ".join(f"{k} {v}" for k, v in sorted(data["executions"].items())) or "-")
    s = data["spend"]
    table.add_row("spend", f"${s['total_usd']:.4f} (compute ${s['compute_usd']:.4f}, LLM ${s['llm_usd']:.4f})")
    if data["not_admitted"]:
        table.add_row("not launched", escape(", ".join(f"{x['candidate']} ({x['reason']})" for x in data["not_admitted"])))
    table.add_row("results", data["results_tsv"])
    ctx.console.print(table)
    return data


# ============================================================================ CLI entry
def autopilot_command(run: str, generations: int | None = None, population: int | None = None,
                      preset: str | None = None, backend: str | None = None, proposer: str | None = None,
                      config: str | Path | None = None, budget_usd: float | None = None,
                      max_hours: float | None = None, dry_run: bool = False, json_mode: bool = False,
                      project_dir: Path | None = None) -> int:
    """Everything `autoresearch autopilot` does; returns the exit code."""
    from rich.console import Console

    from agent.config import ConfigError, load_settings
    from agent.memory import MemoryStoreError
    from agent.run_context import open_run
    err = Console(stderr=True)

    def usage_error(message: str) -> int:
        err.print(f"[red]{message}[/red]", highlight=False)
        if json_mode:
            _emit_raw({"event": "summary", "exit_code": EXIT_USAGE, "reason": message})
        return EXIT_USAGE

    project_dir = Path(project_dir or Path.cwd())
    overrides = {"run.generations": generations, "run.population": population, "run.preset": preset,
                 "run.backend": backend, "run.proposer": proposer, "run.budget_usd": budget_usd,
                 "run.max_hours": max_hours}
    try:
        default_cfg = project_dir / "config.yaml"
        settings = load_settings(config or (default_cfg if default_cfg.is_file() else None), overrides)
    except ConfigError as exc:
        return usage_error(str(exc))
    try:
        ctx = open_run(settings, run, project_dir, backend=backend, proposer=proposer, preset=preset,
                       create=True, dry_run=dry_run, json_mode=json_mode)
    except (ValueError, LookupError, FileNotFoundError, MemoryStoreError, RunBusyError) as exc:
        return usage_error(str(exc))
    try:
        return run_autopilot(ctx, generations=settings.run.generations, population=settings.run.population,
                             max_hours=settings.run.max_hours, budget_usd=settings.run.budget_usd)
    finally:
        ctx.close()


def _emit_raw(obj: dict) -> None:
    import json
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
