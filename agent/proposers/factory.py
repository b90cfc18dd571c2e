"""Which proposer a run uses: `llm`, `heuristic`, or `auto` (llm when ANTHROPIC_API_KEY is set).

The LLM proposer always carries the heuristic one as its fallback (no key, API unreachable,
dollar cap reached), and records its calls and reads its spend through the run's memory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.proposers.base import Proposer

KINDS = ("auto", "llm", "heuristic")


def make_proposer(kind: str, settings, *, memory=None, console=None, prompts_dir: Path) -> Proposer:
    """Build the proposer named by `kind` (run.proposer or --proposer)."""
    if kind not in KINDS:
        raise ValueError(f"unknown proposer {kind!r}; expected one of {', '.join(KINDS)}")
    from agent.proposers.heuristic import HeuristicProposer
    heuristic = HeuristicProposer(seed=settings.run.seed)
    if kind == "heuristic":
        return heuristic
    if kind == "auto" and not os.environ.get("ANTHROPIC_API_KEY"):
        _say(console, "Proposer: heuristic (ANTHROPIC_API_KEY is not set; set it to use the LLM proposer).")
        return heuristic
    from agent.proposers.llm import LLMProposer
    record_call = memory.record_llm_call if memory is not None else None
    spent_usd = (lambda: float(memory.spend()["llm_usd"])) if memory is not None else None
    if kind == "auto":
        _say(console, f"Proposer: llm ({settings.llm.model}), with the heuristic proposer as fallback.")
    return LLMProposer(settings.llm, prompts_dir=Path(prompts_dir), fallback=heuristic, record_call=record_call,
                       spent_usd=spent_usd, console=console)


def _say(console, message: str) -> None:
    if console is not None:
        console.print(message, markup=False, highlight=False)
    else:
        print(message, file=sys.stderr, flush=True)
