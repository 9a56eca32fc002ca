"""One host's coordination loop: hold leases, claim due slots, run them, obey commands.

A ``Node`` renews its leases, takes free or orphaned ones, claims the due slot of each
scheduler it holds and hands the run to a ``Runner`` (in a thread of its own), records the
run's end under the run's token, and answers commands addressed to its schedulers. It
writes everything through one connection (whose session marks it alive to the others) and
sleeps on a second one that LISTENs, so a released lease or a command wakes it at once.
A lost connection is reopened with backoff; leases still carrying their token are kept.
The database decides: every run write carries its token, whatever the node believes.

Slots are planned on the database clock: the node measures how far its own clock is off
``clock_timestamp()`` (at each renewal) and plans with the corrected time, so a host whose
clock is off by seconds still runs each slot on time. Safety never rests on that estimate:
the claim refuses a taken slot and one not yet due by the database clock.

The schedulers are shared out: each host takes at most its fair share (the schedulers over
the live hosts, rounded up) and releases leases above it between runs, so a host that
joins gets work within a renewal period and one that leaves hands its work over at once.

A watchdog thread stops (cancels) the runs of a lease not renewed within a ttl by this
host's monotonic clock, counted from before the last renewal that succeeded was sent: the
database's expiry cannot come earlier, so a partitioned owner stops before anyone may take
over (the dead-session shortcut aside, see ``LeaseTiming``).

The manager will embed this loop (its runner then starts a run's child process); here it
is self-contained. May import ``core``, ``cluster`` and psycopg.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg

from supervisor.cluster import commands as cmd
from supervisor.cluster import schema
from supervisor.cluster.db import CONNECTION_ERRORS, Connection, connect
from supervisor.cluster.lease import Lease, Leases
from supervisor.cluster.slots import (
    Refusal,
    RunRecord,
    SlotClaim,
    SlotPlan,
    claim_slot,
    close_untracked_runs,
    record_run_end,
    record_run_start,
)
from supervisor.cluster.timing import LeaseTiming
from supervisor.core.clock import Clock
from supervisor.core.errors import StaleLease


def default_host_id(state_dir: Path) -> str:
    """This host's name when it is given none: ``hostname:hash``, the hash (6 hex digits)
    of the state directory's path. A restarted manager keeps its name (and so finds its
    own runs left open); two managers on one machine differ (one per state directory)."""
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:6]
    return f"{socket.gethostname()}:{digest}"


class Runner(Protocol):
    def __call__(self, run: RunRecord, cancel: threading.Event) -> str:
        """Do the run; return its outcome (``succeeded``, ``failed``, ``cancelled``...).

        Called in a thread of its own; should end soon after ``cancel`` is set. An
        exception counts as ``failed``."""
        ...


EventSink = Callable[..., None]

# Refusals the database may give any statement under contention; retrying is right.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)


def _no_events(kind: str, **fields: Any) -> None:
    del kind, fields


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    dsn: str
    host_id: str
    scheduler_ids: tuple[str, ...]
    plan: SlotPlan
    plans: Mapping[str, SlotPlan] = field(default_factory=dict)  # per scheduler, over ``plan``
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    max_leases: int | None = None
    poll_commands_every: timedelta = timedelta(seconds=1)
    early: timedelta = timedelta(milliseconds=250)
    shutdown_grace: timedelta = timedelta(seconds=5)


@dataclass(slots=True)
class _Flight:
    run: RunRecord
    cancel: threading.Event
    thread: threading.Thread


class Node:
    """The loop of one host; ``run`` returns after ``stop`` is set and leases are released."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        runner: Runner,
        clock: Clock,
        events: EventSink = _no_events,
    ) -> None:
        self.config = config
        self._runner = runner
        self._clock = clock
        self._events = events
        self._conn: Connection | None = None
        self._leases_api: Leases | None = None
        self._listener: cmd.Listener | None = None
        self.held: dict[str, Lease] = {}
        self._next_slot: dict[str, datetime] = {}
        self._retry_at: dict[str, float] = {}
        self._stopped: set[str] = set()
        self._flights: dict[str, _Flight] = {}
        self._ends: list[tuple[RunRecord, str]] = []
        self._ends_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._renew_due = 0.0
        self._acquire_due = 0.0
        self._commands_due = 0.0
        self._db_offset = timedelta(0)
        self._share = len(config.scheduler_ids)
        self._installed = False
        self._valid_until: dict[str, float] = {}
        self._flights_lock = threading.Lock()

    def now(self) -> datetime:
        """The time slots are planned with: this host's clock corrected to the database's."""
        return self._clock.now() + self._db_offset

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        backoff = 0.05
        # The watchdog fences runs even while the loop is stuck in a call that never
        # returns (a partition that holds the packets back).
        watchdog_stop = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(watchdog_stop,), name="lease watchdog", daemon=True
        )
        watchdog.start()
        try:
            while not stop.is_set():
                try:
                    if self._conn is None:
                        self._open()
                        backoff = 0.05
                    self._tick()
                    self._sleep()
                except CONNECTION_ERRORS as error:
                    self._events("disconnected", error=str(error).strip()[:200])
                    self._close()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 0.5)
                except TRANSIENT_ERRORS as error:
                    # The statement was rolled back; the next tick tries again.
                    self._events("transient", error=str(error).strip()[:200])
                    stop.wait(backoff)
            self._shutdown()
        finally:
            watchdog_stop.set()
            watchdog.join()
            self._close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _open(self) -> None:
        config = self.config
        conn = connect(config.dsn, application_name=f"sst {config.host_id}", **self._tcp())
        try:
            if not self._installed:
                schema.install(conn)
                schema.register(conn, list(config.scheduler_ids))
                self._installed = True
            listener = cmd.Listener(
                config.dsn, application_name=f"sst {config.host_id} listen", **self._tcp()
            )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._leases_api = Leases(conn, holder=config.host_id, timing=config.timing)
        self._listener = listener
        self._renew_due = self._acquire_due = self._commands_due = 0.0
        self._events("connected")
        if self.held:
            # Back after a lost connection: keep what still carries its token (renew), and
            # close a run whose start committed but whose reply was lost.
            self._renew()
            self._renew_due = self._clock.monotonic() + config.timing.renew_every.total_seconds()
            keep = [flight.run.run_id for flight in self._flights.values()]
            with self._ends_lock:
                keep += [run.run_id for run, _ in self._ends]
            closed = close_untracked_runs(conn, holder=config.host_id, keep=keep)
            if closed:
                self._events("closed_untracked", run_ids=closed)

    def _tcp(self) -> dict[str, int]:
        """Give up on a connection whose packets go unacknowledged for a ttl (a partition)."""
        return {"tcp_user_timeout": int(self.config.timing.ttl.total_seconds() * 1000)}

    def _close(self) -> None:
        for closable in (self._listener, self._conn):
            if closable is not None:
                # Closing a broken connection may fail too.
                with contextlib.suppress(Exception):
                    closable.close()
        self._conn = self._leases_api = self._listener = None

    def _tick(self) -> None:
        now = self._clock.monotonic()
        timing = self.config.timing
        if now >= self._renew_due:
            self._sync_clock()
            self._renew()
            self._balance()
            self._renew_due = now + timing.renew_every.total_seconds()
        if now >= self._acquire_due:
            self._acquire()
            self._acquire_due = now + timing.acquire_every.total_seconds()
        self._record_ends()
        self._claim_due()
        if now >= self._commands_due:
            self._obey()
            self._commands_due = now + self.config.poll_commands_every.total_seconds()

    def _sync_clock(self) -> None:
        assert self._conn is not None
        before = self._clock.now()
        row = self._conn.execute("SELECT clock_timestamp()").fetchone()
        after = self._clock.now()
        assert row is not None
        self._db_offset = row[0] - (before + (after - before) / 2)

    def _sleep(self) -> None:
        assert self._listener is not None
        now = self._clock.monotonic()
        deadlines = [self._renew_due, self._acquire_due, self._commands_due]
        wall = self.now()
        for scheduler_id in self.held:
            if scheduler_id in self._flights or scheduler_id in self._stopped:
                continue
            slot = self._next_slot.get(scheduler_id)
            if slot is not None:
                deadlines.append(
                    max(now + (slot - wall).total_seconds(), self._retry_at.get(scheduler_id, 0))
                )
        timeout = min(max(0.0, min(deadlines) - now), 0.25)
        ready = select.select([self._listener.fileno(), self._wake_r], [], [], timeout)[0]
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        for notice in self._listener.drain():
            if notice.channel == schema.LEASE_CHANNEL:
                self._acquire_due = 0.0
            elif notice.channel == schema.COMMAND_CHANNEL and notice.payload in self.held:
                self._commands_due = 0.0

    # -- leases ---------------------------------------------------------------------------

    def _api(self) -> Leases:
        assert self._leases_api is not None
        return self._leases_api

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(0.05):
            self._self_fence()

    def _self_fence(self) -> None:
        """Cancel the runs of leases not renewed within a ttl by this host's monotonic
        clock (measured from before the last successful renewal was sent): by then another
        host may own them, so stop rather than overlap."""
        now = self._clock.monotonic()
        with self._flights_lock:
            flights = list(self._flights.items())
        for scheduler_id, flight in flights:
            if now >= self._valid_until.get(scheduler_id, now + 1) and not flight.cancel.is_set():
                flight.cancel.set()
                self._events("self_fenced", scheduler_id=scheduler_id, run_id=flight.run.run_id)

    def _renew(self) -> None:
        if not self.held:
            return
        sent = self._clock.monotonic()
        kept = {lease.scheduler_id: lease for lease in self._api().renew(list(self.held.values()))}
        for scheduler_id in kept:
            self._valid_until[scheduler_id] = sent + self.config.timing.ttl.total_seconds()
        for scheduler_id in set(self.held) - set(kept):
            self._lose(scheduler_id, self.held[scheduler_id].token)
        self.held = {sid: kept[sid] for sid in self.held if sid in kept}

    def _refresh_share(self) -> int:
        """Mark this host alive and recompute its fair share of the schedulers."""
        live = self._api().heartbeat()
        share = -(-len(self.config.scheduler_ids) // max(1, live))
        if self.config.max_leases is not None:
            share = min(share, self.config.max_leases)
        self._share = share
        return live

    def _balance(self) -> None:
        """Release leases above the fair share that have no run in flight."""
        live = self._refresh_share()
        idle = [lease for sid, lease in self.held.items() if sid not in self._flights]
        surplus = idle[: max(0, len(self.held) - self._share)]
        if surplus:
            released = self._api().release(surplus)
            for scheduler_id in released:
                self.held.pop(scheduler_id, None)
            self._events("rebalanced", scheduler_ids=released, share=self._share, live=live)

    def _lose(self, scheduler_id: str, token: int) -> None:
        self.held.pop(scheduler_id, None)
        self._events("lost", scheduler_id=scheduler_id, token=token)
        flight = self._flights.get(scheduler_id)
        if flight is not None:
            flight.cancel.set()

    def _acquire(self) -> None:
        wanted = [sid for sid in self.config.scheduler_ids if sid not in self.held]
        self._refresh_share()
        sent = self._clock.monotonic()
        won, interrupted = self._api().acquire(wanted, limit=self._share - len(self.held))
        wall = self.now()
        for lease in won:
            self.held[lease.scheduler_id] = lease
            self._valid_until[lease.scheduler_id] = sent + self.config.timing.ttl.total_seconds()
            self._next_slot[lease.scheduler_id] = self._plan(lease.scheduler_id).latest_due(wall)
            self._events("acquired", scheduler_id=lease.scheduler_id, token=lease.token)
        if interrupted:
            self._events("interrupted_orphans", count=interrupted)

    def _plan(self, scheduler_id: str) -> SlotPlan:
        return self.config.plans.get(scheduler_id, self.config.plan)

    # -- runs -----------------------------------------------------------------------------

    def _claim_due(self) -> None:
        wall = self.now()
        mono = self._clock.monotonic()
        for scheduler_id, lease in list(self.held.items()):
            if scheduler_id in self._flights or scheduler_id in self._stopped:
                continue
            slot = self._next_slot[scheduler_id]
            if wall < slot or mono < self._retry_at.get(scheduler_id, 0.0):
                continue
            slot = max(slot, self._plan(scheduler_id).latest_due(wall))  # missed: coalesce
            self._claim_and_start(lease, slot, trigger="schedule")

    def _claim_and_start(self, lease: Lease, slot: datetime, *, trigger: str) -> RunRecord | None:
        scheduler_id = lease.scheduler_id
        conn = self._conn
        assert conn is not None
        try:
            claim = claim_slot(conn, lease, slot, early=self.config.early)
        except StaleLease:
            self._events("refused", scheduler_id=scheduler_id, token=lease.token, write="claim")
            self._lose(scheduler_id, lease.token)
            return None
        if claim is Refusal.NOT_DUE:
            self._events("not_due", scheduler_id=scheduler_id, slot=slot.isoformat())
            self._retry_at[scheduler_id] = self._clock.monotonic() + 0.05
            return None
        if trigger == "schedule":
            self._next_slot[scheduler_id] = self._plan(scheduler_id).next_after(slot)
        if claim is Refusal.TAKEN:
            self._events("taken", scheduler_id=scheduler_id, slot=slot.isoformat())
            return None
        assert isinstance(claim, SlotClaim)
        return self._start(claim, trigger=trigger)

    def _start(self, claim: SlotClaim, *, trigger: str) -> RunRecord | None:
        assert self._conn is not None
        try:
            run = record_run_start(self._conn, claim, trigger=trigger)
        except StaleLease:
            self._events(
                "refused", scheduler_id=claim.scheduler_id, token=claim.token, write="start"
            )
            self._lose(claim.scheduler_id, claim.token)
            return None
        cancel = threading.Event()
        thread = threading.Thread(
            target=self._run_one, args=(run, cancel), name=f"run {run.run_id}", daemon=True
        )
        with self._flights_lock:
            self._flights[run.scheduler_id] = _Flight(run=run, cancel=cancel, thread=thread)
        self._events(
            "started",
            scheduler_id=run.scheduler_id,
            run_id=run.run_id,
            slot=run.planned_slot.isoformat(),
            token=run.token,
        )
        thread.start()
        return run

    def _run_one(self, run: RunRecord, cancel: threading.Event) -> None:
        try:
            outcome = self._runner(run, cancel)
        except Exception:
            outcome = "failed"
        with self._ends_lock:
            self._ends.append((run, outcome))
        os.write(self._wake_w, b"x")

    def _record_ends(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            with self._ends_lock:
                if not self._ends:
                    return
                run, outcome = self._ends[0]
            try:
                record_run_end(conn, run, holder=self.config.host_id, outcome=outcome)
                self._events(
                    "ended", scheduler_id=run.scheduler_id, run_id=run.run_id, outcome=outcome
                )
            except StaleLease:
                self._events(
                    "refused",
                    scheduler_id=run.scheduler_id,
                    token=run.token,
                    write="end",
                    run_id=run.run_id,
                )
                if run.scheduler_id in self.held and self.held[run.scheduler_id].token == run.token:
                    self._lose(run.scheduler_id, run.token)
            with self._ends_lock:
                self._ends.pop(0)
            flight = self._flights.get(run.scheduler_id)
            if flight is not None and flight.run.run_id == run.run_id:
                with self._flights_lock:
                    del self._flights[run.scheduler_id]

    # -- commands -------------------------------------------------------------------------

    def _obey(self) -> None:
        conn = self._conn
        assert conn is not None
        for command in cmd.take(conn, holder=self.config.host_id):
            body = self._handle(command)
            cmd.answer(conn, command, holder=self.config.host_id, body=body)
            self._events("answered", command_id=command.command_id, command=command.kind.value)

    def _handle(self, command: cmd.Command) -> dict[str, Any]:
        scheduler_id = command.scheduler_id
        lease = self.held.get(scheduler_id)
        if lease is None:
            return {"ok": False, "error": f"{self.config.host_id} no longer owns {scheduler_id}"}
        host = self.config.host_id
        if command.kind is cmd.CommandKind.EXECUTE:
            flight = self._flights.get(scheduler_id)
            if flight is not None:
                return {"ok": False, "error": "already running", "run_id": flight.run.run_id}
            run = self._claim_and_start(lease, command.issued_at, trigger="manual")
            if run is None:
                # Taken again after a lost answer: the run it started is the answer.
                earlier = self._run_of_slot(scheduler_id, command.issued_at)
                if earlier is not None:
                    return {"ok": True, "run_id": earlier, "host": host}
                return {"ok": False, "error": "not started", "host": host}
            return {"ok": True, "run_id": run.run_id, "host": host}
        if command.kind is cmd.CommandKind.STOP:
            self._stopped.add(scheduler_id)
            flight = self._flights.get(scheduler_id)
            if flight is not None:
                flight.cancel.set()
            return {"ok": True, "host": host}
        if command.kind is cmd.CommandKind.START:
            self._stopped.discard(scheduler_id)
        self._next_slot[scheduler_id] = self._plan(scheduler_id).next_after(self.now())
        return {"ok": True, "host": host, "next": self._next_slot[scheduler_id].isoformat()}

    def _run_of_slot(self, scheduler_id: str, slot: datetime) -> int | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT run_id FROM cluster_runs WHERE scheduler_id = %s AND planned_slot = %s "
            "AND host = %s",
            (scheduler_id, slot, self.config.host_id),
        ).fetchone()
        return None if row is None else int(row[0])

    # -- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop the runs, wait for them (bounded), record their ends, release the leases."""
        for flight in self._flights.values():
            flight.cancel.set()
        deadline = self._clock.monotonic() + self.config.shutdown_grace.total_seconds()
        for flight in list(self._flights.values()):
            flight.thread.join(max(0.0, deadline - self._clock.monotonic()))
        if self._conn is None:
            return
        try:
            self._record_ends()
            self._api().leave()
            released = self._api().release(list(self.held.values()))
            self._events("released", scheduler_ids=released)
            self.held.clear()
        except CONNECTION_ERRORS as error:
            self._events("disconnected", error=str(error).strip()[:200])
