"""Persistent connections of the Admin Center's HTTP server: kept only when the client
asks nothing else, sent nothing past its request and the response declared its length;
a kept connection waits for its next request like a new one and is closed, without a
reply, when none begins in time; large bodies go out whole."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.web.httpserver import HttpServer, ServerLimits
from tests.test_web_server import Clock, read_response
from tests.waiting import wait_for

BIG = bytes(range(256)) * (16 * 1024)  # 4 MB: more than a socket takes in one call


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/n``: n bytes with their length; ``/stream``: no length; ``/short``: fewer bytes
    than declared; ``/big``: 4 MB; each body names the thread that answered."""
    path = environ["PATH_INFO"]
    name = threading.current_thread().name.encode()
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [name]
    if path == "/short":
        start_response("200 OK", [("Content-Length", "100")])
        return [b"only this"]
    body = BIG if path == "/big" else name + b"." * int(path[1:] or "0")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server() -> Iterator[HttpServer]:
    served = HttpServer(app, host="127.0.0.1", port=0).start()
    try:
        yield served
    finally:
        served.close()


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
    served = HttpServer(app, host="127.0.0.1", port=0, limits=limits, monotonic=clock).start()
    try:
        with connect(served) as idle, connect(served) as slow:
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
    finally:
        served.close()


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
    served = HttpServer(app, host="127.0.0.1", port=0).start()
    try:
        with connect(served) as sock:
            sock.sendall(get("/1"))
            read_response(sock)
            wait_for(lambda: served.pending == 1, timeout=5, what="the kept connection")
            served.close()
            assert closed(sock)
    finally:
        served.close()
