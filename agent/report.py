"""`autoresearch report`: runs/<TAG>/report.md and progress.png, rendered from memory alone.

Everything here is a pure read of the run's memory (no runner, no network), so a report can be
rebuilt at any time, also while autopilot is still running on the same run.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Iterable

from agent.digest import early_stop_savings, lineage, noise_sigma, strategy_outcomes
from agent.layout import RunLayout
from sandbox.statuses import CANDIDATE, FAILED_STATUSES, OK, REPLAY, RESULT_STATUSES, STOPPED_EARLY

DEFAULT_K_SIGMA = 2.0
SIMULATED = "simulated"
SIMULATED_BANNER = ("> **Simulated run: nothing was trained.** Every val_bpb, curve and duration below comes from "
                    "the simulated backend (sandbox/runners/simulated.py) on a virtual clock; none of it is a "
                    "measurement of train.py.")


# --------------------------------------------------------------------------- small helpers
def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _fmt(value, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _usd(value) -> str:
    return f"${float(value or 0.0):.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _cell(text) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or "-"


def markdown_table(header: list[str], rows: Iterable[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _k_sigma(info: dict) -> float:
    settings = info.get("settings") or {}
    try:
        return float(settings.get("selection", {}).get("k_sigma", DEFAULT_K_SIGMA))
    except (AttributeError, TypeError, ValueError):
        return DEFAULT_K_SIGMA


def _kept_candidates(memory) -> list[str]:
    """Candidates that were the incumbent at some point (memory logs every change of incumbent),
    plus the current lineage (which holds the baseline even on a run that never changed it)."""
    kept = list(memory.incumbent_history())
    for row in lineage(memory):
        if row["id"] not in kept:
            kept.append(row["id"])
    return kept


def _execution_order(executions: list[dict]) -> list[dict]:
    """Finished executions in the order they were created (ids are sequential: e00001, ...)."""
    return sorted(executions, key=lambda e: e["id"])


# --------------------------------------------------------------------------- figures
def wall_clock(executions: list[dict]) -> dict:
    """Serial time (sum of execution wall times) against the time the run really took.

    `span_s` is first start -> last end; `busy_s` is the union of execution intervals (time with at
    least one execution running), which leaves out pauses between resumed sessions.
    """
    intervals = sorted((float(e["started_at"]), float(e["ended_at"])) for e in executions
                       if e.get("started_at") is not None and e.get("ended_at") is not None
                       and e["ended_at"] >= e["started_at"])
    serial = sum(end - start for start, end in intervals)
    if not intervals:
        return {"executions": 0, "serial_s": 0.0, "span_s": 0.0, "busy_s": 0.0,
                "speedup_span": None, "speedup_busy": None}
    span = max(end for _, end in intervals) - intervals[0][0]
    busy, cur_start, cur_end = 0.0, intervals[0][0], intervals[0][1]
    for start, end in intervals[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    return {"executions": len(intervals), "serial_s": serial, "span_s": span, "busy_s": busy,
            "speedup_span": serial / span if span > 0 else None,
            "speedup_busy": serial / busy if busy > 0 else None}


def noise_rejections(memory) -> dict:
    """Apparent wins that selection refused as noise: the loop records each verdict through
    memory.record_decision, which logs a "decision" event; a candidate counts once even when it
    went through a confirmation re-run first ("confirm", then "noise")."""
    latest: dict[str, dict] = {}
    for event in memory.events("decision"):
        payload = event.get("payload") or {}
        if payload.get("candidate_id"):
            latest[payload["candidate_id"]] = {**payload, "generation": event.get("generation")}
    rejected = [d for d in latest.values() if d.get("verdict") == "noise"]
    confirmed_first = [d for d in rejected
                       if any(e["payload"].get("candidate_id") == d["candidate_id"]
                              and e["payload"].get("verdict") == "confirm" for e in memory.events("decision"))]
    by_generation: dict = {}
    for d in rejected:
        by_generation[d["generation"]] = by_generation.get(d["generation"], 0) + 1
    return {"total": len(rejected), "after_confirmation": len(confirmed_first),
            "by_generation": by_generation, "decisions": rejected}


def plot_progress(memory, path: Path, *, k_sigma: float = DEFAULT_K_SIGMA) -> Path:
    """progress.png: val_bpb per finished experiment, kept ones marked, the running best as a step
    line, the incumbent's noise band, and failed executions as marks along the top edge."""
    # The object API with an Agg canvas: no global pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # the run's own preset only: replays on another preset or hardware measure something else
    # (they are compared in the report's Replays table instead)
    info = memory.run_info()
    # results only: killed, interrupted and lost runs did not measure the code
    executions = [e for e in _execution_order(memory.executions())
                  if e.get("status") in RESULT_STATUSES and e.get("preset") == info.get("preset")
                  and (e.get("kind") != REPLAY or e.get("backend") == info.get("backend"))]
    kept = set(_kept_candidates(memory))
    incumbent = memory.incumbent_id()
    sigma = noise_sigma(memory)

    fig = Figure(figsize=(11, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel("experiment (execution, in launch order)")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(True, alpha=0.3)

    ok_points = [(i, float(e["val_bpb"]), e) for i, e in enumerate(executions)
                 if e.get("status") == OK and e.get("val_bpb") is not None]
    failed = [i for i, e in enumerate(executions) if e.get("status") in FAILED_STATUSES]
    if not executions:
        ax.text(0.5, 0.5, "no finished experiments yet", ha="center", va="center", transform=ax.transAxes)
        fig.savefig(path, format="png")
        return path

    values = [v for _, v, _ in ok_points]
    if values:
        low, high = min(values), max(values)
        # A diverged candidate (val_bpb 3.0 next to 1.0) would flatten everything else: cap the axis
        # at a robust upper bound and pin outliers to the edge like crashes.
        if len(values) >= 5:
            q90 = sorted(values)[int(0.9 * (len(values) - 1))]
            high = min(high, q90 + max(q90 - low, 1e-4) * 0.5)
        pad = max((high - low) * 0.08, 1e-4)
        y_low, y_high = low - pad, high + pad
    else:
        y_low, y_high = 0.0, 1.0
    ax.set_ylim(y_low, y_high)
    ax.set_xlim(-0.5, len(executions) - 0.5)

    # generation boundaries, so the parallel batches are visible
    previous_gen = None
    for i, e in enumerate(executions):
        if previous_gen is not None and e.get("generation") != previous_gen:
            ax.axvline(i - 0.5, color="0.85", lw=0.8, zorder=0)
        previous_gen = e.get("generation")

    others = [(i, v) for i, v, e in ok_points if e["candidate_id"] not in kept and v <= y_high]
    # a kept candidate's first run is its "kept" mark; its later identical runs (baseline repeats,
    # controls, confirmations) show the noise around it
    kept_first: dict[str, tuple[int, float]] = {}
    repeats = []
    for i, v, e in ok_points:
        if e["candidate_id"] not in kept:
            continue
        if e["candidate_id"] not in kept_first and e.get("kind") in ("candidate", "baseline"):
            kept_first[e["candidate_id"]] = (i, v)
        elif v <= y_high:
            repeats.append((i, v))
    outliers = [i for i, v, _ in ok_points if v > y_high]

    if others:
        ax.scatter(*zip(*others), s=22, color="#9aa5b1", label="discarded", zorder=2)
    if repeats:
        ax.scatter(*zip(*repeats), s=22, marker="D", facecolors="none", edgecolors="#1f77b4",
                   label="repeat of kept code (control, confirmation, replay)", zorder=3)
    if kept_first:
        xs, ys = zip(*sorted(kept_first.values()))
        ax.scatter(xs, ys, s=60, color="#2ca02c", edgecolors="black", label="kept", zorder=4)
        for cid, (x, y) in kept_first.items():
            ax.annotate(cid, (x, y), textcoords="offset points", xytext=(4, -11), fontsize=7, color="#2ca02c")

    # running best: the best kept mean so far, as a step line to the last experiment
    means = {cid: _mean(memory.val_bpbs(cid)) for cid in kept_first}
    best, steps_x, steps_y = math.inf, [], []
    for cid, (x, _) in sorted(kept_first.items(), key=lambda kv: kv[1][0]):
        if means.get(cid) is not None and means[cid] < best:
            best = means[cid]
            steps_x.append(x)
            steps_y.append(best)
    if steps_x:
        steps_x.append(len(executions) - 0.5)
        steps_y.append(steps_y[-1])
        ax.step(steps_x, steps_y, where="post", color="#2ca02c", lw=1.6, label="running best (kept mean)")

    # the noise band around the incumbent's mean
    inc_mean = _mean(memory.val_bpbs(incumbent)) if incumbent else None
    if inc_mean is not None and sigma:
        ax.axhspan(inc_mean - k_sigma * sigma, inc_mean + k_sigma * sigma, color="#2ca02c", alpha=0.12,
                   label=f"incumbent ± {k_sigma:g}σ (σ={sigma:.5f})", zorder=1)

    if failed:
        ax.scatter(failed, [y_high] * len(failed), marker="x", color="#d62728", s=40, clip_on=False,
                   label=f"failed ({len(failed)})", zorder=5)
    if outliers:
        ax.scatter(outliers, [y_high] * len(outliers), marker="^", color="#ff7f0e", s=36, clip_on=False,
                   label="off the scale", zorder=5)

    ax.set_title(f"{len(values)} scored, {len(failed)} failed"
                 + (f" — best {best:.6f}" if best < math.inf else ""))
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- markdown sections
def _summary_section(memory, info: dict, executions: list[dict]) -> str:
    baseline = memory.candidates(generation=0)
    baseline_id = baseline[0]["id"] if baseline else None
    base_vals = memory.val_bpbs(baseline_id) if baseline_id else []
    incumbent = memory.incumbent_id()
    inc_vals = memory.val_bpbs(incumbent) if incumbent else []
    sigma = noise_sigma(memory)
    statuses: dict[str, int] = {}
    for e in executions:
        statuses[e.get("status")] = statuses.get(e.get("status"), 0) + 1
    generations = sorted({e.get("generation") for e in executions if e.get("generation") is not None})
    lines = ["## Summary", ""]
    lines.append(f"- preset `{info.get('preset')}`, backend `{info.get('backend')}`, "
                 f"proposer `{info.get('proposer')}`")
    lines.append(f"- generations with executions: {len(generations)}"
                 + (f" ({generations[0]}..{generations[-1]})" if generations else ""))
    lines.append("- executions: " + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items(), key=str))
                                     or "none"))
    lines.append(f"- baseline `{baseline_id}`: val_bpb {_fmt(_mean(base_vals))} (n={len(base_vals)})")
    inc_mean, base_mean = _mean(inc_vals), _mean(base_vals)
    if incumbent:
        gain = ""
        if inc_mean is not None and base_mean is not None:
            gain = f", {base_mean - inc_mean:+.6f} vs baseline ({(base_mean - inc_mean) / base_mean:+.2%})"
        lines.append(f"- incumbent `{incumbent}`: val_bpb {_fmt(inc_mean)} (n={len(inc_vals)}){gain}")
    else:
        lines.append("- incumbent: none yet")
    lines.append(f"- noise σ of identical runs: {_fmt(sigma)}")
    return "\n".join(lines)


