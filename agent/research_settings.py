"""The settings of the researcher's exploration sections (novelty, notebook, allocation,
exploration), apart from the modules that use them: agent.config composes these, and those
modules read the digest, which reads the config (an import cycle if they lived there).
The meaning of each key is with the module that applies it."""
from __future__ import annotations

from pydantic import Field

from sandbox.runners.settings import Section


class NoveltySettings(Section):
    enabled: bool = True
    # numbers within 2% of a tried candidate's (same code otherwise) are its twin; 0 = exact only
    knob_tolerance: float = Field(0.02, ge=0, le=1)
    # code similarity needed for the numbers to be compared at all: 0 = identical code structure
    code_tolerance: float = Field(0.0, ge=0, le=1)


class NotebookSettings(Section):
    enabled: bool = True
    # finished runs between entries; 0 = the population (one entry per generation)
    every_executions: int = Field(0, ge=0)


class AllocationSettings(Section):
    enabled: bool = True
    learning_weight: float = Field(0.5, ge=0, le=1)   # 0 = the mix; 1 = the measured rates alone
    floor: int = Field(1, ge=0)                        # slots every class of the mix keeps, population allowing


class ExplorationSettings(Section):
    # share of a round's slots that start from a promising non-incumbent (0 = off)
    branch_share: float = Field(0.2, ge=0, le=0.5)
    repair_crashes: bool = True          # one slot per round repairs a promising crash
