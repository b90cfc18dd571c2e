"""The one place where edits become a checked candidate (both proposers and the REPL use it).

Order of the gates, cheapest and most specific first:
1. `edit-apply`  the edits apply to the incumbent (sandbox/edits.py);
2. `no-change`   the result differs from the incumbent by more than comments/formatting;
3. `duplicate`   its fingerprint was not tried before in this run (unless allow_duplicate); an
                 exact repeat already has its verdict in memory, so it is not checked again;
4. a check rule  the integrity checker accepts it (sandbox/check.py; the first rule is the
                 headline, the message lists every violation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from sandbox.check import Violation, check_source
from sandbox.edits import EditError, apply_edits
from sandbox.fingerprint import fingerprint


@lru_cache(maxsize=16)
def _incumbent_fingerprint(source: str) -> str:
    return fingerprint(source)   # proposers build many drafts against the same incumbent


@dataclass
class CandidateCheck:
    ok: bool
    source: str | None          # the new train.py when ok
    diff: str                   # unified diff against the incumbent ("" when edits did not apply)
    fingerprint: str            # "" when edits did not apply
    rule: str | None            # edit-apply | no-change | duplicate | a check rule id
    message: str | None
    violations: list[Violation] = field(default_factory=list)


def build_candidate(incumbent_source: str, edits: list[dict], seen_fingerprints: set[str] | None = None,
                    allow_duplicate: bool = False, baseline_source: str | None = None) -> CandidateCheck:
    """Apply `edits` to the incumbent and run every gate. `baseline_source` sets the checker's
    import/prepare-name policy; default: the incumbent (which passed the same checker)."""
    try:
        result = apply_edits(incumbent_source, edits)
    except EditError as exc:
        return CandidateCheck(False, None, "", "", "edit-apply", str(exc))
    fp = fingerprint(result.source)
    if fp == _incumbent_fingerprint(incumbent_source):
        return CandidateCheck(False, None, result.diff, fp, "no-change",
                              "the edits change only comments, formatting or docstrings; nothing to run")
    if not allow_duplicate and seen_fingerprints and fp in seen_fingerprints:
        return CandidateCheck(False, None, result.diff, fp, "duplicate",
                              "an identical train.py (up to comments and formatting) was already tried in this run")
    violations = check_source(result.source, incumbent_source if baseline_source is None else baseline_source)
    if violations:
        message = "; ".join(f"{v.rule}: {v.message}" + (f" (line {v.line})" if v.line else "") for v in violations)
        return CandidateCheck(False, None, result.diff, fp, violations[0].rule, message, violations)
    return CandidateCheck(True, result.source, result.diff, fp, None, None)
