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
joins gets work within a renewal period and one that leaves hands its work over at once
(the lease keeping is ``tenure.Tenure``, shared with the manager's ``member.Member``).

A watchdog thread stops (cancels) the runs of a lease not renewed within a ttl by this
host's monotonic clock, counted from before the last renewal that succeeded was sent: the
database's expiry cannot come earlier, so a partitioned owner stops before anyone may take
over (the dead-session shortcut aside, see ``LeaseTiming``).

The manager will embed this loop (its runner then starts a run's child process); here it
is self-contained. May import ``core``, ``cluster`` and psycopg.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from supervisor.cluster import commands as cmd
from supervisor.cluster import schema
from supervisor.cluster.db import (
    CONNECTION_ERRORS,
    TRANSIENT_ERRORS,
    Connection,
    close_quietly,
    liveness_params,
)
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
from supervisor.cluster.tenure import EventSink, Tenure, no_events
from supervisor.cluster.timing import LeaseTiming
from supervisor.core.clock import Clock
from supervisor.core.errors import StaleLease


class Runner(Protocol):
    def __call__(self, run: RunRecord, cancel: threading.Event) -> str:
        """Do the run; return its outcome (``succeeded``, ``failed``, ``cancelled``...).

        Called in a thread of its own; should end soon after ``cancel`` is set. An
        exception counts as ``failed``."""
        ...


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
        events: EventSink = no_events,
    ) -> None:
        self.config = config
        self._runner = runner
        self._clock = clock
        self._events = events
        self._conn: Connection | None = None
        self._leases_api: Leases | None = None
        self._listener: cmd.Listener | None = None
        self._tenure = Tenure(
            scheduler_ids=config.scheduler_ids,
            timing=config.timing,
            clock=clock,
            events=events,
            max_leases=config.max_leases,
        )
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
        self._installed = False
        self._flights_lock = threading.Lock()

    def now(self) -> datetime:
        """The time slots are planned with: this host's clock corrected to the database's."""
        return self._tenure.now()

    @property
    def held(self) -> dict[str, Lease]:
        """The leases this host holds (as last renewed)."""
        return self._tenure.held

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
        conn, listener = cmd.open_line(
            config.dsn,
            application_name=f"sst {config.host_id}",
            **liveness_params(config.dsn, ttl=config.timing.ttl),
        )
        try:
            if not self._installed:
                schema.install(conn)
                schema.register(conn, list(config.scheduler_ids))
                self._installed = True
        except BaseException:
            close_quietly(listener, conn)
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

    def _close(self) -> None:
        close_quietly(self._listener, self._conn)
        self._conn = self._leases_api = self._listener = None

    def _tick(self) -> None:
        now = self._clock.monotonic()
        timing = self.config.timing
        if now >= self._renew_due:
            assert self._conn is not None
            self._tenure.sync_clock(self._conn)
            self._renew()
            self._tenure.balance(self._api(), busy=self._flights)
            self._renew_due = now + timing.renew_every.total_seconds()
        if now >= self._acquire_due:
            self._acquire()
            self._acquire_due = now + timing.acquire_every.total_seconds()
        self._record_ends()
        self._claim_due()
        if now >= self._commands_due:
            self._obey()
            self._commands_due = now + self.config.poll_commands_every.total_seconds()

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
        with self._flights_lock:
            flights = list(self._flights.items())
        for scheduler_id, flight in flights:
            if not self._tenure.valid(scheduler_id) and not flight.cancel.is_set():
                flight.cancel.set()
                self._events("self_fenced", scheduler_id=scheduler_id, run_id=flight.run.run_id)

    def _renew(self) -> None:
        for scheduler_id in self._tenure.renew(self._api()):
            self._cancel(scheduler_id)

    def _lose(self, scheduler_id: str, token: int) -> None:
        """A write under ``token`` was refused: that lease is lost, and its run stopped."""
        if self._tenure.drop(scheduler_id, token):
            self._events("lost", scheduler_id=scheduler_id, token=token)
            self._cancel(scheduler_id)

    def _cancel(self, scheduler_id: str) -> None:
        flight = self._flights.get(scheduler_id)
        if flight is not None:
            flight.cancel.set()

    def _acquire(self) -> None:
        won = self._tenure.acquire(self._api())
        wall = self.now()
        for lease in won:
            self._next_slot[lease.scheduler_id] = self._plan(lease.scheduler_id).latest_due(wall)

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
            self._tenure.held.clear()
        except CONNECTION_ERRORS as error:
            self._events("disconnected", error=str(error).strip()[:200])
