"""Persistence of settings overrides, runs, logs, audit trail, users and internal state.

One SQLite file (``state.db`` under the state directory) in WAL mode with
``synchronous=NORMAL``: a commit survives a crash of the process; a power loss may drop
the last commits but never corrupts the file.

Concurrency: one writer connection guarded by a lock (writes are serialised, each method
is one transaction) plus a small pool of read-only connections handed out per call, so
readers (web request threads) never wait for a writer (WAL snapshots) and never see a
half-written transaction. Every method may be called from any thread.

Files the store did not create are never modified: a corrupt file, another program's
SQLite database, a schema newer than this code, or an unwritable location raise
``StoreError`` with a one-line message naming the file.

May import ``records``, ``user``, ``errors`` and the stdlib.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from supervisor.core.access import ROLES
from supervisor.core.errors import DefinitionError, StoreError, UnknownRun
from supervisor.core.records import (
    AuditEntry,
    Level,
    LogRecord,
    Outcome,
    RunRecord,
    Source,
    Trigger,
)

DB_FILENAME: Final = "state.db"
# PRAGMA application_id of every sched-supervisor database: ASCII "sSup".
APPLICATION_ID: Final = 0x73537570
SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT_MS: Final = 10_000
# After a checkpoint the WAL file is truncated to at most this size.
JOURNAL_SIZE_LIMIT: Final = 64 << 20
WRITER_CACHE_KIB: Final = 32 << 10
# Idle read connections kept for reuse; more are opened on demand and closed after use.
MAX_IDLE_READERS: Final = 4

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_HEADER_SIZE: Final = 100

# Schema migrations: MIGRATIONS[n] turns a version-n database into version n + 1.
#
# Logs carry one index, (scheduler_id, level), which SQLite ends with the rowid: it is
# (scheduler_id, level, id). Every log query reads one ordered range of it per level and
# merges them, so "newest 200" and "the 200 errors among millions" cost the same. A run's
# records are found through that index too, limited to the run's id range
# (runs.first_log_id .. last_log_id; a scheduler has one run at a time, so the range
# holds that run's records only). One index instead of three keeps inserts fast.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE overrides (
            scheduler_id TEXT PRIMARY KEY,
            settings TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            seq INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            scheduler_id TEXT NOT NULL,
            trigger TEXT NOT NULL,
            triggered_by TEXT,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT,
            exit_code INTEGER,
            signal INTEGER,
            error TEXT,
            pid INTEGER,
            pgid INTEGER,
            create_time REAL,
            log_records INTEGER NOT NULL DEFAULT 0,
            log_bytes INTEGER NOT NULL DEFAULT 0,
            dropped_records INTEGER NOT NULL DEFAULT 0,
            dropped_bytes INTEGER NOT NULL DEFAULT 0,
            first_log_id INTEGER,
            last_log_id INTEGER
        )""",
        "CREATE INDEX runs_by_scheduler ON runs (scheduler_id, started_at)",
        "CREATE INDEX runs_unfinished ON runs (started_at) WHERE ended_at IS NULL",
        # time: microseconds since 1970-01-01 UTC; run_seq: runs.seq; fields: JSON or NULL.
        """CREATE TABLE logs (
            id INTEGER PRIMARY KEY,
            scheduler_id TEXT NOT NULL,
            run_seq INTEGER NOT NULL,
            time INTEGER NOT NULL,
            level INTEGER NOT NULL,
            source TEXT NOT NULL,
            message TEXT NOT NULL,
            fields TEXT
        )""",
        "CREATE INDEX logs_by_level ON logs (scheduler_id, level, id, run_seq)",
        # The highest log id ever given out, so cursors are never reused after deletes.
        """CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            scheduler_id TEXT,
            detail TEXT,
            before TEXT,
            after TEXT
        )""",
        "CREATE INDEX audit_by_scheduler ON audit (scheduler_id)",
        """CREATE TABLE users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
)

_TABLES: Final = frozenset({"meta", "overrides", "runs", "logs", "counters", "audit", "users"})

# SQL text is only ever assembled from these constants; values are always bound parameters.
_SELECT_RUNS: Final = (
    "SELECT run_id, scheduler_id, trigger, triggered_by, started_at, ended_at, outcome,"
    " exit_code, signal, error, dropped_records, pid, pgid, create_time FROM runs"
)
_SELECT_LOGS: Final = (
    "SELECT l.id, r.run_id, l.time, l.level, l.source, l.message, l.fields"
    " FROM logs AS l LEFT JOIN runs AS r ON r.seq = l.run_seq"
)
# The records of one run (scheduler, every level, id range, run): through the index.
_DELETE_RUN_LOGS: Final = (
    "DELETE FROM logs WHERE scheduler_id = ? AND level IN (10, 20, 30, 40, 50)"
    " AND id BETWEEN ? AND ? AND run_seq = ?"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SURROGATES: Final = re.compile("[\ud800-\udfff]")
_MICROSECOND: Final = timedelta(microseconds=1)
_SELECT_AUDIT: Final = (
    "SELECT id, time, actor, action, scheduler_id, detail, before, after FROM audit"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogStats:
    """What the store kept and dropped of one run's log (the marker counts as stored)."""

    stored_records: int
    dropped_records: int
    stored_bytes: int
    dropped_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class UnfinishedRun:
    """A run without an outcome, and the process that ran it (None if never recorded)."""

    run: RunRecord
    pid: int | None
    pgid: int | None
    create_time: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredUser:
    name: str
    role: str
    password_hash: str
    created_at: datetime


