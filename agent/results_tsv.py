"""runs/<TAG>/results.tsv: one row per finished execution, rendered from memory every time.

Upstream autoresearch's analysis reads this file by the column names `commit`, `val_bpb`,
`memory_gb`, `status` (keep | discard | crash) and `description`, so those come first and are
formatted exactly as upstream writes them (val_bpb with 6 decimals, 0.000000 for a crash; memory
in GB with one decimal). A run stopped early was never evaluated: its val_bpb is left empty (pandas
reads NaN, which upstream's notebook plots nowhere) and its description starts `stopped early: `.
The columns after them are ours.

Rows: executions with a result (sandbox/statuses.py's RESULT_STATUSES: ok, or a failure of the
candidate). Executions that were stopped from outside (killed, interrupted) or lost with a dead
orchestrator are not results; they stay in memory and are re-run. The baseline comes first, then
generation by generation in execution order.

`status` (statuses.tsv_status): `keep` for runs of a candidate that became the incumbent (the
baseline included), `discard` for other ok runs, for control re-runs of the incumbent (a control
measures noise; it is not a new experiment that was kept) and for runs stopped early (they ran
and were losing), `crash` for every failure.

A simulated run's rows say so: `backend` is `simulated` and the description starts with
`simulated: ` (nothing was trained; the numbers come from sandbox/runners/simulated.py), and
their `commit` is the code's fingerprint (simulated runs never touch git).

This module is the one writer of results.tsv; `write_run_results` is what everyone calls.
"""
from __future__ import annotations

import os
from pathlib import Path

from agent.layout import RESULTS_TSV
from sandbox.statuses import (BASELINE, CANDIDATE, CONFIRMATION, CONTROL, CRASH, OK, REPLAY, RESULT_STATUSES,
                              STOPPED_EARLY, tsv_status)

UPSTREAM_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
EXTRA_COLUMNS = ("generation", "candidate", "strategy", "execution", "kind", "attempt", "verdict",
                 "delta", "training_seconds", "num_steps", "backend", "preset", "cost_usd",
                 "failure_reason")
COLUMNS = UPSTREAM_COLUMNS + EXTRA_COLUMNS

KEPT_KINDS = (BASELINE, CANDIDATE, CONFIRMATION)     # runs whose status can be `keep`


def _clean(text) -> str:
    """A TSV cell: no tabs or newlines inside."""
    return " ".join(str(text if text is not None else "").split())


def _short(value: str | None, n: int = 7) -> str:
    return (value or "")[:n]


SIMULATED = "simulated"


def describe(execution: dict, candidate: dict) -> str:
    text = _describe(execution, candidate)
    if execution.get("status") == STOPPED_EARLY:     # never evaluated: the row has no val_bpb
        text = f"stopped early: {text}"
    return f"{SIMULATED}: {text}" if execution.get("backend") == SIMULATED else text


def _describe(execution: dict, candidate: dict) -> str:
    kind = execution.get("kind")
    title = _clean(candidate.get("title")) or candidate.get("id", "")
    if kind == BASELINE:
        return "baseline" if candidate.get("origin") == "baseline" or title.lower() == "baseline" \
            else f"baseline: {title}"
    if kind == CONTROL:
        return f"control: re-run of incumbent {candidate['id']}"
    if kind == CONFIRMATION:
        return f"confirmation: re-run of {candidate['id']} ({title})"
    if kind == REPLAY:
        of = execution.get("replay_of") or candidate["id"]
        return f"replay of {of}: {title}"
    return title


def build_rows(memory, commits: dict[str, str] | None = None) -> list[dict]:
    """The table as dicts keyed by COLUMNS. `commits`: candidate id -> git commit sha (from
    agent.gitops); candidates without one get their short fingerprint."""
    commits = commits or {}
    candidates = {c["id"]: c for c in memory.candidates()}
    kept = set(memory.incumbent_history())
    rows = []
    executions = [e for e in memory.executions() if e.get("status") in RESULT_STATUSES]
    # baseline first, then by generation, then in execution (id) order
    executions.sort(key=lambda e: (e.get("kind") != BASELINE or e.get("generation") != 0,
                                   e.get("generation") or 0, e["id"]))
    for e in executions:
        cand = candidates.get(e["candidate_id"], {"id": e["candidate_id"]})
        ok = e["status"] == OK and e.get("val_bpb") is not None
        measured = CRASH if e["status"] == OK and not ok else e["status"]   # ok without a val_bpb: no result
        status = tsv_status(measured, kept=e.get("kind") in KEPT_KINDS and cand["id"] in kept)
        vram = e.get("peak_vram_mb")
        judged = e.get("kind") in (CANDIDATE, CONFIRMATION)
        delta = cand.get("verdict_delta") if judged else None
        stopped = e["status"] == STOPPED_EARLY
        rows.append({
            "commit": _short(commits.get(cand["id"])) or _short(cand.get("fingerprint"), 8),
            # a run stopped early was never evaluated: no number at all (upstream's notebook plots every
            # non-crash row, and would show 0.000000 as a score); a crash keeps upstream's 0.000000
            "val_bpb": f"{e['val_bpb']:.6f}" if ok else ("" if stopped else "0.000000"),
            "memory_gb": f"{round((vram or 0.0) / 1024, 1):.1f}" if ok else "0.0",
            "status": status,
            "description": describe(e, cand),
            "generation": str(e.get("generation", "")),
            "candidate": cand["id"],
            "strategy": cand.get("strategy") or "",
            "execution": e["id"],
            "kind": e.get("kind") or "",
            "attempt": str(e.get("attempt") or 1),
            "verdict": (cand.get("verdict") or "") if judged else "",
            "delta": f"{delta:+.6f}" if isinstance(delta, (int, float)) else "",
            "training_seconds": _num(e.get("training_seconds"), "{:.1f}"),
            "num_steps": _num(e.get("num_steps"), "{:d}", int),
            "backend": e.get("backend") or "",
            "preset": e.get("preset") or "",
            "cost_usd": _num(e.get("cost_usd"), "{:.4f}"),
            "failure_reason": _clean(e.get("failure_reason"))[:200] if not ok else "",
        })
    return rows


def _num(value, fmt: str, cast=float) -> str:
    if value is None:
        return ""
    try:
        return fmt.format(cast(value))
    except (TypeError, ValueError):
        return ""


def render(rows: list[dict]) -> str:
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(_clean(row[c]) for c in COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def write_results_tsv(memory, path: Path, commits: dict[str, str] | None = None) -> Path:
    """Render results.tsv from memory and replace the file atomically (`commits` as build_rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render(build_rows(memory, commits)))
    os.replace(tmp, path)
    return path


def read_results_tsv(path: Path) -> list[dict]:
    """Parse a results.tsv back into dicts by header name (no pandas needed)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def run_commits(memory) -> dict[str, str]:
    """candidate id -> commit on autoresearch/<TAG>, when the run's project folder is a git repo."""
    from agent.gitops import RunRepo
    try:
        info = memory.run_info()
        if info["backend"] == SIMULATED:
            return {}                  # simulated runs are never committed
        repo = RunRepo.find(Path(info["project_dir"]), info["tag"])
    except Exception:   # no run row yet, or git unusable: fall back to fingerprints
        return {}
    return repo.candidate_commits() if repo else {}


def write_run_results(memory, run_dir: Path) -> Path:
    """runs/<TAG>/results.tsv with git commits resolved (what the loop and scheduler call)."""
    return write_results_tsv(memory, Path(run_dir) / RESULTS_TSV, run_commits(memory))
