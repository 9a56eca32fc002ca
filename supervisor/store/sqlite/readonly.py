"""``state.db`` opened for reading only, by a process that must leave no trace on it (the
CLI's read commands while no manager runs).

Nothing is written, created or migrated: not the database, not its ``-wal`` or ``-shm``
(their bytes and times stay as they were). A database without a write-ahead log (the
manager closed it cleanly) is opened ``immutable`` (SQLite then takes no locks and makes
no ``-shm``). One with a log (a manager was killed) cannot be read in place without
SQLite writing the ``-shm`` index, and ``immutable`` would ignore the log's last changes:
the database and its log are copied into a private temporary directory, the copy is made
whole there, and the copy is read (removed when the store is collected or at exit). A
missing, foreign, corrupt or newer database raises ``StoreError`` naming the file.

May import ``core.errors``, ``store.sqlite.*`` and the stdlib.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import urllib.parse
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from supervisor.core.errors import StoreError
from supervisor.store.sqlite.database import Database
from supervisor.store.sqlite.opening import problem
from supervisor.store.sqlite.schema import APPLICATION_ID, BUSY_TIMEOUT_MS, SCHEMA_VERSION, TABLES
from supervisor.store.sqlite.store import SqliteStore

# The read commands read settings, runs and logs, never logins: versions 4 and 5 only
# added the users' credentials stamp and the triggers that keep it, so a version-3 or
# version-4 file is read as it is, unmigrated.
READABLE_SINCE: Final = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOnlyDatabase:
    """A store opened read-only; ``partial``: the write-ahead log could not be read
    (never now: a log is read from a private copy)."""

    store: SqliteStore
    partial: bool


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _uri(path: Path, *, immutable: bool) -> str:
    query = "mode=ro&immutable=1" if immutable else "mode=ro"
    return "file:" + urllib.parse.quote(str(path)) + "?" + query


def _connector(path: Path, *, immutable: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        _uri(path, immutable=immutable),
        uri=True,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _check(path: Path, conn: sqlite3.Connection) -> None:
    try:
        application_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        raise problem(path, f"corrupt database ({' '.join(str(exc).split())})") from None
    if application_id != APPLICATION_ID:
        raise problem(path, "not a sched-supervisor database")
    if version > SCHEMA_VERSION:
        raise problem(path, f"written by a newer sched-supervisor (schema version {version})")
    if version < READABLE_SINCE:
        raise problem(
            path, f"an older schema (version {version}): start the manager once to migrate it"
        )
    missing = sorted(TABLES - tables)
    if missing:
        raise problem(path, f"damaged database (missing table {missing[0]})")


def open_read_only(path: Path) -> ReadOnlyDatabase:
    """The database file ``path`` as a ``SqliteStore`` whose writes raise ``StoreError``.

    Raises ``StoreError`` for a missing file, one that cannot be read, or one that is not
    a usable sched-supervisor database; nothing is ever created or changed."""
    path = Path(os.path.abspath(path))
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise StoreError(f"no state database at {path}") from None
    except OSError as exc:
        raise problem(path, exc.strerror or str(exc)) from None
    log = Path(f"{path}-wal")
    source, private = path, None
    if log.exists():
        private = Path(tempfile.mkdtemp(prefix="sched-supervisor-read-"))
        try:
            source = _whole_copy(path, log, private)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise

    def reader() -> sqlite3.Connection:
        return _connector(source, immutable=True)

    try:
        try:
            first = reader()
        except sqlite3.Error as exc:
            raise problem(path, " ".join(str(exc).split())) from None
        try:
            _check(path, first)
        finally:
            first.close()
    except BaseException:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
        raise
    store = SqliteStore(
        Database(source, None, reader=reader), max_runs_per_scheduler=1, max_log_bytes_per_run=1
    )
    if private is not None:
        weakref.finalize(store, shutil.rmtree, private, ignore_errors=True)
    return ReadOnlyDatabase(store=store, partial=False)


def _whole_copy(path: Path, log: Path, private: Path) -> Path:
    """A copy of ``path`` in ``private`` with its write-ahead ``log`` folded in (only the
    copy is written). Raises ``StoreError`` when the files cannot be read."""
    copy = private / path.name
    try:
        shutil.copyfile(path, copy)
        shutil.copyfile(log, Path(f"{copy}-wal"))
    except OSError as exc:
        raise problem(path, exc.strerror or str(exc)) from None
    try:
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise problem(path, " ".join(str(exc).split())) from None
    return copy
