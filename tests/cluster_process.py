"""A manager process sharing one PostgreSQL database as its cluster and its store, named
by default unless told (``tests.cluster_managers.ManagerHost`` always names its hosts).

Used by tests/test_cluster_names.py and tests/test_cluster_lease.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.cluster_managers import APP, ROOT
from tests.commands import supervisor
from tests.test_cluster_store import as_url
from tests.waiting import wait_for


class Host:
    """One ``supervisor run`` sharing ``dsn`` as cluster and store; ``name`` None: the
    default name."""

    def __init__(
        self, dsn: str, state: Path, *, name: str | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.log_path = state.with_suffix(".log")
        self.starts = self.log().count("supervisor: running ") if self.log_path.exists() else 0
        argv = ["run", "--app", APP, "--state-dir", str(state), "--grace", "500ms"]
        argv += ["--cluster", dsn, "--store", as_url(dsn), "--no-admin"]
        argv += [] if name is None else ["--host-name", name]
        argv += extra
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CLUSTER_LEDGER_DSN": dsn,
            "CLUSTER_HOST": state.name,
            "CLUSTER_JOB_SECONDS": "60",
        }
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                supervisor(*argv), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def joined_as(self) -> str:
        """The name this host said it joins as (the latest start's)."""
        found = wait_for(
            lambda: [ln for ln in self.log().splitlines() if "cluster: joining as " in ln],
            timeout=30,
            what="the joining line",
        )
        return found[-1].split("cluster: joining as ", 1)[1].split(" (lease ttl ")[0]

    def ready(self) -> Host:
        """Wait until this start serves (a socket left by a killed one does not count)."""
        wait_for(
            lambda: (
                self.log().count("supervisor: running ") > self.starts
                or self.process.poll() is not None
            ),
            timeout=30,
            what="the manager",
        )
        assert self.process.poll() is None, self.log()
        return self

    def reap(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
