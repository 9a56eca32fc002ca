"""The Admin Center served over real sockets: threaded (an open event stream holds nothing
up), closed promptly, wired into ``supervisor run`` through ``start_admin``; holding
against slow and partial connections, parallel password guessing, oversized requests,
look-alike proxy headers, version banners and non-loopback addresses."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import user
from supervisor.cfgscheduler import enable
from supervisor.core.app import load_app
from supervisor.core.clock import FakeClock
from supervisor.core.errors import DefinitionError
from supervisor.core.records import Outcome, SchedulerStatus
from supervisor.service.manager_mode import RunOptions, Service
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.schedulers import UseCases
from supervisor.web.httpserver import HttpServer, ServerLimits
from supervisor.web.server import AdminServer, check_admin_address, start_admin
from tests.commands import ROOT, supervisor
from tests.http_session import HttpSession, bootstrap_password
from tests.test_web_fakes import FAST, PASSWORD, START, FakeBackend, MemoryAudit, make_world
from tests.waiting import wait_for

NEW_PASSWORD = "a new and long passphrase"


def serve(**options: Any) -> tuple[AdminServer, Any, Any]:
    use_cases, backend, _audit, users, _clock = make_world()
    config = options.pop("config", FAST)
    server = AdminServer(
        use_cases,
        users=users,
        host="127.0.0.1",
        port=0,
        config=config,
        sleep=lambda _: None,
        **options,
    ).start()
    return server, backend, users


@pytest.fixture
def served() -> Iterator[tuple[AdminServer, Any]]:
    server, backend, _users = serve()
    try:
        yield server, backend
    finally:
        server.close()


def raw(server: AdminServer, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection; the server's answer: until it closes, or its
    first response's declared length when it keeps the connection."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> bytes:
    """One response: to its ``Content-Length`` if it keeps the connection, else to the end."""
    answer = b""
    while True:
        end = answer.find(b"\r\n\r\n")
        if end >= 0:
            head = answer[:end].lower()
            length = re.search(rb"\r\ncontent-length: *(\d+)", head)
            kept = b"\r\nconnection: close" not in head and length is not None
            if kept and length is not None and len(answer) >= end + 4 + int(length.group(1)):
                return answer
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk


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
    world = make_world()
    again = AdminServer(world[0], users=world[3], host="127.0.0.1", port=server.port).start()
    again.close()


# -- slow and partial connections (issue 13.1) -----------------------------------------------

PARTIALS = [
    b"",  # connects and says nothing
    b"GET /schedulers/jobs.rep",  # half a request line
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # half the headers
    (  # a declared body never sent
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\ncsrf="
    ),
]


def test_200_partial_connections_do_not_starve_a_logged_in_client() -> None:
    """Regression (issue 13.1): 200 partial connections held every slot, forever."""
    limits = ServerLimits(head_seconds=3.0, body_seconds=3.0)
    server, _backend, _users = serve(limits=limits)
    partials: list[socket.socket] = []
    try:
        client = HttpSession(server.host, server.port, timeout=5)
        client.login("vera", PASSWORD)
        for index in range(200):
            sock = socket.create_connection((server.host, server.port), timeout=10)
            sock.sendall(PARTIALS[index % len(PARTIALS)])
            partials.append(sock)
        wait_for(lambda: server.pending >= 200, timeout=5, what="200 held connections")
        latencies = []
        while server.pending >= 200:  # every partial connection is still open
            started = time.monotonic()
            status, _, page = client.request("GET", "/")
            latencies.append(time.monotonic() - started)
            assert status == 200 and "Hello World Job" in page
        assert len(latencies) >= 5, latencies
        worst = max(latencies)
        print(
            f"\n{len(latencies)} pages during the attack: median"
            f" {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms, worst {worst * 1000:.1f} ms"
        )
        assert worst <= 1.0
        # and the server ends them itself, at their deadline (408)
        answers = []
        for sock in partials:
            data = sock.recv(4096)
            answers.append(data.split(b"\r\n", 1)[0])
        assert set(answers) <= {b"HTTP/1.1 408 Request Timeout", b""}, set(answers)
        assert answers.count(b"HTTP/1.1 408 Request Timeout") >= 190
        wait_for(lambda: server.pending == 0, timeout=5, what="no held connection left")
    finally:
        for sock in partials:
            sock.close()
        server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_dripping_bytes_does_not_extend_the_deadline() -> None:
    clock = Clock()
    answered = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        answered.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    limits = ServerLimits(head_seconds=5.0)
    server = HttpServer(app, host="127.0.0.1", port=0, limits=limits, monotonic=clock).start()
    try:
        with socket.create_connection(server.server_address[:2], timeout=10) as sock:
            sock.sendall(b"GET / HT")
            wait_for(lambda: server.pending == 1, timeout=5, what="the connection")
            clock.now += 4.0
            sock.sendall(b"TP/1.1\r\nHost: x\r\n")  # still sending, byte by byte
            clock.now += 1.5
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert not answered.is_set()
    finally:
        server.close()


def test_the_listen_backlog_and_the_thread_cap() -> None:
    limits = ServerLimits()
    assert limits.backlog >= 128 and 64 < limits.max_workers <= 256
    release = threading.Event()
    running = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        running.append(1)
        release.wait(10)
        start_response("200 OK", [])
        return [b"ok"]

    server = HttpServer(app, host="127.0.0.1", port=0, limits=ServerLimits(max_workers=2)).start()
    busy: list[socket.socket] = []
    try:
        for _ in range(2):
            sock = socket.create_connection(server.server_address[:2], timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append(sock)
        wait_for(lambda: len(running) == 2, timeout=5, what="two busy workers")
        with socket.create_connection(server.server_address[:2], timeout=10) as third:
            third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert third.recv(4096).startswith(b"HTTP/1.1 503 ")
        release.set()
        assert busy[0].recv(4096).startswith(b"HTTP/1.1 200 OK")
    finally:
        release.set()
        for sock in busy:
            sock.close()
        server.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", b"413"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 120 + b"\r\n", b"431"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
        (b"GET / HTTP/2.0\r\n\r\n", b"505"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n", b"400"),
    ],
)
def test_oversized_or_malformed_requests_are_refused(
    served: Any, request_bytes: bytes, status: bytes
) -> None:
    server, _ = served
    answer = raw(server, request_bytes)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert b"\r\nServer:" not in answer


def test_paging_parameters_are_bounded(served: Any) -> None:
    server, _ = served
    client = HttpSession(server.host, server.port)
    client.login("ada", PASSWORD)
    assert client.request("GET", "/audit?before=" + "9" * 40)[0] == 400
    assert client.request("GET", "/schedulers/jobs.repeat/logs?run=" + "r" * 300)[0] == 400
    assert client.request("GET", "/?x=" + "a" * 5000)[0] == 414


# -- no banner (issue 13.8) ---------------------------------------------------------------


def test_no_response_names_a_server_or_a_version(served: Any) -> None:
    """Regression (issue 13.8): ``Server: WSGIServer/0.2 CPython/3.11.7`` on every reply."""
    server, _ = served
    requests = [
        b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /static/admin.css HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /no/such/page HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /login HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
        b"HEAD /login HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for request_bytes in requests:
        answer = raw(server, request_bytes)
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert answer.startswith(b"HTTP/1.1 "), answer[:100]
        assert b"\r\nserver:" not in head and b"python" not in head and b"wsgi" not in head


# -- parallel guessing (issue 13.3) ---------------------------------------------------------


def test_40_parallel_guesses_check_at_most_the_free_attempts() -> None:
    """Regression (issue 13.3): 40 parallel tries checked 10 passwords instead of 3."""
    server, _backend, users = serve()
    try:
        clients = [HttpSession(server.host, server.port) for _ in range(40)]
        tokens = [client.csrf("/login") for client in clients]
        barrier = threading.Barrier(40)
        statuses: list[int] = []
        lock = threading.Lock()

        def guess(client: HttpSession, token: str) -> None:
            barrier.wait(10)
            status, _, _ = client.request(
                "POST", "/login", {"csrf": token, "name": "ada", "password": "guess"}
            )
            with lock:
                statuses.append(status)

        threads = [
            threading.Thread(target=guess, args=pair) for pair in zip(clients, tokens, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        checked = [e for e in users.entries if e.detail and e.detail.startswith("wrong password")]
        assert len(statuses) == 40
        assert statuses.count(401) == len(checked) <= 3, sorted(statuses)
        assert statuses.count(429) == 40 - len(checked)
        other = HttpSession(server.host, server.port)
        other.login("otto", PASSWORD)  # same address, a user who did not fail: works
        assert other.request("GET", "/")[0] == 200
    finally:
        server.close()


# -- look-alike proxy headers over the wire (issue 13.4) --------------------------------------


def test_an_underscore_proxy_header_over_the_wire_is_refused() -> None:
    server, _backend, _users = serve(config=replace(FAST, proxy_user_header="X-Remote-User"))
    try:
        good = raw(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Remote-User: vera\r\n\r\n")
        assert good.startswith(b"HTTP/1.1 200 ") and b"vera" in good
        for variant in (b"X_Remote_User", b"x_remote_user"):
            sneaky = raw(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + variant + b": ada\r\n\r\n")
            assert sneaky.startswith(b"HTTP/1.1 400 "), sneaky[:200]
            both = raw(
                server,
                b"GET / HTTP/1.1\r\nHost: x\r\nX-Remote-User: vera\r\n"
                + variant
                + b": ada\r\n\r\n",
            )
            assert both.startswith(b"HTTP/1.1 400 ")
    finally:
        server.close()


# -- wired into supervisor run --------------------------------------------------------------


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
        password = bootstrap_password(tmp_path)
        assert password not in out.getvalue()  # not a terminal: only the file's path
        assert str(tmp_path / "admin-password") in out.getvalue()
        assert f"Admin Center: {server.url}/" in out.getvalue()
        client = HttpSession(server.host, server.port)
        client.first_login("admin", password, NEW_PASSWORD)
        assert not (tmp_path / "admin-password").exists()
        status, _, page = client.request("GET", "/")
        assert status == 200 and "m.oneshot" in page
    finally:
        server.close()
        store.close()


def test_a_non_loopback_address_needs_allow_remote(tmp_path: Path) -> None:
    """Issue 13.10: 0.0.0.0 served plain HTTP to the network without a word."""
    assert check_admin_address("127.0.0.1", allow_remote=False) is None
    assert check_admin_address("::1", allow_remote=False) is None
    for host in ("0.0.0.0", "::", "192.0.2.1", "admin.example"):
        with pytest.raises(DefinitionError, match="--allow-remote"):
            check_admin_address(host, allow_remote=False)
        warning = check_admin_address(host, allow_remote=True)
        assert warning is not None and "no TLS" in warning
    refused = subprocess.run(
        supervisor(
            "run",
            "--app",
            "tests.apps.manager_jobs:cfg",
            "--state-dir",
            str(tmp_path / "state"),
            "--admin",
            "0.0.0.0:18999",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "--allow-remote" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_allow_remote_serves_and_warns(tmp_path: Path) -> None:
    app = load_app("tests.apps.manager_jobs:cfg")
    schedulers = enable(app)
    store = SqliteStore.open(tmp_path / "state.db")
    out = io.StringIO()
    options = RunOptions(
        app_spec="tests.apps.manager_jobs:cfg", state_dir=tmp_path, admin=("0.0.0.0", 0)
    )
    use_cases = UseCases(
        schedulers.registry,
        backend=FakeBackend(schedulers.registry, FakeClock(START)),
        audit=MemoryAudit(),
    )
    server = start_admin(use_cases, store, options, out=out, allow_remote=True)
    try:
        assert "WARNING" in out.getvalue() and "no TLS" in out.getvalue()
        assert raw(server, b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        server.close()
        store.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, Any]]:
    holder: list[AdminServer] = []
    out = io.StringIO()

    def factory(use_cases: Any, store: Any, options: RunOptions) -> AdminServer:
        server = start_admin(use_cases, store, options, out=out)
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
        yield running, (holder[0], bootstrap_password(tmp_path / "state"))
    finally:
        running.close()


def test_the_admin_center_drives_the_real_manager(service: Any) -> None:
    _running, (server, password) = service
    client = HttpSession(server.host, server.port)
    client.first_login("admin", password, NEW_PASSWORD)
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
    form = {"csrf": token, "confirmed": "1"}  # Stop asks first; this is the answer
    status, _, _ = client.request("POST", "/schedulers/m.hang/stop", form)
    assert status == 303
    wait_for(
        lambda: "outcome-cancelled" in client.request("GET", "/schedulers/m.hang/history")[2],
        timeout=20,
        what="the cancelled run",
    )
    _, _, audit = client.request("GET", "/audit")
    assert "execute" in audit and "stop" in audit and "admin" in audit
    assert "change password" in audit and "login" in audit
    assert threading.active_count() < 100


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda line, rest: line + b"\r\n" + rest + b"\r\n\r\n",
            st.sampled_from([b"GET / HTTP/1.1", b"POST /login HTTP/1.1", b"GET /\xff HTTP/1.1"]),
            st.binary(max_size=200),
        ),
    )
)
def test_garbage_over_the_wire_never_breaks_the_server(served: Any, garbage: bytes) -> None:
    server, _ = served
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    if answer:
        status = answer.split(b" ", 2)[1]
        assert (status.isdigit() and not status.startswith(b"5")) or status == b"505", answer[:200]
        assert b"Traceback" not in answer
    assert raw(server, b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def _card(page: str, scheduler_id: str) -> str:
    """The overview's card of ``scheduler_id`` (its opening tag and body)."""
    start = page.index(f'<article class="card" data-id="{scheduler_id}"')
    return page[start : page.index("</article>", start)]


