"""What the run's memory means, and the history digest the proposer is told.

Memory stores; this module reads meaning out of it: the pooled noise of identical code
(`noise_stats`, `noise_sigma`), every candidate with its results (`candidate_results`), the
incumbent's `lineage`, the best distinct `recent_results` (crossover parents) and the
`strategy_outcomes`, the compute `early_stop_savings`. The loop, selection, the report and the
REPL read these; `build_digest`
turns them into the bounded text the proposer gets.

The digest is deterministic (same memory,
same text: no timestamps, every ordering has a tie-breaker) and bounded by a
token budget estimated at ~4 characters per token. Sections come in order of
how much they help the next proposal:

  0. the experiment: budget seconds, preset, sequence length, vocabulary, hardware and memory
  1. measured noise (and so the bar a change must clear)
  2. the incumbent's lineage with its diffs
  3. the best results not in the lineage, with their hypotheses; the middle ones summarised
  4. rejected and crashed attempts with their reasons (so they are not repeated)
  5. the last lines of the newest crashes' logs (the traceback)
  6. the worst results
  7. per-strategy outcomes

Every run shown carries its execution figures (steps, tokens/s, MFU, peak memory, training
seconds) and a loss-curve summary. One sign convention throughout: "dval" is the change in
val_bpb against the parent, negative = better (val_bpb is lower-is-better).

Each section first gets a share of the budget, then what is left goes to the
sections in that order; inside a section the most informative items go first
(e.g. the newest lineage steps), and what does not fit is counted, not shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.proposers.base import PastCandidate
from agent.selection import threshold
from sandbox.statuses import OK, RESULT_STATUSES, STOPPED_EARLY

if TYPE_CHECKING:
    from agent.memory import Memory

CHARS_PER_TOKEN = 4
BEST_RESULTS = 10
WORST_RESULTS = 5
MAX_DIFF_LINES = 24          # changed lines shown per candidate; knob edits need a handful
MAX_TEXT = 300               # characters of a hypothesis or failure reason
MAX_LINE = 160               # characters of one diff line
NOTE_RESERVE = 48            # room kept per section for its "N more not shown" line

CRASH_LOG_LINES = 30         # the tail of a crash's log shown (the traceback sits at the end)
CURVE_POINTS = (10, 25, 50, 75, 100)   # % of the budget at which the loss curve is summarised

# (key, title, share of the budget in the first pass)
SECTIONS = (
    ("experiment", "Experiment", 0.05),
    ("noise", "Measured noise", 0.05),
    ("lineage", "Incumbent lineage (baseline first; each step's changes)", 0.28),
    ("best", "Best other results", 0.18),
    ("failures", "Rejected and crashed attempts (do not repeat these)", 0.14),
    ("crashlogs", "Crash logs (last lines of the newest crashes)", 0.14),
    ("worst", "Worst results", 0.08),
    ("strategies", "Outcomes per strategy", 0.08),
)
SIGNS = "Signs: dval = val_bpb change vs parent; negative = better.\n"


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


# --------------------------------------------------------------------------------- what memory means
def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def noise_stats(memory: "Memory") -> dict:
    """Pooled run-to-run noise of identical code: groups are ok executions with the same
    fingerprint, preset, backend and instance type (different hardware shifts the mean of a
    wall-clock-budgeted run, which is not noise). Returns {"sigma", "runs", "groups", "dof"}:
    runs/groups count only groups with >= 2 runs; sigma is None when there are none."""
    groups: dict[tuple, list[float]] = {}
    for row in memory.ok_results():
        key = (row["fingerprint"], row["preset"], row["backend"], row["instance_type"] or "")
        groups.setdefault(key, []).append(row["val_bpb"])
    squares, dof, runs, used = 0.0, 0, 0, 0
    for values in groups.values():
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        dof += len(values) - 1
        runs += len(values)
        used += 1
    sigma = math.sqrt(squares / dof) if dof else None
    return {"sigma": sigma, "runs": runs, "groups": used, "dof": dof}


def noise_sigma(memory: "Memory") -> float | None:
    """sqrt(sum_g sum_i (x_gi - mean_g)^2 / sum_g (n_g - 1)) over groups of repeated identical runs."""
    return noise_stats(memory)["sigma"]


def candidate_results(memory: "Memory") -> list[dict]:
    """Every candidate with its ok val_bpbs (replays excluded), mean, run count and the failures
    of its finished runs, ordered by id. Only runs that measured the code count (killed,
    interrupted and lost runs said nothing about it)."""
    candidates = memory.candidates()
    by_id: dict[str, dict] = {c["id"]: c for c in candidates}
    for c in candidates:
        c["val_bpbs"], c["failures"], c["finished"] = [], [], 0
    for row in memory.execution_outcomes():
        entry = by_id.get(row["candidate_id"])
        if entry is None or row["kind"] == "replay" or row["status"] not in RESULT_STATUSES:
            continue
        entry["finished"] += 1
        if row["status"] == OK and row["val_bpb"] is not None:
            entry["val_bpbs"].append(row["val_bpb"])
        elif row["status"] != OK:
            entry["failures"].append({"status": row["status"], "failure_reason": row["failure_reason"]})
    stats = run_stats(memory)
    for c in candidates:
        c["stats"] = stats.get(c["id"])
        c["mean_val_bpb"] = _mean(c["val_bpbs"])
        c["runs"] = len(c["val_bpbs"])
        parent = by_id.get(c["parents"][0]) if c["parents"] else None
        parent_mean = _mean(parent["val_bpbs"]) if parent else None
        # delta > 0 means better than the parent (lower val_bpb)
        c["delta_vs_parent"] = (parent_mean - c["mean_val_bpb"]
                                if parent_mean is not None and c["mean_val_bpb"] is not None else None)
    return candidates


def run_stats(memory: "Memory") -> dict[str, dict]:
    """candidate id -> the execution figures of its latest finished run (ok runs preferred):
    steps, tokens/s, MFU, peak memory, training seconds, the loss curve, and for a crash the
    tail of its log. Replays are skipped (they re-measure old code on purpose)."""
    out: dict[str, dict] = {}
    for row in memory.executions():
        if row["kind"] == "replay" or row["status"] not in RESULT_STATUSES:
            continue
        current = out.get(row["candidate_id"])
        if current is not None and current["status"] == OK and row["status"] != OK:
            continue
        result = row.get("result") if isinstance(row.get("result"), dict) else {}
        tps = result.get("tokens_per_second")
        if tps is None and row.get("total_tokens_M") and row.get("training_seconds"):
            tps = row["total_tokens_M"] * 1e6 / row["training_seconds"]
        out[row["candidate_id"]] = {
            "status": row["status"], "steps": row.get("num_steps"), "tokens_per_s": tps,
            "mfu": row.get("mfu_percent"), "peak_mb": row.get("peak_vram_mb"),
            "training_s": row.get("training_seconds"), "curve": result.get("curve") or [],
            "log_tail": result.get("log_tail") or "", "failure": row.get("failure_reason") or "",
        }
    return out


def lineage(memory: "Memory", results: list[dict] | None = None) -> list[dict]:
    """The incumbent's ancestry through first parents, baseline first; each candidate dict has
    `mean_val_bpb`, `runs`, `val_bpbs` and `delta_vs_parent` added."""
    incumbent = memory.incumbent_id()
    if incumbent is None:
        return []
    by_id = {c["id"]: c for c in (results if results is not None else candidate_results(memory))}
    chain: list[dict] = []
    current: str | None = incumbent
    while current is not None and current in by_id and all(c["id"] != current for c in chain):
        chain.append(by_id[current])
        parents = by_id[current]["parents"]
        current = parents[0] if parents else None
    return list(reversed(chain))


def recent_results(memory: "Memory", limit: int = 20) -> list[PastCandidate]:
    """Accepted candidates with at least one ok run, best mean val_bpb first, one per fingerprint
    (the earliest candidate of identical code, scored over all of that code's runs)."""
    by_fingerprint: dict[str, dict] = {}
    pooled: dict[str, list[float]] = {}
    for c in candidate_results(memory):
        if c["check_status"] != "accepted" or not c["val_bpbs"]:
            continue
        by_fingerprint.setdefault(c["fingerprint"], c)
        pooled.setdefault(c["fingerprint"], []).extend(c["val_bpbs"])
    ranked = sorted(by_fingerprint.values(), key=lambda c: (_mean(pooled[c["fingerprint"]]), c["id"]))
    return [PastCandidate(candidate_id=c["id"], strategy=c["strategy"], title=c["title"], edits=c["edits"],
                          val_bpb=_mean(pooled[c["fingerprint"]]), diff=c["diff"], hypothesis=c["hypothesis"])
            for c in ranked[:limit]]


def strategy_outcomes(memory: "Memory", results: list[dict] | None = None) -> dict[str, dict]:
    """strategy -> {"proposed", "rejected", "ran", "crashed", "stopped", "kept", "best_delta"}.
    ran: candidates with a finished execution; crashed: ran, never ok and not stopped early;
    stopped: stopped early (losing) without an ok run; kept: became the incumbent; best_delta: the
    largest val_bpb gain over its parent (positive = better). The baseline is not a strategy."""
    kept_ids = set(memory.incumbent_history())
    outcomes: dict[str, dict] = {}
    for c in results if results is not None else candidate_results(memory):
        if c["origin"] == "baseline":
            continue
        entry = outcomes.setdefault(c["strategy"], {"proposed": 0, "rejected": 0, "ran": 0, "crashed": 0,
                                                    "stopped": 0, "kept": 0, "best_delta": None})
        entry["proposed"] += 1
        entry["rejected"] += c["check_status"] == "rejected"
        if c["finished"]:
            entry["ran"] += 1
            if not c["val_bpbs"]:
                stopped = any(f["status"] == STOPPED_EARLY for f in c["failures"])
                entry["stopped" if stopped else "crashed"] += 1
        entry["kept"] += c["id"] in kept_ids
        delta = c["delta_vs_parent"]
        if delta is not None and (entry["best_delta"] is None or delta > entry["best_delta"]):
            entry["best_delta"] = delta
    return dict(sorted(outcomes.items()))


def early_stop_savings(executions: list[dict]) -> dict:
    """Executions stopped early and the training they did not spend: for each, the rest of its
    budget after the progress it was stopped at (result `budget_seconds`, else its training so
    far scaled up from that progress)."""
    stopped = [e for e in executions if e["status"] == STOPPED_EARLY]
    saved = 0.0
    for e in stopped:
        result = e.get("result") or {}
        pct = float((result.get("early_stop") or {}).get("pct") or 0.0)
        budget = result.get("budget_seconds")
        if not budget and e.get("training_seconds") and pct > 0:
            budget = float(e["training_seconds"]) * 100.0 / pct
        if budget:
            saved += max(0.0, float(budget) * (1.0 - pct / 100.0))
    return {"early_stopped": len(stopped), "compute_saved_s": saved}


# --------------------------------------------------------------------------------- the digest text
def build_digest(memory: "Memory", token_budget: int = 6000, experiment: dict | None = None,
                 notebook: list[str] | None = None) -> str:
    """`experiment`: facts of the set-up (agent/experiment_facts.py); `notebook`: the lab
    notebook's latest lessons, newest first (shown right after the experiment)."""
    budget = max(0, int(token_budget)) * CHARS_PER_TOKEN
    results = candidate_results(memory)
    sections = [_Section(key, title, share) for key, title, share in SECTIONS]
    by_key = {s.key: s for s in sections}
    _experiment_items(experiment or {}, notebook or [], by_key["experiment"])
    _noise_items(memory, results, by_key["noise"])
    lineage_ids = _lineage_items(memory, results, by_key["lineage"])
    _ranked_result_items(results, lineage_ids, by_key["best"], by_key["worst"])
    _failure_items(results, by_key["failures"])
    _crash_log_items(results, by_key["crashlogs"], int(by_key["crashlogs"].share * budget))
    _strategy_items(memory, results, by_key["strategies"])

    ran = sum(1 for c in results if c["finished"])
    title = (f"# Run history: {len(results)} candidates, {ran} trained, "
             f"{sum(c['finished'] for c in results)} finished runs\n{SIGNS}\n")
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
def _experiment_items(facts: dict, notebook: list[str], section: _Section) -> None:
    if facts:
        parts = [f"preset {facts.get('preset', '?')}"]
        if facts.get("budget_seconds") is not None:
            clock = facts.get("clock")
            parts.append(f"time budget {facts['budget_seconds']:g} s of training"
                         + (f" ({clock} clock)" if clock else ""))
        for key, label in (("max_seq_len", "sequence length"), ("vocab_size", "vocabulary")):
            if facts.get(key) is not None:
                parts.append(f"{label} {facts[key]}")
        text = "- " + ", ".join(parts) + "\n"
        if facts.get("hardware"):
            text += f"- hardware: {facts['hardware']}\n"
        section.items.append(_Item(text, 0, 0))
    if notebook:
        lines = "".join(f"  - {_clip(line, MAX_TEXT)}\n" for line in notebook)
        section.items.append(_Item(f"- lab notebook (lessons so far, newest first):\n{lines}", 1, 1))


def _noise_items(memory: "Memory", results: list[dict], section: _Section) -> None:
    stats = noise_stats(memory)
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
    steps = lineage(memory, results)
    if not steps:
        section.items.append(_Item("- No incumbent yet: the baseline has not finished.\n", 0, 0))
        return set()
    last = len(steps) - 1
    for position, step in enumerate(steps):
        is_root = step["origin"] == "baseline" or not step["parents"]
        label = "unmodified baseline" if step["origin"] == "baseline" else _label(step)
        text = f"- {step['id']} {label}: {_score(step)}"
        text += " <- current incumbent\n" if position == last else "\n"
        text += _figures(step)
        if not is_root:
            text += _hypothesis(step) + _changes(step["diff"])
        # the incumbent first, then the baseline (the reference point), then newer steps before older
        rank = 0 if position == last else 1 if position == 0 else 2 + (last - position)
        section.items.append(_Item(text, rank, position))
    return {step["id"] for step in steps}


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
    bottom_ids = {c["id"] for c in bottom}
    middle = [c for c in rest if c["id"] not in bottom_ids]
    for section, chosen in ((best, top), (worst, bottom)):
        for rank, c in enumerate(chosen):
            verdict = f" [verdict: {c['verdict']}]" if c.get("verdict") else ""
            text = (f"- {c['id']} {_label(c)}: {_score(c)}{verdict}\n" + _figures(c) + _hypothesis(c)
                    + _changes(c["diff"]))
            section.items.append(_Item(text, rank, rank))
    if middle:
        # the results between the best and the worst, one compact line rather than nothing
        values = [c["mean_val_bpb"] for c in middle]
        by_strategy: dict[str, int] = {}
        for c in middle:
            by_strategy[c["strategy"]] = by_strategy.get(c["strategy"], 0) + 1
        titles = "; ".join(f"{c['id']} \"{_clip(c['title'], 40)}\" {c['mean_val_bpb']:.4f}" for c in middle)
        text = (f"- {len(middle)} results between these and the worst: val_bpb {min(values):.6f}..{max(values):.6f}"
                f" ({', '.join(f'{k} {v}' for k, v in sorted(by_strategy.items()))}): {_clip(titles, 600)}\n")
        best.items.append(_Item(text, len(top), len(top)))


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


def _crash_log_items(results: list[dict], section: _Section, room: int) -> None:
    """The last CRASH_LOG_LINES lines of each crashed candidate's log, newest first, each cut to
    what the section's first-pass share can hold (the end of a log, where the traceback is, kept)."""
    crashed = [c for c in results if c["finished"] and not c["val_bpbs"] and c.get("stats")
               and c["stats"]["status"] not in (OK, STOPPED_EARLY) and c["stats"].get("log_tail")]
    crashed.sort(key=lambda c: (-c["generation"], -c["index"], c["id"]))
    limit = max(200, room - len(section.header) - NOTE_RESERVE - 1)
    for rank, c in enumerate(crashed):
        head = f"- {c['id']} {_label(c)}: {c['stats']['status']}\n"
        lines = [f"    | {_cut(line)}\n" for line in c["stats"]["log_tail"].splitlines()[-CRASH_LOG_LINES:]]
        while lines and len(head) + sum(map(len, lines)) > limit:
            lines.pop(0)
        section.items.append(_Item(head + "".join(lines), rank, rank))


def _strategy_items(memory: "Memory", results: list[dict], section: _Section) -> None:
    for rank, (strategy, o) in enumerate(strategy_outcomes(memory, results).items()):
        best = "n/a" if o["best_delta"] is None else f"{-o['best_delta']:+.6f}"
        text = (f"- {strategy}: proposed {o['proposed']}, rejected {o['rejected']}, ran {o['ran']}, "
                f"crashed {o['crashed']}, kept {o['kept']}, best dval {best}\n")
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
        text += f", dval {-c['delta_vs_parent']:+.6f}"
    return text + ")"


def _figures(c: dict) -> str:
    """One line of the run's execution figures and its loss curve, when it ran."""
    st = c.get("stats")
    if not st:
        return ""
    parts = []
    if st.get("steps") is not None:
        parts.append(f"{st['steps']} steps")
    if st.get("tokens_per_s"):
        parts.append(f"{st['tokens_per_s']:,.0f} tok/s")
    if st.get("mfu") is not None:
        parts.append(f"MFU {st['mfu']:.1f}%")
    if st.get("peak_mb") is not None:
        parts.append(f"peak mem {st['peak_mb']:,.0f} MiB")
    if st.get("training_s") is not None:
        parts.append(f"{st['training_s']:.1f} s training")
    curve = _curve_summary(st.get("curve") or [])
    if curve:
        parts.append(curve)
    return f"  run: {', '.join(parts)}\n" if parts else ""


def _curve_summary(curve: list) -> str:
    """Train loss at fixed fractions of the budget (nearest recorded point at or before each)."""
    points = [(float(p), float(v)) for p, v in curve if isinstance(p, (int, float)) and isinstance(v, (int, float))]
    if len(points) < 2:
        return ""
    shown = []
    for pct in CURVE_POINTS:
        before = [v for p, v in points if p <= pct]
        if before:
            shown.append(f"{pct}%:{before[-1]:.3f}")
    low = min(v for _, v in points)
    return f"loss {' '.join(shown)} (min {low:.3f})"


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 3] + "..."


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
