"""The connections of one PostgreSQL store: a small pool any thread may draw from.

Each call of the store takes one connection for itself: a write of several statements
runs in one transaction (committed at the end, rolled back on any error); a read, or a
write of one statement, runs each statement on its own (one statement is one transaction
and sees one snapshot). A connection that broke (server restarted, network
lost) is thrown away, and the next call opens a new one, so the store recovers by itself
once the server is back. psycopg errors leave as ``StoreError`` naming the database
(never the password).

Every call is bounded: the server ends a statement or lock wait that takes too long (the
session's settings, ``session``), and past the session's ``call_seconds`` (a little over
its statement timeout, so that a slow statement fails with the server's own words) the
call's connection is cut from this side (``deadline``), for the connection that is
black-holed on the way and never answers. A store kept by one manager (``exclusive``)
lets a write through only while that manager holds its lock (``fence_writes``).
May import ``core.errors``, ``store.postgres.deadline``, ``store.postgres.session``, psycopg
and the stdlib.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Final

import psycopg

from supervisor.core.errors import StoreError
from supervisor.store.postgres.deadline import Bound, Deadlines
from supervisor.store.postgres.session import Connection, Session

__all__ = ["Connection", "Database", "failure"]

# Idle connections kept for reuse, and how many may be open at once; a caller beyond that
# waits up to WAIT_SECONDS for one to come back.
MAX_IDLE: Final = 4
MAX_OPEN: Final = 8
WAIT_SECONDS: Final = 30.0


def failure(description: str, exc: BaseException, bound: Bound | None = None) -> StoreError:
    """A psycopg error as a one-line ``StoreError`` naming the database (and, for a call
    cut at its deadline, saying so)."""
    if bound is not None and bound.expired:
        return StoreError(
            f"{description}: no answer from the server within {bound.seconds:g} s; the"
            " connection was dropped (the next call opens a new one)"
        )
    text = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"{description}: {text}")


class Database:
    """A pool of autocommit connections to one database, described as ``description``."""

    def __init__(self, description: str, session: Session, first: Connection) -> None:
        """``session``: how to open a connection, and how long a call may wait for the
        server; ``first``: an already opened and checked connection, kept for reuse."""
        self.description = description
        self.session = session
        self._lock = threading.Lock()
        self._idle: list[Connection] = [first]
        self._slots = threading.BoundedSemaphore(MAX_OPEN)
        self._closed = False
        self._deadlines = Deadlines("store deadlines")
        self._admit_write: Callable[[], None] | None = None

    def fence_writes(self, admit: Callable[[], None]) -> None:
        """Call ``admit`` before every write from now on: it raises ``StoreError`` when
        the write must not happen (this manager no longer holds the store's lock)."""
        self._admit_write = admit

    def close(self) -> None:
        """Close every idle connection (busy ones close when given back). Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._deadlines.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed when the block ends, rolled back
        if it raises."""
        self._fence()
        with self._connection(self.session.call_seconds) as (conn, bound):
            try:
                # Not pipelined: with psycopg's Python implementation (Debian's) a pipeline
                # measured slower than plain round trips on loopback (bench_store.py).
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise failure(self.description, exc, bound) from exc

    @contextlib.contextmanager
    def read(self, *, search: bool = False) -> Iterator[Connection]:
        """A connection outside any transaction: each statement sees the latest commit and
        is a transaction of its own. ``search``: the longer deadline of a log search."""
        seconds = self.session.search_seconds if search else self.session.call_seconds
        with self._connection(seconds) as (conn, bound):
            try:
                yield conn
            except psycopg.Error as exc:
                raise failure(self.description, exc, bound) from exc

    @contextlib.contextmanager
    def single(self) -> Iterator[Connection]:
        """For a write of one statement: ``read``'s connection, the statement its own
        transaction (one round trip instead of BEGIN, statement, COMMIT)."""
        self._fence()
        with self.read() as conn:
            yield conn

    def _fence(self) -> None:
        if self._admit_write is not None:
            self._admit_write()

    @contextlib.contextmanager
    def _connection(self, seconds: float | None) -> Iterator[tuple[Connection, Bound]]:
        if self._closed:
            raise StoreError(f"{self.description} is closed")
        if not self._slots.acquire(timeout=WAIT_SECONDS):
            raise StoreError(
                f"{self.description}: all {MAX_OPEN} connections stayed busy for"
                f" {WAIT_SECONDS:.0f} s"
            )
        try:
            with self._lock:
                if self._closed:
                    raise StoreError(f"{self.description} is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                try:
                    conn = self.session.connect(self._deadlines)
                except psycopg.Error as exc:
                    raise failure(self.description, exc) from exc
            try:
                with self._deadlines.bounded(conn, seconds) as bound:
                    yield conn, bound
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def _give_back(self, conn: Connection) -> None:
        usable = not conn.closed and not conn.broken
        if usable and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            usable = False  # left inside a transaction (interrupted): never reuse
        stale: list[Connection] = []
        with self._lock:
            keep = usable and not self._closed and len(self._idle) < MAX_IDLE
            if keep:
                self._idle.append(conn)
            elif conn.broken:
                # What broke this one (a server restart, a network cut) most likely broke
                # the idle ones too: open fresh ones rather than fail a call on each.
                stale, self._idle = self._idle, []
        if not keep:
            conn.close()
        for old in stale:
            old.close()
