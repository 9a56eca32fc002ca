"""The Admin Center served over real sockets: threaded (an open event stream holds nothing
up), closed promptly, wired into ``supervisor run`` through ``start_admin``."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.cfgscheduler import enable
from supervisor.core.app import load_app
from supervisor.core.clock import FakeClock
from supervisor.service.manager_mode import RunOptions, Service
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.schedulers import UseCases
from supervisor.web.server import AdminServer, start_admin
from tests.http_session import HttpSession
from tests.test_web_fakes import PASSWORD, START, FakeBackend, MemoryAudit, make_world
from tests.test_web_routes import FAST
from tests.waiting import wait_for


@pytest.fixture
def served() -> Iterator[tuple[AdminServer, Any]]:
    use_cases, backend, _audit, users, _clock = make_world()
    server = AdminServer(
        use_cases, users=users, host="127.0.0.1", port=0, config=FAST, sleep=lambda _: None
    ).start()
    try:
        yield server, backend
    finally:
        server.close()


def test_an_open_event_stream_holds_no_other_request(served: Any) -> None:
    server, backend = served
    client = HttpSession(server.host, server.port)
    client.login("ada", PASSWORD)
    backend.execute("jobs.repeat", actor="ada")
    connection, stream = client.open_stream("/events/schedulers/jobs.repeat/logs?after=0")
    try:
        assert stream.status == 200
        assert stream.readline().startswith(b"retry:")
        started = time.monotonic()
        status, _, page = client.request("GET", "/schedulers/jobs.repeat")
        assert status == 200 and "Fail with random" in page
        assert time.monotonic() - started < 1.0
        backend.log("jobs.repeat", "over the wire")
        line = b""
        deadline = time.monotonic() + 5
        while b"over the wire" not in line and time.monotonic() < deadline:
            line = stream.readline()
        assert b"over the wire" in line
    finally:
        connection.close()


def test_close_ends_open_streams_and_frees_the_port(served: Any) -> None:
    server, _backend = served
    client = HttpSession(server.host, server.port)
    client.login("ada", PASSWORD)
    connections = [client.open_stream("/events/status")[0] for _ in range(3)]
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 3.0
    for connection in connections:
        connection.close()
    again = AdminServer(
        make_world()[0], users=make_world()[3], host="127.0.0.1", port=server.port
    ).start()
    again.close()


def test_start_admin_creates_the_bootstrap_admin_and_serves(tmp_path: Path) -> None:
    app = load_app("tests.apps.manager_jobs:cfg")
    schedulers = enable(app)
    store = SqliteStore.open(tmp_path / "state.db")
    out = io.StringIO()
    options = RunOptions(
        app_spec="tests.apps.manager_jobs:cfg", state_dir=tmp_path, admin=("127.0.0.1", 0)
    )
    backend = FakeBackend(schedulers.registry, FakeClock(START))
    use_cases = UseCases(schedulers.registry, backend=backend, audit=MemoryAudit())
    server = start_admin(use_cases, store, options, out=out)
    try:
        match = re.search(r"one-time password: (\S+)", out.getvalue())
        assert match is not None, out.getvalue()
        assert f"Admin Center: {server.url}/" in out.getvalue()
        client = HttpSession(server.host, server.port)
        client.login("admin", match.group(1))
        status, _, page = client.request("GET", "/")
        assert status == 200 and "m.oneshot" in page
    finally:
        server.close()
        store.close()


@pytest.fixture
def service(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> Iterator[tuple[Service, Any]]:
    holder: list[AdminServer] = []
    out = io.StringIO()

    def factory(schedulers: Any, store: Any, options: RunOptions) -> AdminServer:
        server = start_admin(schedulers, store, options, out=out)
        holder.append(server)
        return server

    options = RunOptions(
        app_spec="tests.apps.manager_jobs:cfg",
        state_dir=tmp_path / "state",
        admin=("127.0.0.1", 0),
        grace_seconds=0.5,
    )
    running = Service(options, log=io.StringIO(), admin_factory=factory)
    running.start()
    try:
        password = re.search(r"one-time password: (\S+)", out.getvalue())
        assert password is not None
        yield running, (holder[0], password.group(1))
    finally:
        running.close()


def test_the_admin_center_drives_the_real_manager(service: Any) -> None:
    _running, (server, password) = service
    client = HttpSession(server.host, server.port)
    client.login("admin", password)
    status, _, overview = client.request("GET", "/")
    assert status == 200 and "One shot" in overview and "m.hang" in overview
    token = client.csrf("/schedulers/m.hang")
    status, _, _ = client.request("POST", "/schedulers/m.hang/execute", {"csrf": token})
    assert status == 303
    wait_for(
        lambda: "hanging" in client.request("GET", "/schedulers/m.hang/logs")[2],
        timeout=20,
        what="the run's first log line",
    )
    status, _, _ = client.request("POST", "/schedulers/m.hang/stop", {"csrf": token})
    assert status == 303
    wait_for(
        lambda: "outcome-cancelled" in client.request("GET", "/schedulers/m.hang/history")[2],
        timeout=20,
        what="the cancelled run",
    )
    _, _, audit = client.request("GET", "/audit")
    assert "execute" in audit and "stop" in audit and "admin" in audit
    assert threading.active_count() < 100
