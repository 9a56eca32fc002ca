"""Hosts as separate OS processes on one throwaway PostgreSQL, competing for 1 s slots.

Each host is ``python -m tests.cluster_host``; its runner writes an independent ledger
(no constraints), which proves at most one run per slot after kill -9 of the owner,
SIGSTOP past the lease then SIGCONT, a host clock skewed by 2 s, and a PostgreSQL restart.
Every wait has a deadline; nothing sleeps to wait.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.cluster import commands as cmd
from supervisor.cluster.db import Connection, connect
from tests.postgres import PostgresCluster, pg_cluster, pg_dsn
from tests.tcp_proxy import FaultyProxy
from tests.waiting import wait_for

__all__ = ["pg_cluster", "pg_dsn"]

ROOT = Path(__file__).resolve().parent.parent


class Host:
    """One host process and the events it reports."""

    def __init__(self, dsn: str, host_id: str, schedulers: list[str], tmp: Path, **opts: Any):
        self.host_id = host_id
        self.events_path = tmp / f"{host_id}.events"
        argv = [
            sys.executable,
            "-m",
            "tests.cluster_host",
            "--dsn",
            dsn,
            "--host-id",
            host_id,
            "--schedulers",
            ",".join(schedulers),
            "--events",
            str(self.events_path),
        ]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        self.stderr_path = tmp / f"{host_id}.err"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        found = []
        for line in self.events_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if kind is None or event["event"] == kind:
                found.append(event)
        return found

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture
def hosts(pg_dsn: str, tmp_path: Path) -> Iterator[list[Host]]:
    """Hosts the test starts (``add``ed to the list); all killed and reaped afterwards."""
    started: list[Host] = []
    yield started
    for host in started:
        if host.alive():
            host.process.kill()
        host.process.wait(timeout=30)
    # An exception in a host (its loop or a thread) is a failure, even if the test passed.
    crashed = {h.host_id: h.stderr_path.read_text() for h in started}
    assert not {name: err for name, err in crashed.items() if "Traceback" in err}


@pytest.fixture
def db(pg_dsn: str) -> Iterator[Connection]:
    with connect(pg_dsn) as conn:
        yield conn


def holder(db: Connection, scheduler_id: str) -> str | None:
    row = db.execute(
        "SELECT holder FROM cluster_leases WHERE scheduler_id = %s", (scheduler_id,)
    ).fetchone()
    return None if row is None else row[0]


def holders(db: Connection) -> dict[str, str | None]:
    return dict(db.execute("SELECT scheduler_id, holder FROM cluster_leases").fetchall())


def doubled_slots(db: Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT scheduler_id, planned_slot, array_agg(host) FROM cluster_test_ledger "
        "GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()


def ledger_count(db: Connection, where: str = "TRUE", params: tuple[Any, ...] = ()) -> int:
    try:
        row = db.execute(f"SELECT count(*) FROM cluster_test_ledger WHERE {where}", params)
    except Exception:  # the table is created by the first host
        return 0
    found = row.fetchone()
    return 0 if found is None else int(found[0])


def open_run(db: Connection, host: str) -> tuple[int, str] | None:
    row = db.execute(
        "SELECT run_id, scheduler_id FROM cluster_runs WHERE host = %s AND ended_at IS NULL "
        "ORDER BY run_id DESC LIMIT 1",
        (host,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def owns_all(db: Connection, host: str, schedulers: list[str]) -> bool:
    try:
        found = holders(db)
    except Exception:
        return False
    return all(found.get(s) == host for s in schedulers)


def test_hosts_compete_for_slots_and_each_slot_runs_at_most_once(
    pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    schedulers = [f"s{i}" for i in range(4)]
    for name in ("h1", "h2", "h3"):
        hosts.append(Host(pg_dsn, name, schedulers, tmp_path, max_leases=2))
    wait_for(lambda: ledger_count(db) >= 16, timeout=60, what="16 runs in the ledger")
    assert len({h for h in holders(db).values() if h}) >= 2  # the work is shared out
    for host in hosts:
        host.signal(signal.SIGTERM)
    for host in hosts:
        assert host.process.wait(timeout=30) == 0
    assert doubled_slots(db) == []
    assert db.execute("SELECT count(*) FROM cluster_runs WHERE ended_at IS NULL").fetchone() == (0,)
    assert set(holders(db).values()) == {None}  # every lease released at shutdown


def test_kill_9_of_the_owner_mid_run_hands_over_within_3s_and_interrupts_its_run(
    pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    schedulers = ["k1", "k2"]
    owner = Host(pg_dsn, "owner", schedulers, tmp_path, job_seconds=0.8)
    hosts.append(owner)
    wait_for(lambda: owns_all(db, "owner", schedulers), timeout=30, what="owner's leases")
    hosts.append(Host(pg_dsn, "heir", schedulers, tmp_path, job_seconds=0.8))
    wait_for(lambda: hosts[1].events("connected"), timeout=30, what="the heir to connect")
    run_id, scheduler_id = wait_for(lambda: open_run(db, "owner"), timeout=10, what="a run")
    owner.signal(signal.SIGKILL)
    owner.process.wait(timeout=10)
    wait_for(lambda: holder(db, scheduler_id) == "heir", timeout=3, what="takeover within 3 s")
    outcome = db.execute("SELECT outcome FROM cluster_runs WHERE run_id = %s", (run_id,)).fetchone()
    assert outcome == ("interrupted",)
    wait_for(
        lambda: ledger_count(db, "host = 'heir' AND scheduler_id = %s", (scheduler_id,)) >= 2,
        timeout=15,
        what="the heir to run the scheduler",
    )
    assert doubled_slots(db) == []


def test_a_stopped_owner_past_its_lease_has_its_late_writes_refused(
    pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    schedulers = ["f1"]
    sleeper = Host(pg_dsn, "sleeper", schedulers, tmp_path, job_seconds=2.0, ttl=1.0)
    hosts.append(sleeper)
    wait_for(lambda: owns_all(db, "sleeper", schedulers), timeout=30, what="sleeper's lease")
    hosts.append(Host(pg_dsn, "waker", schedulers, tmp_path, job_seconds=0.3, ttl=1.0))
    wait_for(lambda: hosts[1].events("connected"), timeout=30, what="waker to connect")
    run_id, _ = wait_for(lambda: open_run(db, "sleeper"), timeout=10, what="a sleeper run")
    sleeper.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: holder(db, "f1") == "waker", timeout=10, what="takeover after expiry")
    finally:
        sleeper.signal(signal.SIGCONT)
    refused = wait_for(
        lambda: [e for e in sleeper.events("refused") if e.get("run_id") == run_id],
        timeout=15,
        what="the sleeper's late run end to be refused",
    )
    assert refused[0]["write"] == "end"
    outcome = db.execute("SELECT outcome FROM cluster_runs WHERE run_id = %s", (run_id,)).fetchone()
    assert outcome == ("interrupted",)  # the late "succeeded" did not overwrite it
    assert sleeper.events("lost") and sleeper.alive()
    wait_for(lambda: ledger_count(db, "host = 'waker'") >= 2, timeout=15, what="waker's runs")
    assert doubled_slots(db) == []


def lateness(db: Connection, host: str) -> list[float]:
    """Seconds from each planned slot to its ledger row, by the database clock."""
    rows = db.execute(
        "SELECT extract(epoch FROM written_at - planned_slot)::float8 FROM cluster_test_ledger "
        "WHERE host = %s",
        (host,),
    ).fetchall()
    return [row[0] for row in rows]


def test_hosts_with_clocks_skewed_by_2s_run_slots_on_time_and_never_double_one(
    pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    schedulers = ["c1", "c2"]
    first = Host(pg_dsn, "true", schedulers, tmp_path)
    hosts.append(first)
    wait_for(lambda: owns_all(db, "true", schedulers), timeout=30, what="true's leases")
    slow = Host(pg_dsn, "slow", schedulers, tmp_path, skew=-2.0)
    hosts.append(slow)
    wait_for(lambda: slow.events("connected"), timeout=30, what="slow to connect")
    wait_for(lambda: open_run(db, "true"), timeout=10, what="a run of true")
    first.signal(signal.SIGKILL)  # mid-run: the slot it holds must not run again
    wait_for(lambda: owns_all(db, "slow", schedulers), timeout=10, what="slow's takeover")
    wait_for(lambda: ledger_count(db, "host = 'slow'") >= 6, timeout=20, what="slow's runs")
    fast = Host(pg_dsn, "fast", schedulers, tmp_path, skew=2.0)
    hosts.append(fast)
    wait_for(lambda: fast.events("connected"), timeout=30, what="fast to connect")
    slow.signal(signal.SIGTERM)  # graceful hand-off to the host running 2 s ahead
    assert slow.process.wait(timeout=30) == 0
    wait_for(lambda: owns_all(db, "fast", schedulers), timeout=10, what="fast's takeover")
    wait_for(lambda: ledger_count(db, "host = 'fast'") >= 6, timeout=20, what="fast's runs")
    assert doubled_slots(db) == []
    for host in ("slow", "fast"):
        late = sorted(lateness(db, host))
        # Never before the slot by the database clock; on time, not 2 s off, at the median.
        assert late[0] >= -0.25, (host, late)
        assert late[len(late) // 2] < 1.0, (host, late)


def test_hosts_recover_from_a_postgresql_restart(
    pg_cluster: PostgresCluster, pg_dsn: str, hosts: list[Host], tmp_path: Path
) -> None:
    schedulers = ["r1", "r2", "r3"]
    for name in ("p1", "p2"):
        hosts.append(Host(pg_dsn, name, schedulers, tmp_path, max_leases=2))
    with connect(pg_dsn) as db:
        wait_for(lambda: ledger_count(db) >= 6, timeout=60, what="runs before the restart")
    pg_cluster.restart()
    with connect(pg_dsn) as db:
        restarted = db.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert restarted is not None

        def ran_since() -> bool:
            return all(
                ledger_count(db, "scheduler_id = %s AND written_at > %s", (s, restarted[0])) >= 2
                for s in schedulers
            )

        wait_for(ran_since, timeout=30, what="every scheduler to run again after the restart")
        assert all(host.alive() for host in hosts)
        assert all(host.events("disconnected") for host in hosts)
        assert doubled_slots(db) == []


def scheduled_runs_since(db: Connection, scheduler_id: str, since: Any) -> int:
    row = db.execute(
        "SELECT count(*) FROM cluster_runs WHERE scheduler_id = %s AND trigger = 'schedule' "
        "AND started_at > %s",
        (scheduler_id, since),
    ).fetchone()
    return 0 if row is None else int(row[0])


def test_commands_from_another_host_reach_the_owner_and_are_answered(
    pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    hosts.append(Host(pg_dsn, "owner", ["m1"], tmp_path, period=3600, job_seconds=0.05))
    wait_for(lambda: owns_all(db, "owner", ["m1"]), timeout=30, what="owner's lease")
    ears = cmd.Listener(pg_dsn)
    try:

        def ask(kind: cmd.CommandKind) -> dict[str, Any]:
            command_id = cmd.send(db, scheduler_id="m1", kind=kind, issued_by="cli@other")
            return cmd.wait_answer(db, ears, command_id, timeout=10, poll_every=5).body

        wait_for(
            lambda: db.execute("SELECT 1 FROM cluster_runs WHERE ended_at IS NOT NULL").fetchone(),
            timeout=10,
            what="the slot due at takeover to run",
        )
        executed = ask(cmd.CommandKind.EXECUTE)
        assert executed["ok"] and executed["host"] == "owner"
        row = db.execute(
            "SELECT trigger, host FROM cluster_runs WHERE run_id = %s", (executed["run_id"],)
        ).fetchone()
        assert row == ("manual", "owner")
        assert ask(cmd.CommandKind.STOP) == {"ok": True, "host": "owner"}
        assert ask(cmd.CommandKind.START)["ok"]
        assert ask(cmd.CommandKind.SETTINGS_CHANGED)["ok"]
        # A command whose NOTIFY never came (inserted bare) is found by the owner's polling.
        row = db.execute(
            "INSERT INTO cluster_commands (scheduler_id, kind, issued_by) "
            "VALUES ('m1', 'settings_changed', 'raw') RETURNING command_id"
        ).fetchone()
        assert row is not None
        polled = cmd.wait_answer(db, ears, row[0], timeout=10, poll_every=0.1)
        assert polled.answered_by == "owner" and polled.body["ok"]
    finally:
        ears.close()


def test_a_stopped_scheduler_plans_nothing_more_on_its_owner(
    pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    hosts.append(Host(pg_dsn, "owner", ["m2", "witness"], tmp_path, job_seconds=0.05))
    wait_for(lambda: owns_all(db, "owner", ["m2", "witness"]), timeout=30, what="the leases")
    ears = cmd.Listener(pg_dsn)
    try:
        command_id = cmd.send(db, scheduler_id="m2", kind=cmd.CommandKind.STOP, issued_by="cli")
        assert cmd.wait_answer(db, ears, command_id, timeout=10).body["ok"]
        stopped = db.execute("SELECT clock_timestamp()").fetchone()
        assert stopped is not None
        # The witness, on the same owner and grid, shows slots kept coming meanwhile.
        wait_for(
            lambda: scheduled_runs_since(db, "witness", stopped[0]) >= 3,
            timeout=15,
            what="three slots of the witness",
        )
        assert scheduled_runs_since(db, "m2", stopped[0]) == 0
        command_id = cmd.send(db, scheduler_id="m2", kind=cmd.CommandKind.START, issued_by="cli")
        assert cmd.wait_answer(db, ears, command_id, timeout=10).body["ok"]
        wait_for(
            lambda: scheduled_runs_since(db, "m2", stopped[0]) >= 1,
            timeout=10,
            what="runs to resume after START",
        )
    finally:
        ears.close()


def test_injected_connection_failures_never_double_a_slot(
    pg_cluster: PostgresCluster, pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    schedulers = [f"x{i:03}" for i in range(100)]
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0.2, cut=0.01, seed=7) as proxy:
        via_proxy = pg_dsn.replace(f"port={pg_cluster.port}", f"port={proxy.port}")
        for name in ("q1", "q2", "q3"):
            hosts.append(
                Host(via_proxy, name, schedulers, tmp_path, ledger_dsn=pg_dsn, max_leases=50)
            )

        def each_ran_5_times() -> bool:
            try:
                row = db.execute(
                    "SELECT count(*) FROM (SELECT scheduler_id FROM cluster_test_ledger "
                    "GROUP BY 1 HAVING count(*) >= 5) AS done"
                ).fetchone()
            except Exception:  # the first host has not created the ledger yet
                return False
            return row is not None and row[0] == len(schedulers)

        wait_for(each_ran_5_times, timeout=180, what="100 schedulers x 5 runs")
        assert proxy.refused > 0 and proxy.cuts > 0  # failures did happen
    assert doubled_slots(db) == []
    assert all(host.alive() for host in hosts)


def shares(db: Connection) -> list[int]:
    rows = db.execute(
        "SELECT count(*) FROM cluster_leases WHERE holder IS NOT NULL GROUP BY holder"
    ).fetchall()
    return sorted(row[0] for row in rows)


def test_hosts_share_the_schedulers_fairly_and_take_over_a_leavers_share(
    pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    schedulers = [f"b{i}" for i in range(6)]
    hosts.append(Host(pg_dsn, "b1", schedulers, tmp_path, job_seconds=0.05))
    wait_for(lambda: owns_all(db, "b1", schedulers), timeout=30, what="b1 to take all six")
    for name in ("b2", "b3"):
        hosts.append(Host(pg_dsn, name, schedulers, tmp_path, job_seconds=0.05))
    wait_for(lambda: shares(db) == [2, 2, 2], timeout=20, what="two schedulers per host")
    hosts[0].signal(signal.SIGTERM)
    assert hosts[0].process.wait(timeout=30) == 0
    wait_for(lambda: shares(db) == [3, 3], timeout=10, what="the leaver's share taken over")
    assert hosts[0].events("rebalanced")  # b1 gave leases away while running
    assert doubled_slots(db) == []


def test_a_partitioned_owner_stops_its_run_before_its_lease_can_be_taken_over(
    pg_cluster: PostgresCluster, pg_dsn: str, db: Connection, hosts: list[Host], tmp_path: Path
) -> None:
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0.0, cut=0.0) as proxy:
        via_proxy = pg_dsn.replace(f"port={pg_cluster.port}", f"port={proxy.port}")
        cut_off = Host(
            via_proxy, "island", ["p1"], tmp_path, ledger_dsn=pg_dsn, ttl=1.0, job_seconds=30
        )
        hosts.append(cut_off)
        wait_for(lambda: owns_all(db, "island", ["p1"]), timeout=30, what="island's lease")
        hosts.append(Host(pg_dsn, "mainland", ["p1"], tmp_path, ttl=1.0, job_seconds=0.05))
        wait_for(lambda: hosts[1].events("connected"), timeout=30, what="mainland to connect")
        run_id, _ = wait_for(lambda: open_run(db, "island"), timeout=10, what="island's run")
        proxy.partition()  # island's session stays open: only expiry frees the lease
        wait_for(lambda: holder(db, "p1") == "mainland", timeout=10, what="takeover")
        [fenced] = wait_for(
            lambda: cut_off.events("self_fenced"), timeout=10, what="island to stop its run"
        )
        started = wait_for(lambda: hosts[1].events("started"), timeout=10, what="a new run")
        assert fenced["run_id"] == run_id
        assert fenced["at"] <= started[0]["at"]  # stopped before the new owner started
        proxy.heal()
        wait_for(
            lambda: [e for e in cut_off.events("refused") if e.get("run_id") == run_id],
            timeout=20,
            what="island's late end to be refused",
        )
    assert doubled_slots(db) == []
