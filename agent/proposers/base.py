"""The Proposer seam: given the incumbent and what memory knows, fill strategy slots.

Both proposers (heuristic, llm) return fully applied and checked `Proposal`s:
accepted ones carry the new train.py, its unified diff and fingerprint; rejected
ones carry the rule that failed, so memory records them and the digest can warn
the next generation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

STRATEGIES: tuple[str, ...] = ("conservative", "moderate", "aggressive", "crossover")


@dataclass
class PastCandidate:
    """A finished candidate as a proposer sees it (crossover parents, heuristic memory)."""

    candidate_id: str
    strategy: str
    title: str
    edits: list[dict]            # [{"search": str, "replace": str}] against ITS parent source
    val_bpb: float | None        # mean over its ok executions; None when it never finished ok
    diff: str = ""
    hypothesis: str = ""


@dataclass
class ProposalRequest:
    incumbent_source: str        # current incumbent train.py
    incumbent_id: str            # candidate id of the incumbent (parent of every new candidate)
    program_md: str
    digest: str                  # memory's history digest (bounded text, most informative first)
    slots: dict[str, int]        # strategy -> how many candidates wanted
    preset: str                  # the run's preset: which column of the size knobs to edit
    generation: int
    seed: int
    recent: list[PastCandidate] = field(default_factory=list)   # best first, distinct, for crossover
    seen_fingerprints: set[str] = field(default_factory=set)    # everything already tried this run
    budget_seconds: float | None = None   # one training run's time budget (the cache TTL choice)
    # agent.novelty.NoveltyIndex of the run's tried sources (near-duplicate rejection); None = off
    novelty: object | None = None
    lineage_ids: set[str] = field(default_factory=set)          # the incumbent and its ancestors


@dataclass
class Proposal:
    strategy: str
    title: str
    hypothesis: str
    edits: list[dict]
    parents: list[str] = field(default_factory=list)
    accepted: bool = False
    source: str | None = None    # new train.py when accepted
    diff: str = ""               # git-applicable unified diff a/train.py b/train.py
    fingerprint: str = ""
    rule: str | None = None      # why rejected: edit-apply | duplicate | a check rule id | llm-*
    reason: str | None = None
    attempts: int = 1            # LLM repair rounds used
    proposer: str = ""           # heuristic | llm


class Proposer(Protocol):
    name: str

    def propose(self, request: ProposalRequest) -> list[Proposal]:
        """Return accepted and rejected proposals; never raises for a bad model answer."""
