"""The real manager on several hosts: ``supervisor run --cluster`` processes on one PostgreSQL.

Each host is a separate ``supervisor run`` (tests/cluster_managers.py) of
tests/apps/cluster_jobs.py, whose runs write an independent ledger: it proves exactly one
run per slot (every ledger row belongs to a claimed slot, no slot has two), takeover after
kill -9 of the owner, fencing of an owner stopped past its lease, a graceful hand-off, and
controls from any host's CLI reaching the owner. Under faults (a PostgreSQL restart, 20 %
of connections refused and some cut) each test runs twice: with SQLite state on each
host (``--cluster DSN``) and with the database as the hosts' shared store too (``--cluster
DSN --store DSN``, tests/test_cluster_store.py's setup); no slot runs twice, every host
exits 0 on SIGTERM, and with the store shared nothing it took is lost (every ledger run is
in the store with its host and its end, and the line it printed is stored or counted as
lost in its run). Every wait has a deadline.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from supervisor.cluster.member import Member, MemberConfig, NoHooks
from supervisor.core.clock import SystemClock
from tests.cluster_managers import (
    TICK,
    ManagerHost,
    db,
    doubled_slots,
    holder,
    host_and_other,
    hosts,
    in_flight,
    ledger,
    lost,
    overlaps,
    runs_each,
    runs_on,
    start,
    stop_all,
)
from tests.http_session import HttpSession, bootstrap_password
from tests.manager_process import cli
from tests.postgres import PostgresCluster, free_port, pg_cluster, pg_dsn
from tests.tcp_proxy import FaultyProxy
from tests.waiting import wait_for

__all__ = ["db", "hosts", "pg_cluster", "pg_dsn"]


def in_flight_on(db: psycopg.Connection[Any], host: ManagerHost) -> tuple[Any, ...]:
    """The ledger row of a run of the tick in progress on ``host``, once there is one."""
    row: tuple[Any, ...] = wait_for(
        lambda: (row := in_flight(db, TICK)) is not None and row[1] == host.name and row,
        timeout=10,
        what=f"a run in progress on {host.name}, the owner",
    )
    return row


def outcome(db: psycopg.Connection[Any], run_ref: str) -> str | None:
    row = db.execute("SELECT outcome FROM cluster_runs WHERE run_ref = %s", (run_ref,)).fetchone()
    return None if row is None else row[0]


def test_two_hosts_run_each_slot_once_and_take_over_after_kill_9(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    start(hosts, pg_dsn, tmp_path, "a", "b", job_seconds=1.0)
    wait_for(lambda: len(ledger(db, TICK)) >= 3, timeout=20, what="three runs of the tick")
    owner, other = host_and_other(hosts, holder(db, TICK))
    running = in_flight_on(db, owner)
    owner.kill()
    killed_at = db.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]

    def taken_over() -> Any:
        return runs_on(db, other, after=killed_at)

    # Within 3 s the other host holds the lease and has marked the dead host's run.
    wait_for(lambda: holder(db, TICK) == other.name, timeout=3, what="the takeover in 3 s")
    wait_for(lambda: outcome(db, running[0]) == "interrupted", timeout=3, what="interrupted")
    # Its first run waits out the 1 s pause after that run (ended when it was marked).
    first = wait_for(taken_over, timeout=5, what="the other host's first run")[0]
    (marked,) = db.execute(
        "SELECT ended_at FROM cluster_runs WHERE run_ref = %s", (running[0],)
    ).fetchone()  # type: ignore[misc]
    assert first[2] >= marked + timedelta(seconds=1) - timedelta(milliseconds=50)
    wait_for(lambda: len(taken_over()) >= 2, timeout=10, what="the new owner's next run")
    assert doubled_slots(db) == []
    # Never two runs at once, the killed one aside (its runner died with its host).
    rows = [row for row in ledger(db, TICK) if row[0] != running[0]]
    assert overlaps(rows) == []
    assert all(row[4] is not None for row in rows)  # each ran in a slot claimed first


def test_an_owner_stopped_past_its_lease_is_fenced(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    start(hosts, pg_dsn, tmp_path, "a", "b", job_seconds=1.0)
    wait_for(lambda: in_flight(db, TICK), timeout=20, what="a run of the tick")
    owner, other = host_and_other(hosts, holder(db, TICK))
    stopped = in_flight_on(db, owner)
    with owner.stopped():
        # The lease expires (2 s ttl) and the other host takes over and runs the tick.
        wait_for(
            lambda: runs_on(db, other, after=stopped[2]),
            timeout=10,
            what="the other host's run while the owner is stopped",
        )
        assert outcome(db, stopped[0]) == "interrupted"
    # Back, the owner's late write of its run's end is refused, and it says so.
    wait_for(lambda: "cluster: fenced" in owner.log(), timeout=10, what="the fenced report")
    assert f"run {stopped[0]} of {TICK} was fenced" in owner.log()
    assert outcome(db, stopped[0]) == "interrupted"  # the new owner's word stays
    wait_for(
        lambda: "interrupted" in cli(owner.state, "runs", TICK), timeout=10, what="local record"
    )
    assert holder(db, TICK) == other.name
    assert doubled_slots(db) == []


def test_a_partitioned_owner_cancels_its_run_before_the_takeover_and_is_fenced(
    db: psycopg.Connection[Any],
    pg_dsn: str,
    pg_cluster: PostgresCluster,
    hosts: list[ManagerHost],
    tmp_path: Path,
) -> None:
    # Each manager reaches the database through a proxy of its own; its runs do not.
    proxies = {name: FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) for name in "ab"}
    try:
        for name, proxy in proxies.items():
            via = pg_dsn.replace(f"port={pg_cluster.port}", f"port={proxy.port}")
            hosts.append(ManagerHost(pg_dsn, name, tmp_path, job_seconds=60, cluster_dsn=via))
        for host in hosts:
            host.ready()
        running = wait_for(lambda: in_flight(db, TICK), timeout=20, what="a long run")
        owner, other = host_and_other(hosts, running[1])
        proxies[owner.name].partition()  # its lease can no longer be renewed
        # Within a ttl by its own clock the owner stops the run, though it reaches nothing.
        wait_for(
            lambda: [r for r in ledger(db, TICK) if r[0] == running[0] and r[3] is not None],
            timeout=10,
            what="the run cancelled by the owner's watchdog",
        )
        assert "cluster: self_fenced" in owner.log()
        wait_for(lambda: holder(db, TICK) == other.name, timeout=10, what="the takeover")
        wait_for(lambda: outcome(db, running[0]) == "interrupted", timeout=5, what="interrupted")
        proxies[owner.name].heal()
        wait_for(lambda: f"run {running[0]} of {TICK} was fenced" in owner.log(), timeout=10)
        assert outcome(db, running[0]) == "interrupted"
        assert doubled_slots(db) == []
    finally:
        for proxy in proxies.values():
            proxy.close()


# -- faults, with SQLite state on each host and with the store shared -----------------------


@pytest.mark.parametrize(
    "shared_store",
    [
        pytest.param(False, id="separate-database"),  # --cluster DSN, SQLite state
        pytest.param(True, id="shared-store"),  # --cluster DSN --store DSN
    ],
)
def test_a_postgresql_restart_doubles_no_slot_and_loses_nothing_stored(
    db: psycopg.Connection[Any],
    pg_dsn: str,
    pg_cluster: PostgresCluster,
    hosts: list[ManagerHost],
    tmp_path: Path,
    shared_store: bool,
) -> None:
    start(hosts, pg_dsn, tmp_path, "a", "b", job_seconds=0.2, ticks=2, shared_store=shared_store)
    wait_for(lambda: len(ledger(db, TICK)) >= 2, timeout=20, what="two runs of the tick")
    db.close()
    pg_cluster.restart()  # every session is cut: the cluster's, the store's where shared
    with psycopg.connect(pg_dsn, autocommit=True) as again:
        restarted = again.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        wait_for(
            lambda: (
                (ran := runs_each(again, "c.tick%", restarted))
                and min(ran.values()) >= 3
                and len(ran) == 3
            ),
            timeout=45,  # 14 s seen on a loaded machine: the deadline only ends a failure
            what="three runs of each tick after the restart",
        )
        assert all(host.alive() for host in hosts)
        stop_all(hosts)
        assert doubled_slots(again) == []
        for scheduler_id in runs_each(again, "c.tick%"):
            # Rows the runner ended (a runner's own ledger session dies with the server).
            ended = [row for row in ledger(again, scheduler_id) if row[3] is not None]
            assert overlaps(ended) == []
        if shared_store:
            assert lost(again) == []


@pytest.mark.parametrize(
    ("shared_store", "ticks", "seed", "faults_at_start", "within"),
    [
        # The hosts start under the faults too.
        pytest.param(False, 20, 7, True, 90, id="separate-database"),
        # A host that cannot open its store at startup refuses to start (as it should), and
        # the shared store adds connections at startup: the faults begin once both are up.
        pytest.param(True, 6, 11, False, 40, id="shared-store"),
    ],
)
def test_injected_connection_failures_double_no_slot_and_lose_nothing_stored(
    db: psycopg.Connection[Any],
    pg_dsn: str,
    pg_cluster: PostgresCluster,
    hosts: list[ManagerHost],
    tmp_path: Path,
    shared_store: bool,
    ticks: int,
    seed: int,
    faults_at_start: bool,
    within: float,
) -> None:
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0, seed=seed) as proxy:

        def inject() -> None:
            # One new connection in five refused, one chunk in a hundred cut
            # mid-conversation, for the cluster's connections and the store's alike (the
            # runners' ledger goes straight to the database).
            proxy.faults(refuse=0.2, cut=0.01)

        if faults_at_start:
            inject()
        via = pg_dsn.replace(f"port={pg_cluster.port}", f"port={proxy.port}")
        start(
            hosts,
            pg_dsn,
            tmp_path,
            "a",
            "b",
            job_seconds=0.0,
            ticks=ticks,
            cluster_dsn=via,
            shared_store=shared_store,
        )
        if not faults_at_start:
            inject()

        def ran_under_faults() -> bool:
            ran = runs_each(db, "c.tick.%")
            done = len(ran) == ticks and min(ran.values()) >= 3
            return done and proxy.refused > 0 and proxy.cuts > 0  # failures did happen

        wait_for(ran_under_faults, timeout=within, what=f"{ticks} schedulers x 3, with faults")
        assert proxy.refused > 0 and proxy.cuts > 0
        assert all(host.alive() for host in hosts)
        # What failed is retried once connections work: ends, lost-record markers.
        proxy.faults(refuse=0, cut=0)
        calmed = db.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        wait_for(
            lambda: (
                (ran := runs_each(db, "c.tick.%", calmed))
                and min(ran.values()) >= 1
                and len(ran) == ticks
            ),
            timeout=20,
            what="a run of each after the faults",
        )
        stop_all(hosts)
    assert doubled_slots(db) == []
    if shared_store:
        assert lost(db) == []


def test_a_graceful_stop_hands_over_at_once(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    start(hosts, pg_dsn, tmp_path, "a", "b", job_seconds=0.2)
    wait_for(lambda: len(ledger(db, TICK)) >= 2, timeout=20, what="two runs of the tick")
    owner, other = host_and_other(hosts, holder(db, TICK))
    assert owner.stop() == 0
    assert "cluster: released" in owner.log()
    # Released at shutdown: the other host holds it without waiting for an expiry.
    wait_for(lambda: holder(db, TICK) == other.name, timeout=2, what="the hand-off")
    row = db.execute(
        "SELECT released_at, acquired_at FROM cluster_leases WHERE scheduler_id = %s", (TICK,)
    ).fetchone()
    assert row is not None and row[0] is not None and row[1] >= row[0]
    stopped_at = time.time()
    wait_for(
        lambda: any(r[1] == other.name and r[2].timestamp() > stopped_at for r in ledger(db, TICK)),
        timeout=5,
        what="the other host's next run",
    )
    # Every run of the stopped host ended and was recorded (none left open, none fenced).
    open_runs = db.execute(
        "SELECT count(*) FROM cluster_runs WHERE host = %s AND ended_at IS NULL", (owner.name,)
    ).fetchone()
    assert open_runs == (0,)
    assert "fenced" not in owner.log()
    assert doubled_slots(db) == []


def test_controls_from_any_host_reach_the_owner(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    start(hosts, pg_dsn, tmp_path, "a", "b", job_seconds=0.2)
    # Settled: each host holds its fair share (one of the two schedulers).
    wait_for(
        lambda: {holder(db, "c.manual"), holder(db, TICK)} == {"a", "b"},
        timeout=10,
        what="one lease on each host",
    )
    manual_owner, elsewhere = host_and_other(hosts, holder(db, "c.manual"))
    # Execute Now on the host that does not own it: the run happens on the owner.
    run_id = json.loads(cli(elsewhere.state, "execute", "c.manual", "--json"))["run_id"]
    row = wait_for(
        lambda: [r for r in ledger(db, "c.manual") if r[0] == run_id], timeout=10, what="the run"
    )[0]
    assert row[1] == manual_owner.name
    # A custom action runs on the owner too, and its result comes back.
    assert manual_owner.name in cli(elsewhere.state, "action", "c.manual", "where")
    # Status names the owner on every host; runs name the host that ran them.
    for host in hosts:
        wait_for(
            lambda host=host: (
                json.loads(cli(host.state, "status", "c.manual", "--json")).get("host")
                == manual_owner.name
            ),
            timeout=5,
            what=f"the owner named in the status on {host.name}",
        )
    wait_for(
        lambda: run_id in cli(manual_owner.state, "runs", "c.manual"), timeout=10, what="the run"
    )
    runs = json.loads(cli(manual_owner.state, "runs", "c.manual", "--json"))
    assert [r["host"] for r in runs if r["run_id"] == run_id] == [manual_owner.name]
    # Stop from a host that does not own the tick: the owner stops running it.
    tick_owner, not_owner = host_and_other(hosts, holder(db, TICK))
    cli(not_owner.state, "stop", TICK, "--reason", "maintenance")
    wait_for(
        lambda: json.loads(cli(tick_owner.state, "status", TICK, "--json"))["state"] == "stopped",
        timeout=10,
        what="the owner's tick stopped",
    )
    # The other host shows the owner's state and decision (published at each renewal).
    shown = wait_for(
        lambda: (
            (s := json.loads(cli(not_owner.state, "status", TICK, "--json")))["state"] == "stopped"
            and s
        ),
        timeout=5,
        what="the owner's state shown on the other host",
    )
    assert shown["decision"]["reason"] == "maintenance"
    assert shown["host"] == tick_owner.name
    quiet_since = db.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    cli(not_owner.state, "start", TICK)
    wait_for(
        lambda: any(r[2] > quiet_since for r in ledger(db, TICK)), timeout=10, what="restarted"
    )
    # A settings change on one host holds on every host (the owner plans with it).
    cli(not_owner.state, "settings", TICK, "--pause-time", "7s")
    for host in hosts:
        wait_for(
            lambda host=host: (
                json.loads(cli(host.state, "settings", TICK, "--json"))["effective"]["pause_time"]
                == 7.0
            ),
            timeout=5,
            what=f"the new pause on {host.name}",
        )
    assert doubled_slots(db) == []


def test_the_admin_center_of_any_host_names_the_owner_and_reaches_it(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    port = free_port()
    hosts.append(ManagerHost(pg_dsn, "a", tmp_path, job_seconds=0.2))
    hosts.append(ManagerHost(pg_dsn, "b", tmp_path, job_seconds=0.2, admin=port))
    for host in hosts:
        host.ready()
    wait_for(
        lambda: {holder(db, "c.manual"), holder(db, TICK)} == {"a", "b"},
        timeout=10,
        what="one lease on each host",
    )
    owner = holder(db, "c.manual")
    client = HttpSession("127.0.0.1", port)
    client.first_login("admin", bootstrap_password(hosts[1].state), "a much longer secret 1")
    wait_for(
        lambda: f'<dd data-field="host">{owner}</dd>' in client.request("GET", "/")[2],
        timeout=5,
        what="the owner on the card",
    )
    token = client.csrf("/schedulers/c.manual")
    status, _, _ = client.request("POST", "/schedulers/c.manual/execute", {"csrf": token})
    assert status == 303
    row = wait_for(lambda: ledger(db, "c.manual"), timeout=10, what="the run")[0]
    assert row[1] == owner  # it ran on the owner, whichever host was asked


class HeldHooks(NoHooks):
    """The hooks of an in-process host that takes commands and answers only when told."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.obeyed: list[str] = []

    def obey(self, scheduler_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.obeyed.append(kind)
        self.release.wait(60)
        return {"ok": True}


def test_a_command_the_owner_took_but_did_not_answer_says_it_may_still_be_carried_out(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    hooks = HeldHooks()
    slow = Member(
        MemberConfig(dsn=pg_dsn, host_id="slow", scheduler_ids=("c.manual",)),
        clock=SystemClock(),
        report=lambda line: None,
    )
    slow.bind(hooks)
    slow.open()
    try:
        wait_for(lambda: slow.owns("c.manual"), timeout=10, what="the slow host's lease")
        port = free_port()
        start(hosts, pg_dsn, tmp_path, "b", admin=port)
        b = hosts[0]
        client = HttpSession("127.0.0.1", port, timeout=60)
        client.first_login("admin", bootstrap_password(b.state), "a much longer secret 1")
        token = client.csrf("/schedulers/c.manual")
        posted: list[tuple[int, dict[str, str], str]] = []
        # The Admin Center's execute and the CLI's stop wait side by side.
        posting = threading.Thread(
            target=lambda: posted.append(
                client.request("POST", "/schedulers/c.manual/execute", {"csrf": token})
            )
        )
        posting.start()
        shown = cli(b.state, "stop", "c.manual", code=9)
        posting.join()
        assert sorted(hooks.obeyed) == ["execute", "stop"]  # both reached the owner
        assert "the stop command for 'c.manual' was delivered to slow at " in shown
        assert "it may still be carried out there" in shown
        assert "did not answer" not in shown
        [(status, headers, _)] = posted
        assert status == 303
        page = client.request("GET", headers["Location"].removeprefix(f"http://127.0.0.1:{port}"))[
            2
        ]
        assert "the execute command for &#39;c.manual&#39; was delivered to slow at " in page
        assert "it may still be carried out there" in page
        assert "Execute Now not confirmed" in page and "Execute Now refused" not in page
    finally:
        hooks.release.set()
        slow.close()
