"""One manager's membership in a cluster: leases, slot claims, fenced run ends, commands.

``Member`` is the manager's ``ClusterGate`` (see ``manager/cluster_gate.py``) on the
coordination database. Its own thread renews the leases it holds, takes free or orphaned
ones up to its fair share (the schedulers over the live hosts, rounded up), releases those
above it between runs (``tenure.Tenure``), and takes the commands for its schedulers
(each carried out by the manager in a thread of its own, then answered). A watchdog
thread asks the manager to cancel the run of a lease not renewed within a ttl by this
host's monotonic clock, counted from before the last renewal that succeeded was sent.
``join`` takes this host's name first (refused while a live member has it).
The manager's own threads claim slots (``claim``) and record run ends (``record_end``);
every such write carries the lease token and the database refuses a stale one.

One connection does all the writing (its session marks this host alive to the others,
and every use of it holds ``_db``); a second one LISTENs, so a released lease or a
command wakes the loop at once; this host's commands to other hosts go through a
``sender.Sender`` of their own.
A lost connection is reopened with backoff; leases still carrying their token are kept.

May import ``core``, ``cluster``, ``store.postgres.opening`` (its messages and its check
for a foreign database) and psycopg.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg

from supervisor.cluster import commands as cmd
from supervisor.cluster import schema, settings_feed
from supervisor.cluster.db import (
    CONNECTION_ERRORS,
    TRANSIENT_ERRORS,
    Connection,
    close_quietly,
    connect,
    liveness_params,
)
from supervisor.cluster.lease import Lease, Leases
from supervisor.cluster.sender import Sender
from supervisor.cluster.shown import Shown, publish, see_owners
from supervisor.cluster.slots import (
    Refusal,
    RunRecord,
    claim_slot,
    close_untracked_runs,
    one_shot_slot,
    record_run_end,
    record_run_start,
)
from supervisor.cluster.tenure import Tenure, default_host_id
from supervisor.cluster.timing import LeaseTiming
from supervisor.core.clock import Clock
from supervisor.core.errors import BackendError, DefinitionError, StaleLease, StoreError
from supervisor.core.records import SchedulerStatus
from supervisor.store.postgres.opening import connect_problem, describe, refuse_foreign

__all__ = ["Member", "MemberConfig", "NoHooks", "default_host_id"]


def _problem(error: psycopg.Error, dsn: str) -> str:
    """What ``error`` means to the operator (one line, never the password)."""
    if isinstance(error, psycopg.OperationalError) and error.sqlstate is None:
        return connect_problem(error, dsn)  # refused before a session began
    return " ".join(str(error).split()) or type(error).__name__


class Hooks(Protocol):
    """The manager's side (``cluster_gate.GateHooks``)."""

    def lease_lost(self, scheduler_id: str) -> None: ...

    def statuses(self, scheduler_ids: list[str]) -> list[SchedulerStatus]: ...

    def settings_changed(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None: ...

    def run_missed(self, scheduler_id: str, slot: datetime) -> None: ...

    def leases_taken(self, scheduler_ids: list[str]) -> bool: ...

    def obey(self, scheduler_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]: ...


Report = Callable[[str], None]

# OSError, ValueError: another thread closed the listener while ``select`` waited on it.
_LOOP_CONNECTION_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, OSError, ValueError)

OPEN_ATTEMPTS = 5

