"""The one place for the names every part of the project shares: execution statuses and their
groups, the harness's exit codes, execution kinds, and how a status shows in results.tsv.

STDLIB ONLY and import-free: this file ships next to harness.py into every candidate's fixed
bundle and every SageMaker job, where our packages are not installed.

An execution's status says what happened to one run of one candidate's train.py:

    pending        recorded, not started yet
    running        handed to a runner
    ok             trained within its budget, evaluated by prepare, every integrity check passed
    crash          train.py failed (exception, non-zero exit, NaN loss, no summary)
    timeout        the harness's hard limit ran out; the process group was killed
    over_budget    it trained longer than the budget allows (by the harness's own clock)
    integrity      a probe or a cross-check failed: the numbers cannot be trusted; never a result
    stopped_early  its loss curve was clearly losing against the incumbent's controls; stopped
    killed         stopped from outside (SIGTERM, shutdown, cancel): did not measure the code
    interrupted    stopped by Ctrl-C (SIGINT): did not measure the code
    lost           its orchestrator died and nothing came back: did not measure the code
    not_admitted   never started: the budget, the deadline or the backend's capacity said no
    rejected       (legacy, measurement v1) the old harness's word for an integrity failure
"""
from __future__ import annotations

PENDING, RUNNING = "pending", "running"
OK, CRASH, TIMEOUT, OVER_BUDGET, INTEGRITY = "ok", "crash", "timeout", "over_budget", "integrity"
STOPPED_EARLY, KILLED, INTERRUPTED, LOST = "stopped_early", "killed", "interrupted", "lost"
NOT_ADMITTED, REJECTED = "not_admitted", "rejected"

# What the harness can write into result.json, with its exit code (0 only for ok, so a SageMaker
# job of a failed candidate ends Failed). 1 = a bug in the harness, 2 = bad command line.
HARNESS_EXIT_CODES: dict[str, int] = {
    OK: 0, CRASH: 3, TIMEOUT: 4, REJECTED: 5, OVER_BUDGET: 6, KILLED: 7, INTERRUPTED: 8,
    INTEGRITY: 9, STOPPED_EARLY: 10,
}
HARNESS_STATUSES: tuple[str, ...] = tuple(HARNESS_EXIT_CODES)

# The run measured the candidate's code: it is judged and never re-run automatically.
RESULT_STATUSES: tuple[str, ...] = (OK, CRASH, TIMEOUT, OVER_BUDGET, INTEGRITY, STOPPED_EARLY, REJECTED)
# The run said nothing about the code (stopped from outside, or died with its orchestrator): the
# loop records a new attempt of it.
INEFFECTIVE_STATUSES: tuple[str, ...] = (KILLED, INTERRUPTED, LOST)
# Ended for good; a late result for such a row must not count twice.
TERMINAL_STATUSES: tuple[str, ...] = RESULT_STATUSES + INEFFECTIVE_STATUSES + (NOT_ADMITTED,)
UNFINISHED_STATUSES: tuple[str, ...] = (PENDING, RUNNING)
ALL_STATUSES: tuple[str, ...] = UNFINISHED_STATUSES + TERMINAL_STATUSES
# Result statuses that are failures of the candidate (reports count and list them).
FAILED_STATUSES: tuple[str, ...] = tuple(s for s in RESULT_STATUSES if s != OK)

# Why each execution exists.
CANDIDATE, BASELINE, CONTROL, CONFIRMATION, REPLAY = "candidate", "baseline", "control", "confirmation", "replay"
EXECUTION_KINDS: tuple[str, ...] = (CANDIDATE, BASELINE, CONTROL, CONFIRMATION, REPLAY)
# Kinds that measure the incumbent's noise and must never be stopped early.
PROTECTED_KINDS: tuple[str, ...] = (BASELINE, CONTROL, CONFIRMATION)


def is_result(status: str) -> bool:
    return status in RESULT_STATUSES


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def tsv_status(status: str, kept: bool) -> str:
    """The upstream results.tsv status (keep | discard | crash) of a finished execution."""
    if status == OK:
        return "keep" if kept else "discard"
    if status == STOPPED_EARLY:
        return "discard"      # it ran and was losing: a result, not a crash
    return "crash"


def check(status: str, allowed: tuple[str, ...] = ALL_STATUSES) -> str:
    """`status` if it is one of `allowed`, else ValueError naming the valid ones."""
    if status not in allowed:
        raise ValueError(f"unknown execution status {status!r}; expected one of {', '.join(allowed)}")
    return status