def _lineage_section(memory) -> str:
    steps = lineage(memory)
    lines = ["## Incumbent lineage", ""]
    if not steps:
        return "\n".join(lines + ["No incumbent yet."])
    previous = None
    for step in steps:
        mean = step.get("mean_val_bpb")
        # gain > 0 is better (lower val_bpb), the same sign as the strategy table's best delta
        delta = f", gain {previous - mean:+.6f} over parent" if mean is not None and previous is not None else ""
        lines.append(f"### `{step['id']}` — {step.get('title') or '(untitled)'}")
        lines.append("")
        lines.append(f"strategy `{step.get('strategy')}`, generation {step.get('generation')}, "
                     f"val_bpb {_fmt(mean)} (n={step.get('runs', 0)}){delta}")
        if step.get("hypothesis"):
            lines += ["", f"> {step['hypothesis'].strip()}"]
        diff = (step.get("diff") or "").strip()
        if diff:
            lines += ["", "```diff", diff, "```"]
        lines.append("")
        if mean is not None:
            previous = mean
    return "\n".join(lines).rstrip()


def _strategy_section(memory) -> str:
    outcomes = strategy_outcomes(memory)
    rows = []
    for strategy, o in sorted(outcomes.items()):
        rows.append([strategy, o.get("proposed", 0), o.get("rejected", 0), o.get("ran", 0),
                     o.get("crashed", 0), o.get("kept", 0), _fmt(o.get("best_delta"))])
    header = ["strategy", "proposed", "rejected", "ran", "crashed", "kept", "best delta"]
    body = markdown_table(header, rows) if rows else "No candidates proposed yet."
    return "## Strategy outcomes\n\n" + body + "\n\n(best delta: the largest val_bpb gain of one candidate over its parent's mean; positive is better)"


