"""What the supervisor keeps, one Protocol per aggregate, and the values they exchange.

Aggregates: settings overrides, runs, logs, the audit trail, users, and small internal
state. ``Store`` is all of them plus ``close``. Implementations: ``sqlite.SqliteStore``
(the embedded default), ``postgres.PostgresStore`` (shared by several hosts; also
``FencedRunHistory``) and ``memory.MemoryStore`` (complete, no file); one conformance
suite (tests/test_store_contract.py) runs against each, and a new store joins it.

Common to every method of every Protocol here:

- ``StoreError`` when the storage fails (disk full, I/O error, lost connection, a file
  damaged after opening) and after ``close``; a failed call changed nothing (each call
  is one transaction).
- Times go in as aware datetimes (a naive one raises ``ValueError``) and come out in UTC.
- Every method may be called from any thread.

Log cursors are positive integers that only grow: a cursor is never given out twice,
even after retention deleted the records that held the highest ones.

May import ``core.records``, ``core.errors`` and the stdlib.
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from supervisor.core.records import (
    AuditEntry,
    Decision,
    LogQuery,
    LogRecord,
    Outcome,
    RunRecord,
    Trigger,
)

# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LogStats:
    """What the store kept and dropped of one run's log (markers count as stored)."""

    stored_records: int
    dropped_records: int
    stored_bytes: int
    dropped_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class UnfinishedRun:
    """A run without an outcome, and the process that ran it (None if never recorded)."""

    run: RunRecord
    pid: int | None
    pgid: int | None
    create_time: float | None


