"""The connections of one ``state.db``: a writer behind a lock, and a pool of readers.

Writes are serialised, each one ``BEGIN IMMEDIATE`` transaction; readers never wait for
the writer (WAL snapshots) and never see a half-written transaction. Any thread may use
it. SQLite errors leave as ``StoreError`` naming the file.
May import ``core.errors``, ``store.sqlite.opening`` and the stdlib.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from supervisor.core.errors import StoreError
from supervisor.store.sqlite.opening import connect, failure

# Idle read connections kept for reuse; more are opened on demand and closed after use.
MAX_IDLE_READERS: Final = 4


class Database:
    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection | None,
        *,
        reader: Callable[[], sqlite3.Connection] | None = None,
    ) -> None:
        """``writer``: an already checked and configured connection to ``path`` (None: a
        read-only database, whose writes raise ``StoreError``); ``reader`` opens a read
        connection (default: ``connect(path, read_only=True)``)."""
        self.path = path
        self._writer: sqlite3.Connection | None = writer
        self._read_only = writer is None
        self._write_lock = threading.Lock()
        self._readers = _ReaderPool(reader or (lambda: connect(path, read_only=True)))

    def close(self) -> None:
        """Close every connection; later calls raise ``StoreError``. Idempotent."""
        with self._write_lock:
            writer, self._writer = self._writer, None
            self._read_only = False  # closed now, whatever it was
            self._readers.close()
            if writer is not None:
                writer.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one ``BEGIN IMMEDIATE`` transaction."""
        with self._write_lock:
            conn = self._writer
            if conn is None:
                state = "opened read-only" if self._read_only else "closed"
                raise StoreError(f"state database {self.path} is {state}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise failure(self.path, exc) from exc
                raise

    @contextlib.contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """A read-only connection. Each statement sees the latest commit; with
        ``snapshot`` all statements see the same one (one read transaction)."""
        with self._readers.connection(self.path) as conn:
            try:
                if snapshot:
                    conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise failure(self.path, exc) from exc


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
                raise failure(path, exc) from exc
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
