"""The history digest: what the proposer is told about the run so far.

Memory stores; this module presents. The digest is deterministic (same memory,
same text: no timestamps, every ordering has a tie-breaker) and bounded by a
token budget estimated at ~4 characters per token. Sections come in order of
how much they help the next proposal:

  1. measured noise (and so the bar a change must clear)
  2. the incumbent's lineage with its diffs
  3. the best results not in the lineage, with their hypotheses
  4. rejected and crashed attempts with their reasons (so they are not repeated)
  5. the worst results
  6. per-strategy outcomes

Each section first gets a share of the budget, then what is left goes to the
sections in that order; inside a section the most informative items go first
(e.g. the newest lineage steps), and what does not fit is counted, not shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.selection import threshold

if TYPE_CHECKING:
    from agent.memory import Memory

CHARS_PER_TOKEN = 4
BEST_RESULTS = 10
WORST_RESULTS = 5
MAX_DIFF_LINES = 24          # changed lines shown per candidate; knob edits need a handful
MAX_TEXT = 300               # characters of a hypothesis or failure reason
MAX_LINE = 160               # characters of one diff line
NOTE_RESERVE = 48            # room kept per section for its "N more not shown" line

# (key, title, share of the budget in the first pass)
SECTIONS = (
    ("noise", "Measured noise", 0.06),
    ("lineage", "Incumbent lineage (baseline first; each step's changes)", 0.34),
    ("best", "Best other results", 0.20),
    ("failures", "Rejected and crashed attempts (do not repeat these)", 0.20),
    ("worst", "Worst results", 0.10),
    ("strategies", "Outcomes per strategy", 0.10),
)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class _Item:
    text: str
    rank: int        # fill order: lower = more informative
    position: int    # display order


@dataclass
class _Section:
    key: str
    title: str
    share: float
    items: list[_Item] = field(default_factory=list)
    chosen: list[_Item] = field(default_factory=list)

    @property
    def header(self) -> str:
        return f"## {self.title}\n"

    def rendered(self) -> str:
        if not self.chosen:
            return ""
        # an omission inside the shown range (e.g. middle lineage steps) is marked where it is
        shown = sorted(self.chosen, key=lambda i: i.position)
        positions = sorted(i.position for i in self.items)
        body, previous = [], None
        for item in shown:
            skipped = sum(1 for p in positions if (previous is None or p > previous) and p < item.position)
            if skipped:
                body.append(f"  ... ({skipped} not shown)\n")
            body.append(item.text)
            previous = item.position
        trailing = sum(1 for p in positions if p > previous)
        note = f"({trailing} more not shown)\n" if trailing else ""
        return self.header + "".join(body) + note + "\n"


def build_digest(memory: "Memory", token_budget: int = 6000) -> str:
    budget = max(0, int(token_budget)) * CHARS_PER_TOKEN
    results = memory.candidate_results()
    sections = [_Section(key, title, share) for key, title, share in SECTIONS]
    by_key = {s.key: s for s in sections}
    _noise_items(memory, results, by_key["noise"])
    lineage_ids = _lineage_items(memory, results, by_key["lineage"])
    _ranked_result_items(results, lineage_ids, by_key["best"], by_key["worst"])
    _failure_items(results, by_key["failures"])
    _strategy_items(memory, by_key["strategies"])

    ran = sum(1 for c in results if c["finished"])
    title = (f"# Run history: {len(results)} candidates, {ran} trained, "
             f"{sum(c['finished'] for c in results)} finished runs\n\n")
    return _fit(title, sections, budget)


def _fit(title: str, sections: list[_Section], budget: int) -> str:
    used = len(title)
    # pass 1: each section up to its share; pass 2: the rest of the budget, in section order
    for limit_of in (lambda s: int(s.share * budget), lambda s: budget):
        for section in sections:
            for item in sorted(section.items, key=lambda i: i.rank)[len(section.chosen):]:
                cost = len(item.text) + (0 if section.chosen else len(section.header) + 1 + NOTE_RESERVE)
                section_size = len(section.rendered()) or 0
                if used + cost > budget or section_size + cost > limit_of(section):
                    break
                section.chosen.append(item)
                used += cost
    # a section shows only when every section before it shows at least its most informative item
    # (a short later item must not take the place of an earlier, longer but more useful one)
    blocked = False
    for section in sections:
        if blocked:
            section.chosen.clear()
        elif section.items and not section.chosen:
            blocked = True
    text = title + "".join(s.rendered() for s in sections)
    # the reserves make overflow unlikely; if it happens, drop from the least informative end
    while len(text) > budget and any(s.chosen for s in sections):
        last = next(s for s in reversed(sections) if s.chosen)
        last.chosen.remove(max(last.chosen, key=lambda i: i.rank))
        text = title + "".join(s.rendered() for s in sections)
    text = text.rstrip() + "\n"
    if len(text) > budget:   # only when even the title does not fit
        text = text[: max(0, budget - 1)].rstrip() + "\n" if budget > 1 else ""
    return text


# --------------------------------------------------------------------------------- section content
def _noise_items(memory: "Memory", results: list[dict], section: _Section) -> None:
    stats = memory.noise_stats()
    selection = _selection_settings(memory)
    if stats["sigma"] is None:
        text = ("- Not measured yet: fewer than two ok runs of identical code. Small differences in val_bpb "
                "are likely noise.\n")
        if selection.get("prior_sigma") is not None:
            text += f"- Assumed sigma until measured: {selection['prior_sigma']:.6f} val_bpb.\n"
    else:
        text = (f"- Run-to-run sigma of identical code: {stats['sigma']:.6f} val_bpb "
                f"(pooled over {stats['runs']} runs in {stats['groups']} group(s)).\n")
    if selection:
        sigma = stats["sigma"] if stats["sigma"] is not None else selection.get("prior_sigma")
        bar = threshold(selection.get("min_delta", 0.0), selection.get("k_sigma", 0.0), sigma)
        text += (f"- A change is kept only if it lowers the incumbent's mean val_bpb by more than {bar:.6f} "
                 f"(max(min_delta {selection.get('min_delta', 0.0)}, {selection.get('k_sigma', 0.0)} x sigma)).\n")
    noise = sum(1 for c in results if c.get("verdict") == "noise")
    if noise:
        text += f"- Apparent wins rejected as noise so far: {noise}.\n"
    section.items.append(_Item(text, 0, 0))


def _lineage_items(memory: "Memory", results: list[dict], section: _Section) -> set[str]:
    lineage = memory.lineage()
    if not lineage:
        section.items.append(_Item("- No incumbent yet: the baseline has not finished.\n", 0, 0))
        return set()
    last = len(lineage) - 1
    for position, step in enumerate(lineage):
        is_root = step["origin"] == "baseline" or not step["parents"]
        label = "unmodified baseline" if step["origin"] == "baseline" else _label(step)
        text = f"- {step['id']} {label}: {_score(step)}"
        text += " <- current incumbent\n" if position == last else "\n"
        if not is_root:
            text += _hypothesis(step) + _changes(step["diff"])
        # the incumbent first, then the baseline (the reference point), then newer steps before older
        rank = 0 if position == last else 1 if position == 0 else 2 + (last - position)
        section.items.append(_Item(text, rank, position))
    return {step["id"] for step in lineage}


def _ranked_result_items(results: list[dict], lineage_ids: set[str], best: _Section, worst: _Section) -> None:
    seen: set[str] = set()
    scored = []
    for c in results:
        if c["id"] in lineage_ids or c["origin"] == "baseline" or c["mean_val_bpb"] is None:
            continue
        if c["fingerprint"] in seen:
            continue
        seen.add(c["fingerprint"])
        scored.append(c)
    scored.sort(key=lambda c: (c["mean_val_bpb"], c["id"]))
    top, rest = scored[:BEST_RESULTS], scored[BEST_RESULTS:]
    bottom = sorted(rest, key=lambda c: (-c["mean_val_bpb"], c["id"]))[:WORST_RESULTS]
    for section, chosen in ((best, top), (worst, bottom)):
        for rank, c in enumerate(chosen):
            verdict = f" [verdict: {c['verdict']}]" if c.get("verdict") else ""
            text = f"- {c['id']} {_label(c)}: {_score(c)}{verdict}\n" + _hypothesis(c) + _changes(c["diff"])
            section.items.append(_Item(text, rank, rank))


def _failure_items(results: list[dict], section: _Section) -> None:
    """Rejections grouped by (rule, reason), crashes by (status, first line of the reason); newest first."""
    groups: dict[tuple, list[dict]] = {}
    newest_first = sorted(results, key=lambda c: (-c["generation"], -c["index"], c["id"]))
    for c in newest_first:
        if c["check_status"] == "rejected":
            key = ("rejected", c.get("rule") or "unknown rule", _first_line(c.get("reason")))
        elif c["finished"] and not c["val_bpbs"] and c["failures"]:
            failure = c["failures"][-1]
            key = ("crashed", failure["status"], _first_line(failure["failure_reason"]))
        else:
            continue
        groups.setdefault(key, []).append(c)
    for rank, ((what, rule, reason), members) in enumerate(groups.items()):
        latest = members[0]
        examples = ", ".join(f"{c['id']} \"{_clip(c['title'], 60)}\"" for c in members[:3])
        count = f"{len(members)}x, " if len(members) > 1 else ""
        head = "rejected by check" if what == "rejected" else "crashed with status"
        text = f"- {head} `{rule}` ({count}{examples}): {reason or 'no reason recorded'}\n"
        text += _changes(latest["diff"], limit=8)
        section.items.append(_Item(text, rank, rank))


def _strategy_items(memory: "Memory", section: _Section) -> None:
    for rank, (strategy, o) in enumerate(memory.strategy_outcomes().items()):
        best = "n/a" if o["best_delta"] is None else f"{o['best_delta']:+.6f}"
        text = (f"- {strategy}: proposed {o['proposed']}, rejected {o['rejected']}, ran {o['ran']}, "
                f"crashed {o['crashed']}, kept {o['kept']}, best gain vs parent {best}\n")
        section.items.append(_Item(text, rank, rank))


# --------------------------------------------------------------------------------- formatting helpers
def _selection_settings(memory: "Memory") -> dict:
    try:
        settings = memory.run_info().get("settings") or {}
    except Exception:   # no run row yet: the digest still works, without the threshold line
        return {}
    selection = settings.get("selection") if isinstance(settings, dict) else None
    return selection if isinstance(selection, dict) else {}


def _label(c: dict) -> str:
    return f"[{c['strategy']}] \"{_clip(c['title'], 80)}\""


def _score(c: dict) -> str:
    if c["mean_val_bpb"] is None:
        return "no ok run"
    text = f"val_bpb {c['mean_val_bpb']:.6f} ({c['runs']} run{'s' if c['runs'] != 1 else ''}"
    if c.get("delta_vs_parent") is not None:
        text += f", {-c['delta_vs_parent']:+.6f} vs parent"
    return text + ")"


def _hypothesis(c: dict) -> str:
    return f"  hypothesis: {_clip(c['hypothesis'], MAX_TEXT)}\n" if c.get("hypothesis") else ""


def _changes(diff: str, limit: int = MAX_DIFF_LINES) -> str:
    """The changed lines of a unified diff (no headers, no context): for knob edits this reads
    as `- MATRIX_LR = 0.04` / `+ MATRIX_LR = 0.05`."""
    lines = [line for line in (diff or "").splitlines()
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    # whitespace kept as is: the model may copy these lines into `search` text
    shown = [f"    {line if len(line) <= MAX_LINE else line[:MAX_LINE - 3] + '...'}\n" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"    ... {len(lines) - limit} more changed lines\n")
    return "".join(shown)


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return _clip(line.strip(), MAX_TEXT)
    return ""


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
