"""The autopilot: the baseline, then propose -> check -> run -> select -> remember, unattended.

    autoresearch autopilot [--run TAG] [--generations M] [--population N] [--preset P]
        [--backend local|sagemaker|simulated] [--schedule async|generations]
        [--proposer llm|heuristic|auto] [--config PATH] [--budget-usd X] [--max-hours H]
        [--dry-run] [--json]

Generation 0 runs the unmodified project train.py `selection.baseline_repeats` times, so noise is
measured, not assumed. Then one of two schedules (`run.schedule`):
  * async (agent/async_schedule.py, the default): no barrier; whenever a slot frees, the next
    candidate runs (proposed against the incumbent of its moment), a result is judged against the
    incumbent current when it arrives, a confirmed win becomes the incumbent at once, and controls
    and confirmations are interleaved. A "generation" is a proposal round of `population`
    candidates, so results.tsv, the git tags, the REPL and replay read the same;
  * generations (agent/generations.py): propose `population` candidates, run them with
    `selection.controls_per_generation` control re-runs of the incumbent, wait for the slowest,
    select against the incumbent the generation started with.
A marginal winner is re-run once ("confirmation") before it may replace the incumbent. With
`early_stop.enabled`, a candidate whose loss curve is clearly losing against the incumbent's own
runs at equal progress is stopped (`stopped_early`, the deciding figures kept); baseline,
control, confirmation and replay runs never are.

Everything is written to runs/<TAG>/memory.sqlite before it is acted on, so running the same
command again continues where it stopped: finished results are kept exactly once, stored
proposals are not re-proposed (no double LLM spend), SageMaker jobs still running are
re-attached, and work that died with the process is marked `lost` and re-run as a new attempt.
A run whose results were measured under another measurement version than the project's
prepare.py measures is not resumed (exit 2; the message says what to do instead).

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
    early_stop       {execution, candidate, pct, candidate_loss, reference_mean, spread, threshold, reason, ...}
    incumbent        (async) {candidate, previous, val_bpb, delta, threshold}: a confirmed win, at once
    selected         {generation, previous, incumbent, changed, decisions: {candidate: verdict}, ...}
    plan             (dry run) {generation, candidate, kind, strategy, title, estimated_cost_usd}
    summary          {exit_code, reason, incumbent, incumbent_val_bpb, baseline_val_bpb, generations_done,
                      executions, spend, not_admitted, early_stopped, compute_saved_s, slot_utilization,
                      slots, time_to_best_s,
                      backend, simulated, schedule, results_tsv}
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.async_schedule import run_async
from agent.baseline import NoResultError
from agent.dry_run import dry_run_plan
from agent.generations import run_generations
from agent.layout import new_run_tag
from agent.live import emit_json
from agent.memory import MemoryStoreError
from agent.proposing import write_notebook
from agent.recovery import recover_unfinished
from agent.results_tsv import write_run_results
from agent.run_context import Limits, require_comparable
from agent.runlock import RunBusyError
from agent.scheduler import Scheduler
from agent.stopping import EarlyStopWatch
from agent.summary import print_summary
from sandbox.runners.base import BackendError
from sandbox.statuses import CANDIDATE, OK, RESULT_STATUSES, STOPPED_EARLY

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_DEADLINE = 4
EXIT_NO_RESULT = 5
EXIT_INTERRUPTED = 130
STOP_EXITS = {"budget": EXIT_BUDGET, "deadline": EXIT_DEADLINE}
SCHEDULES = {"generations": run_generations, "async": run_async}


def run_autopilot(ctx, *, generations: int, population: int, budget_usd: float | None = None,
                  max_hours: float | None = None) -> int:
    """Run (or resume) the loop on an opened run; returns the exit code (see the docstring).
    `budget_usd`/`max_hours` set this invocation's limits (else the context's stand)."""
    if budget_usd is not None or max_hours is not None:
        ctx = with_limits(ctx, budget_usd=budget_usd, max_hours=max_hours)
    ctx.memory.log_event("autopilot_start", {"generations": generations, "population": population,
                                             "backend": ctx.backend, "schedule": ctx.settings.run.schedule,
                                             "budget_usd": ctx.limits.budget_usd,
                                             "dry_run": ctx.dry_run})
    if ctx.dry_run:
        return dry_run_plan(ctx, population)
    scheduler = None
    try:
        require_comparable(ctx)
        scheduler = Scheduler(ctx, early_stop=EarlyStopWatch.for_run(ctx))
        with scheduler:
            code, reason = _drive(ctx, scheduler, generations, population)
    except (RunBusyError, MemoryStoreError, FileNotFoundError) as exc:
        # another process drives the run, or the run cannot continue as asked (train.py changed
        # under a resumed run; results measured under another measurement version)
        code, reason = EXIT_USAGE, str(exc)
        ctx.say(reason, "red")
    except NoResultError as exc:
        code, reason = EXIT_NO_RESULT, str(exc)
        ctx.say(reason, "red")
    except BackendError as exc:
        # the backend is not usable as configured: nothing was the candidates' fault; executions
        # not started stay pending, jobs already running are re-attached when the command is repeated
        code, reason = EXIT_USAGE, str(exc)
        ctx.say(f"{exc}\nthe same command resumes once this is fixed", "red")
    except (KeyboardInterrupt, SystemExit):
        code, reason = EXIT_INTERRUPTED, "interrupted; run the same command again to resume"
    ctx.memory.log_event("autopilot_end", {"exit_code": code, "reason": reason})
    write_run_results(ctx.memory, ctx.run_dir)
    print_summary(ctx, code, reason, scheduler)
    return code


def _drive(ctx, scheduler, generations: int, population: int) -> tuple[int, str]:
    """Resume what the last process left, run the configured schedule, say how it ended."""
    recovered = recover_unfinished(ctx)
    if recovered["lost"] or recovered["reattached"]:
        ctx.say(f"resume: {len(recovered['lost'])} execution(s) lost with the previous process (re-run as new "
                f"attempts), {len(recovered['reattached'])} re-attached", "yellow")
    stop = SCHEDULES[ctx.settings.run.schedule](ctx, scheduler, generations, population)
    if not ctx.dry_run:      # the last generation's lessons (earlier ones were written before each round)
        write_notebook(ctx, max((c["generation"] for c in ctx.memory.candidates()), default=0), force=True)
    if stop is not None:
        return STOP_EXITS[stop.kind], stop.reason
    if ctx.memory.incumbent_id() is None:
        return EXIT_BUDGET, "budget exhausted before the baseline finished"
    ran = [e for e in ctx.memory.executions(kind=CANDIDATE) if e["status"] in RESULT_STATUSES]
    # a run stopped early measured a losing candidate: a result, not a failure
    if generations >= 1 and ran and not any(e["status"] in (OK, STOPPED_EARLY) for e in ran):
        return EXIT_NO_RESULT, f"every candidate execution ({len(ran)}) crashed or was rejected"
    return EXIT_OK, "completed"


# ============================================================================ CLI entry
def autopilot_command(run: str | None = None, generations: int | None = None, population: int | None = None,
                      preset: str | None = None, backend: str | None = None, proposer: str | None = None,
                      schedule: str | None = None, config: str | Path | None = None,
                      budget_usd: float | None = None, max_hours: float | None = None, dry_run: bool = False,
                      json_mode: bool = False, project_dir: Path | None = None) -> int:
    """Everything `autoresearch autopilot` does; returns the exit code."""
    from rich.console import Console

    from agent.config import ConfigError, load_settings
    from agent.run_context import open_run
    err = Console(stderr=True)

    def usage_error(message: str) -> int:
        err.print(f"[red]{message}[/red]", highlight=False)
        if json_mode:
            emit_json("summary", exit_code=EXIT_USAGE, reason=message)
        return EXIT_USAGE

    project_dir = Path(project_dir or Path.cwd())
    overrides = {"run.generations": generations, "run.population": population, "run.preset": preset,
                 "run.backend": backend, "run.proposer": proposer, "run.schedule": schedule,
                 "run.budget_usd": budget_usd, "run.max_hours": max_hours}
    try:
        default_cfg = project_dir / "config.yaml"
        settings = load_settings(config or (default_cfg if default_cfg.is_file() else None), overrides)
    except ConfigError as exc:
        return usage_error(str(exc))
    for note in settings.notes:    # keys of another pipeline's file: what each is ignored for, and the fix
        err.print(f"config: {note}", style="yellow", highlight=False, markup=False)
    if run is None:      # a new run; the summary (and this line) name it for resuming
        run = new_run_tag(project_dir / settings.run.runs_dir, simulated=settings.run.backend == "simulated")
        err.print(f"new run {run} (resume it with --run {run})", highlight=False)
    try:
        ctx = open_run(settings, run, project_dir, backend=backend, proposer=proposer, preset=preset,
                       create=True, dry_run=dry_run, json_mode=json_mode)
    except (ValueError, LookupError, FileNotFoundError, MemoryStoreError, RunBusyError) as exc:
        return usage_error(str(exc))
    try:
        return run_autopilot(ctx, generations=settings.run.generations, population=settings.run.population,
                             budget_usd=settings.run.budget_usd, max_hours=settings.run.max_hours)
    finally:
        ctx.close()


def with_limits(ctx, *, budget_usd: float | None, max_hours: float | None):
    """The context with this invocation's limits; the deadline is on the runner's clock."""
    deadline = ctx.clock.now() + max_hours * 3600 if max_hours else None
    return dataclasses.replace(ctx, limits=Limits(budget_usd=budget_usd, deadline=deadline))
