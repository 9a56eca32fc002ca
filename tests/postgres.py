"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` in a temp dir.

The cluster lives in a fresh directory under /var/tmp (systemd tests cannot see /tmp),
listens on a free TCP port on 127.0.0.1 and on a unix socket inside that directory, trusts
local connections, and is stopped and removed again by ``throwaway_postgres``. initdb
refuses to run as root, so as root the server runs as the ``postgres`` OS user (the data
directory is chown'ed to it). ``skip_reason`` says why a machine cannot run one.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.required import skip_or_fail

BIN_DIR = Path(os.environ.get("SST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "sst"


def skip_reason() -> str | None:
    """Why no throwaway cluster can be made here, or None when one can."""
    if not (BIN_DIR / "initdb").exists() or not (BIN_DIR / "pg_ctl").exists():
        return f"needs PostgreSQL server binaries in {BIN_DIR}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs a 'postgres' OS user to run initdb as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "needs psycopg (pip install 'sched-supervisor[postgresql]')"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresCluster:
    """One running throwaway cluster; ``dsn`` reaches its ``postgres`` database over TCP."""

    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def dsn(self, database: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database} connect_timeout=3"
        )

    def _pg_ctl(self, *args: str) -> None:
        _run_as_owner(
            [str(BIN_DIR / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "log"), *args]
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
            "-c max_connections=100 -c log_min_messages=warning"
        )
        self._pg_ctl("start", "-w", "-t", "60", "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self) -> None:
        """Stop (fast: every session is cut) and start again on the same port."""
        self.stop("fast")
        self.start()

    def require_password(self, user: str, password: str) -> None:
        """Make ``user`` a login that must give ``password`` over TCP (the rest stays
        trusted): a rule before the others in pg_hba.conf, then a reload."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
        hba = self.data_dir / "pg_hba.conf"
        rule = f"host all {user} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())
        self._pg_ctl("reload")

    def create_database(self, name: str) -> str:
        """Create an empty database; return its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


def _owner() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run_as_owner(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **_owner())
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}")


@contextmanager
def throwaway_postgres() -> Iterator[PostgresCluster]:
    """Make, start, yield, then stop and remove a cluster (even when the body fails)."""
    reason = skip_reason()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="sst-pg-", dir="/var/tmp"))
    owner = _owner()
    if owner:
        os.chown(root, owner["user"], owner["group"])
    cluster = PostgresCluster(root=root, port=free_port())
    try:
        _run_as_owner(
            [
                str(BIN_DIR / "initdb"),
                "-D",
                str(cluster.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A cluster for the test module (skipped clearly where none can be made)."""
    skip_or_fail("postgresql", skip_reason())
    with throwaway_postgres() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(pg_cluster: PostgresCluster) -> str:
    """A fresh, empty database of its own for each test."""
    return pg_cluster.create_database(f"t{secrets.token_hex(6)}")
