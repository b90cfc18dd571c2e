"""Where each generation (a proposal round, in the async schedule) stands, kept in memory.

    proposing -> proposed -> launched -> selected

The phase is written before the step it names is acted on, so a killed process resumes at the
right step: a generation whose proposals are stored is never proposed again (no double LLM
spend), one that was launched is launched again (its finished executions are kept), one that is
`selected` is done unless `complete` is false (a budget or deadline left executions pending).
Autopilot, the REPL and dry runs all read generations through this module, so they agree.
"""
from __future__ import annotations

PROPOSING, PROPOSED, LAUNCHED, SELECTED = "proposing", "proposed", "launched", "selected"


def _key(generation: int) -> str:
    return f"generation/{generation:03d}"


def get_phase(memory, generation: int) -> dict:
    return memory.get_state(_key(generation), {}) or {}


def set_phase(memory, generation: int, **fields) -> dict:
    phase = {**get_phase(memory, generation), **fields}
    memory.set_state(_key(generation), phase)
    return phase


def is_done(memory, generation: int) -> bool:
    phase = get_phase(memory, generation)
    return phase.get("phase") == SELECTED and phase.get("complete", True)


def first_open_generation(memory, after: int = 0) -> int:
    """The first generation > `after` that is not done (it may not exist yet)."""
    generation = after + 1
    while is_done(memory, generation):
        generation += 1
    return generation


def generations_done(memory) -> int:
    """How many generations after the baseline are done, counting from 1 without gaps."""
    return first_open_generation(memory) - 1


def pending_generation(memory) -> int | None:
    """The oldest generation (> 0) holding candidates that is not done, or None (the REPL's
    "pending" generation)."""
    for generation in sorted({c["generation"] for c in memory.candidates() if c["generation"] > 0}):
        if not is_done(memory, generation):
            return generation
    return None
