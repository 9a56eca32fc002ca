"""Real managers (``supervisor run --cluster``) as separate OS processes on one database.

Each ``ManagerHost`` is one ``supervisor run --app tests.apps.cluster_jobs:cfg --cluster DSN
--host-name NAME`` with a state directory of its own; its runs write the independent
ledger of ``tests/apps/cluster_jobs.py``. What the tests and the bench read: the ledger,
the coordination tables, the shared store's tables (``lost``) and each host's log
(stderr). Used by tests/test_cluster_manager.py, tests/test_cluster_store.py and
bench/bench_cluster.py; the fixtures ``db`` (the ledger made, a connection to it) and
``hosts`` (the hosts a test started, reaped after it) are imported by the test modules,
beside tests/postgres.py's ``pg_dsn``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.apps.cluster_jobs import LEDGER_DDL
from tests.commands import python, supervisor
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.cluster_jobs:cfg"
TICK = "c.tick"  # SCHEDULE, a 1 s pause after each run


def make_ledger(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(LEDGER_DDL)


class ManagerHost:
    """One manager process of the cluster; ``stop`` is graceful (SIGTERM), ``kill`` is -9."""

    def __init__(
        self,
        dsn: str,
        name: str,
        tmp: Path,
        *,
        job_seconds: float = 0.3,
        admin: int | None = None,
        cluster_dsn: str | None = None,
        ticks: int = 0,
        store: str | None = None,
        skew: float = 0.0,
    ) -> None:
        """``cluster_dsn``: the manager's own way to the database (e.g. through a proxy);
        its runs write the ledger on ``dsn``. ``store``: the shared ``--store`` (None: the
        state directory's SQLite file). ``skew``: seconds the manager's wall clock is off
        (tests/skewed_supervisor.py)."""
        self.name = name
        self.state = tmp / name
        self.state.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / f"{name}.log"
        argv = ["run", "--app", APP, "--state-dir", str(self.state), "--grace", "500ms"]
        argv += ["--cluster", cluster_dsn or dsn, "--host-name", name]
        argv += [] if store is None else ["--store", store]
        argv += ["--no-admin"] if admin is None else ["--admin", f"127.0.0.1:{admin}"]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CLUSTER_LEDGER_DSN": dsn,
            "CLUSTER_HOST": name,
            "CLUSTER_JOB_SECONDS": str(job_seconds),
            "CLUSTER_TICKS": str(ticks),
        }
        command = python("-m", "tests.skewed_supervisor", str(skew), *argv) if skew else None
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command or supervisor(*argv),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def ready(self, timeout: float = 30) -> ManagerHost:
        wait_for(
            lambda: (self.state / "control.sock").exists() or not self.alive(),
            timeout=timeout,
            what=f"manager {self.name}",
        )
        assert self.alive(), self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """SIGSTOP for the ``with`` block (the process stays, its clocks run on), SIGCONT
        after it."""
        self.signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal(signal.SIGCONT)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit status."""
        if self.alive():
            self.signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def reap(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to ``pg_dsn``'s database, its ledger made."""
    make_ledger(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[ManagerHost]]:
    """The hosts a test starts; killed and reaped afterwards. A traceback in any host's
    log fails the test."""
    started: list[ManagerHost] = []
    yield started
    for host in started:
        host.reap()
    assert not {h.name: h.log() for h in started if "Traceback" in h.log()}


def as_url(dsn: str) -> str:
    """``dsn`` (libpq key=value) as the ``postgresql://`` URL ``--store`` takes."""
    params = conninfo_to_dict(dsn)
    return (
        f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"
        "?connect_timeout=3"
    )


def start(
    hosts: list[ManagerHost],
    dsn: str,
    tmp: Path,
    *names: str,
    shared_store: bool = False,
    **kw: Any,
) -> None:
    """Start hosts ``names`` on ``dsn`` and wait until each is ready. ``shared_store``:
    the cluster's database is their store too (reached the same way: ``cluster_dsn``)."""
    store = {"store": as_url(kw.get("cluster_dsn") or dsn)} if shared_store else {}
    new = [ManagerHost(dsn, name, tmp, **store, **kw) for name in names]
    hosts.extend(new)
    for host in new:
        host.ready()


def by_name(hosts: list[ManagerHost], name: str | None) -> ManagerHost:
    return next(h for h in hosts if h.name == name)


def host_and_other(hosts: list[ManagerHost], name: str | None) -> tuple[ManagerHost, ManagerHost]:
    """The host called ``name`` (e.g. a lease's holder) and another one (of two, the other)."""
    host = by_name(hosts, name)
    return host, next(h for h in hosts if h is not host)


def holder(conn: psycopg.Connection[Any], scheduler_id: str) -> str | None:
    row = conn.execute(
        "SELECT holder FROM cluster_leases WHERE scheduler_id = %s", (scheduler_id,)
    ).fetchone()
    return None if row is None else row[0]


def ledger(conn: psycopg.Connection[Any], scheduler_id: str) -> list[tuple[Any, ...]]:
    """(run_ref, host, started_at, ended_at, planned_slot, cluster outcome) per ledger row,
    oldest first; the planned slot and outcome are None for a run never claimed."""
    return conn.execute(
        "SELECT l.run_ref, l.host, l.started_at, l.ended_at, r.planned_slot, r.outcome "
        "FROM cluster_test_ledger AS l LEFT JOIN cluster_runs AS r ON r.run_ref = l.run_ref "
        "WHERE l.scheduler_id = %s ORDER BY l.started_at",
        (scheduler_id,),
    ).fetchall()


def in_flight(conn: psycopg.Connection[Any], scheduler_id: str) -> tuple[Any, ...] | None:
    """The ``ledger`` row of the run in progress (its runner is working), if any."""
    rows = [row for row in ledger(conn, scheduler_id) if row[3] is None]
    return rows[-1] if rows else None


def runs_on(
    conn: psycopg.Connection[Any], host: ManagerHost, *, after: Any
) -> list[tuple[Any, ...]]:
    """The ``ledger`` rows of the runs of the tick ``host`` started after ``after``."""
    return [row for row in ledger(conn, TICK) if row[1] == host.name and row[2] > after]


def doubled_slots(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Slots more than one ledger row ran in, and ledger rows whose run claimed no slot."""
    return conn.execute(
        "SELECT l.scheduler_id, r.planned_slot, array_agg(l.host) "
        "FROM cluster_test_ledger AS l LEFT JOIN cluster_runs AS r ON r.run_ref = l.run_ref "
        "GROUP BY 1, 2 HAVING count(*) > 1 OR r.planned_slot IS NULL"
    ).fetchall()


def runs_each(
    conn: psycopg.Connection[Any], pattern: str, since: Any = None, *, host: str | None = None
) -> dict[str, int]:
    """Ledger runs per scheduler whose id is LIKE ``pattern`` (started after ``since``, on
    ``host``)."""
    rows = conn.execute(
        "SELECT scheduler_id, count(*) FROM cluster_test_ledger WHERE scheduler_id LIKE %s"
        " AND (%s::timestamptz IS NULL OR started_at > %s) AND (%s::text IS NULL OR host = %s)"
        " GROUP BY 1",
        (pattern, since, since, host, host),
    ).fetchall()
    return dict(rows)


def lost(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Ledger runs the shared store (``--store``) does not account for: missing, under
    another host, without an end, or without the line the runner printed (unless counted
    as lost)."""
    rows = conn.execute(
        "SELECT l.run_ref, l.host, r.host, r.ended_at, r.dropped_records,"
        " EXISTS (SELECT 1 FROM sst_logs AS g WHERE g.run_seq = r.seq"
        "         AND g.message = l.run_ref || ' on ' || l.host)"
        " FROM cluster_test_ledger AS l LEFT JOIN sst_runs AS r ON r.run_id = l.run_ref"
    ).fetchall()
    return [
        row
        for row in rows
        if row[2] != row[1] or row[3] is None or not (row[5] or (row[4] or 0) > 0)
    ]


def stop_all(hosts: list[ManagerHost]) -> None:
    """SIGTERM every host at once; each must exit 0."""
    for host in hosts:
        host.signal(signal.SIGTERM)
    for host in hosts:  # (a second SIGTERM would meet the default action at shutdown)
        assert host.process.wait(timeout=30) == 0, host.log()


def overlaps(rows: list[tuple[Any, ...]]) -> list[tuple[Any, Any]]:
    """Pairs of ledger rows (of one scheduler) whose runs overlapped in time."""
    found = []
    for before, after in itertools.pairwise(rows):
        ended = before[3]
        if ended is None or ended > after[2]:
            found.append((before[0], after[0]))
    return found
