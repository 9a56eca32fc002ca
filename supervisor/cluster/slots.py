"""Slot claims and fenced run writes: at most one run per (scheduler, planned slot).

A slot is the planned time computed from the schedule (never "now"), so two hosts that
disagree about the time still name the same slot. ``claim_slot`` inserts the slot row in
the statement that checks the lease token (the lease row is share-locked, so a takeover
waits until the claim has committed and a claim after a takeover sees the new token);
``UNIQUE (scheduler_id, planned_slot)`` refuses the second claim of a slot. A slot that is
not yet due by the database clock cannot be claimed (a host whose clock runs ahead does
not start early). ``record_run_start`` and ``record_run_end`` carry the token and raise
``StaleLease`` once it is no longer the lease's.

May import ``core`` and ``cluster.db``/``cluster.lease``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from supervisor.cluster.db import Connection
from supervisor.cluster.lease import Lease
from supervisor.core.errors import DefinitionError, StaleLease


class Refusal(enum.Enum):
    """Why a slot was not claimed (a stale lease raises instead)."""

    TAKEN = "taken"
    NOT_DUE = "not_due"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotClaim:
    scheduler_id: str
    planned_slot: datetime
    token: int
    holder: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    run_id: int
    scheduler_id: str
    planned_slot: datetime
    token: int
    started_at: datetime


class SlotPlan(Protocol):
    """Where a scheduler's slots fall: the same answer on every host for the same moment."""

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (aware)."""
        ...

    def latest_due(self, moment: datetime) -> datetime:
        """The last slot at or before ``moment`` (missed slots coalesce into it)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Every:
    """Slots every ``period`` on a grid from the Unix epoch (the same grid on every host)."""

    period: timedelta

    def __post_init__(self) -> None:
        if self.period <= timedelta(0):
            raise DefinitionError("period", "must be positive")

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (aware)."""
        step = self.period.total_seconds()
        index = math.floor(moment.timestamp() / step) + 1
        return datetime.fromtimestamp(index * step, UTC)

    def latest_due(self, moment: datetime) -> datetime:
        """The last slot at or before ``moment`` (missed slots coalesce into it)."""
        return self.next_after(moment - self.period)


_LEASE_LOCK = """
SELECT token FROM cluster_leases
 WHERE scheduler_id = %(id)s AND token = %(token)s AND holder = %(holder)s
   FOR SHARE
"""

CLAIM = f"""
WITH lease AS ({_LEASE_LOCK})
INSERT INTO cluster_slots (scheduler_id, planned_slot, token, holder)
SELECT %(id)s, %(slot)s, lease.token, %(holder)s FROM lease
 WHERE %(slot)s <= clock_timestamp() + %(early)s
ON CONFLICT (scheduler_id, planned_slot) DO NOTHING
RETURNING planned_slot
"""  # noqa: S608 (composed of constants only)

WHY_NOT_CLAIMED = """
SELECT EXISTS (SELECT 1 FROM cluster_leases
                WHERE scheduler_id = %(id)s AND token = %(token)s AND holder = %(holder)s),
       EXISTS (SELECT 1 FROM cluster_slots
                WHERE scheduler_id = %(id)s AND planned_slot = %(slot)s)
"""

START = f"""
WITH lease AS ({_LEASE_LOCK})
INSERT INTO cluster_runs (scheduler_id, planned_slot, trigger, token, host, run_ref)
SELECT %(id)s, %(slot)s, %(trigger)s, lease.token, %(holder)s, %(ref)s FROM lease
RETURNING run_id, started_at
"""  # noqa: S608 (composed of constants only)

END = f"""
WITH lease AS ({_LEASE_LOCK})
UPDATE cluster_runs AS r SET ended_at = clock_timestamp(), outcome = %(outcome)s
  FROM lease
 WHERE r.run_id = %(run)s AND r.token = lease.token AND r.ended_at IS NULL
RETURNING r.run_id
"""  # noqa: S608 (composed of constants only)

ALREADY_ENDED = """
SELECT r.ended_at IS NOT NULL AND r.outcome IS DISTINCT FROM 'interrupted'
       AND l.token = r.token AND l.holder = %(holder)s
  FROM cluster_runs AS r JOIN cluster_leases AS l USING (scheduler_id)
 WHERE r.run_id = %(run)s
