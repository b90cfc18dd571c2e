"""Generation 0: the project's unmodified train.py, run `selection.baseline_repeats` times so the
noise is measured, not assumed; then it is the first incumbent.

`baseline_executions` records (or finds) its runs, `settle_baseline` judges them once they
ended: the incumbent is set, the branch is tagged `<TAG>/gen-000-best`, the phase is `selected`.
The generations schedule drains the runs in between; the async schedule launches candidates
alongside them and settles when they are done.
"""
from __future__ import annotations

from agent.commits import promote
from agent.digest import noise_sigma
from agent.executions import ensure_slots
from agent.phases import LAUNCHED, SELECTED, is_done, set_phase
from agent.memory import BASELINE_ID
from agent.scheduler import Stop
from sandbox.fingerprint import fingerprint
from sandbox.statuses import BASELINE, OK, UNFINISHED_STATUSES


class NoResultError(RuntimeError):
    """The baseline produced no val_bpb: nothing can be compared against it."""


def baseline_source(ctx) -> str:
    path = ctx.layout.train_py
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the project's train.py is the baseline")
    return path.read_text()


def add_baseline(ctx) -> str:
    source = baseline_source(ctx)
    return ctx.memory.add_candidate(generation=0, strategy="baseline", title="baseline",
                                    hypothesis="the unmodified project train.py", fingerprint=fingerprint(source),
                                    source=source, check_status="accepted", origin="baseline")


def baseline_done(ctx) -> bool:
    return is_done(ctx.memory, 0)


def baseline_executions(ctx) -> list[str]:
    """The baseline's runs still to do (none once generation 0 is selected)."""
    cid = add_baseline(ctx)
    if baseline_done(ctx):
        return []
    repeats = ctx.settings.selection.baseline_repeats
    ctx.emit("generation_start", generation=0, population=repeats, incumbent=None, incumbent_val_bpb=None,
             sigma=noise_sigma(ctx.memory))
    set_phase(ctx.memory, 0, phase=LAUNCHED, incumbent=cid)
    return ensure_slots(ctx, cid, 0, BASELINE, repeats)


def settle_baseline(ctx, left_undone: bool = False) -> bool:
    """After the baseline's runs: make it the incumbent. Returns False when there is nothing to
    settle yet (runs left pending by a budget or deadline); raises NoResultError when every run
    ended without a val_bpb."""
    mem = ctx.memory
    bpbs = mem.val_bpbs(BASELINE_ID, preset=ctx.preset)
    if not bpbs:
        if left_undone:
            return False        # the loop reports budget/deadline; nothing to select yet
        failures = [e.get("failure_reason") for e in mem.executions(candidate_id=BASELINE_ID) if e["status"] != OK]
        raise NoResultError(f"the baseline train.py produced no val_bpb in {len(failures)} run(s): "
                            f"{failures[-1] if failures else 'no run finished'}")
    if mem.incumbent_id() is None:
        mem.set_state("incumbent", BASELINE_ID)
    pending = [e for e in mem.executions(generation=0) if e["status"] in UNFINISHED_STATUSES]
    promote(ctx, 0, BASELINE_ID)   # before the phase is marked: a kill in between re-does it (idempotent)
    set_phase(mem, 0, phase=SELECTED, incumbent=BASELINE_ID, complete=not pending)
    mean = sum(bpbs) / len(bpbs)
    mem.log_event(SELECTED, {"generation": 0, "incumbent": BASELINE_ID, "val_bpb": mean}, 0)
    ctx.emit("selected", generation=0, previous=None, incumbent=BASELINE_ID, changed=True,
             incumbent_val_bpb=mean, sigma=noise_sigma(mem), decisions={})
    return True


def ensure_baseline(ctx, scheduler) -> "Stop | None":
    """Generation 0 to the end: its runs drained, then settled. A Stop when a budget or deadline
    left runs of it pending."""
    if baseline_done(ctx):
        add_baseline(ctx)       # refuses a changed train.py on resume
        return None
    outcome = scheduler.drain(baseline_executions(ctx))
    settle_baseline(ctx, left_undone=outcome.left_undone)
    return outcome.stop()
