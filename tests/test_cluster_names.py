"""A host's name in the cluster: stable across restarts by default, never two live at once.

Real managers (``supervisor run --cluster DSN --store DSN``) as separate OS processes on a
throwaway PostgreSQL, the cluster and the shared store in one database. By default a host
is named after the machine and its state directory, so a host restarted after ``kill -9``
recognises its own runs left open and marks them itself; a second manager under a name a
live member has is refused before it touches any run.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cluster_managers import make_ledger
from tests.cluster_process import Host
from tests.manager_process import cli
from tests.postgres import pg_cluster, pg_dsn
from tests.waiting import wait_for

__all__ = ["pg_cluster", "pg_dsn"]

TICK = "c.tick"


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        host.reap()


def running(db: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    """The store's run of the tick in progress: (run_id, host)."""
    return db.execute(
        "SELECT run_id, host FROM sst_runs WHERE scheduler_id = %s AND ended_at IS NULL",
        (TICK,),
    ).fetchone()


def test_a_host_restarted_after_kill_9_keeps_its_name_and_marks_its_own_open_run(
    pg_dsn: str, hosts: list[Host], tmp_path: Path
) -> None:
    make_ledger(pg_dsn)
    first = Host(pg_dsn, tmp_path / "a").ready()
    hosts.append(first)
    name = first.joined_as()
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:[0-9a-f]{{6}}", name)
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        run_id, host = wait_for(lambda: running(db), timeout=20, what="a run in progress")
        assert host == name
        first.process.kill()  # kill -9: the run is left open in the shared store
        first.process.wait(timeout=30)
        again = Host(pg_dsn, tmp_path / "a").ready()
        hosts.append(again)
        assert again.joined_as() == name
        # Marked by the restarted host as its own (its leftover process killed), not as
        # a run another host left at a takeover.
        runs = json.loads(cli(again.state, "runs", TICK, "--json"))
        [mine] = [run for run in runs if run["run_id"] == run_id]
        assert mine["outcome"] == "interrupted"
        assert mine["error"] == "the manager stopped while this run was in progress"
        assert "marked 1 run(s) left by a stopped manager as interrupted" in again.log()


def test_two_managers_on_one_machine_get_names_of_their_own(
    pg_dsn: str, hosts: list[Host], tmp_path: Path
) -> None:
    make_ledger(pg_dsn)
    hosts.extend(Host(pg_dsn, tmp_path / name) for name in ("a", "b"))
    for host in hosts:
        host.ready()
    names = [host.joined_as() for host in hosts]
    assert names[0] != names[1]
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        wait_for(
            lambda: (
                {row[0] for row in db.execute("SELECT holder FROM cluster_leases")} == set(names)
            ),
            timeout=10,
            what="a lease on each host",
        )


def test_a_second_manager_under_a_live_members_name_is_refused_and_touches_no_run(
    pg_dsn: str, hosts: list[Host], tmp_path: Path
) -> None:
    make_ledger(pg_dsn)
    hosts.append(Host(pg_dsn, tmp_path / "a", name="web-1").ready())
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        run_id, _ = wait_for(lambda: running(db), timeout=20, what="a run in progress")
        twin = Host(pg_dsn, tmp_path / "b", name="web-1")
        hosts.append(twin)
        assert twin.process.wait(timeout=30) == 2
        assert "error: --host-name: 'web-1' is already in use in the cluster" in twin.log()
        assert "a live member of the cluster has that name" in twin.log()
        # The live host's run in progress was left alone (no run was recovered).
        assert running(db) == (run_id, "web-1")
        assert "marked" not in twin.log()
