"""A lone manager whose PostgreSQL store stops answering: its manager lock says since when
the store is unreachable (the same words every second of one outage, so the manager logs
it once), the runs in progress go on (their ends are stored later), and once the store
answers again the lock is taken back and the log says after how long. On a throwaway
cluster behind a TCP proxy that refuses and cuts every connection for the outage
(tests/tcp_proxy.py)."""

from __future__ import annotations

import secrets
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from supervisor.core.storeproblems import LockFailureKind
from tests.postgres import PostgresCluster, pg_cluster, skip_reason
from tests.tcp_proxy import FaultyProxy
from tests.test_manager_postgres import ended_runs, started_on
from tests.waiting import wait_for

__all__ = ["pg_cluster"]

if skip_reason() is None:
    from supervisor.store.postgres import PostgresStore


class FakeWall:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 9, 30, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_manager_lock_says_since_when_the_store_is_unreachable(
    pg_cluster: PostgresCluster,
) -> None:
    name = f"o{secrets.token_hex(4)}"
    pg_cluster.create_database(name)
    wall = FakeWall()
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        url = f"postgresql://sst@127.0.0.1:{proxy.port}/{name}?connect_timeout=3"
        with PostgresStore.open(url) as store:
            guard = store.exclusive(now=wall)
            guard.acquire()
            try:
                assert guard.check() is None and guard.unreachable_since is None
                proxy.faults(refuse=1, cut=1)  # the outage: every byte cuts, no new connection
                first = guard.check()
                wall.now += timedelta(seconds=1)
                second = guard.check()
                expected = (
                    f"{store.description} unreachable since 2026-12-04 09:30:05 UTC (cannot"
                    " take the manager lock: connection failed: "
                )
                assert first is not None and first.startswith(expected), first
                assert first.endswith(
                    "); runs in progress go on, new runs cannot start and writes are refused"
                    " until it answers again"
                )
                assert second == first  # one outage, one line in the manager's log
                assert guard.unreachable_since == datetime(2026, 12, 4, 9, 30, 5, tzinfo=UTC)
                # Why, as a value: the store's health reads it, never the line above.
                failure = guard.last_failure
                assert failure is not None and failure.kind is LockFailureKind.CONNECT
                assert failure.at == datetime(2026, 12, 4, 9, 30, 6, tzinfo=UTC)  # the last try
                assert failure.message.startswith("connection failed: ")
                assert f"({failure.reason});" in first
                wall.now += timedelta(seconds=41)
                proxy.faults(refuse=0, cut=0)
                back = wait_for(guard.check, timeout=15, what="the lock taken back")
                assert back == (
                    f"{store.description}: reachable again after 42 s (unreachable since"
                    " 2026-12-04 09:30:05 UTC); took the manager lock again after losing its"
                    " connection"
                )
                assert guard.unreachable_since is None and guard.last_failure is None
                assert guard.check() is None
            finally:
                guard.close()


def test_a_lone_manager_logs_the_outage_once_and_stores_what_ran_meanwhile(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    name = f"m{secrets.token_hex(4)}"
    dsn = pg_cluster.create_database(name)
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        via = f"postgresql://sst@127.0.0.1:{proxy.port}/{name}?connect_timeout=3"
        manager = started_on(tmp_path / "state", via, tmp_path / "manager.log")
        try:
            wait_for(lambda: ended_runs(dsn) >= 2, timeout=30, what="runs before the outage")
            proxy.faults(refuse=1, cut=1)
            said = f"PostgreSQL database sst@127.0.0.1:{proxy.port}/{name} unreachable since "
            wait_for(lambda: said in manager.log(), timeout=20, what="the outage in the log")
            outage_lines = [line for line in manager.log().splitlines() if said in line]
            before = ended_runs(dsn)
            proxy.faults(refuse=0, cut=0)
            wait_for(
                lambda: "reachable again after" in manager.log(),
                timeout=30,
                what="the store back in the log",
            )
            # Runs went on meanwhile: their ends were kept and are stored now.
            wait_for(lambda: ended_runs(dsn) >= before + 2, timeout=30, what="runs after")
            assert manager.process.poll() is None
            print("\n".join(line for line in manager.log().splitlines() if name in line))
            assert len(outage_lines) <= 2, outage_lines  # once (again if the reason changed)
            manager.process.send_signal(signal.SIGTERM)
            assert manager.process.wait(timeout=30) == 0, manager.log()
            assert "Traceback" not in manager.log()
        finally:
            manager.close()