def test_a_status_changed_elsewhere_shows_on_the_next_overview(service: Any) -> None:
    """The overview is kept between requests, yet a run started and stopped outside the
    Admin Center (the CLI, the planner) shows on the very next request, not later."""
    running, (server, password) = service
    client = HttpSession(server.host, server.port)
    client.first_login("admin", password, NEW_PASSWORD)
    assert "Password changed" in client.request("GET", "/")[2]  # the flash, shown once
    first = _card(client.request("GET", "/")[2], "m.hang")
    assert _card(client.request("GET", "/")[2], "m.hang") == first  # (m.repeat runs on)
    assert 'data-state="running"' not in first
    subject = user.su()
    use_cases = running.use_cases

    def shows(check: Callable[[SchedulerStatus], bool]) -> bool:
        client.request("GET", "/")  # the page is kept up to the moment of the change
        return check(use_cases.status(subject, "m.hang"))

    run_id = use_cases.execute(subject, "m.hang")
    wait_for(lambda: shows(lambda s: s.current_run_id == run_id), timeout=20, what="the run")
    card = _card(client.request("GET", "/")[2], "m.hang")
    assert 'data-state="running"' in card, card
    use_cases.stop(subject, "m.hang")
    wait_for(
        lambda: shows(lambda s: s.last_outcome is Outcome.CANCELLED),
        timeout=20,
        what="the cancelled run",
    )
    card = _card(client.request("GET", "/")[2], "m.hang")
    assert 'data-state="running"' not in card and "outcome-cancelled" in card, card
    kept = client.request("GET", "/")[2]
    filtered = client.request("GET", "/?outcome=cancelled")[2]  # another page, not the kept one
    assert 'data-id="m.oneshot"' in kept and 'data-id="m.oneshot"' not in filtered
    assert 'data-id="m.hang"' in filtered


