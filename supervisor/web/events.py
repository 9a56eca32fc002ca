"""Server-sent event streams of the Admin Center: scheduler states and log tails.

One ``StatusHub`` thread polls the schedulers' states (only while someone listens) and
wakes every open status stream on a change; each stream then sends only what changed for
its reader. Log tails poll the log cursor API. Streams are capped in number (overall and
per user, with slots kept for admins) and in length, and send heartbeats so dead readers
are noticed.
May import ``usecases``, ``serialize``, ``records``, ``user``, ``errors`` and the stdlib.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from supervisor.core.access import Permission, Subject
from supervisor.core.errors import SupervisorError
from supervisor.core.records import Level, LogQuery
from supervisor.usecases.schedulers import UseCases
from supervisor.usecases.serialize import log_json, status_json

# Reads the states for every status stream; it may only list.
HUB_SUBJECT = Subject("admin-center", frozenset({Permission.LIST}))


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLimits:
    max_streams: int = 64
    max_per_user: int = 6
    reserved_for_admins: int = 8
    max_seconds: float = 600.0  # then the stream ends; EventSource reconnects by itself
    heartbeat_seconds: float = 10.0
    status_poll_seconds: float = 0.5
    tail_poll_seconds: float = 0.2
    tail_batch: int = 500
    retry_ms: int = 2000


def sse(event: str | None, data: Any, *, event_id: int | None = None) -> str:
    """One server-sent event; ``data`` as one line of JSON (JSON escapes newlines)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


class StreamSlot:
    """One open stream's hold on a slot; ``alive`` tells whether its reader is still there."""

    __slots__ = ("alive", "user")

    def __init__(self, user: str, alive: Callable[[], bool]) -> None:
        self.user = user
        self.alive = alive


