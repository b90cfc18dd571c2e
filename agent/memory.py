"""The agent's memory: one SQLite file per run (`runs/<tag>/memory.sqlite`).

Everything the loop learns is written here before it is acted on, so a killed
orchestrator loses nothing but the work that was in flight. Rows come back as
plain dicts with JSON columns decoded. This module is storage only: what the
rows mean (noise, lineage, strategy outcomes, the proposer's digest) is
`agent/digest.py`'s business.

Concurrency: the file is opened in WAL mode with a busy timeout, every write is
one `BEGIN IMMEDIATE` transaction, so two processes (autopilot and the REPL) can
take turns on the same run, and threads of one process share a connection
behind a lock (the LLM proposer records calls from worker threads).
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from agent.layout import DB_NAME
from sandbox.statuses import EXECUTION_KINDS, HARNESS_STATUSES, NOT_ADMITTED, RESULT_STATUSES, TERMINAL_STATUSES

BUSY_TIMEOUT_MS = 30_000

CHECK_STATUSES = ("accepted", "rejected", "dropped")
ORIGINS = ("baseline", "proposed", "human", "replay")
VERDICTS = ("keep", "discard", "confirm", "noise")
BASELINE_ID = "g000-baseline"     # the one candidate of generation 0: the project's own train.py
# Results written before result.json carried `measurement_version` came from the v1 harness.
LEGACY_MEASUREMENT_VERSION = 1

# Typed copies of the DESIGN.md result.json fields (the whole JSON is kept too).
RESULT_FLOAT_FIELDS = ("val_bpb", "peak_vram_mb", "training_seconds", "total_seconds", "mfu_percent",
                       "num_params_M", "total_tokens_M")
RESULT_INT_FIELDS = ("num_steps",)

_JSON_COLUMNS = {"parents", "edits", "settings", "result", "payload", "value"}


class MemoryStoreError(Exception):
    """A memory file or request that cannot be served; the message says which and why."""


class UnknownRunError(MemoryStoreError):
    """No memory exists for the requested run tag."""


class UnknownRecordError(MemoryStoreError, KeyError):
    """A candidate or execution id that this run does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SchemaVersionError(MemoryStoreError):
    """The file was written by a newer version of this code."""


# ---------------------------------------------------------------------------------------------
# Schema. Each entry migrates from version i to i+1; never edit a released entry, append one.
# ---------------------------------------------------------------------------------------------
_MIGRATION_1 = """
CREATE TABLE runs (
    tag          TEXT PRIMARY KEY,
    preset       TEXT NOT NULL,
    backend      TEXT NOT NULL,
    proposer     TEXT NOT NULL,
    settings     TEXT NOT NULL DEFAULT '{}',
    project_dir  TEXT NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE TABLE candidates (
    id            TEXT PRIMARY KEY,
    generation    INTEGER NOT NULL,
    idx           INTEGER NOT NULL,              -- 0 for the baseline, 1.. for the rest
    parents       TEXT NOT NULL DEFAULT '[]',
    strategy      TEXT NOT NULL,
    title         TEXT NOT NULL,
    hypothesis    TEXT NOT NULL DEFAULT '',
    edits         TEXT NOT NULL DEFAULT '[]',
    diff          TEXT NOT NULL DEFAULT '',
    fingerprint   TEXT NOT NULL,
    source        TEXT,
    check_status  TEXT NOT NULL CHECK (check_status IN ('accepted', 'rejected', 'dropped')),
    rule          TEXT,
    reason        TEXT,
    proposer      TEXT NOT NULL DEFAULT '',
    origin        TEXT NOT NULL CHECK (origin IN ('baseline', 'proposed', 'human', 'replay')),
    attempts      INTEGER NOT NULL DEFAULT 1,
    verdict       TEXT CHECK (verdict IS NULL OR verdict IN ('keep', 'discard', 'confirm', 'noise')),
    verdict_delta REAL,
    verdict_threshold REAL,
    verdict_reason TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    UNIQUE (generation, idx)
);
CREATE INDEX candidates_fingerprint ON candidates (fingerprint);
CREATE TABLE executions (
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    candidate_id      TEXT NOT NULL REFERENCES candidates (id),
    generation        INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('candidate', 'baseline', 'control', 'confirmation', 'replay')),
    attempt           INTEGER NOT NULL DEFAULT 1,
    backend           TEXT NOT NULL,
    job_id            TEXT,
    instance_type     TEXT,
    seed              INTEGER,
    replay_of         TEXT,
    preset            TEXT NOT NULL,
    workspace         TEXT NOT NULL,
    log_path          TEXT,
    status            TEXT NOT NULL,
    val_bpb           REAL,
    peak_vram_mb      REAL,
    training_seconds  REAL,
    total_seconds     REAL,
    num_steps         INTEGER,
    mfu_percent       REAL,
    num_params_M      REAL,
    total_tokens_M    REAL,
    failure_reason    TEXT,
    result            TEXT,
    billable_seconds  REAL,
    estimated_cost_usd REAL NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0,
    created_at        REAL NOT NULL,
    started_at        REAL,
    ended_at          REAL
);
CREATE INDEX executions_candidate ON executions (candidate_id, status);
CREATE INDEX executions_generation ON executions (generation);
-- partial: resume asks for the few unfinished rows, and a full status index would lure the planner
-- away from the candidate index for "this candidate's ok runs"
CREATE INDEX executions_unfinished ON executions (status) WHERE status IN ('pending', 'running');
CREATE TABLE llm_calls (
    id                 INTEGER PRIMARY KEY,
    model              TEXT NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL,
    latency_s          REAL NOT NULL,
    outcome            TEXT NOT NULL,
    error              TEXT,
    purpose            TEXT NOT NULL DEFAULT '',
    generation         INTEGER,
    created_at         REAL NOT NULL
);
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL DEFAULT '{}',
    generation  INTEGER,
    created_at  REAL NOT NULL
);
CREATE INDEX events_kind ON events (kind);
CREATE TABLE state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
"""

