"""Hosts of a cluster sharing one PostgreSQL store: ``supervisor run --cluster DSN --store DSN``.

Each host is a separate ``supervisor run`` process (tests/cluster_managers.py) of
tests/apps/cluster_jobs.py on one throwaway PostgreSQL, used both as the coordination
database and as the store. The runners' independent ledger proves one run per slot; the
store's ``sst_runs`` rows must name the host each run ran on, any host's CLI and Admin
Center must show every host's runs and logs, a host starting must leave another live
host's run alone, and a run of an owner killed with -9 must become ``interrupted`` in the
shared store while the heir runs the next slot. With a host's clock 2 s off no slot runs
twice and nothing the store took is lost: every ledger run is in the store with its host
and its end, and the line it printed is stored or counted as lost in its run (a PostgreSQL
restart and injected connection failures, with the store shared and without, are
tests/test_cluster_manager.py's). Every wait has a deadline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.cluster_managers import (
    TICK,
    ManagerHost,
    as_url,
    by_name,
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
)
from tests.cluster_managers import start as start_hosts
from tests.http_session import HttpSession, bootstrap_password
from tests.manager_process import cli
from tests.postgres import free_port, pg_cluster, pg_dsn
from tests.waiting import wait_for

__all__ = ["db", "hosts", "pg_cluster", "pg_dsn"]


def start(hosts: list[ManagerHost], dsn: str, tmp: Path, *names: str, **kw: Any) -> None:
    """Hosts with ``dsn`` as their cluster and their store: one database for both."""
    start_hosts(hosts, dsn, tmp, *names, shared_store=True, **kw)


def stored(db: psycopg.Connection[Any], scheduler_id: str) -> dict[str, tuple[Any, ...]]:
    """run_id -> (host, outcome, error) of the shared store's runs of ``scheduler_id``."""
    rows = db.execute(
        "SELECT run_id, host, outcome, error FROM sst_runs WHERE scheduler_id = %s",
        (scheduler_id,),
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_hosts_share_one_store_and_each_shows_every_hosts_runs_and_logs(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    port = free_port()
    start(hosts, pg_dsn, tmp_path, "a", job_seconds=1.0)
    start(hosts, pg_dsn, tmp_path, "b", job_seconds=1.0, admin=port)
    # Both share the store: neither was refused by a one-manager lock.
    wait_for(lambda: len(ledger(db, TICK)) >= 2, timeout=20, what="two runs of the tick")
    # (The lease may move once while b joins: the owner is the host of the run in progress.)
    running = wait_for(
        lambda: (row := in_flight(db, TICK)) is not None and row[1] == holder(db, TICK) and row,
        timeout=10,
        what="a run in progress on the owner",
    )
    owner, other = host_and_other(hosts, running[1])
    # A third host starting meanwhile recovers only its own runs: the owner's run in
    # progress is left alone and ends as it would.
    start(hosts, pg_dsn, tmp_path, "c", job_seconds=1.0)
    wait_for(
        lambda: stored(db, TICK)[running[0]][1] == "succeeded",
        timeout=10,
        what="the run in progress succeeded, not marked by the host that started",
    )
    assert doubled_slots(db) == []
    # Every ledger run is in the shared store, with the host it ran on.
    finished = [r for r in ledger(db, TICK) if r[3] is not None]
    runs = stored(db, TICK)
    assert {r[0]: r[1] for r in finished} == {r[0]: runs[r[0]][0] for r in finished}
    # The other host's CLI lists the owner's runs, each with its host, and their logs.
    listed = {r["run_id"]: r for r in json.loads(cli(other.state, "runs", TICK, "--json"))}
    assert {r[0] for r in finished} <= set(listed)
    assert all(listed[r[0]]["host"] == r[1] for r in finished)
    assert "HOST" in cli(other.state, "runs", TICK)
    lines = [json.loads(line) for line in cli(other.state, "logs", TICK, "--json").splitlines()]
    messages = {line["message"] for line in lines}
    assert {f"{r[0]} on {r[1]}" for r in finished} <= messages
    # And so does host b's Admin Center, whichever host ran the runs.
    client = HttpSession("127.0.0.1", port)
    client.first_login("admin", bootstrap_password(by_name(hosts, "b").state), "a longer secret 1")
    page = client.request("GET", f"/schedulers/{TICK}")[2]
    assert all(r[0] in page for r in finished)
    assert owner.name in page


def test_the_run_of_an_owner_killed_with_9_becomes_interrupted_in_the_shared_store(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    start(hosts, pg_dsn, tmp_path, "a", "b", job_seconds=1.0)
    wait_for(lambda: len(ledger(db, TICK)) >= 2, timeout=20, what="two runs of the tick")
    owner, heir = host_and_other(hosts, holder(db, TICK))
    running = wait_for(
        lambda: in_flight(db, TICK),
        timeout=10,
        what="a run in progress on the owner",
    )
    assert running[1] == owner.name
    owner.kill()
    wait_for(lambda: holder(db, TICK) == heir.name, timeout=3, what="the takeover in 3 s")
    outcome = wait_for(
        lambda: stored(db, TICK)[running[0]][1:] if stored(db, TICK)[running[0]][1] else None,
        timeout=3,
        what="the dead host's run ended in the shared store",
    )
    assert outcome[0] == "interrupted"
    assert owner.name in outcome[1]
    assert stored(db, TICK)[running[0]][0] == owner.name
    # The heir runs the next slot, recorded as its own in the shared store.
    after = wait_for(lambda: runs_on(db, heir, after=running[2]), timeout=10, what="the heir's run")
    wait_for(
        lambda: stored(db, TICK).get(after[0][0], (None,))[0] == heir.name,
        timeout=5,
        what="the heir's run in the store",
    )
    assert doubled_slots(db) == []
    assert heir.alive()
    # Nothing of the dead host's tenure is left running in the shared store.
    left = [rid for rid, row in stored(db, TICK).items() if row[1] is None and row[0] == owner.name]
    assert left == []


def test_the_late_end_of_an_owner_stopped_past_its_lease_is_not_written(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    start(hosts, pg_dsn, tmp_path, "a", "b", job_seconds=1.0)
    wait_for(lambda: len(ledger(db, TICK)) >= 1, timeout=20, what="a run of the tick")
    owner, other = host_and_other(hosts, holder(db, TICK))
    stopped = wait_for(
        lambda: in_flight(db, TICK),
        timeout=10,
        what="a run in progress on the owner",
    )
    assert stopped[1] == owner.name
    with owner.stopped():
        # The lease expires (2 s ttl): the other host takes over and marks the run.
        wait_for(
            lambda: runs_on(db, other, after=stopped[2]),
            timeout=10,
            what="the other host's run while the owner is stopped",
        )
        # The mark is written at the takeover or at the next lease poll, which can come
        # just after the new run's row.
        marked = wait_for(
            lambda: row if (row := stored(db, TICK)[stopped[0]])[1] == "interrupted" else None,
            timeout=5,
            what="the owner's run marked interrupted",
        )
        assert owner.name in marked[2]
    # Back, the owner's run ends; its end is refused and not written over the mark.
    kept = f"run {stopped[0]} of {TICK} kept as interrupted: its end was not stored"
    wait_for(lambda: kept in owner.log(), timeout=10, what="the fenced end handled")
    assert stored(db, TICK)[stopped[0]] == marked  # the new owner's word stays, unchanged
    assert doubled_slots(db) == []


# -- a fault, with the store shared -------------------------------------------------------


def test_a_host_clock_2s_off_doubles_no_slot_and_loses_nothing_stored(
    db: psycopg.Connection[Any], pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    store = as_url(pg_dsn)
    for name, skew in (("true", 0.0), ("ahead", 2.0)):
        hosts.append(
            ManagerHost(pg_dsn, name, tmp_path, job_seconds=0.2, ticks=2, store=store, skew=skew)
        )
    for host in hosts:
        host.ready()
    # Both run slots (the leases are shared out), each host's runs in the one store.
    wait_for(
        lambda: (
            {row[0] for row in db.execute("SELECT host FROM cluster_test_ledger")}
            == {"true", "ahead"}
        ),
        timeout=20,
        what="runs on both hosts",
    )
    # The host on time hands everything over to the one 2 s ahead.
    since = db.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    assert by_name(hosts, "true").stop() == 0

    def ran_twice_each() -> bool:
        ran = runs_each(db, "c.tick%", since, host="ahead")
        return len(ran) == 3 and min(ran.values()) >= 2

    wait_for(ran_twice_each, timeout=20, what="two runs of each tick on the host ahead")
    assert by_name(hosts, "ahead").stop() == 0
    assert doubled_slots(db) == []
    for scheduler_id in runs_each(db, "c.tick%"):
        assert overlaps(ledger(db, scheduler_id)) == []
    assert lost(db) == []
