"""``cluster.member.Member`` in this process on a throwaway PostgreSQL: what the manager's
gate does at its edges (a command no host can take, a host whose clock is off).

The member runs its real loop and watchdog threads on a real database; only its clock is
shifted. Managers as separate processes are in tests/test_cluster_manager.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

pytest.importorskip("psycopg")

import psycopg

from supervisor.cluster.member import Member, MemberConfig
from supervisor.cluster.schema import install, register
from supervisor.core.clock import SystemClock
from supervisor.core.errors import BackendError
from tests.postgres import pg_cluster, pg_dsn
from tests.waiting import wait_for

__all__ = ["pg_cluster", "pg_dsn"]


class AheadClock(SystemClock):
    """The system clock, its wall time ``skew`` ahead (monotonic time unchanged)."""

    def __init__(self, skew: timedelta) -> None:
        self._skew = skew

    def now(self) -> datetime:
        return super().now() + self._skew


@pytest.fixture
def lines() -> list[str]:
    return []


def member(dsn: str, lines: list[str], clock: SystemClock | None = None) -> Member:
    config = MemberConfig(dsn=dsn, host_id="h1", scheduler_ids=("s",))
    return Member(config, clock=clock or SystemClock(), report=lines.append)


@pytest.fixture
def ahead(pg_dsn: str, lines: list[str]) -> Iterator[tuple[Member, AheadClock]]:
    clock = AheadClock(timedelta(seconds=2))
    joined = member(pg_dsn, lines, clock)
    joined.open()
    try:
        wait_for(lambda: joined.owns("s"), timeout=10, what="the lease")
        yield joined, clock
    finally:
        joined.close()


def slot_row(dsn: str, run_id: str) -> tuple[datetime, datetime]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT s.planned_slot, s.claimed_at FROM cluster_runs AS r "
            "JOIN cluster_slots AS s USING (scheduler_id, planned_slot) WHERE r.run_ref = %s",
            (run_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_command_for_a_scheduler_no_host_owns_says_so(pg_dsn: str, lines: list[str]) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        install(conn)
        register(conn, ["s"])
    lonely = member(pg_dsn, lines)
    try:
        with pytest.raises(BackendError, match=r"no host owns scheduler 's'"):
            lonely.send("s", "execute", {}, actor="ops")
    finally:
        lonely.close()


def test_a_host_whose_clock_runs_ahead_runs_its_own_slots_on_the_database_clock(
    pg_dsn: str, ahead: tuple[Member, AheadClock]
) -> None:
    joined, clock = ahead
    # A pause-after-run slot is this host's own: moved onto the database clock, it is due.
    wait_for(
        lambda: joined.claim("s", "own", slot=clock.now(), trigger="schedule") is None,
        timeout=5,
        what="the clock offset measured and the slot claimed",
    )
    planned, claimed = slot_row(pg_dsn, "own")
    assert abs((planned - claimed).total_seconds()) < 1.0  # not 2 s in the future
    assert joined.record_end("own", "succeeded")


def test_a_cron_slot_is_claimed_as_named_once_the_database_clock_reaches_it(
    pg_dsn: str, ahead: tuple[Member, AheadClock]
) -> None:
    joined, clock = ahead
    wait_for(lambda: joined.claim("s", "first", slot=clock.now(), trigger="schedule") is None)
    assert joined.record_end("first", "succeeded")
    # Due by this host's clock, 2 s early by the database's: the claim waits for it.
    slot = clock.now()
    assert joined.claim("s", "cron", slot=slot, trigger="cron") is None
    planned, claimed = slot_row(pg_dsn, "cron")
    assert planned == slot  # every host names a cron slot alike
    assert claimed >= slot - timedelta(milliseconds=250)  # not before it was due
    assert joined.record_end("cron", "succeeded")
    # The same slot again (another host, or a catch-up after a takeover): refused.
    refused = joined.claim("s", "again", slot=slot, trigger="cron")
    assert refused is not None and "claimed already" in refused