def _allocation_section(memory) -> str:
    """Slots per strategy in each round: the mix, or the mix blended with the measured rates."""
    from agent.allocation import EVENT
    from agent.proposers.base import STRATEGIES
    events = memory.events(EVENT)
    if not events:
        return ""
    rows = []
    for e in events:
        p = e.get("payload") or {}
        slots, measured = p.get("slots") or {}, p.get("rates") or {}
        unit = p.get("unit", "s")
        rates = ", ".join(f"{s} {r:.3g}" for s, r in sorted(measured.items()) if r) or "-"
        rows.append([e.get("generation"), *[slots.get(s, 0) for s in STRATEGIES],
                     "learned" if p.get("learned") else "strategy_mix", f"{rates} (val_bpb/{unit})"])
    return ("## Strategy allocation\n\n" + markdown_table(["generation", *STRATEGIES, "basis", "gain per compute"], rows)
            + "\n\n(allocation: strategy_mix blended with each class's confirmed val_bpb gain per compute; "
              "`allocation.enabled: false` keeps the mix)")


def _notebook_section(memory) -> str:
    """The lab notebook's entries, oldest first; a run without one gets the heuristic's reading
    of its figures now (marked as such)."""
    from agent import notebook
    lines = ["## Lab notebook", ""]
    entries = notebook.entries(memory)
    for entry in entries:
        lines.append(f"**Through generation {entry['generation']}** ({entry['author']}"
                     + (f"; {entry['note']}" if entry.get("note") else "") + ")")
        lines.extend(f"- {_cell(line)}" for line in entry["lines"])
        lines.append("")
    if not entries:
        lines.append("_No entry was written during the run; read off the figures now (heuristic):_")
        lines.extend(f"- {_cell(line)}" for line in notebook.heuristic_lessons(memory))
    return "\n".join(lines).rstrip()


