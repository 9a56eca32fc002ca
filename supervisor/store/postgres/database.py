"""The connections of one PostgreSQL store: a small pool any thread may draw from.

Each call of the store takes one connection for itself: a write of several statements
runs in one transaction (committed at the end, rolled back on any error); a read, or a
write of one statement, runs each statement on its own (one statement is one transaction
and sees one snapshot). A connection that broke (server restarted, network
lost) is thrown away, and the next call opens a new one, so the store recovers by itself
once the server is back. psycopg errors leave as ``StoreError`` naming the database
(never the password).
May import ``core.errors``, psycopg and the stdlib.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeAlias

import psycopg

from supervisor.core.errors import StoreError

Connection: TypeAlias = psycopg.Connection[tuple[Any, ...]]

# Idle connections kept for reuse, and how many may be open at once; a caller beyond that
# waits up to WAIT_SECONDS for one to come back.
MAX_IDLE: Final = 4
MAX_OPEN: Final = 8
WAIT_SECONDS: Final = 30.0


def failure(description: str, exc: BaseException) -> StoreError:
    """A psycopg error as a one-line ``StoreError`` naming the database."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"{description}: {text}")


class Database:
    """A pool of autocommit connections to one database, described as ``description``."""

    def __init__(
        self, description: str, connect: Callable[[], Connection], first: Connection
    ) -> None:
        """``first``: an already opened and checked connection, kept for reuse."""
        self.description = description
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: list[Connection] = [first]
        self._slots = threading.BoundedSemaphore(MAX_OPEN)
        self._closed = False

    def close(self) -> None:
        """Close every idle connection (busy ones close when given back). Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed when the block ends, rolled back
        if it raises."""
        with self._connection() as conn:
            try:
                # Not pipelined: with psycopg's Python implementation (Debian's) a pipeline
                # measured slower than plain round trips on loopback (bench_store.py).
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise failure(self.description, exc) from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection outside any transaction: each statement sees the latest commit and
        is a transaction of its own."""
        with self._connection() as conn:
            try:
                yield conn
            except psycopg.Error as exc:
                raise failure(self.description, exc) from exc

    def single(self) -> contextlib.AbstractContextManager[Connection]:
        """For a write of one statement: ``read``'s connection, the statement its own
        transaction (one round trip instead of BEGIN, statement, COMMIT)."""
        return self.read()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
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
                    conn = self._connect()
                except psycopg.Error as exc:
                    raise failure(self.description, exc) from exc
            try:
                yield conn
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
