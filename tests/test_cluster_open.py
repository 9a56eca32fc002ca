"""``--cluster`` on a database it cannot use: a clear ``StoreError`` at once, no traceback,
no cluster tables created in another application's database."""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest

from supervisor.cluster.member import Member, MemberConfig
from supervisor.core.clock import SystemClock
from supervisor.core.errors import StoreError
from tests.postgres import PostgresCluster, pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn"]


def joined(dsn: str) -> Member:
    config = MemberConfig(dsn=dsn, host_id="h", scheduler_ids=("s",))
    return Member(config, clock=SystemClock(), report=lambda _: None)


def tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


def test_a_foreign_apps_database_is_refused_and_left_alone(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
    with pytest.raises(StoreError, match=r"tables of another application .*orders"):
        joined(pg_dsn).open()
    assert tables(pg_dsn) == ["orders"]


def test_a_user_without_privileges_gets_a_clear_error_at_once(
    pg_cluster: PostgresCluster, pg_dsn: str
) -> None:
    name = f"u{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD 's3cret-pw'")
        conn.execute(f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{name}"')
    dsn = pg_dsn.replace("user=", "password=s3cret-pw user=").replace(
        f"user={pg_dsn.split('user=')[1].split()[0]}", f"user={name}"
    )
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        joined(dsn).open()
    message = str(caught.value)
    assert f"{name}@127.0.0.1:{pg_cluster.port}/" in message
    assert "permission denied" in message
    assert "s3cret-pw" not in message
    assert time.monotonic() - started < 1.0  # not retried


def test_a_wrong_database_name_is_not_retried(pg_cluster: PostgresCluster) -> None:
    dsn = pg_cluster.dsn("no_such_db")
    started = time.monotonic()
    with pytest.raises(StoreError, match="does not exist"):
        joined(dsn).open()
    assert time.monotonic() - started < 1.0
