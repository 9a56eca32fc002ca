"""Persistent connections of the Admin Center's HTTP server: kept only when the client
asks nothing else, sent nothing past its request and the response declared its length;
a next request that comes at once is answered by the same worker, anything else goes
back to the reader thread with what was read; a kept connection waits for its next
request like a new one and is closed, without a reply, when none begins in time; large
bodies go out whole."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.web.httpserver import HttpServer, ServerLimits
from tests.test_web_server import Clock, read_response
from tests.waiting import wait_for

BIG = bytes(range(256)) * (16 * 1024)  # 4 MB: more than a socket takes in one call
BLOCKED = threading.Event()
RELEASE = threading.Event()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/n``: n bytes with their length; ``/stream``: no length; ``/short``: fewer bytes
    than declared; ``/big``: 4 MB; ``/block``: after ``RELEASE``; each body names the
    thread that answered."""
    path = environ["PATH_INFO"]
    thread = threading.current_thread()
    name = f"{thread.name} {thread.ident}".encode()
    if path == "/block":
        BLOCKED.set()
        RELEASE.wait(10)
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [name]
    if path == "/short":
        start_response("200 OK", [("Content-Length", "100")])
        return [b"only this"]
    size = int(path[1:]) if path[1:].isdigit() else 0
    body = BIG if path == "/big" else name + b"." * size
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@contextlib.contextmanager
def serving(limits: ServerLimits | None = None, **options: Any) -> Iterator[HttpServer]:
    served = HttpServer(app, host="127.0.0.1", port=0, limits=limits, **options).start()
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with serving() as served:
        yield served


def connect(served: HttpServer) -> socket.socket:
    return socket.create_connection(served.server_address[:2], timeout=10)