def state_db_path(state_dir: Path) -> Path:
    """Where the database of a state directory lives."""
    return Path(state_dir) / DB_FILENAME


class SqliteStore:
    """The state database. Create with ``SqliteStore.open``; close with ``close`` (or ``with``).

    Every method raises ``StoreError`` when SQLite fails (disk full, I/O error, a file
    damaged after opening) and after ``close``. Times go in and come out as aware UTC
    datetimes; a naive datetime raises ``ValueError``.
    """

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        *,
        max_runs_per_scheduler: int,
        max_log_bytes_per_run: int,
    ) -> None:
        """Use ``open``; this takes over an already checked and configured connection."""
        self._path = path
        self._writer: sqlite3.Connection | None = writer
        self._write_lock = threading.Lock()
        self._readers = _ReaderPool(lambda: _connect(path, read_only=True))
        self._max_runs = max_runs_per_scheduler
        self._max_log_bytes = max_log_bytes_per_run

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        max_runs_per_scheduler: int = 100,
        max_log_bytes_per_run: int = 1 << 20,
    ) -> SqliteStore:
        """Open the database file ``path``, creating it (and its directory) if missing.

        ``path`` is the file itself; ``state_db_path(state_dir)`` gives the usual one.
        Raises ``StoreError`` for a file that is not a usable sched-supervisor database
        (corrupt, another program's, a newer schema) or a location that is not writable;
        such a file is left untouched.
        """
        if max_runs_per_scheduler < 1:
            raise ValueError("max_runs_per_scheduler must be at least 1")
        if max_log_bytes_per_run < 1:
            raise ValueError("max_log_bytes_per_run must be at least 1")
        path = Path(os.path.abspath(path))
        writer = _open_database(path)
        return cls(
            path,
            writer,
            max_runs_per_scheduler=max_runs_per_scheduler,
            max_log_bytes_per_run=max_log_bytes_per_run,
        )

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close every connection; later calls raise ``StoreError``. Idempotent."""
        with self._write_lock:
            writer, self._writer = self._writer, None
            self._readers.close()
            if writer is not None:
                writer.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- settings overrides -------------------------------------------------------------

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        """The stored overrides of one scheduler (empty if none)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT settings FROM overrides WHERE scheduler_id = ?", (scheduler_id,)
            ).fetchall()
        return _decode_values(rows[0][0]) if rows else {}

    def all_overrides(self) -> dict[str, dict[str, Any]]:
        """Every scheduler's stored overrides, keyed by scheduler ID."""
        with self._read() as conn:
            rows = conn.execute("SELECT scheduler_id, settings FROM overrides").fetchall()
        return {scheduler_id: _decode_values(text) for scheduler_id, text in rows}

    def set_overrides(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        """Replace the overrides of ``scheduler_id`` (an empty mapping deletes them).

        Values are what ``definitions.Settings`` fields hold: timedelta, str, bool or
        None; anything else raises ``DefinitionError`` naming the setting.
        """
        encoded = _encode_overrides(overrides)
        with self._write() as conn:
            if overrides:
                conn.execute(
                    "INSERT OR REPLACE INTO overrides (scheduler_id, settings) VALUES (?, ?)",
                    (scheduler_id, encoded),
                )
            else:
                conn.execute("DELETE FROM overrides WHERE scheduler_id = ?", (scheduler_id,))

    def delete_overrides(self, scheduler_id: str) -> bool:
        """Delete the overrides of ``scheduler_id``; whether there were any."""
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM overrides WHERE scheduler_id = ?", (scheduler_id,))
            return cursor.rowcount > 0

    # -- runs ---------------------------------------------------------------------------

    def insert_run(self, run: RunRecord) -> None:
        """Record a new run. ``StoreError`` if its ``run_id`` is already stored."""
        row = (
            run.run_id,
            run.scheduler_id,
            run.trigger.value,
            run.triggered_by,
            _ts(run.started_at),
            _ts_or_none(run.ended_at),
            None if run.outcome is None else run.outcome.value,
            run.exit_code,
            run.signal,
            run.error,
        )
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO runs (run_id, scheduler_id, trigger, triggered_by, started_at,"
                    " ended_at, outcome, exit_code, signal, error)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"run {run.run_id!r} is already stored") from None

    def set_run_process(self, run_id: str, *, pid: int, pgid: int, create_time: float) -> None:
        """Remember the process (group) of a run, so a restart can find it and never
        mistake a reused pid for it (``create_time`` as ``psutil.Process.create_time()``).
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET pid = ?, pgid = ?, create_time = ? WHERE run_id = ?",
                (pid, pgid, create_time, run_id),
            )
            if cursor.rowcount == 0:
                raise UnknownRun(f"no run with id {run_id!r}")

    def finish_run(
        self,
        run_id: str,
        *,
        ended_at: datetime,
        outcome: Outcome,
        exit_code: int | None,
        signal: int | None,
        error: str | None,
    ) -> RunRecord:
        """Record how a run ended, apply run retention to its scheduler, return the run.

        ``UnknownRun`` if there is no such run.
        """
        return self._finish(
            run_id,
            ended_at=ended_at,
            outcome=outcome,
            exit_code=exit_code,
            signal=signal,
            error=error,
        )

    def mark_interrupted(self, run_id: str, *, ended_at: datetime, error: str | None) -> None:
        """Finish a run with ``Outcome.INTERRUPTED`` (the manager died while it ran)."""
        self._finish(
            run_id,
            ended_at=ended_at,
            outcome=Outcome.INTERRUPTED,
            exit_code=None,
            signal=None,
            error=error,
        )

    def _finish(
        self,
        run_id: str,
        *,
        ended_at: datetime,
        outcome: Outcome,
        exit_code: int | None,
        signal: int | None,
        error: str | None,
    ) -> RunRecord:
        if not isinstance(outcome, Outcome):
            raise ValueError(f"outcome must be an Outcome, got {outcome!r}")
        ended = _ts(ended_at)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, exit_code = ?, signal = ?, error = ?"
                " WHERE run_id = ?",
                (ended, outcome.value, exit_code, signal, error, run_id),
            )
            if cursor.rowcount == 0:
                raise UnknownRun(f"no run with id {run_id!r}")
            row = conn.execute(_SELECT_RUNS + " WHERE run_id = ?", (run_id,)).fetchall()[0]
            self._apply_retention(conn, row[1])
        return _run_from_row(row)

    def _apply_retention(self, conn: sqlite3.Connection, scheduler_id: str) -> None:
        """Delete the finished runs (and their logs) beyond the newest ``max_runs``."""
        old = conn.execute(
            "SELECT seq, ended_at, first_log_id, last_log_id FROM runs WHERE scheduler_id = ?"
            " ORDER BY started_at DESC, seq DESC LIMIT -1 OFFSET ?",
            (scheduler_id, self._max_runs),
        ).fetchall()
        doomed = [row for row in old if row[1] is not None]
        for seq, _, first_log_id, last_log_id in doomed:
            if first_log_id is not None:
                conn.execute(
                    _DELETE_RUN_LOGS,
                    (scheduler_id, first_log_id, last_log_id, seq),
                )
        conn.executemany("DELETE FROM runs WHERE seq = ?", [(row[0],) for row in doomed])

    def get_run(self, run_id: str) -> RunRecord:
        """One run; ``UnknownRun`` if there is none with that ID."""
        with self._read() as conn:
            rows = conn.execute(_SELECT_RUNS + " WHERE run_id = ?", (run_id,)).fetchall()
        if not rows:
            raise UnknownRun(f"no run with id {run_id!r}")
        return _run_from_row(rows[0])

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        """The newest ``limit`` runs of a scheduler, newest (by start) first."""
        if limit <= 0:
            return []
        with self._read() as conn:
            rows = conn.execute(
                _SELECT_RUNS + " WHERE scheduler_id = ? ORDER BY started_at DESC, seq DESC LIMIT ?",
                (scheduler_id, limit),
            ).fetchall()
        return [_run_from_row(row) for row in rows]

    def last_run(self, scheduler_id: str) -> RunRecord | None:
        """The run started last (finished or not), or None."""
        runs = self.runs(scheduler_id, limit=1)
        return runs[0] if runs else None

    def last_finished_run(self, scheduler_id: str) -> RunRecord | None:
        """The run that ended last, or None."""
        with self._read() as conn:
            rows = conn.execute(
                _SELECT_RUNS + " WHERE scheduler_id = ? AND ended_at IS NOT NULL"
                " ORDER BY ended_at DESC, seq DESC LIMIT 1",
                (scheduler_id,),
            ).fetchall()
        return _run_from_row(rows[0]) if rows else None

    def last_trigger_time(self, scheduler_id: str, trigger: Trigger) -> datetime | None:
        """When the newest run of ``scheduler_id`` with ``trigger`` started, or None."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT max(started_at) FROM runs WHERE scheduler_id = ? AND trigger = ?",
                (scheduler_id, trigger.value),
            ).fetchall()
        return _parse_ts_or_none(rows[0][0])

    def unfinished_runs(self) -> list[UnfinishedRun]:
        """Runs without an outcome (after a crash of the manager), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                _SELECT_RUNS + " WHERE ended_at IS NULL ORDER BY started_at, seq"
            ).fetchall()
        return [
            UnfinishedRun(run=_run_from_row(row), pid=row[11], pgid=row[12], create_time=row[13])
            for row in rows
        ]

    # -- logs ---------------------------------------------------------------------------

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        """Store ``records`` in one transaction, applying each run's byte cap.

        A run's bytes are its messages plus their JSON fields (UTF-8). The record that
        would take a run over ``max_log_bytes_per_run`` is replaced by one WARNING marker
        record; it and every later record of that run are dropped and only counted (see
        ``log_stats``). Records of a run the store does not know (never inserted, or
        already removed by retention) are dropped. Fields are stored as JSON: tuples come
        back as lists, values JSON cannot hold as their ``str()``.
        """
        if not records:
            return
        cap = self._max_log_bytes
        with self._write() as conn:
            next_id = _highest_log_id(conn) + 1
            budgets: dict[str, _LogBudget | None] = {}
            rows: list[tuple[int, str, int, int, int, str, str, str | None]] = []
            append = rows.append
            last_time: datetime | None = None
            stamp_us = 0
            for record in records:
                budget = budgets.get(record.run_id, _MISSING)
                if budget is _MISSING:
                    budget = budgets[record.run_id] = _load_budget(conn, record.run_id)
                if budget is None:
                    continue
                message = record.message
                try:
                    size = len(message.encode())
                except UnicodeEncodeError:  # lone surrogates: SQLite takes only valid UTF-8
                    message = _SURROGATES.sub("\ufffd", message)
                    size = len(message.encode())
                fields = _encode_fields(record.fields) if record.fields else None
                if fields is not None:
                    size += len(fields)  # ASCII: non-ASCII text is escaped
                if budget.dropped_records:
                    budget.dropped_records += 1
                    budget.dropped_bytes += size
                    continue
                level = record.level._value_
                source = record.source._value_
                if record.time is not last_time:  # one read's records share a time
                    last_time = record.time
                    stamp_us = _microseconds(last_time)
                if budget.stored_bytes + size > cap:
                    budget.dropped_records = 1
                    budget.dropped_bytes = size
                    message = (
                        f"log truncated: this run exceeded {_human_bytes(cap)} of log;"
                        " later records were dropped"
                    )
                    fields = _encode_fields({"limit_bytes": cap})
                    size = len(message) + len(fields)
                    level, source = Level.WARNING.value, Source.LOGGER.value
                budget.stored_records += 1
                budget.stored_bytes += size
                if budget.first_log_id is None:
                    budget.first_log_id = next_id
                budget.last_log_id = next_id
                append(
                    (
                        next_id,
                        budget.scheduler_id,
                        budget.seq,
                        stamp_us,
                        level,
                        source,
                        message,
                        fields,
                    )
                )
                next_id += 1
            conn.executemany(
                "INSERT INTO logs (id, scheduler_id, run_seq, time, level, source, message,"
                " fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if rows:
                conn.execute(
                    "INSERT OR REPLACE INTO counters (name, value) VALUES ('log_id', ?)",
                    (next_id - 1,),
                )
            conn.executemany(
                "UPDATE runs SET log_records = ?, log_bytes = ?, dropped_records = ?,"
                " dropped_bytes = ?, first_log_id = ?, last_log_id = ? WHERE seq = ?",
                [
                    (
                        b.stored_records,
                        b.stored_bytes,
                        b.dropped_records,
                        b.dropped_bytes,
                        b.first_log_id,
                        b.last_log_id,
                        b.seq,
                    )
                    for b in budgets.values()
                    if b is not None
                ],
            )

    def log_stats(self, run_id: str) -> LogStats:
        """What was stored and dropped of a run's log; ``UnknownRun`` if no such run."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT log_records, dropped_records, log_bytes, dropped_bytes FROM runs"
                " WHERE run_id = ?",
                (run_id,),
            ).fetchall()
        if not rows:
            raise UnknownRun(f"no run with id {run_id!r}")
        stored, dropped, stored_bytes, dropped_bytes = rows[0]
        return LogStats(
            stored_records=stored,
            dropped_records=dropped,
            stored_bytes=stored_bytes,
            dropped_bytes=dropped_bytes,
        )

    def logs(
        self,
        scheduler_id: str,
        *,
        run_id: str | None = None,
        min_level: Level | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 200,
    ) -> list[tuple[int, LogRecord]]:
        """Records of a scheduler as (cursor, record), in ascending cursor (time) order.

        With ``after``: the oldest ``limit`` records whose cursor is greater (and less
        than ``before`` if given). Otherwise the newest ``limit`` records (with a cursor
        less than ``before`` if given). ``run_id`` and ``min_level`` filter.
        """
        if limit <= 0:
            return []
        levels = [level for level in Level if min_level is None or level >= min_level]
        with self._read(snapshot=True) as conn:
            run_range = None
            if run_id is not None:
                run_range = _run_log_range(conn, scheduler_id, run_id)
                if run_range is None:
                    return []
            sql, params = _log_query(
                scheduler_id,
                levels=levels,
                run_range=run_range,
                after=after,
                before=before,
                limit=limit,
            )
            rows = conn.execute(sql, params).fetchall()
        return [(row[0], _log_from_row(row)) for row in rows]

    def count_logs(self, run_id: str) -> int:
        """How many records of a run are stored (the truncation marker included; 0 for an
        unknown run). Kept as a counter: no records are read."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT log_records FROM runs WHERE run_id = ?", (run_id,)
            ).fetchall()
        return int(rows[0][0]) if rows else 0

    # -- audit --------------------------------------------------------------------------

    def add_audit(self, entry: AuditEntry) -> None:
        row = (
            _ts(entry.time),
            entry.actor,
            entry.action,
            entry.scheduler_id,
            entry.detail,
            None if entry.before is None else _encode_values(entry.before),
            None if entry.after is None else _encode_values(entry.after),
        )
        with self._write() as conn:
            conn.execute(
                "INSERT INTO audit (time, actor, action, scheduler_id, detail, before, after)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def audit(
        self, *, scheduler_id: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[tuple[int, AuditEntry]]:
        """Audit entries as (cursor, entry), newest first; ``before`` pages back."""
        if limit <= 0:
            return []
        where = ["1"]
        params: list[object] = []
        if scheduler_id is not None:
            where.append("scheduler_id = ?")
            params.append(scheduler_id)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        with self._read() as conn:
            rows = conn.execute(
                _SELECT_AUDIT + f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [
            (
                row[0],
                AuditEntry(
                    time=_parse_ts(row[1]),
                    actor=row[2],
                    action=row[3],
                    scheduler_id=row[4],
                    detail=row[5],
                    before=None if row[6] is None else _decode_values(row[6]),
                    after=None if row[7] is None else _decode_values(row[7]),
                ),
            )
            for row in rows
        ]

    def last_actor(self, scheduler_id: str) -> str | None:
        """Who acted on ``scheduler_id`` last (per the audit trail), or None."""
        entries = self.audit(scheduler_id=scheduler_id, limit=1)
        return entries[0][1].actor if entries else None

    # -- users --------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        *,
        role: str,
        password_hash: str,
        created_at: datetime | None = None,
    ) -> None:
        """Add a login. ``DefinitionError`` for an empty name, unknown role or a duplicate."""
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError("name", "must be a non-empty string")
        if role not in ROLES:
            raise DefinitionError(
                "role", f"unknown role {role!r}; choose one of {', '.join(ROLES)}"
            )
        created = _ts(created_at if created_at is not None else datetime.now(UTC))
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (name, role, password_hash, created),
                )
            except sqlite3.IntegrityError:
                raise DefinitionError("name", f"user {name!r} already exists") from None

    def remove_user(self, name: str) -> bool:
        """Remove a login; whether it existed."""
        with self._write() as conn:
            return conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def get_user(self, name: str) -> StoredUser | None:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, role, password_hash, created_at FROM users WHERE name = ?", (name,)
            ).fetchall()
        return _user_from_row(rows[0]) if rows else None

    def list_users(self) -> list[StoredUser]:
        """Every login, by name."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, role, password_hash, created_at FROM users ORDER BY name"
            ).fetchall()
        return [_user_from_row(row) for row in rows]

    def set_password(self, name: str, password_hash: str) -> None:
        """Replace a login's password hash; ``DefinitionError`` if there is no such user."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name)
            )
            if cursor.rowcount == 0:
                raise DefinitionError("name", f"no user {name!r}")

    # -- small internal state ------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._read() as conn:
            rows = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one ``BEGIN IMMEDIATE`` transaction."""
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise StoreError(f"state database {self._path} is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _failure(self._path, exc) from exc
                raise

    @contextlib.contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """A read-only connection. Each statement sees the latest commit; with
        ``snapshot`` all statements see the same one (one read transaction)."""
        with self._readers.connection(self._path) as conn:
            try:
                if snapshot:
                    conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _failure(self._path, exc) from exc


class _ReaderPool:
    """Read-only connections handed out one caller at a time and reused."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    @contextlib.contextmanager
    def connection(self, path: Path) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError(f"state database {path} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                raise _failure(path, exc) from exc
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and len(self._idle) < MAX_IDLE_READERS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass(slots=True)
class _LogBudget:
    """A run's log counters while a batch is appended."""

    seq: int
    scheduler_id: str
    stored_records: int
    stored_bytes: int
    dropped_records: int
    dropped_bytes: int
    first_log_id: int | None
    last_log_id: int | None


_MISSING: Final = _LogBudget(
    seq=0,
    scheduler_id="",
    stored_records=0,
    stored_bytes=0,
    dropped_records=0,
    dropped_bytes=0,
    first_log_id=None,
    last_log_id=None,
)


def _load_budget(conn: sqlite3.Connection, run_id: str) -> _LogBudget | None:
    rows = conn.execute(
        "SELECT seq, scheduler_id, log_records, log_bytes, dropped_records, dropped_bytes,"
        " first_log_id, last_log_id FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchall()
    if not rows:
        return None
    seq, scheduler_id, records, size, dropped, dropped_bytes, first, last = rows[0]
    return _LogBudget(
        seq=seq,
        scheduler_id=scheduler_id,
        stored_records=records,
        stored_bytes=size,
        dropped_records=dropped,
        dropped_bytes=dropped_bytes,
        first_log_id=first,
        last_log_id=last,
    )


def _highest_log_id(conn: sqlite3.Connection) -> int:
    rows = conn.execute(
        "SELECT max(coalesce((SELECT value FROM counters WHERE name = 'log_id'), 0),"
        " coalesce((SELECT max(id) FROM logs), 0))"
    ).fetchall()
    return int(rows[0][0])


@dataclass(frozen=True, slots=True)
class _RunRange:
    seq: int
    first_log_id: int
    last_log_id: int


def _run_log_range(conn: sqlite3.Connection, scheduler_id: str, run_id: str) -> _RunRange | None:
    """Where a run's records lie, or None if it has none (or belongs to another scheduler)."""
    rows = conn.execute(
        "SELECT seq, first_log_id, last_log_id FROM runs WHERE run_id = ? AND scheduler_id = ?",
        (run_id, scheduler_id),
    ).fetchall()
    if not rows or rows[0][1] is None:
        return None
    return _RunRange(*rows[0])


def _log_query(
    scheduler_id: str,
    *,
    levels: Sequence[Level],
    run_range: _RunRange | None,
    after: int | None,
    before: int | None,
    limit: int,
) -> tuple[str, list[object]]:
    """The SQL and parameters of ``SqliteStore.logs``: one index range per level, each
    read in cursor order up to ``limit``, merged, cut to ``limit``, returned ascending."""
    order = "ASC" if after is not None else "DESC"
    where = ["scheduler_id = ?", "level = ?"]
    params: list[object] = []
    if after is not None:
        where.append("id > ?")
        params.append(after)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    if run_range is not None:
        where.extend(["id BETWEEN ? AND ?", "run_seq = ?"])
        params.extend([run_range.first_log_id, run_range.last_log_id, run_range.seq])
    conditions = " AND ".join(where)
    one_level = f"SELECT id FROM logs WHERE {conditions} ORDER BY id {order} LIMIT ?"  # noqa: S608
    union = " UNION ALL ".join([f"SELECT id FROM ({one_level})"] * len(levels))  # noqa: S608
    all_params: list[object] = []
    for level in levels:
        all_params.extend([scheduler_id, level.value, *params, limit])
    all_params.append(limit)
    # Built from the constants above only; every value is a bound parameter.
    newest = f"SELECT id FROM ({union}) ORDER BY id {order} LIMIT ?"  # noqa: S608
    sql = f"{_SELECT_LOGS} WHERE l.id IN ({newest}) ORDER BY l.id"
    return sql, all_params


# -- opening --------------------------------------------------------------------------------


def _problem(path: Path, problem: str) -> StoreError:
    return StoreError(f"cannot use state database {path}: {problem}")


def _failure(path: Path, exc: sqlite3.Error) -> StoreError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"state database {path}: {text}")


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _open_database(path: Path) -> sqlite3.Connection:
    """Check or create the file at ``path`` and return the configured writer connection."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise _problem(path, f"cannot create directory {directory}: {_os_error(exc)}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _problem(path, f"directory {directory} is not writable")
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _problem(path, _os_error(exc)) from None
    wal_size = _size_or_zero(Path(f"{path}-wal"))
    if st is None or (stat.S_ISREG(st.st_mode) and st.st_size == 0 and wal_size == 0):
        _create_database(path, replace_empty=st is not None)
    else:
        _check_file(path, st, wal_size=wal_size)
    try:
        writer = _connect(path)
    except sqlite3.Error as exc:
        raise _problem(path, " ".join(str(exc).split())) from None
    try:
        _check_and_configure(path, writer)
    except BaseException:
        writer.close()
        raise
    return writer


def _check_file(path: Path, st: os.stat_result, *, wal_size: int) -> None:
    """Reject, from the bytes of its header alone, a file that is not ours."""
    if not stat.S_ISREG(st.st_mode):
        raise _problem(path, "not a regular file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise _problem(path, "the file is not readable and writable")
    try:
        with path.open("rb") as file:
            header = file.read(_HEADER_SIZE)
    except OSError as exc:
        raise _problem(path, _os_error(exc)) from None
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise _problem(path, "not a SQLite database (the file is corrupt or of another kind)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise _problem(path, "corrupt SQLite header (invalid page size)")
    application_id = int.from_bytes(header[68:72], "big", signed=True)
    if application_id != APPLICATION_ID:
        if application_id == 0:
            raise _problem(
                path, "not a sched-supervisor database (a SQLite file of another program)"
            )
        raise _problem(
            path,
            f"not a sched-supervisor database (application_id {application_id:#x}"
            " belongs to another program)",
        )
    _check_version(path, int.from_bytes(header[60:64], "big", signed=True))
    change_counter, pages, valid_for = (
        int.from_bytes(header[24:28], "big"),
        int.from_bytes(header[28:32], "big"),
        int.from_bytes(header[92:96], "big"),
    )
    # A non-empty WAL may legitimately hold pages the main file does not have yet.
    if wal_size == 0 and change_counter == valid_for and st.st_size < pages * page_size:
        raise _problem(path, f"the file is truncated ({st.st_size} of {pages * page_size} bytes)")


def _check_version(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise _problem(
            path,
            f"written by a newer sched-supervisor (schema version {version}; this version"
            f" reads up to {SCHEMA_VERSION})",
        )
    if version < 0:
        raise _problem(path, f"corrupt schema version {version}")


def _check_and_configure(path: Path, conn: sqlite3.Connection) -> None:
    """Check what SQLite sees (WAL included), then migrate and configure. Reads first:
    nothing is written to a file that fails a check."""
    try:
        application_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        raise _problem(path, f"corrupt database ({' '.join(str(exc).split())})") from None
    if application_id != APPLICATION_ID:
        raise _problem(
            path, f"not a sched-supervisor database (application_id {application_id:#x})"
        )
    _check_version(path, version)
    if version == SCHEMA_VERSION:
        missing = sorted(_TABLES - tables)
        if missing:
            raise _problem(path, f"damaged database (missing table {missing[0]})")
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise _problem(path, f"cannot switch to WAL mode (journal mode is {mode})")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        # Log inserts touch the index all over; a larger cache keeps it in memory.
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version < SCHEMA_VERSION:
                _migrate(conn, version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise _problem(path, " ".join(str(exc).split())) from None


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a database from ``version`` to ``SCHEMA_VERSION`` (inside a transaction)."""
    for steps in MIGRATIONS[version:]:
        for statement in steps:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _create_database(path: Path, *, replace_empty: bool) -> None:
    """Build a new database beside ``path`` and move it into place in one step, so
    ``path`` is either absent (or empty) or a complete database with our header."""
    temporary = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        temporary.unlink(missing_ok=True)
        # Created by us so the database (and its -wal/-shm) is private: it holds users.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for steps in MIGRATIONS:
                for statement in steps:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        moved = False
        if not replace_empty:
            try:
                os.link(temporary, path)  # never replaces a file created meanwhile
                moved = True
            except FileExistsError:
                moved = True  # created meanwhile by another process: that one is checked
            except OSError:
                pass  # a file system without hard links
        if moved:
            temporary.unlink()
        else:
            os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise _problem(path, f"cannot create the database: {_os_error(exc)}") from None
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise _problem(path, f"cannot create the database: {exc}") from None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


# -- encoding -------------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    """An aware datetime as fixed-width ISO 8601 in UTC (so text order is time order)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the store takes aware UTC datetimes")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def _microseconds(value: datetime) -> int:
    """An aware datetime as microseconds since the Unix epoch (logs keep time this way)."""
    try:
        return (value - _EPOCH) // _MICROSECOND
    except TypeError:
        raise ValueError(f"naive datetime {value!r}: the store takes aware UTC datetimes") from None


def _ts_or_none(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _parse_ts_or_none(text: str | None) -> datetime | None:
    return None if text is None else _parse_ts(text)


def _human_bytes(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.1f} KiB"
    return f"{size} bytes"


def _plain_fallback(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | timedelta):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


_FIELDS_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_plain_fallback)


def _encode_fields(fields: Mapping[str, Any]) -> str:
    """Log fields as compact ASCII JSON; never fails (odd values become strings)."""
    try:
        return _FIELDS_ENCODER.encode(fields if isinstance(fields, dict) else dict(fields))
    except (TypeError, ValueError):
        pass
    try:
        return _FIELDS_ENCODER.encode({str(key): value for key, value in fields.items()})
    except (TypeError, ValueError, RecursionError):
        return _FIELDS_ENCODER.encode({str(key): repr(value) for key, value in fields.items()})


def _tagged(value: object) -> object:
    """JSON for values JSON cannot hold: durations and times keep their type."""
    if isinstance(value, timedelta):
        seconds = value.days * 86400 + value.seconds
        tagged: dict[str, object] = {"$type": "duration", "seconds": seconds}
        if value.microseconds:
            tagged["microseconds"] = value.microseconds
        return tagged
    if isinstance(value, datetime):
        return {"$type": "datetime", "iso": value.isoformat()}
    return _plain_fallback(value)


def _untagged(obj: dict[str, Any]) -> object:
    kind = obj.get("$type")
    if kind == "duration":
        return timedelta(seconds=obj["seconds"], microseconds=obj.get("microseconds", 0))
    if kind == "datetime":
        return datetime.fromisoformat(obj["iso"])
    return obj


_VALUES_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_tagged)