# measurement_version: which prepare.py/harness contract measured the row (result.json's key);
# rows that ended before the column existed were measured by the v1 harness.
_MIGRATION_2 = """
ALTER TABLE executions ADD COLUMN measurement_version INTEGER;
UPDATE executions SET measurement_version = 1 WHERE status NOT IN ('pending', 'running');
"""

MIGRATIONS: tuple[str, ...] = (_MIGRATION_1, _MIGRATION_2)
SCHEMA_VERSION = len(MIGRATIONS)

_CANDIDATE_UPDATABLE = {
    "generation", "parents", "strategy", "title", "hypothesis", "edits", "diff", "fingerprint", "source",
    "check_status", "rule", "reason", "proposer", "origin", "attempts",
    "verdict", "verdict_delta", "verdict_threshold", "verdict_reason",
}


def _finite_float(value: Any) -> float | None:
    """A result.json number as a float, or None (missing, non-numeric, NaN/inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int_or_none(value: Any) -> int | None:
    number = _finite_float(value)
    return int(number) if number is not None else None


def known_run_tags(runs_dir: Path) -> list[str]:
    """Tags of the runs under `runs_dir` that have a memory file."""
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir() if (p / DB_NAME).is_file())


class Memory:
    """One run's memory. Open with `Memory.open(runs_dir / tag)`; usable as a context manager."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._conn = connection
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening and schema
    @classmethod
    def open(cls, run_dir: Path, create: bool = True) -> "Memory":
        run_dir = Path(run_dir)
        path = run_dir / DB_NAME
        if not path.exists():
            if not create:
                known = known_run_tags(run_dir.parent)
                listing = ", ".join(known) if known else "none"
                raise UnknownRunError(
                    f"unknown run {run_dir.name!r}: no {path}; known runs in {run_dir.parent}: {listing}")
            run_dir.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a read never holds a lock open.
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")   # WAL + NORMAL: durable at checkpoints, no fsync per write
            memory = cls(path, conn)
            memory._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise MemoryStoreError(f"{path}: not a usable memory file ({exc})") from None
        except BaseException:
            conn.close()
            raise
        return memory

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path}: schema version {version} is newer than this code understands "
                    f"(up to {SCHEMA_VERSION}); upgrade autoresearch to open this run")
            for number in range(version, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[number]):
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                # PRAGMA user_version is transactional in SQLite: it commits with the migration.
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so two processes
        serialise on busy_timeout instead of failing half-way with SQLITE_BUSY."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _read(self, sql: str, params: tuple | list = ()) -> list[dict]:
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_decode(row) for row in rows]

    # ------------------------------------------------------------------ the run
    def ensure_run(self, tag: str, preset: str, backend: str, proposer: str, settings: dict,
                   project_dir: str) -> dict:
        """Create the run row on first use; on resume keep the original row and return it
        (the caller compares, e.g. to warn that the preset differs)."""
        now = time.time()
        with self._write() as conn:
            existing = conn.execute("SELECT tag FROM runs LIMIT 1").fetchone()
            if existing is None:
                conn.execute(
                    "INSERT INTO runs (tag, preset, backend, proposer, settings, project_dir, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (tag, preset, backend, proposer, _dump(settings or {}), str(project_dir), now, now))
            elif existing["tag"] != tag:
                raise MemoryStoreError(f"{self.path} belongs to run {existing['tag']!r}, not {tag!r}")
        return self.run_info()

    def run_info(self) -> dict:
        rows = self._read("SELECT * FROM runs LIMIT 1")
        if not rows:
            raise MemoryStoreError(f"{self.path}: no run recorded yet (call ensure_run first)")
        return rows[0]

    # ------------------------------------------------------------------ candidates
    def add_candidate(self, *, generation: int, strategy: str, title: str, hypothesis: str = "",
                      edits: list[dict] = (), parents: list[str] = (), diff: str = "", fingerprint: str,
                      source: str | None, check_status: str, rule: str | None = None,
                      reason: str | None = None, proposer: str = "", origin: str = "proposed",
                      attempts: int = 1) -> str:
        """Store a candidate and return its id: "g{generation:03d}-c{index:02d}" with index 1, 2, ...
        per generation, or "g000-baseline" for origin "baseline" (adding the baseline again with the
        same fingerprint returns the existing id, so a resumed run can call this blindly)."""
        _require(check_status in CHECK_STATUSES, f"check_status must be one of {CHECK_STATUSES}, got {check_status!r}")
        _require(origin in ORIGINS, f"origin must be one of {ORIGINS}, got {origin!r}")
        _require(isinstance(generation, int) and generation >= 0, f"generation must be an int >= 0, got {generation!r}")
        now = time.time()
        with self._write() as conn:
            if origin == "baseline":
                _require(generation == 0, f"the baseline belongs to generation 0, got {generation}")
                row = conn.execute("SELECT fingerprint FROM candidates WHERE id = ?", (BASELINE_ID,)).fetchone()
                if row is not None:
                    if row["fingerprint"] != fingerprint:
                        raise MemoryStoreError(
                            f"{self.path}: this run's baseline has fingerprint {row['fingerprint']!r}; "
                            f"refusing a different baseline {fingerprint!r} (train.py changed? start a new run)")
                    return BASELINE_ID
                candidate_id, index = BASELINE_ID, 0
            else:
                index = conn.execute("SELECT COALESCE(MAX(idx), 0) + 1 FROM candidates WHERE generation = ?",
                                     (generation,)).fetchone()[0]
                candidate_id = f"g{generation:03d}-c{index:02d}"
            conn.execute(
                "INSERT INTO candidates (id, generation, idx, parents, strategy, title, hypothesis, edits, diff,"
                " fingerprint, source, check_status, rule, reason, proposer, origin, attempts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (candidate_id, generation, index, _dump(list(parents)), strategy, title, hypothesis,
                 _dump(list(edits)), diff, fingerprint, source, check_status, rule, reason, proposer, origin,
                 int(attempts), now, now))
        return candidate_id

    def update_candidate(self, candidate_id: str, **fields) -> None:
        unknown = sorted(set(fields) - _CANDIDATE_UPDATABLE)
        _require(not unknown, f"update_candidate: unknown fields {unknown}; allowed: {sorted(_CANDIDATE_UPDATABLE)}")
        if not fields:
            return
        if "check_status" in fields:
            _require(fields["check_status"] in CHECK_STATUSES,
                     f"check_status must be one of {CHECK_STATUSES}, got {fields['check_status']!r}")
        if "origin" in fields:
            _require(fields["origin"] in ORIGINS, f"origin must be one of {ORIGINS}, got {fields['origin']!r}")
        if fields.get("verdict") is not None:
            _require(fields["verdict"] in VERDICTS, f"verdict must be one of {VERDICTS}, got {fields['verdict']!r}")
        values = {k: (_dump(list(v)) if k in ("parents", "edits") else v) for k, v in fields.items()}
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE candidates SET {assignments} WHERE id = ?",
                                  (*values.values(), candidate_id))
            if cursor.rowcount == 0:
                raise UnknownRecordError(f"{self.path}: no candidate {candidate_id!r}")

    def record_decision(self, candidate_id: str, *, verdict: str, delta: float | None, threshold: float,
                        reason: str, generation: int | None = None) -> None:
        """Store a selection verdict on the candidate and in the event log, in one transaction
        (the report counts "noise" verdicts as apparent wins rejected as noise)."""
        _require(verdict in VERDICTS, f"verdict must be one of {VERDICTS}, got {verdict!r}")
        now = time.time()
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE candidates SET verdict = ?, verdict_delta = ?, verdict_threshold = ?, verdict_reason = ?,"
                " updated_at = ? WHERE id = ?", (verdict, delta, threshold, reason, now, candidate_id))
            if cursor.rowcount == 0:
                raise UnknownRecordError(f"{self.path}: no candidate {candidate_id!r}")
            conn.execute("INSERT INTO events (kind, payload, generation, created_at) VALUES (?, ?, ?, ?)",
                         ("decision", _dump({"candidate_id": candidate_id, "verdict": verdict, "delta": delta,
                                             "threshold": threshold, "reason": reason}), generation, now))

    def candidate(self, candidate_id: str) -> dict:
        rows = self._read("SELECT * FROM candidates WHERE id = ?", (candidate_id,))
        if not rows:
            raise UnknownRecordError(f"{self.path}: no candidate {candidate_id!r}")
        return rows[0]

    def candidates(self, generation: int | None = None, check_status: str | None = None) -> list[dict]:
        where, params = _where(generation=generation, check_status=check_status)
        return self._read(f"SELECT * FROM candidates{where} ORDER BY generation, idx", params)

    def fingerprints(self) -> set[str]:
        """Fingerprints of every accepted candidate of this run (what counts as already tried)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT fingerprint FROM candidates WHERE check_status = 'accepted' AND fingerprint != ''"
            ).fetchall()
        return {row[0] for row in rows}

    # ------------------------------------------------------------------ executions
    def add_execution(self, *, candidate_id: str, generation: int, kind: str, backend: str, preset: str,
                      workspace: str, seed: int | None = None, instance_type: str | None = None,
                      replay_of: str | None = None, attempt: int = 1, estimated_cost_usd: float = 0.0) -> str:
        """Record an execution before it is launched (status "pending"); returns "e00001", ..."""
        _require(kind in EXECUTION_KINDS, f"kind must be one of {EXECUTION_KINDS}, got {kind!r}")
        now = time.time()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM candidates WHERE id = ?", (candidate_id,)).fetchone() is None:
                raise UnknownRecordError(f"{self.path}: add_execution for unknown candidate {candidate_id!r}")
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM executions").fetchone()[0]
            execution_id = f"e{seq:05d}"
            conn.execute(
                "INSERT INTO executions (seq, id, candidate_id, generation, kind, attempt, backend, instance_type,"
                " seed, replay_of, preset, workspace, status, estimated_cost_usd, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (seq, execution_id, candidate_id, generation, kind, int(attempt), backend, instance_type, seed,
                 replay_of, preset, str(workspace), float(estimated_cost_usd), now))
        return execution_id

    def mark_started(self, execution_id: str, *, job_id: str | None, started_at: float,
                     log_path: str | None = None) -> None:
        """pending/running -> running (running again is allowed: a re-attached job)."""
        with self._write() as conn:
            status = self._status_in(conn, execution_id)
            if status in TERMINAL_STATUSES:
                raise MemoryStoreError(f"{self.path}: execution {execution_id} already ended ({status}); "
                                       "record a new execution to run it again")
            conn.execute(
                "UPDATE executions SET status = 'running', job_id = COALESCE(?, job_id), started_at = ?,"
                " log_path = COALESCE(?, log_path) WHERE id = ?",
                (job_id, started_at, None if log_path is None else str(log_path), execution_id))

    def finish_execution(self, execution_id: str, *, result: dict, billable_seconds: float | None = None,
                         cost_usd: float = 0.0, ended_at: float | None = None, job_id: str | None = None,
                         instance_type: str | None = None, started_at: float | None = None) -> bool:
        """Store the harness's result.json (status, typed fields and the whole JSON). Exactly once:
        returns False and changes nothing when the execution already ended (or was marked lost).
        job_id / instance_type / started_at fill gaps only (a runner's Finished may know them)."""
        if not isinstance(result, dict):
            raise MemoryStoreError(f"finish_execution({execution_id}): result must be a dict, got {type(result).__name__}")
        status = result.get("status")
        # not_admitted: a backend's capacity said no for too long (SageMaker's quota wait)
        _require(status in HARNESS_STATUSES + (NOT_ADMITTED,),
                 f"finish_execution({execution_id}): result status must be one of "
                 f"{HARNESS_STATUSES + (NOT_ADMITTED,)}, got {status!r}")
        version = _int_or_none(result.get("measurement_version"))
        if version is None and status in RESULT_STATUSES:
            version = LEGACY_MEASUREMENT_VERSION
        typed = {name: _finite_float(result.get(name)) for name in RESULT_FLOAT_FIELDS}
        typed.update({name: _int_or_none(result.get(name)) for name in RESULT_INT_FIELDS})
        failure = result.get("failure_reason")
        with self._write() as conn:
            if self._status_in(conn, execution_id) in TERMINAL_STATUSES:
                return False
            conn.execute(
                "UPDATE executions SET status = ?, val_bpb = ?, peak_vram_mb = ?, training_seconds = ?,"
                " total_seconds = ?, mfu_percent = ?, num_params_M = ?, total_tokens_M = ?, num_steps = ?,"
                " failure_reason = ?, result = ?,"
                # added, not set: Charges of earlier attempts may already be on the row
                " billable_seconds = CASE WHEN ? IS NULL THEN billable_seconds"
                " ELSE COALESCE(billable_seconds, 0) + ? END, cost_usd = cost_usd + ?, ended_at = ?,"
                " measurement_version = ?, job_id = COALESCE(job_id, ?), instance_type = COALESCE(instance_type, ?),"
                " started_at = COALESCE(started_at, ?) WHERE id = ?",
                (status, *(typed[n] for n in RESULT_FLOAT_FIELDS), typed["num_steps"],
                 None if failure is None else str(failure), _dump(result), billable_seconds, billable_seconds,
                 float(cost_usd or 0.0),
                 time.time() if ended_at is None else ended_at, version, job_id, instance_type, started_at,
                 execution_id))
        return True

    def add_charges(self, charges: list[dict], *, state: tuple[str, Any] | None = None) -> None:
        """Add billed seconds and dollars to executions, whatever their status (a requeued
        attempt, a killed job settled later), each logged as a `charge` event; `state`
        (key, value) is set in the same transaction, so a settlement list and the charges it
        led to can never disagree (nothing charged twice, nothing dropped)."""
        now = time.time()
        with self._write() as conn:
            for c in charges:
                seconds, cost = float(c["billable_seconds"]), float(c.get("cost_usd") or 0.0)
                _require(seconds >= 0 and cost >= 0, f"add_charges: negative charge {c!r}")
                cur = conn.execute("UPDATE executions SET billable_seconds = COALESCE(billable_seconds, 0) + ?,"
                                   " cost_usd = cost_usd + ? WHERE id = ?", (seconds, cost, c["execution_id"]))
                _require(cur.rowcount == 1, f"add_charges: no execution {c['execution_id']!r}")
                conn.execute("INSERT INTO events (kind, payload, generation, created_at) VALUES (?, ?, ?, ?)",
                             ("charge", _dump(c), None, now))
            if state is not None:
                conn.execute("INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
                             " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                             (state[0], _dump(state[1]), now))

    def mark_lost(self, execution_id: str, reason: str) -> None:
        """The execution died with a killed orchestrator; the row is kept (status "lost")."""
        now = time.time()
        with self._write() as conn:
            status = self._status_in(conn, execution_id)
            if status in TERMINAL_STATUSES:
                return   # already ended: its result stands
            conn.execute("UPDATE executions SET status = 'lost', failure_reason = ?, ended_at = ? WHERE id = ?",
                         (reason, now, execution_id))

    def _status_in(self, conn: sqlite3.Connection, execution_id: str) -> str:
        row = conn.execute("SELECT status FROM executions WHERE id = ?", (execution_id,)).fetchone()
        if row is None:
            raise UnknownRecordError(f"{self.path}: no execution {execution_id!r}")
        return row[0]

    def execution(self, execution_id: str) -> dict:
        rows = self._read("SELECT * FROM executions WHERE id = ?", (execution_id,))
        if not rows:
            raise UnknownRecordError(f"{self.path}: no execution {execution_id!r}")
        return rows[0]

    def executions(self, *, generation: int | None = None, candidate_id: str | None = None,
                   kind: str | None = None, status: str | None = None) -> list[dict]:
        where, params = _where(generation=generation, candidate_id=candidate_id, kind=kind, status=status)
        return self._read(f"SELECT * FROM executions{where} ORDER BY seq", params)

    def unfinished_executions(self) -> list[dict]:
        return self._read("SELECT * FROM executions WHERE status IN ('pending', 'running') ORDER BY seq")

    def ok_results(self) -> list[dict]:
        """Every ok execution with a val_bpb, joined with its candidate's fingerprint, oldest first
        (one query: the noise estimate reads it on every selection)."""
        return self._read(
            "SELECT c.fingerprint, e.candidate_id, e.kind, e.preset, e.backend, e.instance_type, e.val_bpb"
            " FROM executions e JOIN candidates c ON c.id = e.candidate_id"
            " WHERE e.status = 'ok' AND e.val_bpb IS NOT NULL ORDER BY e.seq")

    def ok_count(self) -> int:
        """How many ok executions with a val_bpb the run holds (a cheap "anything new?" check)."""
        with self._lock:
            return self._conn.execute(
                "SELECT COUNT(*) FROM executions WHERE status = 'ok' AND val_bpb IS NOT NULL").fetchone()[0]

    def execution_outcomes(self) -> list[dict]:
        """The few columns of every execution that say how it ended, in launch order (a light read
        for analyses over the whole run)."""
        return self._read("SELECT candidate_id, kind, status, val_bpb, failure_reason FROM executions ORDER BY seq")

    def measurement_versions(self) -> dict[int, int]:
        """measurement version -> number of ok executions measured under it."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT measurement_version, COUNT(*) FROM executions WHERE status = 'ok'"
                " AND measurement_version IS NOT NULL GROUP BY measurement_version").fetchall()
        return {int(version): int(count) for version, count in rows}

    # ------------------------------------------------------------------ LLM calls and spend
    def record_llm_call(self, *, model: str, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0,
                        cache_write_tokens: int = 0, cost_usd: float, latency_s: float, outcome: str,
                        error: str | None = None, purpose: str = "", generation: int | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO llm_calls (model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
                " cost_usd, latency_s, outcome, error, purpose, generation, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model, int(input_tokens), int(output_tokens), int(cache_read_tokens), int(cache_write_tokens),
                 float(cost_usd), float(latency_s), outcome, error, purpose, generation, time.time()))

    def llm_calls(self) -> list[dict]:
        return self._read("SELECT * FROM llm_calls ORDER BY id")

    def spend(self) -> dict:
        """Dollars spent: compute (finished executions' cost_usd) and LLM. by_generation holds only
        rows tagged with a generation; `committed_usd` is the estimate for executions still pending
        or running (for budget admission)."""
        with self._lock:
            compute = self._conn.execute(
                "SELECT generation, SUM(cost_usd) FROM executions GROUP BY generation").fetchall()
            llm = self._conn.execute(
                "SELECT generation, SUM(cost_usd) FROM llm_calls GROUP BY generation").fetchall()
            committed = self._conn.execute(
                "SELECT COALESCE(SUM(estimated_cost_usd), 0) FROM executions"
                " WHERE status IN ('pending', 'running')").fetchone()[0]
        by_generation: dict[int, dict[str, float]] = {}
        for key, rows in (("compute_usd", compute), ("llm_usd", llm)):
            for generation, total in rows:
                if generation is not None:
                    entry = by_generation.setdefault(generation, {"compute_usd": 0.0, "llm_usd": 0.0})
                    entry[key] += total or 0.0
        compute_usd = float(sum((total or 0.0 for _, total in compute), 0.0))
        llm_usd = float(sum((total or 0.0 for _, total in llm), 0.0))
        return {"compute_usd": compute_usd, "llm_usd": llm_usd, "total_usd": compute_usd + llm_usd,
                "committed_usd": float(committed), "by_generation": dict(sorted(by_generation.items()))}

    # ------------------------------------------------------------------ events and state
    def log_event(self, kind: str, payload: dict | None = None, generation: int | None = None) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO events (kind, payload, generation, created_at) VALUES (?, ?, ?, ?)",
                         (kind, _dump(payload or {}), generation, time.time()))

    def events(self, kind: str | None = None, generation: int | None = None) -> list[dict]:
        where, params = _where(kind=kind, generation=generation)
        return self._read(f"SELECT * FROM events{where} ORDER BY id", params)

    def set_state(self, key: str, value) -> None:
        """Set a small JSON value. Changing "incumbent" also logs an `incumbent_changed` event in the
        same transaction, so the history of incumbents is never lost."""
        now = time.time()
        encoded = _dump(value)
        with self._write() as conn:
            old = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            conn.execute("INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                         (key, encoded, now))
            if key == "incumbent" and (old is None or old[0] != encoded):
                previous = json.loads(old[0]) if old is not None else None
                conn.execute("INSERT INTO events (kind, payload, generation, created_at) VALUES (?, ?, ?, ?)",
                             ("incumbent_changed", _dump({"from": previous, "to": value}), None, now))

    def get_state(self, key: str, default=None):
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ reads of the state
    def incumbent_id(self) -> str | None:
        return self.get_state("incumbent")

    def incumbent_history(self) -> list[str]:
        """Every candidate that has been the incumbent, in order (no repeats)."""
        seen: list[str] = []
        for event in self.events("incumbent_changed"):
            target = event["payload"].get("to")
            if target and target not in seen:
                seen.append(target)
        return seen

    def val_bpbs(self, candidate_id: str, *, preset: str | None = None, include_replays: bool = False) -> list[float]:
        """val_bpb of the candidate's ok executions, oldest first. Replays are left out unless asked
        for: they may run on other hardware or presets, and selection must compare like with like."""
        sql = "SELECT val_bpb FROM executions WHERE candidate_id = ? AND status = 'ok' AND val_bpb IS NOT NULL"
        params: list = [candidate_id]
        if not include_replays:
            sql += " AND kind != 'replay'"
        if preset is not None:
            sql += " AND preset = ?"
            params.append(preset)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [row[0] for row in rows]


# ---------------------------------------------------------------------------------------------
def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MemoryStoreError(message)


def _dump(value) -> str:
    """Canonical JSON; NaN/inf become null (a crashed run's val_bpb may be NaN, and strict JSON
    readers of the stored result must not choke on it)."""
    return json.dumps(_finite(value), sort_keys=True, allow_nan=False, default=str)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _decode(row: sqlite3.Row) -> dict:
    out = {}
    for key in row.keys():
        value = row[key]
        if key in _JSON_COLUMNS and isinstance(value, str):
            value = json.loads(value)
        out[key] = value
    out.pop("seq", None)               # internal ordering key; the id carries it
    if "idx" in out:
        out["index"] = out.pop("idx")
    return out


def _where(**filters) -> tuple[str, list]:
    clauses, params = [], []
    for column, value in filters.items():
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return ((" WHERE " + " AND ".join(clauses)) if clauses else ""), params


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (no semicolons or "--" inside string literals), so they can run
    inside one transaction; sqlite3's executescript would COMMIT first."""
    without_comments = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in without_comments.split(";") if s.strip()]