def new_stamp() -> str:
    """A fresh credentials stamp (``StoredUser.stamp``): random, never one given before."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredUser:
    """A login. ``stamp``: its credentials stamp, made when the login is added and made
    anew (``UserChange.stamp``) by every change that must end its sessions (a new
    password, a disable); a web session made with another stamp is refused, on every
    host sharing the store. A login removed and added again has a new stamp too."""

    name: str
    role: str
    password_hash: str
    created_at: datetime
    stamp: str = dataclasses.field(default_factory=new_stamp)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserChange:
    """One change to a login (``UserDirectory.change_user``), made only while its stored
    hash is still ``expected_hash`` (so a change based on what was read cannot undo one
    made since): a new ``password_hash`` and/or ``role``, or ``remove``. ``stamp``: the
    login's new credentials stamp (``new_stamp()``), written with the change, which ends
    every session made with the old one; None keeps the stamp (a role change, whose
    sessions read the new role at their next request; a rehash at login).
    ``expected_stamp``: also made only while the stored stamp is still this one (a change
    a session makes on its own behalf: a disable and enable since leave the hash as it was,
    not the stamp)."""

    expected_hash: str
    password_hash: str | None = None
    role: str | None = None
    remove: bool = False
    stamp: str | None = None
    expected_stamp: str | None = None

    def __post_init__(self) -> None:
        if self.stamp is not None and not self.stamp:
            raise ValueError("stamp: a new stamp cannot be empty (use new_stamp())")

    def stale(self, stored: StoredUser | None) -> bool:
        """Whether the login as stored now is no longer the one this change was made
        from (or is gone): the change must not be made."""
        if stored is None or stored.password_hash != self.expected_hash:
            return True
        return self.expected_stamp is not None and stored.stamp != self.expected_stamp

    def applied(self, user: StoredUser) -> StoredUser | None:
        """``user`` after the change; None when it removes them."""
        if self.remove:
            return None
        return dataclasses.replace(
            user,
            password_hash=user.password_hash if self.password_hash is None else self.password_hash,
            role=user.role if self.role is None else self.role,
            stamp=user.stamp if self.stamp is None else self.stamp,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepOne:
    """A rule ``change_user`` keeps: some login of ``role`` whose hash does not start with
    ``locked_prefix`` (an enabled admin) must remain."""

    role: str
    locked_prefix: str

    def holds_for(self, user: StoredUser | None) -> bool:
        return (
            user is not None
            and user.role == self.role
            and not user.password_hash.startswith(self.locked_prefix)
        )

    def refuses(self, before: StoredUser, after: StoredUser | None, others: int) -> bool:
        """Whether changing ``before`` into ``after`` leaves none, ``others`` being how
        many other logins the rule holds for."""
        return self.holds_for(before) and not self.holds_for(after) and others == 0


class Changed(enum.Enum):
    """What ``change_user`` did."""

    DONE = "done"
    STALE = "stale"  # no such login, or not the one expected (``UserChange.stale``): nothing done
    REFUSED = "refused"  # it would break the ``KeepOne`` rule: nothing done


@dataclass(frozen=True, slots=True, kw_only=True)
class LostLogs:
    """Records of one run that never reached the store (e.g. while the disk was full).

    ``records``/``bytes`` count them (bytes as ``LogArchive.append_logs`` counts them);
    ``first_time``/``last_time`` are the times of the first and last of them.
    """

    run_id: str
    records: int
    bytes: int
    first_time: datetime
    last_time: datetime
    reason: str

    def __post_init__(self) -> None:
        if self.records < 1 or self.bytes < 0:
            raise ValueError("lost logs count at least one record and no negative bytes")


# -- aggregates -------------------------------------------------------------------------------


class SettingsOverrides(Protocol):
    """The setting overrides operators stored, per scheduler (the code holds the defaults)."""

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        """The stored overrides of one scheduler (empty if none)."""
        ...

    def all_overrides(self) -> dict[str, dict[str, Any]]:
        """Every scheduler's stored overrides, keyed by scheduler ID (none: absent)."""
        ...

    def set_overrides(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        """Replace the overrides of ``scheduler_id`` as a whole (empty: delete them).

        Values are what ``Settings`` fields hold: timedelta, str, int, bool or None; any other
        type (or a name that is not a string) raises ``DefinitionError`` naming it.
        """
        ...

    def delete_overrides(self, scheduler_id: str) -> bool:
        """Delete the overrides of ``scheduler_id``; whether there were any."""
        ...

    def decision(self, scheduler_id: str) -> Decision | None:
        """The operator's decision stored for ``scheduler_id`` (a disable's or a pause's
        who, when, why and until), or None. Kept apart from the overrides: a settings
        reset leaves it, and it survives restarts like them."""
        ...

    def all_decisions(self) -> dict[str, Decision]:
        """Every stored decision, keyed by scheduler ID (none: absent)."""
        ...

    def set_decision(self, scheduler_id: str, decision: Decision | None) -> None:
        """Store ``decision`` for ``scheduler_id``, replacing any earlier one (None:
        delete it). ``ValueError`` if ``decision`` is not a ``Decision``."""
        ...


class RunHistory(Protocol):
    """Runs: one row each, from start to outcome; the newest N finished ones per scheduler.

    Retention (applied when a run finishes): only the newest ``max_runs_per_scheduler``
    runs (by start) of a scheduler are kept; older finished runs are deleted with their
    log records. An unfinished run is never deleted.
    """

    def insert_run(self, run: RunRecord) -> None:
        """Record a new run. ``StoreError`` if its ``run_id`` is already stored."""
        ...

    def set_run_process(self, run_id: str, *, pid: int, pgid: int, create_time: float) -> None:
        """Remember the process (group) of a run, so a restart can find it and never take
        a reused pid for it (``create_time`` as ``psutil.Process.create_time()``).
        ``UnknownRun`` if there is no such run."""
        ...

    def finish_run(
        self,
        run_id: str,
        *,
        ended_at: datetime,
        outcome: Outcome,
        exit_code: int | None,
        signal: int | None,
        error: str | None,
    ) -> RunRecord:
        """Record how a run ended, apply retention to its scheduler, return the run.

        Storing the same end again stores the same row (safe to retry after a failure).
        ``UnknownRun`` if there is no such run; ``ValueError`` if ``outcome`` is not an
        ``Outcome``.
        """
        ...

    def mark_interrupted(self, run_id: str, *, ended_at: datetime, error: str | None) -> None:
        """Finish a run with ``Outcome.INTERRUPTED`` (the manager died or shut down while
        it ran) unless it has ended already: a stored end is never overwritten.
        ``UnknownRun`` if there is no such run."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """One run; ``UnknownRun`` if there is none with that ID."""
        ...

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        """The newest ``limit`` runs of a scheduler, newest (by start) first; ties: the
        one inserted last first. ``limit`` <= 0 gives none."""
        ...

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        """The newest ``limit`` runs of each of ``scheduler_ids`` that has runs, keyed by
        scheduler ID, each list ordered as ``runs`` orders it; one read for them all (the
        overview's outcome strips). ``limit`` <= 0 or no IDs gives an empty dict."""
        ...

    def last_run(self, scheduler_id: str) -> RunRecord | None:
        """The run started last (finished or not), or None."""
        ...

    def last_finished_run(self, scheduler_id: str) -> RunRecord | None:
        """The run that ended last, or None."""
        ...

    def last_trigger_time(self, scheduler_id: str, trigger: Trigger) -> datetime | None:
        """When the newest run of ``scheduler_id`` with ``trigger`` started, or None."""
        ...

    def unfinished_runs(self) -> list[UnfinishedRun]:
        """Runs without an outcome (after a crash of the manager), oldest first."""
        ...


class LogArchive(Protocol):
    """Log records of runs, capped per run, read by ``LogQuery`` with cursors."""

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        """Store ``records`` in one transaction (all or none), applying each run's cap.

        A run's bytes are its messages plus their fields as compact JSON (UTF-8). The
        record that would take a run over ``max_log_bytes_per_run`` is replaced by one
        WARNING marker record (``fields``: ``limit_bytes``); it and every later record of
        that run are dropped and only counted (see ``log_stats``). Records of a run the
        store does not know (never inserted, or removed by retention) are dropped
        silently. Fields come back as JSON gives them: tuples as lists, values JSON
        cannot hold as their ``str()``; lone surrogates in messages become U+FFFD.
        """
        ...

    def add_lost_logs(self, lost: LostLogs) -> None:
        """Count records that never reached the store as dropped for their run, and store
        one WARNING marker record saying how many were lost and why (``fields``:
        ``lost_records``, ``lost_bytes``; the marker ignores the cap: losing records must
        never go unmentioned). ``UnknownRun`` if there is no such run."""
        ...

    def log_stats(self, run_id: str) -> LogStats:
        """What was stored and dropped of a run's log; ``UnknownRun`` if no such run."""
        ...

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        """The records ``query`` asks for as (cursor, record), in ascending cursor order
        (which is the order they were appended): of one scheduler, or of every one when
        ``query.scheduler_id`` is None, filtered as ``LogQuery.matches`` says. Unknown
        schedulers and runs (or a run of another scheduler) give none."""
        ...

    def count_logs(self, run_id: str) -> int:
        """How many records of a run are stored (markers included; 0 for an unknown run)."""
        ...


class AuditTrail(Protocol):
    """Who did what, when; append-only."""

    def add_audit(self, entry: AuditEntry) -> None:
        """Append ``entry``. ``before``/``after`` keep timedelta and datetime values."""
        ...

    def audit(
        self,
        *,
        scheduler_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[tuple[int, AuditEntry]]:
        """Entries as (cursor, entry), newest first; ``before`` (a cursor) pages back.

        Each filter given narrows: ``scheduler_id``, ``actor`` and ``action`` match
        exactly, ``since <= time < until`` (aware datetimes; ``ValueError`` for naive ones).
        """
        ...

    def last_actor(self, scheduler_id: str) -> str | None:
        """Who acted on ``scheduler_id`` last (per the audit trail), or None."""
        ...


class UserDirectory(Protocol):
    """Admin Center logins."""

    def add_user(
        self,
        name: str,
        *,
        role: str,
        password_hash: str,
        created_at: datetime | None = None,
    ) -> None:
        """Add a login (``created_at`` defaults to now) with a fresh stamp (``new_stamp``).
        ``DefinitionError`` for an empty name, an unknown role or a name already taken."""
        ...

    def get_user(self, name: str) -> StoredUser | None:
        """One login, or None."""
        ...

    def list_users(self) -> list[StoredUser]:
        """Every login, by name."""
        ...

    def change_user(self, name: str, change: UserChange, *, keep: KeepOne | None = None) -> Changed:
        """Make ``change`` to login ``name`` in one atomic step with its checks: ``STALE``
        (nothing done) when there is no such login or it is not the one the change was made
        from (``UserChange.stale``); ``REFUSED`` (nothing done) when afterwards no login
        ``keep`` holds for would remain, checked against every concurrent change (no two
        changes can each take away one of the last two). A change with a ``stamp`` writes
        it in the same step. ``DefinitionError`` for an unknown role."""
        ...


class InternalState(Protocol):
    """Small named strings the supervisor keeps for itself (app spec, stopped units)."""

    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing any earlier one)."""
        ...


class Store(
    SettingsOverrides, RunHistory, LogArchive, AuditTrail, UserDirectory, InternalState, Protocol
):
    """Everything the supervisor keeps, in one place."""

    def close(self) -> None:
        """Release the storage; later calls raise ``StoreError``. Idempotent."""
        ...


class FencedRunHistory(Protocol):
    """Run writes under a lease's fencing token, for a store several hosts share.

    A scheduler's lease (``cluster.lease``) carries a token that grows at every takeover
    and release, so (scheduler, token) names one host's tenure. Each write here checks the
    token and writes in one statement: a write whose token is no longer the lease's is
    refused with ``StaleLease`` and changes nothing. Besides these, the ``RunHistory``
    methods work as ever (unfenced).
    """

    def insert_run_fenced(self, run: RunRecord, *, token: int) -> None:
        """``RunHistory.insert_run`` under ``token`` (of ``run.scheduler_id``'s lease).
        ``StaleLease`` if the lease no longer carries it; ``StoreError`` if the run is
        already stored."""
        ...

    def finish_run_fenced(
        self,
        run_id: str,
        *,
        token: int,
        ended_at: datetime,
        outcome: Outcome,
        exit_code: int | None,
        signal: int | None,
        error: str | None,
    ) -> RunRecord:
        """``RunHistory.finish_run`` under ``token``. ``StaleLease`` if the run's
        scheduler's lease no longer carries it, or the run was started under another
        token (a run the new owner marked interrupted stays so); ``UnknownRun``;
        ``ValueError`` if ``outcome`` is not an ``Outcome``."""
        ...

    def interrupt_runs_before(
        self, scheduler_id: str, *, token: int, ended_at: datetime, error: str | None
    ) -> list[str]:
        """After taking a lease over: mark ``interrupted`` the unfinished runs of
        ``scheduler_id`` written under an older token (or none); return their IDs.
        ``StaleLease`` if the lease no longer carries ``token``."""
        ...
