"""The config section `early_stop:`, validated. The rule itself, and what each guard is for, is
sandbox/early_stop_rule.py (stdlib only, because a network-isolated packed SageMaker job runs it
too)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sandbox.early_stop_rule import RuleSettings

_DEFAULT = RuleSettings()


class EarlyStopSettings(BaseModel):
    """Config section `early_stop:`; the defaults are RuleSettings'."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = _DEFAULT.enabled
    min_progress: float = Field(_DEFAULT.min_progress, ge=0, le=100)   # % of the budget before any stop
    k: float = Field(_DEFAULT.k, ge=0)                 # band half-width in reference spreads
    min_gap: float = Field(_DEFAULT.min_gap, ge=0)     # the band's floor, x the reference mean loss
    patience: int = Field(_DEFAULT.patience, ge=1)     # consecutive losing readings needed
    min_references: int = Field(_DEFAULT.min_references, ge=2)   # reference curves needed to decide at all