def test_a_kept_overview_carries_each_sessions_own_token_and_flashes(service: Any) -> None:
    _running, (server, password) = service
    first = HttpSession(server.host, server.port)
    first.first_login("admin", password, NEW_PASSWORD)
    first.request("GET", "/")  # its "password changed" flash
    second = HttpSession(server.host, server.port)
    second.login("admin", NEW_PASSWORD)
    tokens = [session.csrf("/account/password") for session in (first, second)]
    assert tokens[0] != tokens[1]
    for session, token in zip((first, second), tokens, strict=True):
        page = session.request("GET", "/")[2]
        assert f'name="csrf" value="{token}"' in page
        assert all(other not in page for other in tokens if other != token)
    status, _, _ = first.request("POST", "/schedulers/m.oneshot/execute", {"csrf": tokens[0]})
    assert status == 303
    assert "Run started" in first.request("GET", "/")[2]  # its flash, once
    assert "Run started" not in first.request("GET", "/")[2]
    assert "Run started" not in second.request("GET", "/")[2]
    # the kept page's token works: the other session logs out with it
    status, _, _ = second.request("POST", "/logout", {"csrf": tokens[1]})
    assert status == 303
    assert second.request("GET", "/")[0] == 303


def test_worker_threads_are_kept_for_the_next_request_and_end_when_idle() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]

    # Only this server's workers: another test's idle ones may end meanwhile.
    others = set(threading.enumerate())

    def workers() -> int:
        return sum(t.name == "admin-request" and t not in others for t in threading.enumerate())

    before = workers()
    limits = ServerLimits(idle_worker_seconds=0.3)
    server = HttpServer(app, host="127.0.0.1", port=0, limits=limits).start()
    try:
        for _ in range(20):
            answer = raw_to(server.server_address[:2], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"admin-request")
            assert workers() - before <= 2  # one answering, perhaps one just ending
        wait_for(lambda: workers() == before, timeout=5, what="the idle worker to end")
        answer = raw_to(server.server_address[:2], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")  # a new one starts when needed
    finally:
        server.close()
    wait_for(lambda: workers() == before, timeout=5, what="the workers to end at close")


def test_close_ends_idle_workers_at_once_not_after_their_idle_time() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    # Only this server's workers: another test's idle ones may end meanwhile.
    others = set(threading.enumerate())

    def workers() -> int:
        return sum(t.name == "admin-request" and t not in others for t in threading.enumerate())

    before = workers()
    # Idle workers would wait an hour for the next request: close must not wait for that.
    server = HttpServer(
        app, host="127.0.0.1", port=0, limits=ServerLimits(idle_worker_seconds=3600)
    ).start()
    try:
        for _ in range(5):
            assert raw_to(server.server_address[:2], b"GET / HTTP/1.0\r\n\r\n").endswith(b"ok")
        assert workers() > before
    finally:
        server.close()
    wait_for(lambda: workers() == before, timeout=5, what="the idle workers to end at close")


def raw_to(address: tuple[Any, ...], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)
        return b"".join(iter(lambda: sock.recv(65536), b""))