"""


ONE_SHOT_CLAIMED = """
SELECT s.planned_slot FROM cluster_slots AS s
  JOIN cluster_runs AS r USING (scheduler_id, planned_slot)
 WHERE s.scheduler_id = %(id)s AND r.trigger = 'start'
   AND EXISTS (SELECT 1 FROM cluster_hosts AS h
                WHERE h.seen_at > clock_timestamp() - %(ttl)s AND h.joined_at <= s.claimed_at)
 ORDER BY s.planned_slot DESC LIMIT 1
"""


def one_shot_slot(conn: Connection, scheduler_id: str, *, ttl: timedelta) -> datetime | None:
    """The slot of the one-shot run of ``scheduler_id`` that still counts for the cluster:
    claimed while a host that is still alive had joined (that host saw it run), or None
    (no host alive saw one: a new cluster start, the one-shot runs again). Raises
    ``psycopg.OperationalError`` when the connection is lost."""
    row = conn.execute(ONE_SHOT_CLAIMED, {"id": scheduler_id, "ttl": ttl}).fetchone()
    return None if row is None else row[0]


def claim_slot(
    conn: Connection,
    lease: Lease,
    planned_slot: datetime,
    *,
    early: timedelta = timedelta(milliseconds=250),
) -> SlotClaim | Refusal:
    """Claim ``planned_slot`` under ``lease`` (due by the database clock, give or take
    ``early``). Returns the claim, or why not; raises ``StaleLease`` when the token is no
    longer the lease's, ``psycopg.OperationalError`` when the connection is lost."""
    params = {
        "id": lease.scheduler_id,
        "token": lease.token,
        "holder": lease.holder,
        "slot": planned_slot,
        "early": early,
    }
    if conn.execute(CLAIM, params).fetchone() is not None:
        return SlotClaim(
            scheduler_id=lease.scheduler_id,
            planned_slot=planned_slot,
            token=lease.token,
            holder=lease.holder,
        )
    row = conn.execute(WHY_NOT_CLAIMED, params).fetchone()
    assert row is not None
    current, taken = row
    if taken:
        return Refusal.TAKEN
    if not current:
        raise StaleLease(lease.scheduler_id, lease.token)
    return Refusal.NOT_DUE


def record_run_start(
    conn: Connection, claim: SlotClaim, *, trigger: str, run_ref: str | None = None
) -> RunRecord:
    """Write the run of a claimed slot (``run_ref``: the manager's ID of it). Raises
    ``StaleLease`` when the claim's token is no longer the lease's (the slot then never
    runs)."""
    row = conn.execute(
        START,
        {
            "id": claim.scheduler_id,
            "token": claim.token,
            "holder": claim.holder,
            "slot": claim.planned_slot,
            "trigger": trigger,
            "ref": run_ref,
        },
    ).fetchone()
    if row is None:
        raise StaleLease(claim.scheduler_id, claim.token)
    run_id, started_at = row
    return RunRecord(
        run_id=run_id,
        scheduler_id=claim.scheduler_id,
        planned_slot=claim.planned_slot,
        token=claim.token,
        started_at=started_at,
    )


def record_run_end(conn: Connection, run: RunRecord, *, holder: str, outcome: str) -> None:
    """Write the outcome of a run. Raises ``StaleLease`` when the run's token is no longer
    the lease's (the new owner has marked the run ``interrupted``; that stays)."""
    row = conn.execute(
        END,
        {
            "id": run.scheduler_id,
            "token": run.token,
            "holder": holder,
            "run": run.run_id,
            "outcome": outcome,
        },
    ).fetchone()
    if row is None:
        # A retry after a lost reply finds the end already written: that is success.
        again = conn.execute(ALREADY_ENDED, {"run": run.run_id, "holder": holder}).fetchone()
        if not (again and again[0]):
            raise StaleLease(run.scheduler_id, run.token)


CLOSE_UNTRACKED = """
UPDATE cluster_runs AS r SET ended_at = clock_timestamp(), outcome = 'interrupted'
  FROM cluster_leases AS l
 WHERE l.scheduler_id = r.scheduler_id AND l.token = r.token AND l.holder = %(holder)s
   AND r.host = %(holder)s AND r.ended_at IS NULL AND r.run_id <> ALL(%(keep)s::bigint[])
RETURNING r.run_id
"""


def close_untracked_runs(conn: Connection, *, holder: str, keep: list[int]) -> list[int]:
    """Mark ``interrupted`` the open runs of ``holder`` it does not know it started (a
    start whose reply was lost with the connection), under leases it still holds."""
    return [row[0] for row in conn.execute(CLOSE_UNTRACKED, {"holder": holder, "keep": keep})]
