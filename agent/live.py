"""What the operator sees while executions run: a rich live table, plain lines, or JSON lines.

Three renderings of the same events, picked once per run:
  * a terminal: a rich `Live` table with a row per running execution (strategy, title, step, %,
    loss, tok/s, elapsed, cost so far) under a header (generation, incumbent + val_bpb, sigma,
    spend); finished executions are printed above it as one line each;
  * not a terminal (CI logs, `| tee`): the same information as plain lines, progress throttled;
  * `--json`: one JSON object per line on stdout, {"event": ..., ...}, for coding-agent sessions
    (human text then goes to stderr so stdout stays machine-readable).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sandbox.statuses import BASELINE, CANDIDATE, OK, STOPPED_EARLY

PLAIN_PROGRESS_EVERY_S = 15.0    # plain-line progress: at most one line per execution this often
JSON_PROGRESS_EVERY_S = 2.0      # JSON progress events: same idea, finer


@dataclass
class _Row:
    execution_id: str
    candidate_id: str
    kind: str
    strategy: str
    title: str
    started_mono: float
    usd_per_second: float = 0.0
    step: int | None = None
    pct: float | None = None
    loss: float | None = None
    tok_per_s: float | None = None
    last_emit: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started_mono

    def cost(self) -> float:
        return self.elapsed() * self.usd_per_second


@dataclass
class Header:
    generation: int | None = None
    incumbent: str | None = None
    incumbent_bpb: float | None = None
    sigma: float | None = None
    spend_usd: float = 0.0
    budget_usd: float | None = None
    queued: int = 0
    extra: dict = field(default_factory=dict)


def emit_json(event: str, out: IO[str] | None = None, **fields) -> None:
    """One --json event line: {"event": ..., ...}. The one writer of stdout's machine-readable lines."""
    out = out or sys.stdout
    out.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    out.flush()


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


class LiveView:
    """Use as a context manager around the watch loop; call the event methods from it."""

    def __init__(self, console: Console, *, json_mode: bool = False, out: IO[str] | None = None,
                 enabled: bool = True):
        self.console = console
        self.json_mode = json_mode
        self.out = out or sys.stdout
        self.header = Header()
        self.rows: dict[str, _Row] = {}
        self._live: Live | None = None
        self._use_live = enabled and not json_mode and console.is_terminal

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "LiveView":
        if self._use_live:
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=4,
                              transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    # ------------------------------------------------------------------ output primitives
    def emit(self, event: str, **fields) -> None:
        """A JSON line in json mode (always, whatever the event); nothing otherwise."""
        if self.json_mode:
            emit_json(event, self.out, **fields)

    def say(self, text: str, style: str | None = None) -> None:
        """A human line (stderr console in json mode, above the live table on a terminal)."""
        target = self._live.console if self._live is not None else self.console
        # Text, not a markup string: titles like "[moderate] x" must print as they are
        target.print(Text(text, style=style or ""), highlight=False, soft_wrap=True)

    @property
    def shows_header(self) -> bool:
        return self._use_live

    # ------------------------------------------------------------------ events
    def set_header(self, **fields) -> None:
        for key, value in fields.items():
            if hasattr(self.header, key):
                setattr(self.header, key, value)
            else:
                self.header.extra[key] = value

    def started(self, *, execution_id: str, candidate_id: str, kind: str, strategy: str, title: str,
                usd_per_second: float = 0.0, job_id: str | None = None, attempt: int = 1) -> None:
        self.rows[execution_id] = _Row(execution_id, candidate_id, kind, strategy or "", title or "",
                                       time.monotonic(), usd_per_second)
        self.emit("started", execution=execution_id, candidate=candidate_id, kind=kind, strategy=strategy,
                  title=title, job_id=job_id, attempt=attempt)
        if not self._use_live and not self.json_mode:
            self.say(f"started  {execution_id} {candidate_id} [{kind}/{strategy}] {title}")

    def progress(self, execution_id: str, *, step: int, pct: float, loss: float, tok_per_s: float) -> None:
        row = self.rows.get(execution_id)
        if row is None:
            return
        row.step, row.pct, row.loss, row.tok_per_s = step, pct, loss, tok_per_s
        now = time.monotonic()
        if self.json_mode:
            if now - row.last_emit >= JSON_PROGRESS_EVERY_S:
                row.last_emit = now
                self.emit("progress", execution=execution_id, candidate=row.candidate_id, step=step,
                          pct=pct, loss=loss, tok_per_s=tok_per_s, elapsed_s=round(row.elapsed(), 1),
                          cost_usd=round(row.cost(), 6))
        elif not self._use_live and now - row.last_emit >= PLAIN_PROGRESS_EVERY_S:
            row.last_emit = now
            self.say(f"progress {execution_id} step {step} ({pct:.1f}%) loss {loss:.4f} "
                     f"tok/s {tok_per_s:,.0f} elapsed {_elapsed(row.elapsed())}")

    def finished(self, execution: dict, *, title: str = "", strategy: str = "") -> None:
        row = self.rows.pop(execution["id"], None)
        status = execution.get("status")
        bpb = execution.get("val_bpb")
        self.emit("finished", execution=execution["id"], candidate=execution["candidate_id"],
                  kind=execution.get("kind"), status=status, val_bpb=bpb,
                  training_seconds=execution.get("training_seconds"), cost_usd=execution.get("cost_usd"),
                  failure_reason=execution.get("failure_reason"))
        if self.json_mode:
            return
        title = title or (row.title if row else "")
        what = f"val_bpb {bpb:.6f}" if status == OK and bpb is not None else \
            f"{status}: {(execution.get('failure_reason') or '')[:160]}"
        style = "green" if status == OK else "yellow" if status == STOPPED_EARLY else "red"
        self.say(f"finished {execution['id']} {execution['candidate_id']} [{execution.get('kind')}] "
                 f"{title} -> {what}", style=style)

    # ------------------------------------------------------------------ rendering
    def header_text(self) -> str:
        h = self.header
        inc = f"{h.incumbent or '-'} ({_fmt(h.incumbent_bpb, '.6f')})"
        budget = f" / ${h.budget_usd:.2f}" if h.budget_usd else ""
        gen = "-" if h.generation is None else f"{h.generation}"
        queued = f" | queued {h.queued}" if h.queued else ""
        return (f"generation {gen} | incumbent {inc} | sigma {_fmt(h.sigma, '.6f')} | "
                f"spend ${h.spend_usd:.2f}{budget}{queued}")

    def _render(self):
        table = Table(expand=False, show_edge=False, pad_edge=False)
        for name, justify in (("exec", "left"), ("candidate", "left"), ("strategy", "left"),
                              ("title", "left"), ("step", "right"), ("%", "right"), ("loss", "right"),
                              ("tok/s", "right"), ("elapsed", "right"), ("cost", "right")):
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                             max_width=40 if name == "title" else None)
        for row in list(self.rows.values()):
            table.add_row(row.execution_id, row.candidate_id,
                          escape(row.strategy if row.kind in (CANDIDATE, BASELINE) else row.kind),
                          escape(row.title), _fmt(row.step, "d"), _fmt(row.pct, ".1f"), _fmt(row.loss, ".4f"),
                          _fmt(row.tok_per_s, ",.0f"), _elapsed(row.elapsed()), f"${row.cost():.3f}")
        return Group(Text(self.header_text(), style="bold"), table)