def get(path: str, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return (
        b"GET " + path.encode() + b" " + version + b"\r\nHost: x\r\n" + b"".join(headers) + b"\r\n"
    )


def closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (end of stream, nothing else sent)."""
    return sock.recv(65536) == b""


def test_a_connection_is_kept_for_requests_one_after_another(server: HttpServer) -> None:
    with connect(server) as sock:
        for size in (10, 0, 70_000, 3):
            sock.sendall(get(f"/{size}"))
            answer = read_response(sock)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"connection:" not in head.lower()
            assert body.startswith(b"admin-request") and body.endswith(b"." * size)
        wait_for(lambda: server.idle == 1, timeout=5, what="the kept connection waiting")
    wait_for(lambda: server.pending == 0, timeout=5, what="the client's close to be seen")


@pytest.mark.parametrize(
    "request_bytes",
    [
        get("/5", b"Connection: close\r\n"),  # the client asks
        get("/5", b"Connection: TE, Close\r\n"),
        get("/5", version=b"HTTP/1.0"),
        get("/stream"),  # no declared length: its end is the connection's
        get("/5") + get("/5"),  # sent past its request: not read as a second one
    ],
)
def test_otherwise_the_response_says_close_and_the_connection_ends(
    server: HttpServer, request_bytes: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes)
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert b"\r\nConnection: close\r\n" in answer.partition(b"\r\n\r\n")[0] + b"\r\n"
        assert answer.count(b"HTTP/1.1 200") == 1
        assert closed(sock)


def test_a_response_shorter_than_it_declared_ends_its_connection(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(get("/short"))
        assert read_response(sock).endswith(b"\r\n\r\nonly this")  # then the end
        assert server.idle == 0


def test_a_kept_connection_without_a_next_request_is_closed_without_a_reply() -> None:
    clock = Clock()
    limits = ServerLimits(keep_alive_seconds=3.0, head_seconds=5.0)
    with (
        serving(limits, monotonic=clock) as served,
        connect(served) as idle,
        connect(served) as slow,
    ):
        for sock in (idle, slow):
            sock.sendall(get("/1"))
            assert read_response(sock).startswith(b"HTTP/1.1 200 OK")
        wait_for(lambda: served.idle == 2, timeout=5, what="both connections kept")
        clock.now += 2.0
        slow.sendall(b"GET /1 HT")  # its next request begins: the head's deadline now
        wait_for(lambda: served.idle == 1, timeout=5, what="the request to begin")
        clock.now += 2.0
        assert closed(idle)  # past keep_alive_seconds: closed, no 408
        clock.now += 2.0
        slow.sendall(b"TP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(slow).startswith(b"HTTP/1.1 200 OK")
        wait_for(lambda: served.idle == 1, timeout=5, what="kept again")
        clock.now += 3.5
        assert closed(slow)


def test_a_body_larger_than_a_send_arrives_whole_on_a_kept_connection(
    server: HttpServer,
) -> None:
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(get("/big"))
            answer = read_response(sock)
            assert answer.partition(b"\r\n\r\n")[2] == BIG
        sock.sendall(get("/2"))
        assert read_response(sock).endswith(b"..")


def test_close_ends_kept_connections() -> None:
    with serving() as served, connect(served) as sock:
        sock.sendall(get("/1"))
        read_response(sock)
        wait_for(lambda: served.pending == 1, timeout=5, what="the kept connection")
        served.close()
        assert closed(sock)


def body(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


def test_a_next_request_sent_at_once_is_answered_by_the_same_worker() -> None:
    limits = ServerLimits(linger_seconds=5.0)
    with serving(limits) as served, connect(served) as first, connect(served) as second:
        answers: dict[socket.socket, list[bytes]] = {first: [], second: []}
        for _ in range(3):
            for sock in (first, second):
                sock.sendall(get("/0"))
                answers[sock].append(body(read_response(sock)))
        # each connection kept its worker (an idle one would have answered both)
        assert len(set(answers[first])) == 1 and len(set(answers[second])) == 1
        assert answers[first][0] != answers[second][0]
        assert served.pending == 0  # neither went back to the reader thread


def test_without_lingering_each_request_goes_through_the_reader() -> None:
    limits = ServerLimits(linger_seconds=0)
    with serving(limits) as served, connect(served) as sock:
        for _ in range(3):
            sock.sendall(get("/1"))
            assert read_response(sock).startswith(b"HTTP/1.1 200 OK")
            wait_for(lambda: served.idle == 1, timeout=5, what="handed back")


def test_part_of_a_request_while_lingering_goes_to_the_reader_and_is_answered() -> None:
    limits = ServerLimits(linger_seconds=5.0)
    with serving(limits) as served, connect(served) as sock:
        sock.sendall(get("/1"))
        read_response(sock)
        sock.sendall(b"GET /2 HT")
        wait_for(lambda: served.pending == 1, timeout=5, what="the reader to have it")
        assert served.idle == 0  # begun: the head's deadline, not the idle one
        sock.sendall(b"TP/1.1\r\nHost: x\r\n\r\n")
        assert re.fullmatch(rb"admin-request \d+\.\.", body(read_response(sock)))
        sock.sendall(b"GARBAGE\r\n\r\n")  # refused as on a new connection
        assert read_response(sock).startswith(b"HTTP/1.1 400 ")
        assert closed(sock)


def lingering() -> bool:
    """Whether a worker waits on a kept connection (its slot given back before)."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "_linger":
                return True
            frame = frame.f_back
    return False


def test_a_next_request_while_every_worker_is_busy_is_answered_503() -> None:
    BLOCKED.clear()
    RELEASE.clear()
    limits = ServerLimits(linger_seconds=5.0, max_workers=1)
    served = HttpServer(app, host="127.0.0.1", port=0, limits=limits).start()
    try:
        with connect(served) as kept, connect(served) as busy:
            kept.sendall(get("/1"))
            read_response(kept)
            wait_for(lingering, timeout=5, what="its worker to linger, holding no slot")
            busy.sendall(get("/block"))
            assert BLOCKED.wait(10)  # the one slot is taken
            kept.sendall(get("/1"))
            assert read_response(kept).startswith(b"HTTP/1.1 503 ")
            RELEASE.set()
            assert read_response(busy).startswith(b"HTTP/1.1 200 OK")
    finally:
        RELEASE.set()
        served.close()
