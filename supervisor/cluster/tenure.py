"""One host's tenure in the cluster: its name, the leases it holds, its fair share of the
schedulers, and its estimate of the database clock.

Shared by the two loops that hold leases, the manager's ``member.Member`` and the bare
``node.Node``: a ``Tenure`` renews the leases held (a lease renewed counts for a ttl by
this host's monotonic clock, from before the renewal was sent: the database's expiry
cannot come earlier), takes free or orphaned ones up to the fair share (the schedulers
over the live hosts, rounded up), and releases those above it that have no run in flight.
What a lost lease means for a run in flight is the caller's to decide.

May import ``core`` and ``cluster.db``/``cluster.lease``/``cluster.timing``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Container
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from supervisor.cluster.db import Connection
from supervisor.cluster.lease import Lease, Leases
from supervisor.cluster.timing import LeaseTiming
from supervisor.core.clock import Clock

EventSink = Callable[..., None]  # (kind, **fields): one line of the operator's log

# A renewed lease counts as this host's for this share of its ttl (from before the renewal
# was sent): 0.8 leaves 400 ms at the default 2 s ttl for a late watchdog to stop its runs.
VALID_SHARE: Final = 0.8


def default_host_id(state_dir: Path) -> str:
    """This host's name when it is given none: ``hostname:hash``, the hash (6 hex digits)
    of the state directory's path. A restarted manager keeps its name (and so finds its
    own runs left open); two managers on one machine differ (one per state directory)."""
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:6]
    return f"{socket.gethostname()}:{digest}"


def no_events(kind: str, **fields: Any) -> None:
    del kind, fields


class Tenure:
    """The leases of one host (``held``); every method that takes ``Leases`` raises what
    its statements raise (``psycopg.OperationalError`` on a lost connection). ``valid``
    may be called from any thread (the watchdog's); the rest from the host's loop."""

    def __init__(
        self,
        *,
        scheduler_ids: tuple[str, ...],
        timing: LeaseTiming,
        clock: Clock,
        events: EventSink = no_events,
        max_leases: int | None = None,
    ) -> None:
        self._scheduler_ids = scheduler_ids
        self._timing = timing
        self._clock = clock
        self._events = events
        self._max_leases = max_leases
        self.held: dict[str, Lease] = {}
        self.share = len(scheduler_ids)
        self.db_offset = timedelta(0)  # the database clock minus this host's
        self._valid_until: dict[str, float] = {}  # by this host's monotonic clock
        self._lock = threading.Lock()  # guards ``_valid_until`` (the watchdog reads it)

    def now(self) -> datetime:
        """This host's clock corrected to the database's (what slots are planned with)."""
        return self._clock.now() + self.db_offset

    def sync_clock(self, conn: Connection) -> None:
        """Measure how far this host's clock is off the database's."""
        before = self._clock.now()
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        after = self._clock.now()
        assert row is not None
        self.db_offset = row[0] - (before + (after - before) / 2)

    def valid(self, scheduler_id: str) -> bool:
        """Whether the lease of ``scheduler_id`` was renewed within a ttl (by this host's
        monotonic clock, from before the renewal was sent)."""
        with self._lock:
            until = self._valid_until.get(scheduler_id, 0.0)
        return self._clock.monotonic() < until

    def owns(self, scheduler_id: str) -> bool:
        """Held, and valid now."""
        return scheduler_id in self.held and self.valid(scheduler_id)

    def renew(self, api: Leases) -> list[str]:
        """Renew what is held; the schedulers whose lease was lost (no longer held)."""
        if not self.held:
            return []
        sent = self._clock.monotonic()
        kept = {lease.scheduler_id: lease for lease in api.renew(list(self.held.values()))}
        self._valid_from(sent, kept)
        lost = [sid for sid in self.held if sid not in kept]
        for scheduler_id in lost:
            self._events("lost", scheduler_id=scheduler_id, token=self.held[scheduler_id].token)
        self.held = {sid: kept[sid] for sid in self.held if sid in kept}
        return lost

    def refresh_share(self, api: Leases) -> int:
        """Mark this host alive and recompute its fair share; how many hosts are live."""
        live = api.heartbeat()
        share = -(-len(self._scheduler_ids) // max(1, live))
        if self._max_leases is not None:
            share = min(share, self._max_leases)
        self.share = share
        return live

    def balance(self, api: Leases, *, busy: Container[str]) -> list[str]:
        """Release the leases above the fair share that have no run in flight (``busy``:
        the schedulers with one); the schedulers released."""
        live = self.refresh_share(api)
        idle = [lease for sid, lease in self.held.items() if sid not in busy]
        surplus = idle[: max(0, len(self.held) - self.share)]
        if not surplus:
            return []
        released = api.release(surplus)
        for scheduler_id in released:
            self.held.pop(scheduler_id, None)
        self._events("rebalanced", scheduler_ids=",".join(released), share=self.share, live=live)
        return released

    def acquire(self, api: Leases) -> list[Lease]:
        """Take free or orphaned leases up to the fair share; the leases won."""
        wanted = [sid for sid in self._scheduler_ids if sid not in self.held]
        if not wanted:
            return []
        self.refresh_share(api)
        sent = self._clock.monotonic()
        won, interrupted = api.acquire(wanted, limit=self.share - len(self.held))
        self._valid_from(sent, {lease.scheduler_id: lease for lease in won})
        for lease in won:
            self.held[lease.scheduler_id] = lease
            self._events("acquired", scheduler_id=lease.scheduler_id, token=lease.token)
        if interrupted:
            self._events("interrupted_orphans", count=interrupted)
        return won

    def drop(self, scheduler_id: str, token: int | None = None) -> bool:
        """Forget the lease of ``scheduler_id`` (lost: a write under it was refused), if
        held (under ``token``, when given); whether it was."""
        lease = self.held.get(scheduler_id)
        if lease is None or (token is not None and lease.token != token):
            return False
        del self.held[scheduler_id]
        return True

    def _valid_from(self, sent: float, leases: dict[str, Lease]) -> None:
        # Counted valid for a share of the ttl only: the watchdog's checks and a loaded
        # machine's thread wakeups come late, and the runs must be stopped before the
        # database lets another host take the lease (and start its run).
        until = sent + self._timing.ttl.total_seconds() * VALID_SHARE
        with self._lock:
            for scheduler_id in leases:
                self._valid_until[scheduler_id] = until
