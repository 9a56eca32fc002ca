"""A client-side deadline for each call on a store connection: past it, the connection is cut.

The server's own timeouts (``session.SESSION_SETTINGS``) end a slow statement or lock wait,
and TCP keepalives and ``tcp_user_timeout`` end a connection whose peer stopped
acknowledging. Neither helps when something on the way (a proxy, a NAT box, a firewall
that drops without resetting) acknowledges every byte and forwards none: the client would
wait for an answer forever. So each call is bounded here too: one thread per ``Deadlines``
waits for the earliest deadline of the calls in progress and shuts the socket of a call
that passed it down (both ways); the call then fails at once, with its connection broken
(never reused), and ``expired`` tells the caller why.

May import psycopg and the stdlib (and, for type checking, ``store.postgres.session``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from supervisor.store.postgres.session import Connection


@dataclass(eq=False, slots=True)
class Bound:
    """One call in progress; ``expired`` once its deadline passed and it was cut."""

    due: float
    seconds: float
    conn: Connection = field(repr=False)
    expired: bool = False
    done: bool = False


class Deadlines:
    """Deadlines of the calls on one store's connections; thread-safe. ``close`` ends its
    thread (calls still in progress are no longer bounded)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Bound]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextlib.contextmanager
    def bounded(self, conn: Connection, seconds: float | None) -> Iterator[Bound]:
        """Cut ``conn`` if the block still runs ``seconds`` from now (None: never)."""
        if seconds is None:
            yield Bound(due=float("inf"), seconds=float("inf"), conn=conn)
            return
        bound = Bound(due=time.monotonic() + seconds, seconds=seconds, conn=conn)
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._watch, name=self._name, daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (bound.due, next(self._order), bound))
            if self._heap[0][2] is bound:
                self._cond.notify()
        try:
            yield bound
        finally:
            with self._cond:
                bound.done = True  # from now on its connection is its caller's again
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, bound = self._heap[0]
                left = due - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                bound.expired = True
                _cut(bound.conn)  # under the lock: its caller has not given it back yet


def _cut(conn: Connection) -> None:
    """Shut ``conn``'s socket down both ways: a call waiting on it fails at once."""
    try:
        duplicate = os.dup(conn.fileno())
    except (OSError, psycopg.Error):  # closed meanwhile: nothing to cut
        return
    try:
        sock = socket.socket(fileno=duplicate)  # owns the duplicate from here on
    except OSError:
        os.close(duplicate)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
