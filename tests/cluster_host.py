"""One host of a test cluster, as its own OS process: ``python -m tests.cluster_host ...``.

Runs a ``supervisor.cluster.node.Node`` whose runner writes an independent ledger row
(``cluster_test_ledger``, no constraints: it proves or disproves "one run per slot") and
then works for ``--job-seconds``. ``--skew`` shifts this host's own clock. Each node event
is appended as a JSON line to ``--events`` (what the tests read). SIGTERM shuts it down
gracefully (runs stopped and recorded, leases released).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg

from supervisor.cluster.db import CONNECTION_ERRORS, Connection, connect
from supervisor.cluster.lease import LeaseTiming
from supervisor.cluster.node import Node, NodeConfig
from supervisor.cluster.slots import Every, RunRecord
from supervisor.core.clock import SystemClock

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS cluster_test_ledger (
    scheduler_id text NOT NULL,
    planned_slot timestamptz NOT NULL,
    host text NOT NULL,
    run_id bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class SkewedClock(SystemClock):
    """The system clock, with this host's wall time off by ``skew`` seconds."""

    def __init__(self, skew: float) -> None:
        self._skew = timedelta(seconds=skew)

    def now(self) -> datetime:
        return super().now() + self._skew


class Ledger:
    """The runners' own record of what ran, on a connection of its own."""

    def __init__(self, dsn: str, host: str) -> None:
        self._dsn = dsn
        self._host = host
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def write(self, run: RunRecord) -> None:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = connect(self._dsn, application_name=f"ledger {self._host}")
                self._conn.execute(
                    "INSERT INTO cluster_test_ledger (scheduler_id, planned_slot, host, run_id) "
                    "VALUES (%s, %s, %s, %s)",
                    (run.scheduler_id, run.planned_slot, self._host, run.run_id),
                )
            except CONNECTION_ERRORS:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise


class EventLog:
    def __init__(self, path: str, host: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
        self._host = host
        self._lock = threading.Lock()

    def __call__(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"event": kind, "host": self._host, "at": time.time(), **fields})
        with self._lock:
            self._file.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--ledger-dsn", default=None, help="the ledger's own way in")
    parser.add_argument("--host-id", required=True)
    parser.add_argument("--schedulers", required=True, help="comma-separated IDs")
    parser.add_argument("--events", required=True)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--job-seconds", type=float, default=0.3)
    parser.add_argument("--skew", type=float, default=0.0)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--max-leases", type=int, default=None)
    args = parser.parse_args()

    events = EventLog(args.events, args.host_id)
    ledger_dsn = args.ledger_dsn or args.dsn
    ledger = Ledger(ledger_dsn, args.host_id)
    with psycopg.connect(ledger_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('cluster_test_ledger'))")
        conn.execute(LEDGER_DDL)

    def runner(run: RunRecord, cancel: threading.Event) -> str:
        ledger.write(run)
        return "cancelled" if cancel.wait(args.job_seconds) else "succeeded"

    ttl = timedelta(seconds=args.ttl)
    config = NodeConfig(
        dsn=args.dsn,
        host_id=args.host_id,
        scheduler_ids=tuple(args.schedulers.split(",")),
        plan=Every(period=timedelta(seconds=args.period)),
        timing=LeaseTiming(ttl=ttl, renew_every=ttl / 5, acquire_every=timedelta(seconds=0.2)),
        max_leases=args.max_leases,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    events("booted", pid_skew=args.skew)
    Node(config, runner=runner, clock=SkewedClock(args.skew), events=events).run(stop)
    events("exited")


if __name__ == "__main__":
    main()