def _encode_values(values: Mapping[str, Any]) -> str:
    return _VALUES_ENCODER.encode(dict(values))


def _decode_values(text: str) -> dict[str, Any]:
    decoded = json.loads(text, object_hook=_untagged)
    if not isinstance(decoded, dict):
        raise StoreError(f"stored values are not a JSON object: {text[:60]!r}")
    return decoded


def _encode_overrides(overrides: Mapping[str, Any]) -> str:
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise DefinitionError(str(name), "a setting name must be a string")
        if not (value is None or isinstance(value, timedelta | str | bool)):
            raise DefinitionError(
                name, f"cannot store a value of type {type(value).__name__} as a setting"
            )
    return _encode_values(overrides)


# -- decoding rows --------------------------------------------------------------------------


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        scheduler_id=row[1],
        trigger=Trigger(row[2]),
        triggered_by=row[3],
        started_at=_parse_ts(row[4]),
        ended_at=_parse_ts_or_none(row[5]),
        outcome=None if row[6] is None else Outcome(row[6]),
        exit_code=row[7],
        signal=row[8],
        error=row[9],
        log_truncated=row[10] > 0,
    )


def _log_from_row(row: Sequence[Any]) -> LogRecord:
    return LogRecord(
        time=_EPOCH + timedelta(microseconds=row[2]),
        level=Level(row[3]),
        message=row[5],
        fields={} if row[6] is None else json.loads(row[6]),
        run_id=row[1] or "",
        source=Source(row[4]),
    )


def _user_from_row(row: Sequence[Any]) -> StoredUser:
    return StoredUser(name=row[0], role=row[1], password_hash=row[2], created_at=_parse_ts(row[3]))