def _noise_section(memory) -> str:
    rejected = noise_rejections(memory)
    lines = ["## Wins rejected as noise", ""]
    lines.append(f"Apparent wins (below the incumbent's mean) that selection refused because they did not "
                 f"clear max(min_delta, k·σ): **{rejected['total']}**, of which {rejected['after_confirmation']} "
                 f"after a confirmation re-run.")
    if rejected["decisions"]:
        rows = [[d["candidate_id"], d.get("generation"), _fmt(d.get("delta")), _fmt(d.get("threshold")),
                 d.get("reason") or ""] for d in rejected["decisions"]]
        lines += ["", markdown_table(["candidate", "generation", "gain", "threshold", "why"], rows)]
    return "\n".join(lines)


def _spend_section(memory) -> str:
    spend = memory.spend()
    lines = ["## Spend", "",
             f"- compute {_usd(spend.get('compute_usd'))}, LLM {_usd(spend.get('llm_usd'))}, "
             f"total {_usd(spend.get('total_usd'))}"]
    by_gen = spend.get("by_generation") or {}
    if by_gen:
        rows = []
        for gen, s in sorted(by_gen.items(), key=lambda kv: (kv[0] is None, str(kv[0]).zfill(6))):
            rows.append([gen if gen is not None else "-", _usd(s.get("compute_usd")), _usd(s.get("llm_usd")),
                         _usd(float(s.get("compute_usd") or 0) + float(s.get("llm_usd") or 0))])
        lines += ["", markdown_table(["generation", "compute", "LLM", "total"], rows)]
    calls = memory.llm_calls()
    if calls:
        tokens_in = sum(int(c.get("input_tokens") or 0) for c in calls)
        tokens_out = sum(int(c.get("output_tokens") or 0) for c in calls)
        lines.append(f"\n{len(calls)} LLM calls, {tokens_in:,} input and {tokens_out:,} output tokens.")
    return "\n".join(lines)


def _early_stop_section(executions: list[dict]) -> str:
    stopped = [e for e in executions if e.get("status") == STOPPED_EARLY]
    if not stopped:
        return ""
    figures = early_stop_savings(executions)
    trained = sum(float(e.get("training_seconds") or 0.0) for e in executions if e.get("kind") == CANDIDATE
                  and e.get("status") in RESULT_STATUSES)
    lines = ["## Stopped early", "",
             f"{figures['early_stopped']} candidate run(s) were stopped because their loss curve was losing "
             f"against the incumbent's own runs at equal progress; they did not spend "
             f"**{_duration(figures['compute_saved_s'])}** of training"
             + (f" ({figures['compute_saved_s'] / (trained + figures['compute_saved_s']):.0%} of what the candidate "
                f"runs would have trained)" if trained + figures['compute_saved_s'] > 0 else "") + ".", ""]
    rows = []
    for e in _execution_order(stopped):
        why = (e.get("result") or {}).get("early_stop") or {}
        rows.append([e["id"], e["candidate_id"], why.get("incumbent", "-"), _fmt(why.get("pct"), 1),
                     _fmt(why.get("candidate_loss"), 4), _fmt(why.get("reference_mean"), 4),
                     _fmt(why.get("threshold"), 4), why.get("n_references", "-")])
    lines.append(markdown_table(["execution", "candidate", "against", "at %", "loss", "reference mean",
                                 "threshold", "references"], rows))
    return "\n".join(lines)


