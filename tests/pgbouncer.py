"""A throwaway PgBouncer in front of a throwaway PostgreSQL cluster (tests/postgres.py).

``throwaway_pgbouncer`` writes a configuration into a fresh directory under /var/tmp,
starts ``pgbouncer`` on a free port of 127.0.0.1 (trusting user ``sst``, forwarding every
database to the cluster), waits until it accepts connections, and stops it and removes the
directory at the end. PgBouncer refuses to run as root: as root it runs as the
``postgres`` OS user, as the cluster does. ``skip_reason`` says why a machine cannot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.postgres import SUPERUSER, PostgresCluster, _owner, free_port
from tests.waiting import end_process, wait_for

PROGRAM = os.environ.get("SST_PGBOUNCER", "/usr/sbin/pgbouncer")


def skip_reason() -> str | None:
    """Why no PgBouncer can be started here, or None when one can."""
    if shutil.which(PROGRAM) is None:
        return f"needs PgBouncer at {PROGRAM} (apt-get install pgbouncer)"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Bouncer:
    root: Path
    port: int

    def url(self, database: str, query: str = "") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}?connect_timeout=3{query}"

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def throwaway_pgbouncer(
    cluster: PostgresCluster, *, pool_mode: str = "session", ignore_startup_parameters: str = ""
) -> Iterator[Bouncer]:
    """Start a PgBouncer in front of ``cluster``; stop and remove it at the end."""
    root = Path(tempfile.mkdtemp(prefix="sst-pgb-", dir="/var/tmp"))
    owner = _owner()
    bouncer = Bouncer(root=root, port=free_port())
    try:
        (root / "users.txt").write_text(f'"{SUPERUSER}" ""\n')
        (root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={cluster.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {bouncer.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {root / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            f"ignore_startup_parameters = {ignore_startup_parameters}\n"
            f"logfile = {root / 'pgbouncer.log'}\n"
            f"pidfile = {root / 'pgbouncer.pid'}\n"
        )
        if owner:
            for path in (root, *root.iterdir()):
                os.chown(path, owner["user"], owner["group"])
        process = subprocess.Popen(
            [PROGRAM, str(root / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **owner,
        )
        try:
            wait_for(
                lambda: process.poll() is not None or _accepts(bouncer.port),
                timeout=30,
                what="pgbouncer to listen",
            )
            if process.poll() is not None:
                _, err = process.communicate()
                raise RuntimeError(f"pgbouncer exited: {err.decode(errors='replace')}")
            yield bouncer
        finally:
            end_process(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)