# Triggers whose slot is an instant every host names alike (``core.records.Trigger``).
SHARED_SLOTS = frozenset({"cron", "missed"})
# A ONE_SHOT's run: it runs once while any host alive when it was claimed lives on
# (``slots.one_shot_slot``), whichever host holds the lease.
ONE_SHOT_TRIGGER = "start"
RETRY_TRIGGER = "retry"
RETRY_STEP = timedelta(microseconds=1)  # retry n of slot S claims S + n steps
# How long a claim of a cron slot waits for the database clock to reach it.
MAX_EARLY = timedelta(seconds=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberConfig:
    """``command_timeout``: how long a command sent to another host waits for its answer."""

    dsn: str
    host_id: str
    scheduler_ids: tuple[str, ...]
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    poll_commands_every: timedelta = timedelta(seconds=1)
    early: timedelta = timedelta(milliseconds=250)
    command_timeout: float = 10.0


class NoHooks:
    """Hooks that do nothing and refuse commands (until the manager binds its own)."""

    def lease_lost(self, scheduler_id: str) -> None:
        del scheduler_id

    def obey(self, scheduler_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "the manager is not ready"}

    def statuses(self, scheduler_ids: list[str]) -> list[SchedulerStatus]:
        return []

    def settings_changed(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        del scheduler_id, overrides

    def run_missed(self, scheduler_id: str, slot: datetime) -> None:
        del scheduler_id, slot

    def leases_taken(self, scheduler_ids: list[str]) -> bool:
        del scheduler_ids
        return True


class Member:
    """One host in the cluster; ``open`` joins (raises ``StoreError`` when the database
    cannot be reached), ``close`` leaves and releases every lease at once."""

    def __init__(self, config: MemberConfig, *, clock: Clock, report: Report) -> None:
        self.config = config
        self._clock = clock
        self._report = report
        self._hooks: Hooks = NoHooks()
        self._db = threading.RLock()
        # The watchdog's own lock (never held across a statement): a call stuck on the
        # network holds ``_db``, and the watchdog must still fence the runs.
        self._fence_lock = threading.Lock()
        self._conn: Connection | None = None
        self._api: Leases | None = None
        self._listener: cmd.Listener | None = None
        self._tenure = Tenure(
            scheduler_ids=config.scheduler_ids,
            timing=config.timing,
            clock=clock,
            events=self._events,
        )
        self._runs: dict[str, RunRecord] = {}  # the manager's run ID -> its fenced record
        self._flights: dict[str, str] = {}  # scheduler -> the manager's run ID in flight
        self._self_fenced: set[str] = set()
        self._pending_ends: list[tuple[RunRecord, str]] = []
        self._retried: dict[str, tuple[datetime, int]] = {}  # the last slot run, its retries
        self._settled: dict[int, bool] = {}  # queued ends written since (True) or refused
        self._owners: dict[str, str] = {}
        self._shown_elsewhere: dict[str, Shown] = {}  # the owners' statuses, as published
        self._published: dict[str, Shown] = {}  # what this host published last
        self._settings_seen = 0  # the newest ``cluster_settings.version`` applied here
        self._settings_news: list[tuple[str, dict[str, Any]]] = []
        # A cron slot that fell due here while another host held the lease (the latest
        # per scheduler): unclaimed when this host takes the lease, it was missed.
        self._refused_shared: dict[str, datetime] = {}
        self._missed_news: list[tuple[str, datetime]] = []
        self._taken_news: list[str] = []  # leases won since the last round (``leases_taken``)
        self._marks_pending = False  # ``leases_taken`` has runs left to mark
        self._polled = False  # an acquisition round ran since the last look
        self._asked_missed: set[tuple[str, datetime]] = set()
        self._obeying: set[int] = set()
        self._unanswered: dict[int, tuple[cmd.Command, dict[str, Any]]] = {}
        self._renew_due = self._acquire_due = self._commands_due = 0.0
        self._stop = threading.Event()
        self._left = False
        self._joined = False  # the tables are installed and this host's name taken
        self._first_round = threading.Event()  # the first leases were taken (or tried)
        self._wake_r, self._wake_w = os.pipe()
        self._threads: list[threading.Thread] = []
        self._sender = Sender(
            config.dsn,
            host=config.host_id,
            params=liveness_params(config.dsn, ttl=config.timing.ttl),
            timeout=config.command_timeout,
        )

    @property
    def host(self) -> str:
        return self.config.host_id

    @property
    def held(self) -> dict[str, Lease]:
        """The leases this host holds (as last renewed)."""
        return self._tenure.held

    @property
    def _tcp(self) -> dict[str, int]:
        return liveness_params(self.config.dsn, ttl=self.config.timing.ttl)

    def bind(self, hooks: Hooks) -> None:
        self._hooks = hooks

    # -- lifecycle --------------------------------------------------------------------------

    def join(self) -> None:
        """Install the tables, register the schedulers and take this host's name, without
        taking leases yet (``open`` does, joining first if need be). ``StoreError``
        (naming user@host:port/db, never the password) when the database cannot be used:
        unreachable after a few tries, or at once when it refuses (authentication,
        privileges, a foreign app's tables); ``DefinitionError("--host-name")`` when a
        live member of the cluster has this host's name."""
        if self._joined:
            return
        description = describe(self.config.dsn)
        for attempt in range(OPEN_ATTEMPTS):  # a flaky network gets a few tries
            try:
                self._join(description)
                break
            except StoreError:
                raise
            except psycopg.Error as error:
                problem = _problem(error, self.config.dsn)
                transient = isinstance(error, CONNECTION_ERRORS) and (
                    "cannot reach" in problem or "connection" in problem.lower()
                )
                if not transient or attempt == OPEN_ATTEMPTS - 1:
                    raise StoreError(
                        f"cannot use {description} as the cluster database: {problem}"
                    ) from None
                self._stop.wait(0.2 * (attempt + 1))
        self._joined = True

    def open(self) -> None:
        """Join (see ``join``, which raises) and take leases from now on."""
        self.join()
        for target, name in ((self._loop, "cluster"), (self._watch, "lease watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        # The manager plans from its first moment: a run due then (a catch-up, a one-shot
        # without delay) must find the leases this host takes already taken.
        self._first_round.wait(self.config.timing.ttl.total_seconds())

    def _join(self, description: str) -> None:
        try:
            conn = connect(self.config.dsn, application_name=f"sst {self.host}", **self._tcp)
        except psycopg.ProgrammingError as error:  # an unparsable connection string
            raise StoreError(f"cannot use {description}: {error}") from None
        try:
            refuse_foreign(conn, description)
            schema.install(conn)
            schema.register(conn, list(self.config.scheduler_ids))
            taken = Leases(conn, holder=self.host, timing=self.config.timing).join()
        finally:
            conn.close()
        if taken is not None:
            raise DefinitionError(
                "--host-name",
                f"{self.host!r} is already in use in the cluster on {description}: {taken};"
                " give this manager a --host-name of its own, or stop the other one first",
            )

    def close(self) -> None:
        """Leave: record the ends still pending, release the leases (the others are woken
        by NOTIFY and take them at once), close the connections. Idempotent."""
        if self._left:
            return
        self._left = True
        self._stop.set()
        os.write(self._wake_w, b"x")
        for thread in self._threads:
            thread.join(10)
        try:
            if not self._threads:  # never opened: only the name to give back
                self._give_name_back()
                return
            if not self._db.acquire(timeout=self.config.timing.ttl.total_seconds()):
                # A statement is stuck (a partition): the leases expire by themselves.
                self._events("left_without_release", held=",".join(self.held) or "-")
                return
            try:
                if self._conn is None:
                    self._open()
                self._flush_ends()
                api = self._leases()
                api.leave()
                released = api.release(list(self.held.values()))
                self._tenure.held.clear()
            finally:
                self._db.release()
            self._events("released", scheduler_ids=",".join(released) or "-")
        except CONNECTION_ERRORS as error:
            self._events("disconnected", error=str(error).strip()[:200])
        finally:
            self._close()
            self._sender.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _give_name_back(self) -> None:
        if not self._joined:
            return
        with contextlib.suppress(psycopg.Error):
            conn = connect(self.config.dsn, application_name=f"sst {self.host}", **self._tcp)
            with conn:
                Leases(conn, holder=self.host, timing=self.config.timing).leave()

    # -- the gate ---------------------------------------------------------------------------

    def owns(self, scheduler_id: str) -> bool:
        return self._tenure.owns(scheduler_id)

    def owner(self, scheduler_id: str) -> str | None:
        if self.owns(scheduler_id):
            return self.host
        return self._owners.get(scheduler_id)

    def shown(self, status: SchedulerStatus) -> SchedulerStatus:
        """``status`` with its owner named; the owner's own status where another host owns
        it (what that host published last, at most a renewal period old)."""
        owner = self.owner(status.id)
        if owner is None or owner == self.host:
            return replace(status, host=owner)
        published = self._shown_elsewhere.get(status.id)
        if published is None:
            return replace(status, host=owner)
        return published.over(status)

    def claim(
        self,
        scheduler_id: str,
        run_id: str,
        *,
        slot: datetime,
        trigger: str,
        pause: timedelta | None = None,
    ) -> str | None:
        """Claim the slot and record the run's start (see ``cluster_gate.FencedRuns``).

        A cron slot is an instant every host names alike: it is claimed as planned, and a
        host whose clock runs ahead waits (up to ``MAX_EARLY``) for the database clock to
        reach it. Any other slot is this host's own (a pause after its last run, Execute
        Now): it is moved onto the database clock, so a skewed host is never "early"."""
        if (scheduler_id, slot) in self._asked_missed:  # the run ``run_missed`` asked for
            self._asked_missed.discard((scheduler_id, slot))
            trigger = "missed"
        if trigger == RETRY_TRIGGER and scheduler_id in self._retried:
            # Named after the slot retried and the attempt: a retry claimed twice (on two
            # hosts, or after a lost reply) collides on the slot's UNIQUE.
            base, attempt = self._retried[scheduler_id]
            self._retried[scheduler_id] = (base, attempt + 1)
            slot = base + (attempt + 1) * RETRY_STEP
        elif trigger not in SHARED_SLOTS:
            slot += self._tenure.db_offset
        refused = self._claim(scheduler_id, run_id, slot=slot, trigger=trigger, pause=pause)
        if refused is Refusal.NOT_DUE and trigger in SHARED_SLOTS:
            early = (slot - (self._clock.now() + self._tenure.db_offset)).total_seconds()
            if early <= MAX_EARLY.total_seconds():
                self._stop.wait(max(0.0, early) + 0.02)
                refused = self._claim(scheduler_id, run_id, slot=slot, trigger=trigger)
        if isinstance(refused, Refusal):  # only NOT_DUE is returned as a Refusal
            return f"slot {slot.isoformat()} of {scheduler_id} is not due by the database clock"
        return refused

    def _claim(
        self,
        scheduler_id: str,
        run_id: str,
        *,
        slot: datetime,
        trigger: str,
        pause: timedelta | None = None,
    ) -> str | Refusal | None:
        with self._db:
            lease = self.held.get(scheduler_id)
            if lease is None or not self.owns(scheduler_id):
                if trigger in SHARED_SLOTS:
                    self._refused_shared[scheduler_id] = slot
                return f"{self.host} does not own {scheduler_id}"
            conn = self._conn
            if conn is None:
                return "the cluster database is unreachable"
            try:
                if pause is not None and (too_soon := self._too_soon(scheduler_id, slot, pause)):
                    return too_soon
                if trigger == ONE_SHOT_TRIGGER:
                    ran = one_shot_slot(conn, scheduler_id, ttl=self.config.timing.ttl)
                    if ran is not None:
                        self._events("taken", scheduler_id=scheduler_id, slot=ran.isoformat())
                        return f"the one-shot {scheduler_id} ran already in this cluster"
                claim = claim_slot(conn, lease, slot, early=self.config.early)
                if claim is Refusal.TAKEN:
                    self._events("taken", scheduler_id=scheduler_id, slot=slot.isoformat())
                    return f"slot {slot.isoformat()} of {scheduler_id} was claimed already"
                if claim is Refusal.NOT_DUE:
                    return claim
                run = record_run_start(conn, claim, trigger=trigger, run_ref=run_id)
            except StaleLease:
                self._events("refused", scheduler_id=scheduler_id, token=lease.token, write="claim")
                self._tenure.drop(scheduler_id)
                return f"the lease of {scheduler_id} is no longer this host's"
            except CONNECTION_ERRORS as error:
                self._broken(error)
                return "the cluster database is unreachable"
            except TRANSIENT_ERRORS:
                return "the cluster database is busy"
            self._runs[run_id] = run
            if trigger != RETRY_TRIGGER:
                self._retried[scheduler_id] = (run.planned_slot, 0)
            with self._fence_lock:
                self._flights[scheduler_id] = run_id
        self._events("started", scheduler_id=scheduler_id, run_id=run_id, token=run.token)
        return None

    def _too_soon(self, scheduler_id: str, slot: datetime, pause: timedelta) -> str | None:
        """Under ``_db``: why ``slot`` comes too soon after the last run another host
        ended (a pause holds across hosts: after a hand-off or a takeover too), or None."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT max(ended_at) FROM cluster_runs WHERE scheduler_id = %s AND host <> %s",
            (scheduler_id, self.host),
        ).fetchone()
        ended = None if row is None else row[0]
        if ended is None or slot >= ended + pause:
            return None
        return f"a run of {scheduler_id} on another host ended {ended.isoformat()}: pausing"

    def record_end(self, run_id: str, outcome: str) -> bool | None:
        """See ``cluster_gate.FencedRuns``: a write queued on a lost connection is waited
        for (up to a ttl, while the loop reconnects and writes it): True written, False
        refused, None still unknown (the caller must not take the end as accepted)."""
        with self._db:
            run = self._runs.pop(run_id, None)
            if run is None:
                return True
            with self._fence_lock:
                if self._flights.get(run.scheduler_id) == run_id:
                    del self._flights[run.scheduler_id]
                self._self_fenced.discard(run_id)
            written = self._write_end(run, outcome)
        if written is not None:
            return written
        deadline = self._clock.monotonic() + self.config.timing.ttl.total_seconds()
        while self._clock.monotonic() < deadline and not self._stop.is_set():
            with self._db:
                if run.run_id in self._settled:
                    return self._settled.pop(run.run_id)
            self._stop.wait(0.05)
        self._events("end_unknown", scheduler_id=run.scheduler_id, run_id=run.run_id)
        return None

    def _write_end(self, run: RunRecord, outcome: str) -> bool | None:
        """Under ``_db``. False: refused (fenced); None: queued (the connection is lost
        or the database busy), its result kept in ``_settled`` once written."""
        if self._conn is None:
            self._pending_ends.append((run, outcome))
            return None
        try:
            record_run_end(self._conn, run, holder=self.host, outcome=outcome)
        except StaleLease:
            self._events(
                "fenced", scheduler_id=run.scheduler_id, run_id=run.run_id, token=run.token
            )
            self._tenure.drop(run.scheduler_id, run.token)
            return False
        except CONNECTION_ERRORS as error:
            self._pending_ends.append((run, outcome))
            self._broken(error)
            return None
        except TRANSIENT_ERRORS:
            self._pending_ends.append((run, outcome))
            return None
        self._events("ended", scheduler_id=run.scheduler_id, run_id=run.run_id, outcome=outcome)
        return True

    def send(
        self, scheduler_id: str, kind: str, payload: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        return self._sender.send(scheduler_id, kind, payload, actor=actor)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                # Taken before ``_db``: the lock order is ``_db`` after the manager's, never
                # the other way round.
                statuses: list[SchedulerStatus] = []
                if self._clock.monotonic() >= self._renew_due and self.held:
                    statuses = self._hooks.statuses(list(self.held))
                if self._conn is None:
                    # Connected outside ``_db`` (a connect may take its timeout), adopted
                    # under it.
                    connected = self._connect()
                    with self._db:
                        self._adopt(*connected)
                    backoff = 0.05
                with self._db:
                    if self._conn is None:  # lost again meanwhile
                        continue
                    lost = self._tick(statuses)
                self._first_round.set()
                for scheduler_id in lost:
                    self._hooks.lease_lost(scheduler_id)
                for scheduler_id, overrides in self._settings_news:
                    self._hooks.settings_changed(scheduler_id, overrides)
                self._settings_news = []
                taken, self._taken_news = self._taken_news, []
                polled, self._polled = self._polled, False
                if taken or (self._marks_pending and polled):
                    # Retried at each lease poll until the store has marked them all.
                    self._marks_pending = not self._hooks.leases_taken(taken)
                for scheduler_id, slot in self._missed_news:
                    self._events("missed", scheduler_id=scheduler_id, slot=slot.isoformat())
                    self._hooks.run_missed(scheduler_id, slot)
                self._missed_news = []
                self._obey()
                self._sleep()
            except _LOOP_CONNECTION_ERRORS as error:
                with self._db:
                    self._broken(error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 0.5)
            except TRANSIENT_ERRORS as error:
                self._events("transient", error=str(error).strip()[:200])
                self._stop.wait(backoff)

    def _open(self) -> None:
        """Under ``_db``: connect and adopt the connections."""
        self._adopt(*self._connect())

    def _connect(self) -> tuple[Connection, cmd.Listener]:
        return cmd.open_line(self.config.dsn, application_name=f"sst {self.host}", **self._tcp)

    def _adopt(self, conn: Connection, listener: cmd.Listener) -> None:
        """Under ``_db``: use the new connections, keep the leases still carrying their
        token, and close a run whose start committed but whose reply was lost."""
        self._conn = conn
        self._api = Leases(conn, holder=self.host, timing=self.config.timing)
        self._listener = listener
        self._renew_due = self._acquire_due = self._commands_due = 0.0
        self._events("connected")
        if self.held:
            self._renew()
            closed = close_untracked_runs(conn, holder=self.host, keep=self._known_runs())
            if closed:
                self._events("closed_untracked", run_ids=closed)

    def _known_runs(self) -> list[int]:
        return [run.run_id for run in self._runs.values()] + [
            run.run_id for run, _ in self._pending_ends
        ]

    def _broken(self, error: BaseException) -> None:
        """Under ``_db``: the connection is lost; the loop opens a new one."""
        if self._conn is not None:
            self._events("disconnected", error=str(error).strip()[:200])
        self._close()

    def _close(self) -> None:
        close_quietly(self._listener, self._conn)
        self._conn = None
        self._api = None
        self._listener = None

    def _leases(self) -> Leases:
        assert self._api is not None
        return self._api

    def _tick(self, statuses: list[SchedulerStatus]) -> list[str]:
        """Under ``_db``: one round of lease work; returns the schedulers whose lease was
        lost while a run was in flight (their runs are cancelled outside the lock)."""
        now = self._clock.monotonic()
        timing = self.config.timing
        lost: list[str] = []
        if now >= self._renew_due:
            assert self._conn is not None
            self._tenure.sync_clock(self._conn)
            lost = self._renew()
            self._tenure.balance(self._leases(), busy=self._flights)
            self._publish(statuses)
            self._see_owners()
            self._see_settings()
            self._renew_due = now + timing.renew_every.total_seconds()
        if now >= self._acquire_due:
            self._acquire()
            self._polled = True
            self._acquire_due = now + timing.acquire_every.total_seconds()
        self._flush_ends()
        return lost

    def _sleep(self) -> None:
        listener = self._listener
        if listener is None:
            return
        now = self._clock.monotonic()
        deadline = min(self._renew_due, self._acquire_due, self._commands_due)
        timeout = min(max(0.0, deadline - now), 0.25)
        ready = select.select([listener.fileno(), self._wake_r], [], [], timeout)[0]
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        with self._db:
            notices = listener.drain() if self._listener is listener else []
        for notice in notices:
            if notice.channel == schema.LEASE_CHANNEL:
                self._acquire_due = 0.0
            elif notice.channel == schema.COMMAND_CHANNEL and notice.payload in self.held:
                self._commands_due = 0.0

    def _renew(self) -> list[str]:
        """Under ``_db``: the schedulers whose lease was lost while a run was in flight."""
        lost = self._tenure.renew(self._leases())
        return [sid for sid in lost if sid in self._flights]

    def _acquire(self) -> None:
        for lease in self._tenure.acquire(self._leases()):
            self._taken_news.append(lease.scheduler_id)
            self._catch_up(lease.scheduler_id)

    def _catch_up(self, scheduler_id: str) -> None:
        """Under ``_db``, on taking a lease: a cron slot refused here while another host
        held it, and claimed by nobody, was missed (its owner died just before it):
        the manager is asked to run it (``run_missed``)."""
        slot = self._refused_shared.pop(scheduler_id, None)
        if slot is None or self._conn is None:
            return
        claimed = self._conn.execute(
            "SELECT 1 FROM cluster_slots WHERE scheduler_id = %s AND planned_slot = %s",
            (scheduler_id, slot),
        ).fetchone()
        if claimed is None:
            self._asked_missed.add((scheduler_id, slot))
            self._missed_news.append((scheduler_id, slot))

    def _see_owners(self) -> None:
        """Who owns each scheduler now, and what the other owners published of theirs."""
        assert self._conn is not None
        owners, shown = see_owners(self._conn, list(self.config.scheduler_ids))
        self._owners = owners
        self._shown_elsewhere = {sid: s for sid, s in shown.items() if owners[sid] != self.host}

    def share_settings(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        with self._db:
            if self._conn is None:
                raise BackendError("the cluster database is unreachable")
            try:
                settings_feed.share(self._conn, scheduler_id, overrides, by=self.host)
            except CONNECTION_ERRORS as error:
                self._broken(error)
                raise BackendError(f"cannot reach the cluster database: {error}") from error

    def _see_settings(self) -> None:
        """Under ``_db``: the settings other hosts changed since the last look (applied by
        the loop outside the lock). The first look takes every row: a host that was down
        catches up."""
        assert self._conn is not None
        rows = settings_feed.changed_since(
            self._conn, self._settings_seen, list(self.config.scheduler_ids)
        )
        for scheduler_id, overrides, version, changed_by in rows:
            self._settings_seen = max(self._settings_seen, version)
            if changed_by != self.host:
                self._settings_news.append((scheduler_id, overrides))

    def _publish(self, statuses: list[SchedulerStatus]) -> None:
        """Write what changed in the statuses of the schedulers this host holds."""
        assert self._conn is not None
        changed = []
        for status in statuses:
            lease = self.held.get(status.id)
            shown = Shown.of(self.host, status)
            if lease is not None and self._published.get(status.id) != shown:
                changed.append((lease.token, shown))
        if not changed:
            return
        publish(self._conn, holder=self.host, changed=changed)
        for _, shown in changed:
            self._published[shown.scheduler_id] = shown

    def _flush_ends(self) -> None:
        """Under ``_db``: write the ends queued while the connection was lost."""
        pending, self._pending_ends = self._pending_ends, []
        for run, outcome in pending:
            written = self._write_end(run, outcome)
            if written is not None:
                self._settled[run.run_id] = written

    # -- the watchdog -----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self._fence_lock:
                lapsed = [
                    (sid, run_id)
                    for sid, run_id in self._flights.items()
                    if not self._tenure.valid(sid) and run_id not in self._self_fenced
                ]
                self._self_fenced.update(run_id for _, run_id in lapsed)
            for scheduler_id, run_id in lapsed:
                self._events("self_fenced", scheduler_id=scheduler_id, run_id=run_id)
                self._hooks.lease_lost(scheduler_id)

    # -- commands ---------------------------------------------------------------------------

    def _obey(self) -> None:
        if self._clock.monotonic() < self._commands_due:
            return
        self._commands_due = (
            self._clock.monotonic() + self.config.poll_commands_every.total_seconds()
        )
        with self._db:
            if self._conn is None:
                return
            taken = cmd.take(self._conn, holder=self.host)
            for command in taken:
                if command.command_id in self._unanswered:
                    self._answer(*self._unanswered[command.command_id])
        for command in taken:
            if command.command_id in self._obeying or command.command_id in self._unanswered:
                continue
            self._obeying.add(command.command_id)
            threading.Thread(
                target=self._obey_one, args=(command,), name="cluster command", daemon=True
            ).start()

    def _obey_one(self, command: cmd.Command) -> None:
        scheduler_id = command.scheduler_id
        if self.owns(scheduler_id):
            body = self._hooks.obey(scheduler_id, command.kind.value, dict(command.payload))
        else:
            body = {"ok": False, "error": f"{self.host} no longer owns {scheduler_id}"}
        with self._db:
            self._unanswered[command.command_id] = (command, body)
            self._obeying.discard(command.command_id)
            self._answer(command, body)

    def _answer(self, command: cmd.Command, body: dict[str, Any]) -> None:
        """Under ``_db``; kept for the next round when the connection is lost."""
        if self._conn is None:
            return
        try:
            cmd.answer(self._conn, command, holder=self.host, body=body)
        except CONNECTION_ERRORS as error:
            self._broken(error)
            return
        self._unanswered.pop(command.command_id, None)
        self._events("answered", command_id=command.command_id, command=command.kind.value)

    # -- reporting --------------------------------------------------------------------------

    _QUIET = frozenset({"started", "ended", "answered", "connected"})

    def _events(self, kind: str, **fields: Any) -> None:
        """Lease and fencing events for the operator's log (one line each)."""
        if kind in self._QUIET:
            return
        detail = " ".join(f"{key}={value}" for key, value in fields.items())
        self._report(f"cluster: {kind} {detail}".rstrip())