def _wall_clock_section(executions: list[dict]) -> str:
    w = wall_clock(executions)
    lines = ["## Wall clock: parallel vs one after another", ""]
    if not w["executions"]:
        return "\n".join(lines + ["No timed executions yet."])
    lines += [
        f"- {w['executions']} timed executions; run one after another they would take "
        f"**{_duration(w['serial_s'])}** (sum of their wall times)",
        f"- this run took {_duration(w['span_s'])} from the first launch to the last result "
        f"→ speed-up **{w['speedup_span']:.2f}x**" if w["speedup_span"] else
        f"- this run took {_duration(w['span_s'])} from the first launch to the last result",
        f"- time with at least one execution running: {_duration(w['busy_s'])}"
        + (f" → {w['speedup_busy']:.2f}x while busy" if w["speedup_busy"] else ""),
    ]
    return "\n".join(lines)


def _replay_section(memory, executions: list[dict]) -> str:
    replays = [e for e in executions if e.get("kind") == REPLAY]
    if not replays:
        return ""
    rows = []
    for cid in sorted({e["candidate_id"] for e in replays}):
        originals = [float(e["val_bpb"]) for e in executions if e["candidate_id"] == cid
                     and e.get("kind") != REPLAY and e.get("status") == OK and e.get("val_bpb") is not None]
        mine = [e for e in replays if e["candidate_id"] == cid]
        for (preset, backend, itype) in sorted({(e.get("preset"), e.get("backend"), e.get("instance_type"))
                                                for e in mine}, key=str):
            group = [float(e["val_bpb"]) for e in mine if (e.get("preset"), e.get("backend"),
                     e.get("instance_type")) == (preset, backend, itype)
                     and e.get("status") == OK and e.get("val_bpb") is not None]
            orig_mean, rep_mean = _mean(originals), _mean(group)
            delta = rep_mean - orig_mean if orig_mean is not None and rep_mean is not None else None
            rows.append([cid, f"{preset}/{backend}" + (f"/{itype}" if itype else ""),
                         f"{_fmt(orig_mean)} (n={len(originals)})", f"{_fmt(rep_mean)} (n={len(group)})",
                         _fmt(_std(group)), _fmt(delta)])
    return "## Replays\n\n" + markdown_table(
        ["candidate", "replayed on", "original", "replay", "replay σ", "delta"], rows)


def _experiments_section(memory, executions: list[dict]) -> str:
    titles = {c["id"]: c for c in memory.candidates()}
    rows = []
    for e in _execution_order(executions):
        cand = titles.get(e["candidate_id"], {})
        rows.append([e["id"], e.get("generation"), e["candidate_id"], e.get("kind"), cand.get("strategy", ""),
                     (cand.get("title") or "")[:60], e.get("status"), _fmt(e.get("val_bpb")),
                     _fmt(e.get("training_seconds"), 1)])
    body = markdown_table(["execution", "gen", "candidate", "kind", "strategy", "title", "status", "val_bpb",
                           "train s"], rows) if rows else "None yet."
    return "## All executions\n\n" + body


def render_report(memory, run_dir: Path, png_name: str = "progress.png") -> str:
    info = memory.run_info()
    executions = memory.executions()
    tag = info.get("tag") or Path(run_dir).name
    parts = [
        f"# autoresearch report: `{tag}`" + (" (SIMULATED)" if info.get("backend") == SIMULATED else ""),
        SIMULATED_BANNER if info.get("backend") == SIMULATED else "",
        f"_generated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())} from `memory.sqlite`_",
        _summary_section(memory, info, executions),
        f"![progress]({png_name})",
        _lineage_section(memory),
        _strategy_section(memory),
        _allocation_section(memory),
        _notebook_section(memory),
        _noise_section(memory),
        _spend_section(memory),
        _early_stop_section(executions),
        _wall_clock_section(executions),
        _replay_section(memory, executions),
        _experiments_section(memory, executions),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def build_report(memory, run_dir: Path) -> tuple[Path, Path]:
    """Write runs/<TAG>/report.md and runs/<TAG>/progress.png; returns their paths."""
    info = memory.run_info()
    layout = RunLayout(Path(info["project_dir"]), Path(run_dir))
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    png = plot_progress(memory, layout.progress_png, k_sigma=_k_sigma(info))
    md = layout.report_md
    tmp = md.with_name(f".{md.name}.{os.getpid()}.tmp")
    tmp.write_text(render_report(memory, run_dir, png.name))
    os.replace(tmp, md)
    return md, png
