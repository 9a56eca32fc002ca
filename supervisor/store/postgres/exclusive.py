"""One manager per PostgreSQL store: a session advisory lock, held on a connection of its own.

The state directory's lock keeps one manager per host; a database shared by several hosts
needs its own, or two managers would each run every scheduler and each take the other's
runs for leftovers of a crash. The lock lives as long as its connection. When that breaks
(server restart, network cut, an operator's ``pg_terminate_backend``) the lock is taken
again: by ``check`` (the manager's once-a-second look) or by the next write, whichever
comes first.

Writes are fenced by the lock (``Database.fence_writes``): before each write the lock's
socket is looked at (no round trip: a session the server ended has its last words and
end-of-file waiting there), and a write goes through only while the lock is held, or
once it is taken back. A session of this manager's own that the server still thinks
alive (the network dropped it) is ended so the lock can be taken back. When another
manager holds the lock now, or held it meanwhile (each manager that takes the lock notes
its session name in ``sst_meta``), the loss is for good: every write is refused from then
on and ``check`` raises ``StoreError`` naming the database and the other manager's
session, so this manager stops (the other one marks the runs it left open as interrupted).
Each failure to take the lock is kept as a ``LockFailure`` (``last_failure``: its kind,
when, the driver's words), which the store's health reads as it is.
May import ``core.errors``, ``core.storeproblems``, ``store.postgres.database``,
``store.postgres.deadline``, ``store.postgres.session``, psycopg and the stdlib.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import psycopg

from supervisor.core.errors import StoreError
from supervisor.core.storeproblems import LockFailure, LockFailureKind
from supervisor.store.postgres.database import Connection, Database
from supervisor.store.postgres.deadline import Deadlines
from supervisor.store.postgres.session import Session

LOCK_NAME: Final = "sched-supervisor manager"
# ``check`` runs in the manager's once-a-second loop, writes wait on a retake: never long.
CONNECT_SECONDS: Final = 3
ROUND_TRIP_SECONDS: Final = 3.0
TAKE_SECONDS: Final = 5.0  # the lock's own lock_timeout (2 s) included
# After a failed retake, writes are refused at once for this long (not each one waiting
# for the server to time out again).
RETRY_SECONDS: Final = 1.0
RETAKEN: Final = "took the manager lock again after losing its connection"

_TRY_LOCK: Final = "SELECT pg_try_advisory_lock(hashtext(%s))"
# Waits (up to the session's lock_timeout) for a session that was just ended to let go.
_WAIT_LOCK: Final = "SELECT pg_advisory_lock(hashtext(%s))"
_END_SESSION: Final = "SELECT pg_terminate_backend(%s)"
# The session name of the manager that took the lock last, kept in the store's meta.
HOLDER_KEY: Final = "manager_lock_holder"
_LAST_HOLDER: Final = "SELECT value FROM sst_meta WHERE key = %s"
_NOTE_HOLDER: Final = (
    "INSERT INTO sst_meta (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
)
_HOLDER: Final = """
SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
  FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
       SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 1
 LIMIT 1
