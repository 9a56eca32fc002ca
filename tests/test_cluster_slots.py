"""Slot claims on a real PostgreSQL: one claim per (scheduler, planned slot), never before
the slot is due by the database clock, and the slot grid every host computes alike."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.cluster import schema
from supervisor.cluster.db import Connection, connect
from supervisor.cluster.lease import Leases, LeaseTiming
from supervisor.cluster.slots import (
    Every,
    Refusal,
    SlotClaim,
    claim_slot,
    close_untracked_runs,
    record_run_start,
)
from supervisor.core.errors import DefinitionError
from tests.postgres import pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn"]

PAST = datetime(2026, 1, 1, tzinfo=UTC)
LONG = LeaseTiming(ttl=timedelta(seconds=30), renew_every=timedelta(seconds=5))


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[Connection]:
    with connect(pg_dsn) as opened:
        schema.install(opened)
        schema.register(opened, ["a"])
        yield opened


def test_a_slot_is_claimed_once(conn: Connection) -> None:
    [lease], _ = Leases(conn, holder="h1", timing=LONG).acquire(["a"])
    claim = claim_slot(conn, lease, PAST)
    assert claim == SlotClaim(scheduler_id="a", planned_slot=PAST, token=lease.token, holder="h1")
    assert claim_slot(conn, lease, PAST) is Refusal.TAKEN
    assert isinstance(claim_slot(conn, lease, PAST + timedelta(seconds=1)), SlotClaim)


def test_a_later_owner_cannot_claim_a_slot_the_earlier_one_ran(pg_dsn: str) -> None:
    with connect(pg_dsn) as one, connect(pg_dsn) as two:
        schema.install(one)
        schema.register(one, ["a"])
        [first], _ = Leases(one, holder="h1", timing=LONG).acquire(["a"])
        assert isinstance(claim_slot(one, first, PAST), SlotClaim)
        Leases(one, holder="h1", timing=LONG).release([first])
        [second], _ = Leases(two, holder="h2", timing=LONG).acquire(["a"])
        # h2's clock is 2 s behind: it plans the slot h1 already ran. Refused.
        assert claim_slot(two, second, PAST) is Refusal.TAKEN


def test_a_slot_not_yet_due_by_the_database_clock_is_refused(conn: Connection) -> None:
    [lease], _ = Leases(conn, holder="h1", timing=LONG).acquire(["a"])
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    ahead = row[0] + timedelta(seconds=2)  # a host whose clock runs 2 s fast
    assert claim_slot(conn, lease, ahead) is Refusal.NOT_DUE
    assert conn.execute("SELECT count(*) FROM cluster_slots").fetchone() == (0,)


def test_concurrent_claims_of_one_slot_yield_one_winner(pg_dsn: str) -> None:
    with connect(pg_dsn) as setup:
        schema.install(setup)
        schema.register(setup, ["a"])
        [lease], _ = Leases(setup, holder="h1", timing=LONG).acquire(["a"])
    results: list[object] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        with connect(pg_dsn) as mine:
            barrier.wait(timeout=10)
            results.append(claim_slot(mine, lease, PAST))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(map(str, results)).count(str(Refusal.TAKEN)) == 3
    assert sum(isinstance(result, SlotClaim) for result in results) == 1


def test_the_grid_is_the_same_whatever_the_moment_within_a_period() -> None:
    grid = Every(period=timedelta(seconds=1))
    base = datetime(2026, 3, 8, 7, 0, 0, tzinfo=UTC)
    assert grid.next_after(base) == base + timedelta(seconds=1)
    assert grid.next_after(base + timedelta(milliseconds=999)) == base + timedelta(seconds=1)
    assert grid.latest_due(base + timedelta(milliseconds=999)) == base
    assert grid.latest_due(base) == base
    five = Every(period=timedelta(seconds=5))
    assert five.next_after(base + timedelta(seconds=7)) == base + timedelta(seconds=10)
    with pytest.raises(DefinitionError, match="period"):
        Every(period=timedelta(0))


def test_a_run_whose_start_reply_was_lost_is_closed_on_reconnect(conn: Connection) -> None:
    [lease], _ = Leases(conn, holder="h1", timing=LONG).acquire(["a"])
    kept = record_run_start(conn, claim_slot(conn, lease, PAST), trigger="schedule")  # type: ignore[arg-type]
    lost = record_run_start(
        conn,
        claim_slot(conn, lease, PAST + timedelta(seconds=1)),  # type: ignore[arg-type]
        trigger="schedule",
    )
    assert close_untracked_runs(conn, holder="h2", keep=[]) == []  # not h2's runs
    assert close_untracked_runs(conn, holder="h1", keep=[kept.run_id]) == [lost.run_id]
    rows = conn.execute("SELECT run_id, outcome FROM cluster_runs ORDER BY run_id").fetchall()
    assert rows == [(kept.run_id, None), (lost.run_id, "interrupted")]
