"""Coordination of several hosts on one PostgreSQL: takeover, hand-off, command latency.

Hosts are separate processes (``tests/cluster_host.py``) on a throwaway cluster made with
initdb. Figures, each beside a floor measured in the same run:

- takeover after ``kill -9`` of the owner mid-run (target <= 3 s; River ~15-21 s, Quartz
  15-22 s), from the kill to the heir's ``acquired_at``, both by the database clock; the
  killed host's session ends with it, so the heir's next acquisition poll wins: beside
  that poll period;
- takeover after SIGSTOP of the owner (its session stays open: only lease expiry frees
  it), beside the lease's time to live;
- graceful hand-off at shutdown (target <= 100 ms): the old owner's ``released_at`` to the
  heir's ``acquired_at``; beside a bare LISTEN/NOTIFY round trip;
- cross-host Execute Now: from sending the command to reading the owner's answer; beside
  a bare ``SELECT 1`` round trip and a NOTIFY round trip.

The same with the real manager (``supervisor run --cluster``, tests/cluster_managers.py,
two hosts per round on a fresh database, a 1 s SCHEDULE scheduler whose runs write a
ledger):

- takeover after ``kill -9`` of the owner mid-run: to the heir's ``acquired_at``, and to
  the heir's first run (its runner's ledger row), by the database clock;
- graceful hand-off (SIGTERM): ``released_at`` to the heir's ``acquired_at``, and from the
  signal to the heir's first run;
- Execute Now through the control socket of the host that does not own the scheduler
  (it travels to the owner and back), beside the same on the owner itself.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, summary

from supervisor.cli.client import ControlClient
from supervisor.cluster import commands as cmd
from supervisor.cluster import schema
from supervisor.cluster.db import Connection, connect
from tests.cluster_managers import ManagerHost, holder, ledger, make_ledger
from tests.postgres import PostgresCluster, throwaway_postgres

HOST_TTL = 2.0
ACQUIRE_EVERY_MS = 200.0


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.002)


def spawn(dsn: str, host_id: str, schedulers: list[str], work: Path, **opts: Any) -> Any:
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
        str(work / f"{host_id}.events"),
        "--ttl",
        str(HOST_TTL),
    ]
    for key, value in opts.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)


def lease(db: Connection, scheduler_id: str) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT holder, acquired_at, released_at FROM cluster_leases WHERE scheduler_id = %s",
        (scheduler_id,),
    ).fetchone()
    return row if row is not None else (None, None, None)


def db_now(db: Connection) -> Any:
    row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def select_1(db: Connection, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        db.execute("SELECT 1").fetchone()
        out.append((time.perf_counter() - start) * 1000)
    return out


def notify_round_trip(dsn: str, db: Connection, samples: int) -> list[float]:
    ears = cmd.Listener(dsn)
    out = []
    try:
        for _ in range(samples):
            start = time.perf_counter()
            db.execute("SELECT pg_notify('sst_cluster_leases', 'bench')")
            while not ears.wait(5):
                pass
            out.append((time.perf_counter() - start) * 1000)
    finally:
        ears.close()
    return out


def owner_with_heir(
    dsn: str, db: Connection, work: Path, scheduler: str, round_no: int, **opts: Any
) -> tuple[Any, Any, str, str]:
    old, new = f"old{round_no}", f"new{round_no}"
    first = spawn(dsn, old, [scheduler], work, **opts)
    wait_until(lambda: lease(db, scheduler)[0] == old, 30, "the first owner")
    second = spawn(dsn, new, [scheduler], work, **opts)
    wait_until(lambda: (work / f"{new}.events").exists(), 30, "the heir to boot")
    wait_until(lambda: "connected" in (work / f"{new}.events").read_text(), 30, "heir connected")
    return first, second, old, new


def takeover(dsn: str, db: Connection, work: Path, rounds: int, signum: int) -> list[float]:
    out = []
    for round_no in range(rounds):
        scheduler = f"t{signum}.{round_no}"
        first, second, _old, new = owner_with_heir(
            dsn, db, work, scheduler, round_no + 100 * signum, job_seconds=0.5
        )
        # Kill at a random phase of the heir's acquisition poll, not right after it booted.
        time.sleep(random.uniform(0.3, 1.3))
        wait_until(
            lambda scheduler=scheduler: db.execute(
                "SELECT 1 FROM cluster_runs WHERE scheduler_id = %s AND ended_at IS NULL",
                (scheduler,),
            ).fetchone(),
            10,
            "a run in progress",
        )
        killed_at = db_now(db)
        first.send_signal(signum)
        _holder, acquired_at, _ = wait_until(
            lambda scheduler=scheduler, new=new: (
                lease(db, scheduler) if lease(db, scheduler)[0] == new else None
            ),
            30,
            "the takeover",
        )
        out.append((acquired_at - killed_at).total_seconds() * 1000)
        for process in (first, second):
            process.kill()
            process.wait()
    return out


def hand_off(dsn: str, db: Connection, work: Path, rounds: int) -> list[float]:
    out = []
    for round_no in range(rounds):
        scheduler = f"h{round_no}"
        first, second, _old, new = owner_with_heir(
            dsn, db, work, scheduler, 200 + round_no, job_seconds=0.05
        )
        first.send_signal(signal.SIGTERM)
        _, acquired_at, released_at = wait_until(
            lambda scheduler=scheduler, new=new: (
                lease(db, scheduler) if lease(db, scheduler)[0] == new else None
            ),
            30,
            "the hand-off",
        )
        out.append((acquired_at - released_at).total_seconds() * 1000)
        first.wait()
        second.kill()
        second.wait()
    return out


def execute_latency(dsn: str, db: Connection, work: Path, samples: int) -> list[float]:
    scheduler = "cmd"
    owner = spawn(dsn, "owner", [scheduler], work, period=3600, job_seconds=0.001)
    ears = cmd.Listener(dsn)
    out = []
    try:
        wait_until(lambda: lease(db, scheduler)[0] == "owner", 30, "the owner")
        # The slot due at the takeover runs first; commands are timed after it.
        wait_until(
            lambda: db.execute(
                "SELECT 1 FROM cluster_runs WHERE scheduler_id = 'cmd' AND ended_at IS NOT NULL"
            ).fetchone(),
            10,
            "the first run",
        )
        for _ in range(samples):
            wait_until(
                lambda: (
                    not db.execute(
                        "SELECT 1 FROM cluster_runs WHERE scheduler_id = 'cmd' AND ended_at IS NULL"
                    ).fetchone()
                ),
                10,
                "the previous run to end",
            )
            start = time.perf_counter()
            command_id = cmd.send(
                db, scheduler_id=scheduler, kind=cmd.CommandKind.EXECUTE, issued_by="bench"
            )
            answer = cmd.wait_answer(db, ears, command_id, timeout=10)
            out.append((time.perf_counter() - start) * 1000)
            if not answer.body.get("ok"):
                raise SystemExit(f"execute refused: {answer.body}")
    finally:
        ears.close()
        owner.kill()
        owner.wait()
    return out


# -- the real manager ----------------------------------------------------------------------

TICK = "c.tick"
MANUAL = "c.manual"


def two_managers(
    cluster: PostgresCluster, work: Path, name: str, job_seconds: float
) -> tuple[str, Connection, list[ManagerHost]]:
    """Two hosts on a fresh database, settled (each holds one of the two schedulers)."""
    dsn = cluster.create_database(name)
    make_ledger(dsn)
    db = connect(dsn)
    hosts = [ManagerHost(dsn, f"{name}{h}", work, job_seconds=job_seconds) for h in "ab"]
    for host in hosts:
        host.ready()
    names = {host.name for host in hosts}
    wait_until(lambda: {holder(db, TICK), holder(db, MANUAL)} == names, 30, "settled leases")
    return dsn, db, hosts


def end_round(db: Connection, hosts: list[ManagerHost]) -> None:
    for host in hosts:
        host.reap()
    db.close()


def manager_takeover(cluster: PostgresCluster, work: Path, rounds: int) -> tuple[list[float], ...]:
    leased, first_run = [], []
    for round_no in range(rounds):
        _dsn, db, hosts = two_managers(cluster, work, f"k{round_no}", 1.0)
        owner = next(h for h in hosts if h.name == holder(db, TICK))
        heir = next(h for h in hosts if h is not owner)
        wait_until(
            lambda owner=owner, db=db: any(
                r[1] == owner.name and r[3] is None for r in ledger(db, TICK)
            ),
            30,
            "a run in progress on the owner",
        )
        time.sleep(random.uniform(0.0, 0.5))  # somewhere in the run
        killed_at = db_now(db)
        owner.kill()
        _, acquired_at, _ = wait_until(
            lambda db=db, heir=heir: lease(db, TICK) if lease(db, TICK)[0] == heir.name else None,
            30,
            "the takeover",
        )
        started = wait_until(
            lambda db=db, heir=heir, killed_at=killed_at: [
                r[2] for r in ledger(db, TICK) if r[1] == heir.name and r[2] > killed_at
            ],
            30,
            "the heir's first run",
        )[0]
        leased.append((acquired_at - killed_at).total_seconds() * 1000)
        first_run.append((started - killed_at).total_seconds() * 1000)
        end_round(db, hosts)
    return leased, first_run


def manager_hand_off(cluster: PostgresCluster, work: Path, rounds: int) -> tuple[list[float], ...]:
    leased, first_run = [], []
    for round_no in range(rounds):
        _dsn, db, hosts = two_managers(cluster, work, f"h{round_no}", 0.2)
        owner = next(h for h in hosts if h.name == holder(db, TICK))
        heir = next(h for h in hosts if h is not owner)
        asked_at = db_now(db)
        owner.signal(signal.SIGTERM)
        _, acquired_at, released_at = wait_until(
            lambda db=db, heir=heir: lease(db, TICK) if lease(db, TICK)[0] == heir.name else None,
            30,
            "the hand-off",
        )
        started = wait_until(
            lambda db=db, heir=heir, asked_at=asked_at: [
                r[2] for r in ledger(db, TICK) if r[1] == heir.name and r[2] > asked_at
            ],
            30,
            "the heir's first run",
        )[0]
        leased.append((acquired_at - released_at).total_seconds() * 1000)
        first_run.append((started - asked_at).total_seconds() * 1000)
        owner.stop()
        end_round(db, hosts)
    return leased, first_run


def manager_execute(cluster: PostgresCluster, work: Path, samples: int) -> tuple[list[float], ...]:
    _dsn, db, hosts = two_managers(cluster, work, "x", 0.0)
    owner = next(h for h in hosts if h.name == holder(db, MANUAL))
    other = next(h for h in hosts if h is not owner)
    local, remote = [], []
    owner_client = ControlClient(owner.state)
    try:
        for client, out in (
            (owner_client, local),
            (ControlClient(other.state), remote),
        ):
            for _ in range(samples):
                start = time.perf_counter()
                run_id = client.execute(MANUAL)
                out.append((time.perf_counter() - start) * 1000)
                wait_until(
                    lambda run_id=run_id: (
                        any(r[0] == run_id and r[3] is not None for r in ledger(db, MANUAL))
                        and owner_client.status(MANUAL).current_run_id is None
                    ),
                    30,
                    "the run to end",
                )
    finally:
        end_round(db, hosts)
    return local, remote


def run_managers(work: Path, rounds: int, samples: int) -> None:
    with throwaway_postgres() as cluster:
        local, remote = manager_execute(cluster, work, samples)
        print(summary("mgr floor: execute now on the owner", local))
        print(summary("mgr: execute now via the other host", remote))
        leased, first_run = manager_hand_off(cluster, work, rounds)
        print(summary("mgr: hand-off (released->acquired)", leased))
        print(summary("mgr: SIGTERM -> heir's first run", first_run))
        print(f"{'floor: the 1 s pause between runs':<36} {1000.0:8.2f} ms")
        leased, first_run = manager_takeover(cluster, work, rounds)
        print(summary("mgr: kill -9 -> heir holds the lease", leased))
        print(summary("mgr: kill -9 -> heir's first run", first_run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--manager-rounds", type=int, default=3)
    parser.add_argument("--manager-samples", type=int, default=20)
    parser.add_argument("--only", choices=("nodes", "managers"), default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir="/var/tmp"))
    try:
        if args.only != "managers":
            run_all(work, args.rounds, args.samples)
        if args.only != "nodes":
            run_managers(work, args.manager_rounds, args.manager_samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(work: Path, rounds: int, samples: int) -> None:
    with throwaway_postgres() as cluster:
        dsn = cluster.create_database("bench")
        with connect(dsn) as db:
            schema.install(db)
            print(summary("floor: SELECT 1 round trip", select_1(db, samples)))
            print(summary("floor: LISTEN/NOTIFY round trip", notify_round_trip(dsn, db, 50)))
            print(
                summary(
                    "execute now, cross-host (answer back)",
                    execute_latency(dsn, db, work, samples),
                )
            )
            print(
                summary("graceful hand-off (released->acquired)", hand_off(dsn, db, work, rounds))
            )
            print(f"{'floor: heir acquisition poll period':<36} {ACQUIRE_EVERY_MS:8.2f} ms")
            print(
                summary("takeover after kill -9", takeover(dsn, db, work, rounds, signal.SIGKILL))
            )
            print(f"{'floor: lease time to live':<36} {HOST_TTL * 1000:8.2f} ms")
            print(
                summary(
                    "takeover after SIGSTOP (expiry)",
                    takeover(dsn, db, work, rounds, signal.SIGSTOP),
                )
            )
            print("reference: River ~15-21 s, Quartz 15-22 s takeover after a dead owner")


if __name__ == "__main__":
    main()
