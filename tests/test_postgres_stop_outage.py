"""Stop on a lone manager whose PostgreSQL store does not answer: the stop is done (the
operator is told its audit entry waits), and once the server answers again the entry is
in the store's audit trail. A real manager on a throwaway cluster, reached through a TCP
proxy that refuses and cuts every connection for the outage (tests/tcp_proxy.py)."""

from __future__ import annotations

import io
import json
import secrets
import signal
from pathlib import Path

from supervisor.core.access import with_role
from supervisor.service.manager_mode import RunOptions, Service
from tests.manager_process import cli
from tests.postgres import PostgresCluster, pg_cluster
from tests.tcp_proxy import FaultyProxy
from tests.test_manager_postgres import ended_runs, rows, started_on
from tests.waiting import wait_for

__all__ = ["pg_cluster"]

APP = "tests.apps.manager_jobs:cfg"
STOPS = "SELECT actor, detail FROM sst_audit WHERE action = 'stop' AND scheduler_id = 'm.repeat'"


def test_a_stop_while_the_store_is_unreachable_is_done_and_audited_once_it_answers(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    name = f"s{secrets.token_hex(4)}"
    dsn = pg_cluster.create_database(name)
    state = tmp_path / "state"
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        via = f"postgresql://sst@127.0.0.1:{proxy.port}/{name}?connect_timeout=3"
        manager = started_on(state, via, tmp_path / "manager.log")
        try:
            wait_for(lambda: ended_runs(dsn) >= 1, timeout=30, what="a run before the outage")
            proxy.faults(refuse=1, cut=1)
            wait_for(lambda: "unreachable since" in manager.log(), timeout=20, what="the outage")
            said = cli(state, "stop", "m.repeat", "--reason", "db down")
            assert said.startswith("stopped m.repeat: db down\n"), said
            assert "warning: the audit entry could not be written" in said, said
            status = json.loads(cli(state, "status", "m.repeat", "--json"))
            assert status["state"] == "stopped", status
            assert rows(dsn, STOPS) == []
            proxy.faults(refuse=0, cut=0)
            stored = wait_for(
                lambda: rows(dsn, STOPS), timeout=30, what="the kept entry in the store"
            )
            assert len(stored) == 1 and stored[0][1] == "db down", stored
            assert "audit entry kept in memory until the store takes writes again" in (
                manager.log()
            )
            manager.process.send_signal(signal.SIGTERM)
            assert manager.process.wait(timeout=30) == 0, manager.log()
            assert "Traceback" not in manager.log()
        finally:
            manager.close()


def test_a_stop_entry_kept_without_a_recorded_outage_is_written_by_the_next_check(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    # Regression: PostgreSQL's writes are not watched, so a write that failed in a blip
    # the manager lock never saw as an outage was kept until some later action (and lost
    # at shutdown): no outage ended to write it.
    name = f"s{secrets.token_hex(4)}"
    dsn = pg_cluster.create_database(name)
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        via = f"postgresql://sst@127.0.0.1:{proxy.port}/{name}?connect_timeout=3"
        options = RunOptions(app_spec=APP, state_dir=tmp_path / "state", admin=None, store=via)
        service = Service(options, log=io.StringIO())
        try:
            service.start()
            assert service.use_cases is not None
            proxy.faults(refuse=1, cut=1)  # a blip: between two checks of the lock
            note = service.use_cases.stop(with_role("alice", "operator"), "m.repeat")
            assert note is not None and "kept in memory" in note
            proxy.faults(refuse=0, cut=0)
            assert service.store_health.outage() is None  # none was recorded
            wait_for(
                lambda: (service.check_state_dir(), rows(dsn, STOPS))[1],
                timeout=30,
                what="the kept entry written by the manager's periodic check",
            )
            assert service.use_cases.pending_audit == 0
        finally:
            service.close()
