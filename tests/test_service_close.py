"""A real manager's ``Service.close``: the audit entry kept through an outage is written
by the shutdown's attempt once the store takes writes again (on a real ``state.db`` on a
small file system filled and freed), and a control socket or Admin Center whose serving
thread hangs does not hold the exit past the shutdown's deadline (each is said)."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.access import with_role
from supervisor.core.errors import StoreError
from supervisor.service import control
from supervisor.service.control import SOCKET_NAME
from supervisor.service.manager_mode import SHUTDOWN_MARGIN_SECONDS, RunOptions, Service
from supervisor.store.protocols import Store
from supervisor.store.sqlite import SqliteStore, state_db_path
from supervisor.usecases.health import StoreHealth
from supervisor.usecases.schedulers import UseCases
from supervisor.web.httpserver import HttpServer
from tests.fullfs import SmallFilesystem, small_filesystem
from tests.waiting import wait_for

__all__ = ["small_filesystem"]

APP = "tests.apps.cli_jobs:cfg"  # manual schedulers and a nightly cron: no runs
GRACE_SECONDS = 0.5
# What the tests allow past the deadline: a loaded machine's share. Before the hung
# threads' joins were under the deadline, each held the exit for 5 s.
LATE_SECONDS = 1.0


def options(state_dir: Path, *, admin: tuple[str, int] | None = None) -> RunOptions:
    return RunOptions(
        app_spec=APP,
        state_dir=state_dir,
        admin=admin,
        fork_server=False,
        grace_seconds=GRACE_SECONDS,
    )


def test_a_kept_entry_is_written_at_shutdown_once_the_store_takes_writes_again(
    small_filesystem: SmallFilesystem, caplog: pytest.LogCaptureFixture
) -> None:
    state = small_filesystem.root / "state"
    said = io.StringIO()
    service = Service(options(state), log=said)
    # The outage cannot end by itself during the test (its writes would have to hold for
    # an hour), so no recovery writes the entry: only the shutdown's attempt can.
    service.store_health = StoreHealth(settle_seconds=3600)
    service.start()
    try:
        assert service.store is not None and service.use_cases is not None
        small_filesystem.fill()
        with pytest.raises(StoreError, match="full"):
            service.store.set_meta("big", "x" * 50_000)
        note = service.use_cases.stop(with_role("alice", "operator"), "c.hang", reason="disk full")
        assert note is not None and "kept in memory" in note
        small_filesystem.free()
        assert service.use_cases.pending_audit == 1
        assert service.store_health.outage() is not None
    finally:
        with caplog.at_level(logging.WARNING, logger="supervisor.audit"):
            service.close()
    log = said.getvalue()
    assert "could not be written" not in log and "audit entry not written" not in log, log
    written = [r for r in caplog.records if "written to the store now" in r.getMessage()]
    assert [r.threadName for r in written] == ["audit-at-exit"], written
    with SqliteStore.open(state_db_path(state)) as store:
        stored = [(e.action, e.actor, e.scheduler_id, e.detail) for _, e in store.audit()]
    assert ("stop", "alice", "c.hang", "disk full") in stored, stored


def no_shutdown_steps_left() -> bool:
    return not any(thread.name == "shutdown-step" for thread in threading.enumerate())


def closed_within_the_deadline(service: Service, said: io.StringIO, what: str) -> None:
    """Close ``service``: within the grace plus the margin (and ``LATE_SECONDS``), saying
    that ``what`` did not end by the deadline."""
    began = time.monotonic()
    service.close()
    took = time.monotonic() - began
    bound = GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS + LATE_SECONDS
    assert took < bound, f"close took {took:.2f} s (at most {bound:g} s expected)"
    assert f"warning: {what} did not end by the shutdown's deadline" in said.getvalue()


def test_a_hung_control_socket_does_not_hold_the_exit_past_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hung, release = threading.Event(), threading.Event()
    peer_uid: Callable[[socket.socket], int] = control._peer_uid

    def hanging_peer_uid(connection: socket.socket) -> int:
        # On the serving thread: the next accepted connection holds it until released.
        hung.set()
        release.wait(30)
        return peer_uid(connection)

    monkeypatch.setattr(control, "_peer_uid", hanging_peer_uid)
    said = io.StringIO()
    service = Service(options(tmp_path / "state"), log=said)
    service.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(service.state_dir / SOCKET_NAME))
        assert hung.wait(10), "the serving thread never took the connection"
        closed_within_the_deadline(service, said, "the control socket")
    finally:
        release.set()
        client.close()
        service.close()
    wait_for(no_shutdown_steps_left, timeout=30, what="the control socket's close to end")


class HangingClock:
    """A monotonic clock that, once ``hang`` is set, holds whoever reads it until released:
    the HTTP server's reader thread reads it each round."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.hung = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> float:
        if self.hang.is_set() and not self.release.is_set():
            self.hung.set()
            self.release.wait(30)
        return time.monotonic()


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def test_a_hung_admin_center_does_not_hold_the_exit_past_the_deadline(tmp_path: Path) -> None:
    clock = HangingClock()
    servers: list[HttpServer] = []

    def admin(use_cases: UseCases, store: Store, run_options: RunOptions) -> HttpServer:
        server = HttpServer(hello, host="127.0.0.1", port=0, monotonic=clock).start()
        servers.append(server)
        return server

    said = io.StringIO()
    service = Service(
        options(tmp_path / "state", admin=("127.0.0.1", 0)), log=said, admin_factory=admin
    )
    service.start()
    try:
        assert len(servers) == 1
        clock.hang.set()
        assert clock.hung.wait(10), "the serving thread never read the clock"
        closed_within_the_deadline(service, said, "the Admin Center")
    finally:
        clock.release.set()
        service.close()
    wait_for(no_shutdown_steps_left, timeout=30, what="the Admin Center's close to end")
