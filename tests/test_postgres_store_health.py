"""A lone manager on a PostgreSQL store that stops answering: ``supervisor status`` (text
and --json) and ``supervisor list`` say since when and why, with the password hidden, and
say nothing of it once the store answers again. A real manager on a throwaway cluster,
reached through a TCP proxy that refuses and cuts every connection for the outage
(tests/tcp_proxy.py); the store's role must give a password."""

from __future__ import annotations

import json
import re
import secrets
import signal
from pathlib import Path

import psycopg
from psycopg import sql

from tests.manager_process import cli
from tests.postgres import PostgresCluster, pg_cluster
from tests.tcp_proxy import FaultyProxy
from tests.test_manager_postgres import started_on
from tests.waiting import wait_for

__all__ = ["pg_cluster"]

PASSWORD = f"pw-{secrets.token_hex(8)}"
LINE = re.compile(
    r"^store:\s+unreachable since \d\d:\d\d:\d\d UTC \((\d+) s\): cannot take the manager"
    r" lock: connection failed: .+$",
    re.MULTILINE,
)


def store_lines(state: Path, *args: str) -> list[str]:
    return [m.group(0) for m in LINE.finditer(cli(state, *args))]


def test_status_and_list_tell_an_unreachable_store_until_it_answers(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    name = f"h{secrets.token_hex(4)}"
    role = f"r{secrets.token_hex(4)}"
    pg_cluster.require_password(role, PASSWORD)
    pg_cluster.create_database(name)
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(name), sql.Identifier(role)
            )
        )
    state = tmp_path / "state"
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        url = f"postgresql://{role}:{PASSWORD}@127.0.0.1:{proxy.port}/{name}?connect_timeout=3"
        manager = started_on(state, url, tmp_path / "manager.log")
        try:
            assert store_lines(state, "status", "m.repeat") == []
            assert "store" not in json.loads(cli(state, "status", "m.repeat", "--json"))
            proxy.faults(refuse=1, cut=1)  # the outage: every byte cuts, no new connection
            shown = wait_for(
                lambda: store_lines(state, "status", "m.repeat"),
                timeout=30,
                what="the outage in supervisor status",
            )
            assert len(shown) == 1 and PASSWORD not in shown[0], shown
            store = json.loads(cli(state, "status", "m.repeat", "--json"))["store"]
            assert store["state"] == "unreachable" and store["seconds"] >= 0
            assert store["text"].startswith("unreachable since ") and PASSWORD not in store["text"]
            assert store["reason"].startswith("cannot take the manager lock: connection failed")
            listed = json.loads(cli(state, "list", "--json"))
            assert listed and all(s["store"]["since"] == store["since"] for s in listed)
            list_lines = store_lines(state, "list")
            assert len(list_lines) == 1 and PASSWORD not in cli(state, "list")
            # The seconds grow while it lasts (the manager's clock, read with each answer).
            first = int(LINE.search(list_lines[0]).group(1))  # type: ignore[union-attr]
            wait_for(
                lambda: any(int(m.group(1)) > first for m in LINE.finditer(cli(state, "list"))),
                timeout=15,
                what="the outage's seconds moving",
            )
            proxy.faults(refuse=0, cut=0)
            wait_for(
                lambda: not store_lines(state, "status", "m.repeat"),
                timeout=30,
                what="the store line gone from supervisor status",
            )
            assert "store" not in json.loads(cli(state, "status", "m.repeat", "--json"))
            assert store_lines(state, "list") == []
            assert "reachable again after" in manager.log()
            assert manager.process.poll() is None
            manager.process.send_signal(signal.SIGTERM)
            assert manager.process.wait(timeout=30) == 0, manager.log()
        finally:
            manager.close()