class StreamSlots:
    """Counts open streams against the overall cap, per user, with slots kept for admins.

    A user may hold ``max_per_user`` streams (however many sessions they open); users who
    cannot manage users (not admins) share all but ``reserved_for_admins`` of the
    ``max_streams`` slots, so a viewer logged in many times never locks an admin out.
    A stream notices that its reader left only at its next poll (up to a second later),
    so a user clicking quickly through pages would be refused by streams of pages already
    closed: before refusing, slots whose reader is gone are taken back.
    """

    def __init__(self, limits: StreamLimits) -> None:
        self._limit = limits.max_streams
        self._per_user = limits.max_per_user
        self._reserved = min(limits.reserved_for_admins, limits.max_streams)
        self._held: dict[str, list[StreamSlot]] = {}
        self._lock = threading.Lock()

    def acquire(
        self, user: str, *, admin: bool, alive: Callable[[], bool] = lambda: True
    ) -> StreamSlot | tuple[int, str]:
        """Take a slot for ``user``: the slot, or the (status, reason) refusing it."""
        with self._lock:
            held = self._held.get(user, [])
            if len(held) >= self._per_user:
                held[:] = [slot for slot in held if slot.alive()]
            if len(held) >= self._per_user:
                return 429, f"you have {len(held)} live streams open already; close some"
            limit = self._limit if admin else self._limit - self._reserved
            if self._count() >= limit:
                self._sweep()
            if self._count() >= limit:
                return 503, "too many live streams are open; try again later"
            slot = StreamSlot(user, alive)
            self._held.setdefault(user, []).append(slot)
            return slot

    def release(self, slot: StreamSlot) -> None:
        """Give ``slot`` back; a slot already taken back (or released) is ignored."""
        with self._lock:
            held = self._held.get(slot.user, [])
            if slot in held:
                held.remove(slot)
            if not held:
                self._held.pop(slot.user, None)

    @property
    def open(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return sum(len(held) for held in self._held.values())

    def _sweep(self) -> None:
        for user, held in list(self._held.items()):
            held[:] = [slot for slot in held if slot.alive()]
            if not held:
                del self._held[user]


class StatusHub:
    """Polls the states of all schedulers while at least one stream listens."""

    def __init__(self, use_cases: UseCases, *, poll_seconds: float, stop: threading.Event) -> None:
        self._use_cases = use_cases
        self._poll = poll_seconds
        self._stop = stop
        self._changed = threading.Condition()
        self._version = 0
        self._snapshot: dict[str, str] = {}
        self._listeners = 0
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def subscribe(self) -> None:
        """Count a listener in, with a fresh snapshot (never older than the page it has)."""
        with self._changed:
            self._listeners += 1
            self._refresh_locked()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="admin-status-hub", daemon=True
                )
                self._thread.start()

    def unsubscribe(self) -> None:
        with self._changed:
            self._listeners = max(0, self._listeners - 1)

    def wait(self, seen: int, timeout: float) -> tuple[int, dict[str, str]]:
        """Block until the version moves past ``seen`` (or ``timeout``); (version, snapshot)."""
        with self._changed:
            if self._version == seen:
                self._changed.wait(timeout)
            return self._version, self._snapshot

    def wake_all(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            with self._changed:
                if self._listeners == 0:
                    self._thread = None
                    return
            self._refresh()
        self.wake_all()

    def _refresh(self) -> None:
        snapshot = self._read()
        with self._changed:
            self._store_locked(snapshot)

    def _refresh_locked(self) -> None:
        self._store_locked(self._read())

    def _read(self) -> dict[str, str] | None:
        try:
            statuses = self._use_cases.list(HUB_SUBJECT)
        except SupervisorError as error:
            self.error = str(error)
            return None
        self.error = None
        return {
            s.id: json.dumps(status_json(s), ensure_ascii=False, separators=(",", ":"))
            for s in statuses
        }

    def _store_locked(self, snapshot: dict[str, str] | None) -> None:
        if snapshot is not None and snapshot != self._snapshot:
            self._snapshot = snapshot
            self._version += 1
            self._changed.notify_all()


def status_stream(
    hub: StatusHub,
    *,
    only: str | None,
    limits: StreamLimits,
    alive: Callable[[], bool],
    stop: threading.Event,
    release: Callable[[], None],
) -> Iterator[str]:
    """Events ``status`` (a JSON list of changed statuses) until the limits end it."""
    hub.subscribe()
    try:
        yield f"retry: {limits.retry_ms}\n: connected\n\n"
        sent: dict[str, str] = {}
        version = -1
        started = last_beat = time.monotonic()
        while not stop.is_set() and alive():
            now = time.monotonic()
            if now - started > limits.max_seconds:
                return
            version, snapshot = hub.wait(version, min(limits.heartbeat_seconds, 1.0))
            changed = [
                text
                for sid, text in snapshot.items()
                if (only is None or sid == only) and sent.get(sid) != text
            ]
            if changed:
                for sid, text in snapshot.items():
                    if only is None or sid == only:
                        sent[sid] = text
                yield "event: status\ndata: [" + ",".join(changed) + "]\n\n"
                last_beat = time.monotonic()
            elif time.monotonic() - last_beat >= limits.heartbeat_seconds:
                yield ": heartbeat\n\n"
                last_beat = time.monotonic()
    finally:
        hub.unsubscribe()
        release()


def log_stream(
    use_cases: UseCases,
    subject: Subject,
    scheduler_id: str,
    *,
    after: int | None,
    run_id: str | None,
    min_level: Level | None,
    limits: StreamLimits,
    alive: Callable[[], bool],
    stop: threading.Event,
    release: Callable[[], None],
) -> Iterator[str]:
    """Events ``log`` (a JSON list of records with cursors) newer than ``after``."""
    try:
        yield f"retry: {limits.retry_ms}\n: connected\n\n"
        cursor = after
        if cursor is None:
            newest = use_cases.logs(
                subject, LogQuery(scheduler_id=scheduler_id, run_id=run_id, limit=1)
            )
            cursor = newest[-1][0] if newest else 0
        started = last_beat = time.monotonic()
        while not stop.is_set() and alive():
            if time.monotonic() - started > limits.max_seconds:
                return
            try:
                records = use_cases.logs(
                    subject,
                    LogQuery(
                        scheduler_id=scheduler_id,
                        run_id=run_id,
                        min_level=min_level,
                        after=cursor,
                        limit=limits.tail_batch,
                    ),
                )
            except SupervisorError as error:
                yield sse("problem", {"message": str(error)})
                return
            if records:
                cursor = records[-1][0]
                payload = [log_json(record, cursor=c) for c, record in records]
                yield sse("log", payload, event_id=cursor)
                last_beat = time.monotonic()
                if len(records) == limits.tail_batch:
                    continue  # more waiting: no pause
            elif time.monotonic() - last_beat >= limits.heartbeat_seconds:
                yield ": heartbeat\n\n"
                last_beat = time.monotonic()
            stop.wait(limits.tail_poll_seconds)
    finally:
        release()
