"""Leases on a real PostgreSQL: acquire, renew, release, expiry by the database clock,
takeover of a dead holder's session, fencing of run writes, and the orphaned run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from supervisor.cli.main import main
from supervisor.cluster import schema
from supervisor.cluster.db import Connection, connect
from supervisor.cluster.lease import Lease, Leases, LeaseTiming
from supervisor.cluster.slots import claim_slot, record_run_end, record_run_start
from supervisor.cluster.timing import lease_timing
from supervisor.core.errors import DefinitionError, StaleLease
from tests.cluster_managers import make_ledger
from tests.cluster_process import Host
from tests.postgres import pg_cluster, pg_dsn
from tests.waiting import wait_for

__all__ = ["pg_cluster", "pg_dsn"]

SLOT = datetime(2026, 1, 1, tzinfo=UTC)
LONG = LeaseTiming(ttl=timedelta(seconds=30), renew_every=timedelta(seconds=5))


@pytest.fixture
def conns(pg_dsn: str) -> Iterator[list[Connection]]:
    opened = [connect(pg_dsn) for _ in range(3)]
    schema.install(opened[0])
    schema.register(opened[0], ["a", "b"])
    yield opened
    for conn in opened:
        conn.close()


def token_of(conn: Connection, scheduler_id: str) -> tuple[int, str | None]:
    row = conn.execute(
        "SELECT token, holder FROM cluster_leases WHERE scheduler_id = %s", (scheduler_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_one_host_wins_a_free_lease_and_the_other_gets_nothing(conns: list[Connection]) -> None:
    one = Leases(conns[0], holder="h1", timing=LONG)
    two = Leases(conns[1], holder="h2", timing=LONG)
    won, interrupted = one.acquire(["a", "b"])
    assert sorted(lease.scheduler_id for lease in won) == ["a", "b"]
    assert {lease.token for lease in won} == {1} and interrupted == 0
    assert two.acquire(["a", "b"]) == ([], 0)
    assert one.is_current("a", 1) and not two.is_current("a", 1)


def test_acquire_takes_at_most_the_limit(conns: list[Connection]) -> None:
    won, _ = Leases(conns[0], holder="h1", timing=LONG).acquire(["a", "b"], limit=1)
    assert len(won) == 1
    rest, _ = Leases(conns[1], holder="h2", timing=LONG).acquire(["a", "b"])
    assert [lease.scheduler_id for lease in rest] != [won[0].scheduler_id] and len(rest) == 1


def test_expiry_is_the_database_clock_and_takeover_raises_the_token(
    conns: list[Connection],
) -> None:
    short = LeaseTiming(ttl=timedelta(milliseconds=300), renew_every=timedelta(milliseconds=100))
    one = Leases(conns[0], holder="h1", timing=short)
    two = Leases(conns[1], holder="h2", timing=short)
    [first], _ = one.acquire(["a"])
    db_now = conns[0].execute("SELECT clock_timestamp()").fetchone()
    assert db_now is not None
    assert timedelta(0) < first.expires_at - db_now[0] <= timedelta(milliseconds=300)
    assert two.acquire(["a"]) == ([], 0)  # h1's session is alive and the lease is fresh
    won = wait_for(lambda: two.acquire(["a"])[0], timeout=5, what="expiry of h1's lease")
    assert won[0].token == first.token + 1
    assert one.renew([first]) == []  # renewing with the old token finds nothing
    assert not one.is_current("a", first.token)


def test_a_holder_may_renew_after_expiry_while_nobody_took_over(conns: list[Connection]) -> None:
    short = LeaseTiming(ttl=timedelta(milliseconds=200), renew_every=timedelta(milliseconds=50))
    one = Leases(conns[0], holder="h1", timing=short)
    [first], _ = one.acquire(["a"])
    wait_for(
        lambda: (
            conns[2]
            .execute(
                "SELECT expires_at < clock_timestamp() FROM cluster_leases WHERE scheduler_id='a'"
            )
            .fetchone()[0]
        ),  # type: ignore[index]
        timeout=5,
        what="expiry",
    )
    [renewed] = one.renew([first])
    assert renewed.token == first.token and renewed.expires_at > first.expires_at


def test_release_hands_off_at_once_and_retires_the_token(conns: list[Connection]) -> None:
    one = Leases(conns[0], holder="h1", timing=LONG)
    two = Leases(conns[1], holder="h2", timing=LONG)
    [first], _ = one.acquire(["a"])
    assert one.release([first]) == ["a"]
    assert token_of(conns[2], "a") == (first.token + 1, None)
    assert not one.is_current("a", first.token)
    [second], _ = two.acquire(["a"])
    assert second.token == first.token + 2
    assert one.release([first]) == []  # releasing what was taken over changes nothing
    assert token_of(conns[2], "a") == (second.token, "h2")


def test_a_dead_holders_session_frees_its_lease_before_expiry(pg_dsn: str) -> None:
    doomed = connect(pg_dsn)
    schema.install(doomed)
    schema.register(doomed, ["a"])
    [first], _ = Leases(doomed, holder="h1", timing=LONG).acquire(["a"])
    with connect(pg_dsn) as other:
        two = Leases(other, holder="h2", timing=LONG)
        assert two.acquire(["a"]) == ([], 0)
        doomed.close()  # what kill -9 does to the host's connection
        won = wait_for(lambda: two.acquire(["a"])[0], timeout=5, what="h1's session to end")
        assert won[0].token == first.token + 1


def test_without_dead_session_takeover_only_expiry_frees_a_lease(pg_dsn: str) -> None:
    strict = LeaseTiming(
        ttl=timedelta(seconds=2),
        renew_every=timedelta(milliseconds=500),
        dead_session_takeover=False,
    )
    doomed = connect(pg_dsn)
    schema.install(doomed)
    schema.register(doomed, ["a"])
    [first], _ = Leases(doomed, holder="h1", timing=strict).acquire(["a"])
    doomed.close()
    with connect(pg_dsn) as other:
        two = Leases(other, holder="h2", timing=strict)
        assert two.acquire(["a"]) == ([], 0)  # the session is gone, the lease is not
        [won] = wait_for(lambda: two.acquire(["a"])[0], timeout=5, what="expiry")
        assert won.token == first.token + 1
        row = other.execute("SELECT acquired_at FROM cluster_leases").fetchone()
        assert row is not None and row[0] >= first.expires_at


def test_writes_under_a_stale_token_are_refused_and_the_orphan_is_interrupted(
    conns: list[Connection],
) -> None:
    one = Leases(conns[0], holder="h1", timing=LONG)
    [first], _ = one.acquire(["a"])
    claim = claim_slot(conns[0], first, SLOT)
    assert not isinstance(claim, type(None))
    run = record_run_start(conns[0], claim, trigger="schedule")  # type: ignore[arg-type]
    # h2 takes over (h1's lease forced to expire, as if h1 had stopped renewing).
    conns[2].execute(
        "UPDATE cluster_leases SET expires_at = clock_timestamp() WHERE scheduler_id='a'"
    )
    [second], interrupted = Leases(conns[1], holder="h2", timing=LONG).acquire(["a"])
    assert interrupted == 1
    with pytest.raises(StaleLease) as refused:
        record_run_end(conns[0], run, holder="h1", outcome="succeeded")
    assert refused.value.token == first.token and refused.value.scheduler_id == "a"
    with pytest.raises(StaleLease):
        claim_slot(conns[0], first, SLOT + timedelta(seconds=1))
    with pytest.raises(StaleLease):
        record_run_start(conns[0], claim, trigger="schedule")  # type: ignore[arg-type]
    outcome = (
        conns[2]
        .execute(
            "SELECT outcome, ended_at IS NOT NULL FROM cluster_runs WHERE run_id = %s",
            (run.run_id,),
        )
        .fetchone()
    )
    assert outcome == ("interrupted", True)
    assert second.token > first.token


def test_a_run_end_written_twice_counts_once(conns: list[Connection]) -> None:
    [lease], _ = Leases(conns[0], holder="h1", timing=LONG).acquire(["a"])
    claim = claim_slot(conns[0], lease, SLOT)
    run = record_run_start(conns[0], claim, trigger="schedule")  # type: ignore[arg-type]
    record_run_end(conns[0], run, holder="h1", outcome="succeeded")
    record_run_end(conns[0], run, holder="h1", outcome="succeeded")  # a retry: no error
    assert conns[2].execute("SELECT outcome FROM cluster_runs").fetchall() == [("succeeded",)]


def test_timing_is_validated() -> None:
    with pytest.raises(DefinitionError, match="renew_every"):
        LeaseTiming(ttl=timedelta(seconds=1), renew_every=timedelta(seconds=1))
    with pytest.raises(DefinitionError, match="ttl"):
        LeaseTiming(ttl=timedelta(0))


def test_lease_is_a_frozen_value() -> None:
    lease = Lease(scheduler_id="a", holder="h", token=1, expires_at=SLOT)
    with pytest.raises(AttributeError):
        lease.token = 2  # type: ignore[misc]


def test_the_lease_ttl_setting_derives_the_renewal_and_the_poll() -> None:
    assert lease_timing(None) == LeaseTiming()
    assert LeaseTiming() == LeaseTiming(
        ttl=timedelta(seconds=2),
        renew_every=timedelta(milliseconds=400),
        acquire_every=timedelta(milliseconds=200),
    )
    assert lease_timing("5") == LeaseTiming(
        ttl=timedelta(seconds=5),
        renew_every=timedelta(seconds=1),
        acquire_every=timedelta(seconds=0.5),
    )
    assert lease_timing("0.5").acquire_every == timedelta(milliseconds=50)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("abc", "--lease-ttl: 'abc' is not a number of seconds"),
        ("", "--lease-ttl: '' is not a number of seconds"),
        ("nan", "--lease-ttl: 'nan' is not a number of seconds"),
        ("inf", "--lease-ttl: 'inf' is not a number of seconds"),
        ("0", "--lease-ttl: must be more than 0 seconds, not 0"),
        ("-2", "--lease-ttl: must be more than 0 seconds, not -2"),
        ("0.3", "--lease-ttl: 0.3s is too short: hosts poll for leases every tenth of it (30 ms)"),
        ("7200", "--lease-ttl: 7200s is above an hour"),
    ],
)
def test_a_lease_ttl_that_cannot_work_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        lease_timing(given)
    assert str(raised.value).startswith(says)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--cluster", "dbname=x", "--lease-ttl", "soon"], "'soon' is not a number of seconds"),
        (["--cluster", "dbname=x", "--lease-ttl", "0.1"], "0.1s is too short"),
        (["--lease-ttl", "3"], "sets the leases of --cluster; give --cluster too"),
    ],
)
def test_run_refuses_a_bad_lease_ttl_before_starting_anything(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(
        main, ["run", "--app", "tests.apps.cluster_jobs:cfg", "--state-dir", str(state), *argv]
    )
    assert result.exit_code == 2, result.output
    assert f"error: --lease-ttl: {says}" in result.output
    assert not state.exists()


def test_a_manager_holds_its_leases_for_the_ttl_it_was_given(pg_dsn: str, tmp_path: Path) -> None:
    make_ledger(pg_dsn)
    host = Host(pg_dsn, tmp_path / "a", extra=("--lease-ttl", "1.5"))
    try:
        host.ready()
        assert "(lease ttl 1.5s)" in host.log()
        with connect(pg_dsn) as conn:
            lifetimes = wait_for(
                lambda: conn.execute(
                    "SELECT expires_at - renewed_at FROM cluster_leases WHERE holder IS NOT NULL"
                ).fetchall(),
                timeout=10,
                what="the leases taken",
            )
        # clock_timestamp() is read twice in the statement: microseconds apart.
        ttl = timedelta(seconds=1.5)
        assert all(ttl <= row[0] < ttl + timedelta(milliseconds=10) for row in lifetimes)
    finally:
        host.reap()
