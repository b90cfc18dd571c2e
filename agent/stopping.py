"""Early stopping, wired: the scheduler asks on every progress reading of a running candidate;
this module gathers what the rule needs and asks it (sandbox/early_stop_rule.py, pure).

The rule compares the candidate's loss curve so far, at equal progress, with the curves of the
current incumbent's finished ok runs: its baseline repeats, controls, confirmations and its own
candidate run - identical code, so together they give its curve and the spread of that curve.
Only runs on the same preset and backend count. Only candidate runs are ever stopped: never a
baseline, control or confirmation (they measure the incumbent) and never a replay (a re-run the
user asked for). The scheduler stops a losing candidate through runner.stop_early with the
decision's figures, which end up in its result under `early_stop`.
"""
from __future__ import annotations

from agent.early_stop import EarlyStopSettings
from sandbox import early_stop_rule
from sandbox.statuses import CANDIDATE, OK, REPLAY


class EarlyStopWatch:
    def __init__(self, memory, settings: EarlyStopSettings, *, preset: str, backend: str):
        self.memory, self.settings = memory, settings
        self.preset, self.backend = preset, backend
        self._partial: dict[str, list[list[float]]] = {}     # execution id -> readings so far
        self._cached: tuple[str | None, list] | None = None  # (incumbent, its reference curves)

    @classmethod
    def for_run(cls, ctx) -> "EarlyStopWatch":
        return cls(ctx.memory, ctx.settings.early_stop, preset=ctx.preset, backend=ctx.backend)

    @staticmethod
    def watches(row: dict) -> bool:
        return row["kind"] == CANDIDATE        # not PROTECTED_KINDS, not a replay

    def references(self) -> tuple[str | None, list]:
        incumbent = self.memory.incumbent_id()
        if self._cached is None or self._cached[0] != incumbent:
            rows = [] if incumbent is None else self.memory.executions(candidate_id=incumbent, status=OK)
            results = [row["result"] or {} for row in rows if row["kind"] != REPLAY
                       and row["preset"] == self.preset and row["backend"] == self.backend]
            self._cached = (incumbent, early_stop_rule.reference_curves(results))
        return self._cached

    def _deciding(self, row: dict) -> tuple[str, list] | None:
        """(incumbent, its reference curves) when the rule may judge this row now: early stopping
        is on, the row is a watched candidate of another candidate than the incumbent, and there
        are enough reference curves; else None."""
        if not self.settings.enabled or not self.watches(row):
            return None
        incumbent, curves = self.references()
        if incumbent is None or incumbent == row["candidate_id"] or len(curves) < self.settings.min_references:
            return None
        return incumbent, curves

    def rule_for(self, row: dict) -> dict | None:
        """The rule and its references as of now, for a job that must decide by itself (see
        ExecutionSpec.stop_rule); None when this row is not watched or nothing could decide."""
        deciding = self._deciding(row)
        if deciding is None:
            return None
        incumbent, curves = deciding
        return {"settings": self.settings.model_dump(), "references": curves, "incumbent": incumbent}

    def check(self, row: dict, pct: float, loss: float) -> dict | None:
        """Record the reading; None to let the run go on, else the reason for runner.stop_early
        (the decision's figures and which incumbent's curves they came from)."""
        if not self.settings.enabled or not self.watches(row):
            return None
        partial = self._partial.setdefault(row["id"], [])
        partial.append([float(pct), float(loss)])
        if pct < self.settings.min_progress:
            return None                  # the rule would say so too; this saves it the work
        deciding = self._deciding(row)
        if deciding is None:
            return None
        incumbent, curves = deciding
        decision = early_stop_rule.decide(curves, partial, self.settings)
        if not decision.stop:
            return None
        return {**decision.as_reason(), "incumbent": incumbent}

    def on_finished(self, row: dict) -> None:
        self._partial.pop(row["id"], None)
        if self._cached is not None and row["candidate_id"] == self._cached[0]:
            self._cached = None          # one more run of the incumbent: one more reference curve
