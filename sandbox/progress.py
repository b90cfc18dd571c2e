"""Read train.py's per-step progress lines; shared by the local and SageMaker runners.

A line looks like
    step 00042 (14.0%) | loss: 4.123456 | lrm: 1.00 | dt: 312ms | tok/sec: 1,680,000 | mfu: 39.8% | epoch: 1 | remaining: 258s
Candidates may reorder or drop the optional fields, so parsing is by `key: value` field rather
than one rigid pattern; only `step N (P%)` and `loss` are required.
"""
from __future__ import annotations

import re
from pathlib import Path

from sandbox.runners.base import Progress

_HEAD = re.compile(r"^\s*step\s+(\d+)\s*\(\s*([\d.]+)\s*%\s*\)")
_FIELD = re.compile(r"^\s*([A-Za-z/_]+)\s*:\s*(.+?)\s*$")


def _number(text: str) -> float | None:
    """'1,680,000' -> 1680000.0, '39.8%' -> 39.8, '258s' -> 258.0, '312ms' -> 312.0, 'nan' -> nan."""
    m = re.match(r"^[-+]?(?:[\d,]*\.?\d+(?:[eE][-+]?\d+)?|nan|inf)", text.strip(), re.IGNORECASE)
    if not m:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def parse_progress_line(line: str) -> dict | None:
    """Fields of one progress line, or None when the line is not one.

    Returns {"step", "pct", "loss", "tok_per_s", "mfu", "remaining_s"}; optional fields are None
    when absent. `loss` may be NaN (train.py prints it before failing).
    """
    head = _HEAD.match(line)
    if not head:
        return None
    fields: dict[str, str] = {}
    for part in line[head.end():].split("|"):
        m = _FIELD.match(part)
        if m:
            fields[m.group(1).lower()] = m.group(2)
    loss = _number(fields.get("loss", ""))
    if loss is None:
        return None
    tok = _number(fields.get("tok/sec", fields.get("tok_per_sec", "")))
    return {
        "step": int(head.group(1)),
        "pct": float(head.group(2)),
        "loss": loss,
        "tok_per_s": tok if tok is not None else 0.0,
        "mfu": _number(fields.get("mfu", "")),
        "remaining_s": _number(fields.get("remaining", "")),
    }


def to_progress(fields: dict, execution_id: str, elapsed_s: float = 0.0) -> Progress:
    return Progress(execution_id=execution_id, elapsed_s=elapsed_s, **fields)


def latest_progress(text: str) -> dict | None:
    """The last parsable progress reading in a chunk of log text (tolerates \\r, partial lines)."""
    for line in reversed(re.split(r"[\r\n]+", text)):
        fields = parse_progress_line(line)
        if fields is not None:
            return fields
    return None


def latest_progress_in_file(path: Path, tail_bytes: int = 16384) -> dict | None:
    """The last progress reading in the last `tail_bytes` of a log file; None if none or no file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            chunk = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return latest_progress(chunk)