"""


class ExclusiveUse:
    """The store's manager lock; ``acquire`` first, ``close`` at the end (idempotent).
    Thread-safe: writers call ``admit_write``, the manager's loop ``check``."""

    def __init__(
        self,
        session: Session,
        description: str,
        database: Database | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``session``: how the store's connections are opened; ``database``: the store's
        connections, whose writes the lock fences once taken; ``now``: the wall clock
        (aware) that says since when the store is unreachable."""
        host = socket.gethostname()[:20]  # the whole name within 63 bytes (NAMEDATALEN)
        self._name = f"{LOCK_NAME} {host}:{os.getpid()}:{secrets.token_hex(3)}"
        self._session = session.with_params(
            application_name=self._name, connect_timeout=CONNECT_SECONDS
        )
        self._description = description
        self._database = database
        self._deadlines = Deadlines("manager lock deadline")
        self._lock = threading.Lock()  # one take or round trip at a time
        self._state = threading.Condition()  # guards the fields below
        self._conn: Connection | None = None
        self._probing = False
        self._held = False  # held at least once
        self._lost: str | None = None  # why no write may happen any more
        self._note: str | None = None  # what ``check`` says next, once
        self._failed_at = 0.0
        self._failure = ""
        self._now = now
        self._unreachable_since: datetime | None = None
        self._last_failure: LockFailure | None = None

    @property
    def unreachable_since(self) -> datetime | None:
        """When the lock's connection was first found lost and could not be taken back,
        in the streak still going on; None while the lock is held."""
        with self._state:
            return self._unreachable_since

    @property
    def last_failure(self) -> LockFailure | None:
        """Why the lock could not be taken at its last try, while it is not held (None
        once it is taken)."""
        with self._state:
            return self._last_failure

    def acquire(self) -> None:
        """Take the lock; ``StoreError`` naming the database (and the session holding the
        lock) when another manager has it or the server cannot be reached."""
        with self._lock:
            self._take()
        if self._database is not None:
            self._database.fence_writes(self.admit_write)

    def check(self) -> str | None:
        """Take the lock back if its connection broke (one round trip to find out); what
        happened when it did, or why it cannot be taken back yet, else None. Raises
        ``StoreError`` once another manager holds it: this manager must stop."""
        with self._lock:
            self._raise_if_lost()
            if not self._still_held():
                try:
                    self._retake()
                except StoreError:
                    self._raise_if_lost()
                    return self._unreachable()
        with self._state:
            note, self._note = self._note, None
        return note

    def admit_write(self) -> None:
        """Return if a write may happen now (the lock is held, or was just taken back);
        ``StoreError`` if not."""
        with self._state:
            while self._probing:  # a round trip on the lock's connection: bounded
                self._state.wait(ROUND_TRIP_SECONDS)
            if self._lost is not None:
                raise StoreError(self._lost)
            if self._conn is not None and not _shows_loss(self._conn):
                return
        with self._lock:
            self._raise_if_lost()
            if self._still_held():  # another thread took it back meanwhile
                return
            with self._state:
                if time.monotonic() - self._failed_at < RETRY_SECONDS:
                    raise StoreError(self._failure)
            self._retake()

    def close(self) -> None:
        with self._lock, self._state:
            conn, self._conn = self._conn, None
            self._lost = f"{self._description}: the manager lock was let go (shutting down)"
        if conn is not None:
            conn.close()  # the session ends: the lock goes with it
        self._deadlines.close()

    # -- with ``_lock`` held ----------------------------------------------------------------

    def _raise_if_lost(self) -> None:
        with self._state:
            if self._lost is not None:
                raise StoreError(self._lost)

    def _still_held(self) -> bool:
        """Whether the lock's connection works (a round trip, bounded)."""
        with self._state:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                return False
            self._probing = True
        try:
            with self._deadlines.bounded(conn, ROUND_TRIP_SECONDS):
                conn.execute("SELECT 1")  # a cut connection shows only when used
            return True
        except psycopg.Error:
            self._drop()
            return False
        finally:
            with self._state:
                self._probing = False
                self._state.notify_all()

    def _retake(self) -> None:
        try:
            self._take()
        except StoreError as error:
            with self._state:
                self._failed_at, self._failure = time.monotonic(), str(error)
                if self._unreachable_since is None:
                    self._unreachable_since = self._now()
            raise
        with self._state:
            since, self._unreachable_since = self._unreachable_since, None
            if since is None:
                self._note = f"{self._description}: {RETAKEN}"
            else:
                took = max(0, round((self._now() - since).total_seconds()))
                self._note = (
                    f"{self._description}: reachable again after {took} s (unreachable since"
                    f" {_utc(since)}); {RETAKEN}"
                )

    def _unreachable(self) -> str:
        """What ``check`` says while the lock cannot be taken back: the same words every
        second of one streak unless the reason changes."""
        with self._state:
            since = self._unreachable_since or self._now()
            failure = self._last_failure
        reason = "the store does not answer" if failure is None else failure.reason
        return (
            f"{self._description} unreachable since {_utc(since)} ({reason}); runs in"
            " progress go on, new runs cannot start and writes are refused until it answers"
            " again"
        )

    def _drop(self) -> None:
        with self._state:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _take(self) -> None:
        self._drop()
        try:
            conn = self._session.connect(self._deadlines)
        except psycopg.Error as exc:
            raise self._failed(LockFailureKind.CONNECT, _words(exc)) from None
        try:
            with self._deadlines.bounded(conn, TAKE_SECONDS) as bound:
                try:
                    taken = self._lock_on(conn)
                except psycopg.Error as exc:
                    if bound.expired:
                        late = f"no answer within {bound.seconds:g} s"
                        raise self._failed(LockFailureKind.NO_ANSWER, late) from None
                    raise self._failed(LockFailureKind.QUERY, _words(exc)) from None
        except BaseException:
            conn.close()
            raise
        if taken is not None:
            conn.close()
            self._note_failure(LockFailureKind.HELD_ELSEWHERE, taken)
            raise StoreError(taken)
        with self._state:
            self._conn = conn
            self._held = True
            self._failed_at = 0.0
            self._last_failure = None

    def _lock_on(self, conn: Connection) -> str | None:
        """Take the lock on ``conn``: None once held, else why not (and, when another
        manager has it after this one held it, this manager's loss for good)."""
        row = conn.execute(_TRY_LOCK, (LOCK_NAME,)).fetchone()
        if row and row[0]:
            return self._note_holder(conn)
        holder = conn.execute(_HOLDER, (LOCK_NAME,)).fetchone()
        if holder is not None and holder[1] == self._name:
            # This manager's own earlier session, left on the server by a network that
            # dropped it: end it, and take the lock when it lets go.
            conn.execute(_END_SESSION, (holder[0],))
            conn.execute(_WAIT_LOCK, (LOCK_NAME,))
            return self._note_holder(conn)
        if not self._held:
            return (
                f"{self._description} is in use by another manager{_describe(holder)}; one"
                " manager per store (stop that one, or give this one a database of its own)"
            )
        lost = (
            f"{self._description}: this manager lost its lock on the store and another"
            f" manager holds it now{_describe(holder)}; stopping, storing nothing more (that"
            " manager marks the runs left in progress here as interrupted)"
        )
        with self._state:
            self._lost = lost
        return lost

    def _note_holder(self, conn: Connection) -> str | None:
        """With the lock just taken: note this manager as its holder in the store. Taken
        back, the lock must not have been another manager's meanwhile (it marked this
        one's runs interrupted and ran its schedulers): then this loss too is for good."""
        row = conn.execute(_LAST_HOLDER, (HOLDER_KEY,)).fetchone()
        previous = None if row is None else str(row[0])
        if self._held and previous != self._name:
            lost = (
                f"{self._description}: this manager lost its lock on the store and another"
                f" manager ({previous}) held it meanwhile; stopping, storing nothing more"
                " (start it again to take the store over)"
            )
            with self._state:
                self._lost = lost
            return lost
        conn.execute(_NOTE_HOLDER, (HOLDER_KEY, self._name))
        return None

    def _failed(self, kind: LockFailureKind, message: str) -> StoreError:
        """The error to raise for a failure to take the lock, kept as ``last_failure``."""
        self._note_failure(kind, message)
        return StoreError(f"{self._description}: cannot take the manager lock ({message})")

    def _note_failure(self, kind: LockFailureKind, message: str) -> None:
        failure = LockFailure(kind=kind, at=self._now(), message=" ".join(message.split()))
        with self._state:
            self._last_failure = failure


def _words(exc: BaseException) -> str:
    """The driver's own words on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _shows_loss(conn: Connection) -> bool:
    """Whether the lock's idle connection shows signs of its end, without a round trip:
    closed, broken, or with something to read (a session the server ended sends its
    reason and closes; an idle session is otherwise sent nothing)."""
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe(row: tuple[object, ...] | None) -> str:
    if row is None:
        return ""
    pid, application, address, since = row
    where = f" from {address}" if address else ""
    return f" ({application or 'a session'}, server pid {pid}{where}, since {since})"
