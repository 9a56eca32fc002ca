"""``cluster.member.Member`` in this process on a throwaway PostgreSQL: what the manager's
gate does at its edges (a command no host can take, a host whose clock is off).

The member runs its real loop and watchdog threads on a real database; only its clock is
shifted. Managers as separate processes are in tests/test_cluster_manager.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from supervisor.cluster.member import Member, MemberConfig, NoHooks
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


class MissedHooks(NoHooks):
    """Hooks that only note the missed slots they are asked to run."""

    def __init__(self) -> None:
        self.missed: list[tuple[str, datetime]] = []

    def run_missed(self, scheduler_id: str, slot: datetime) -> None:
        self.missed.append((scheduler_id, slot))


def two_members(dsn: str, lines: list[str]) -> tuple[Member, Member, MissedHooks]:
    first = Member(
        MemberConfig(dsn=dsn, host_id="first", scheduler_ids=("s",)),
        clock=SystemClock(),
        report=lines.append,
    )
    first.open()
    wait_for(lambda: first.owns("s"), timeout=10, what="the first lease")
    heir = Member(
        MemberConfig(dsn=dsn, host_id="heir", scheduler_ids=("s",)),
        clock=SystemClock(),
        report=lines.append,
    )
    hooks = MissedHooks()
    heir.bind(hooks)
    heir.open()
    return first, heir, hooks


@pytest.mark.parametrize("owner_ran_it", [False, True])
def test_a_cron_slot_due_while_another_host_owned_it_is_run_once_by_the_heir(
    pg_dsn: str, lines: list[str], owner_ran_it: bool
) -> None:
    first, heir, hooks = two_members(pg_dsn, lines)
    try:
        slot = datetime.now(UTC).replace(microsecond=0)
        if owner_ran_it:
            assert first.claim("s", "ran", slot=slot, trigger="cron") is None
            assert first.record_end("ran", "succeeded")
        refused = heir.claim("s", "not-here", slot=slot, trigger="cron")
        assert refused is not None and "does not own" in refused
        first.close()  # releases: the heir takes the lease at once
        wait_for(lambda: heir.owns("s"), timeout=10, what="the heir's lease")
        if owner_ran_it:
            assert hooks.missed == []  # the slot was run: nothing to catch up
            return
        wait_for(lambda: hooks.missed, timeout=5, what="the missed slot")
        assert hooks.missed == [("s", slot)]
        # The run the manager then starts claims that very slot, as missed.
        assert heir.claim("s", "caught-up", slot=slot, trigger="manual") is None
        planned, _ = slot_row(pg_dsn, "caught-up")
        assert planned == slot
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT trigger FROM cluster_runs WHERE run_ref = 'caught-up'"
            ).fetchone()
        assert row == ("missed",)
        assert heir.record_end("caught-up", "succeeded")
    finally:
        heir.close()
        first.close()  # idempotent


def test_a_pause_holds_across_hosts_after_a_hand_off(pg_dsn: str, lines: list[str]) -> None:
    first, heir, _ = two_members(pg_dsn, lines)
    try:
        assert first.claim("s", "last", slot=datetime.now(UTC), trigger="schedule") is None
        assert first.record_end("last", "succeeded")
        first.close()
        wait_for(lambda: heir.owns("s"), timeout=10, what="the heir's lease")
        now = datetime.now(UTC)
        refused = heir.claim("s", "early", slot=now, trigger="schedule", pause=timedelta(hours=1))
        assert refused is not None and "pausing" in refused
        assert heir.claim("s", "later", slot=now, trigger="schedule", pause=timedelta(0)) is None
        assert heir.record_end("later", "succeeded")
    finally:
        heir.close()
        first.close()


def test_a_one_shot_runs_once_in_the_cluster_whichever_host_takes_its_lease(
    pg_dsn: str, lines: list[str]
) -> None:
    first, heir, _ = two_members(pg_dsn, lines)
    try:
        # Each host names a start slot after its own start: the slots differ.
        assert first.claim("s", "once", slot=datetime.now(UTC), trigger="start") is None
        assert first.record_end("once", "succeeded")
        first.close()  # the heir, alive when it ran, takes the lease
        wait_for(lambda: heir.owns("s"), timeout=10, what="the heir's lease")
        later = datetime.now(UTC) + timedelta(seconds=1)
        refused = heir.claim("s", "again", slot=later, trigger="start")
        assert refused is not None and "ran already" in refused
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT run_ref FROM cluster_runs WHERE scheduler_id = 's'")
            assert [r[0] for r in rows] == ["once"]
    finally:
        heir.close()
        first.close()


def test_a_one_shot_runs_again_once_no_host_that_saw_it_is_alive(
    pg_dsn: str, lines: list[str]
) -> None:
    first = member(pg_dsn, lines)
    first.open()
    wait_for(lambda: first.owns("s"), timeout=10, what="the lease")
    try:
        assert first.claim("s", "once", slot=datetime.now(UTC), trigger="start") is None
        assert first.record_end("once", "succeeded")
    finally:
        first.close()
    restarted = member(pg_dsn, lines)  # the same host name, a new start of the cluster
    restarted.open()
    try:
        wait_for(lambda: restarted.owns("s"), timeout=10, what="the lease again")
        assert restarted.claim("s", "twice", slot=datetime.now(UTC), trigger="start") is None
        assert restarted.record_end("twice", "succeeded")
    finally:
        restarted.close()


def test_a_retry_is_named_after_the_slot_it_retries_and_its_attempt(
    pg_dsn: str, lines: list[str]
) -> None:
    joined = member(pg_dsn, lines)
    joined.open()
    try:
        wait_for(lambda: joined.owns("s"), timeout=10, what="the lease")
        slot = datetime.now(UTC).replace(microsecond=0)
        assert joined.claim("s", "failed", slot=slot, trigger="cron") is None
        assert joined.record_end("failed", "failed")
        for attempt in (1, 2):
            run_id = f"retry{attempt}"
            assert joined.claim("s", run_id, slot=datetime.now(UTC), trigger="retry") is None
            assert joined.record_end(run_id, "failed")
            planned, _ = slot_row(pg_dsn, run_id)
            assert planned == slot + timedelta(microseconds=attempt)
    finally:
        joined.close()


class FailingMarks(MissedHooks):
    """Hooks whose store fails to mark the runs left behind the first ``failures`` times;
    ``rounds`` counts the lease renewals (each asks for the statuses)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls: list[list[str]] = []
        self.rounds = 0

    def statuses(self, scheduler_ids: list[str]) -> list[Any]:
        self.rounds += 1
        return []

    def leases_taken(self, scheduler_ids: list[str]) -> bool:
        self.calls.append(list(scheduler_ids))
        return len(self.calls) > self.failures


def test_runs_left_unmarked_at_a_takeover_are_marked_at_later_lease_polls(
    pg_dsn: str, lines: list[str]
) -> None:
    hooks = FailingMarks(failures=2)
    joined = member(pg_dsn, lines)
    joined.bind(hooks)
    joined.open()
    try:
        # Taken once; the marks the store failed are tried again at the next polls.
        wait_for(lambda: len(hooks.calls) >= 3, timeout=10, what="the marks tried again")
        assert hooks.calls[:3] == [["s"], [], []]
        # All marked: not asked again (over three more renewals).
        rounds = hooks.rounds
        wait_for(lambda: hooks.rounds >= rounds + 3, timeout=10, what="three more renewals")
        assert len(hooks.calls) == 3
    finally:
        joined.close()
