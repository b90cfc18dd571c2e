"""The lab notebook: a few lines of lessons after each generation, kept for the rest of the run.

Figures say what happened; a lesson says what it means for the next try ("warmdown above 0.6
crashed twice: NaN loss by 40 %"). After each generation (in the async schedule: once
`notebook.every_executions` more runs have finished, checked at each proposer call) an entry is
written: by the model when the proposer is the LLM (a short call without tools), else, or when
the model gives nothing usable, by the heuristic from the figures. Entries are events in memory
(`lab_notebook`), shown in later prompts (the digest's Experiment section) and in report.md
under `## Lab notebook`. Writing one never stops the run.
"""
from __future__ import annotations

from agent.digest import build_digest, candidate_results, noise_sigma, strategy_outcomes
from agent.research_settings import NotebookSettings  # noqa: F401 (the section's settings)
from sandbox.statuses import OK, RESULT_STATUSES

EVENT = "lab_notebook"
MAX_LINES = 5
SHOWN_ENTRIES = 3            # entries shown in a prompt, newest first



def entries(memory) -> list[dict]:
    """Every entry, oldest first: {"generation", "author", "lines", "finished"}."""
    out = []
    for event in memory.events(EVENT):
        payload = event.get("payload") or {}
        out.append({"generation": event.get("generation"), "author": payload.get("author", "?"),
                    "lines": list(payload.get("lines") or []), "finished": payload.get("finished", 0),
                    "note": payload.get("note")})
    return out


def prompt_lines(memory, limit: int = SHOWN_ENTRIES) -> list[str]:
    """The latest entries' lessons, newest first, for the digest."""
    shown = []
    for entry in reversed(entries(memory)[-limit:]):
        shown.extend(f"(through gen {entry['generation']}) {line}" for line in entry["lines"])
    return shown


def finished_count(memory) -> int:
    return sum(1 for e in memory.execution_outcomes() if e["status"] in RESULT_STATUSES)


def due(memory, every: int) -> bool:
    """True when `every` runs have finished since the last entry (and at least one since)."""
    previous = entries(memory)
    finished = finished_count(memory)
    since = finished - (previous[-1]["finished"] if previous else 0)
    return since > 0 and since >= max(1, every)


def heuristic_lessons(memory) -> list[str]:
    """Lessons read off the figures: the best and worst of the newest runs, what crashed and why,
    which strategy pays, the noise, throughput changes."""
    results = candidate_results(memory)
    stats = {c["id"]: c["stats"] for c in results if c.get("stats")}
    base = next((c for c in results if c["origin"] == "baseline"), None)
    base_tps = (stats.get(base["id"]) or {}).get("tokens_per_s") if base else None
    scored = [c for c in results if c["origin"] != "baseline" and c["delta_vs_parent"] is not None]
    lines: list[str] = []
    if scored:
        best = max(scored, key=lambda c: (c["delta_vs_parent"], c["id"]))
        worst = min(scored, key=lambda c: (c["delta_vs_parent"], c["id"]))
        lines.append(f"best change so far: {best['id']} [{best['strategy']}] \"{best['title']}\" "
                     f"dval {-best['delta_vs_parent']:+.6f}")
        if worst["id"] != best["id"]:
            lines.append(f"worst: {worst['id']} [{worst['strategy']}] \"{worst['title']}\" "
                         f"dval {-worst['delta_vs_parent']:+.6f}: avoid that direction")
    crashed = [c for c in results if c["finished"] and not c["val_bpbs"] and c["failures"]
               and c["failures"][-1]["status"] != "stopped_early"]
    if crashed:
        reasons = {}
        for c in crashed:
            first = (c["failures"][-1]["failure_reason"] or "no reason").splitlines()[0][:120]
            reasons.setdefault(first, []).append(c["id"])
        top = max(reasons.items(), key=lambda kv: (len(kv[1]), kv[0]))
        lines.append(f"{len(crashed)} crash(es); most common cause ({len(top[1])}x, e.g. {top[1][0]}): {top[0]}")
    outcomes = strategy_outcomes(memory, results)
    paying = [(s, o) for s, o in outcomes.items() if o["kept"]]
    if paying:
        lines.append("kept so far by strategy: " + ", ".join(f"{s} {o['kept']}/{o['ran']}" for s, o in paying))
    elif outcomes:
        lines.append("no strategy has produced a kept change yet: " +
                     ", ".join(f"{s} ran {o['ran']}" for s, o in outcomes.items()))
    sigma = noise_sigma(memory)
    if sigma is not None:
        lines.append(f"run-to-run noise sigma {sigma:.6f}: a gain below ~{2 * sigma:.6f} is not evidence")
    if base_tps:
        fast = [(c, stats[c["id"]]["tokens_per_s"]) for c in results
                if c["id"] in stats and stats[c["id"]].get("tokens_per_s") and stats[c["id"]]["status"] == OK
                and c["origin"] != "baseline"]
        if fast:
            c, tps = max(fast, key=lambda x: x[1])
            if tps > 1.05 * base_tps:
                lines.append(f"fastest: {c['id']} at {tps:,.0f} tok/s vs the baseline's {base_tps:,.0f}: more steps "
                             f"fit the budget")
    return lines[:MAX_LINES] or ["no finished runs to learn from yet"]


def parse_lessons(text: str) -> list[str]:
    """A model's answer -> up to MAX_LINES lesson lines (bullets and numbering stripped)."""
    out = []
    for line in (text or "").splitlines():
        line = line.strip().lstrip("-*•").strip()
        if line[:2].rstrip(".)").isdigit():
            line = line.split(maxsplit=1)[1] if " " in line else ""
        if len(line) >= 8:
            out.append(line[:300])
    return out[:MAX_LINES]


def update(ctx, generation: int, *, force: bool = False) -> dict | None:
    """Write an entry through `generation` when one is due; returns it (None when not due or off)."""
    settings = ctx.settings.notebook
    if not settings.enabled:
        return None
    every = settings.every_executions or ctx.settings.run.population
    if not (due(ctx.memory, every) or (force and due(ctx.memory, 1))):
        return None
    figures = heuristic_lessons(ctx.memory)
    lines, author, note = figures, "heuristic", None
    writer = getattr(ctx.proposer, "write_lessons", None)
    if writer is not None:
        try:
            answer, note = writer(build_digest(ctx.memory, ctx.settings.llm.digest_token_budget), figures, generation)
        except Exception as exc:   # the notebook must not stop the run
            answer, note = [], f"the LLM's lessons failed ({exc})"
        if answer:
            lines, author = answer, "llm"
        elif note:
            ctx.say(f"lab notebook: {note}; the heuristic's lines from the figures are kept", "yellow")
    entry = {"author": author, "lines": lines, "finished": finished_count(ctx.memory), "note": note}
    ctx.memory.log_event(EVENT, entry, generation)
    return entry
