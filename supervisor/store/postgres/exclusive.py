"""One manager per PostgreSQL store: a session advisory lock, held on a connection of its own.

The state directory's lock keeps one manager per host; a database shared by several hosts
needs its own, or two managers would each run every scheduler and each take the other's
runs for leftovers of a crash. The lock lives as long as its connection: when that breaks
(server restart, network cut) ``check`` connects again and takes it back, and says so if
another manager took it meanwhile.
May import ``core.errors``, ``store.postgres.database``, ``store.postgres.opening``,
psycopg and the stdlib.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Final

import psycopg
from psycopg.conninfo import make_conninfo

from supervisor.core.errors import StoreError
from supervisor.store.postgres.database import Connection
from supervisor.store.postgres.opening import connect

LOCK_NAME: Final = "sched-supervisor manager"

_TRY_LOCK: Final = "SELECT pg_try_advisory_lock(hashtext(%s))"
_HOLDER: Final = """
SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
  FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
       SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 1
 LIMIT 1
"""


class ExclusiveUse:
    """The store's manager lock; ``acquire`` first, ``close`` at the end (idempotent)."""

    def __init__(self, info: str, description: str) -> None:
        name = f"{LOCK_NAME} {socket.gethostname()}:{os.getpid()}"[:63]
        # ``check`` runs in the manager's once-a-second loop: never block it for long.
        self._info = make_conninfo(info, application_name=name, connect_timeout=3)
        self._description = description
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take the lock; ``StoreError`` naming the database (and the session holding the
        lock) when another manager has it or the server cannot be reached."""
        with self._lock:
            self._take()

    def check(self) -> str | None:
        """Take the lock back if its connection broke (one round trip to find out); what
        happened when it did, else None."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                try:
                    self._conn.execute("SELECT 1")  # a cut connection shows only when used
                    return None
                except psycopg.Error:
                    pass
            try:
                self._take()
            except StoreError as error:
                return str(error)
            return f"{self._description}: took the manager lock again after losing its connection"

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # the session ends: the lock goes with it

    def _take(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            conn = connect(self._info)
        except psycopg.Error as exc:
            raise StoreError(f"{self._description}: cannot take the manager lock ({exc})") from None
        try:
            try:
                row = conn.execute(_TRY_LOCK, (LOCK_NAME,)).fetchone()
                holder = None if row and row[0] else conn.execute(_HOLDER, (LOCK_NAME,)).fetchone()
            except psycopg.Error as exc:
                raise StoreError(
                    f"{self._description}: cannot take the manager lock ({exc})"
                ) from None
            if not (row and row[0]):
                raise StoreError(
                    f"{self._description} is in use by another manager"
                    f"{_describe_holder(holder)}; one manager per store (stop that one, or"
                    " give this one a database of its own)"
                )
        except BaseException:
            conn.close()
            raise
        self._conn = conn


def _describe_holder(row: tuple[object, ...] | None) -> str:
    if row is None:
        return ""
    pid, application, address, since = row
    where = f" from {address}" if address else ""
    return f" ({application or 'a session'}, server pid {pid}{where}, since {since})"
