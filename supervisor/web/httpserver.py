"""A small HTTP/1.1 server for one WSGI app that a slow or hostile client cannot starve.

One reader thread owns every connection until its request is complete: it reads without
blocking (``selectors``), so an idle connection, a request line or headers sent a byte at
a time, or a declared body never sent costs a buffer, never a thread. Each request must
bring its request line and headers within ``head_seconds`` and its body within
``body_seconds`` (a total deadline, not an idle timer: dripping bytes does not extend
it), else it is answered 408 and closed. Request lines over ``max_line_bytes`` are
answered 414, heads over ``max_head_bytes`` or with more than
``max_headers`` lines are answered 431, bodies over ``max_body_bytes`` 413, chunked
bodies 411. Only complete requests go to a worker thread, at most ``max_workers`` at once
(beyond, 503 at once); the listen backlog is ``backlog``. Worker threads are kept for the
next request (starting a thread costs more than a small page) and end after
``idle_worker_seconds`` without one.

Connections persist (HTTP/1.1 keep-alive) when the client asks nothing else, sent no
bytes past its request, and the response declared its length (``Content-Length``) and
sent exactly that. The worker then waits on the connection for ``linger_seconds``: a
next request that comes whole in that time (a client going on at once) is answered by
the same worker, without two hand-overs between threads. Anything else (nothing yet,
part of a request) goes back to the reader thread with what was read, where the
connection waits like a new one, at most ``keep_alive_seconds`` for its next request's
first byte (then closed without a reply). Other responses say ``Connection: close`` and
close, which also delimits streamed bodies (server-sent events). A response goes out
in one ``sendmsg`` of its head and body, not copied whole.

Header names with an underscore are dropped (WSGI would fold ``X_Remote_User`` into the
key of ``X-Remote-User``) and listed under ``UNDERSCORE_HEADERS_KEY``; every name as
sent is listed under ``HEADER_NAMES_KEY``; the client's socket is under
``CONNECTION_KEY``. No ``Server`` header is sent, whatever the app sets.

May import ``supervisor.web.config`` (the environ keys) and the stdlib.
"""

from __future__ import annotations

import contextlib
import io
import queue
import re
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from supervisor.web.config import CONNECTION_KEY, HEADER_NAMES_KEY, UNDERSCORE_HEADERS_KEY

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_METHOD = re.compile(rb"[A-Z]{1,16}")
_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TARGET_BAD = re.compile(rb"[\x00-\x20\x7f]")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab
_EXPIRE_EVERY = 0.05  # seconds between looks for requests past their deadline
_DROPPED_RESPONSE_HEADERS = frozenset({"server", "connection", "keep-alive", "x-powered-by"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    head_seconds: float = 5.0
    body_seconds: float = 5.0
    max_line_bytes: int = 8 * 1024
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 64 * 1024
    max_pending: int = 1024  # connections still sending their request
    max_workers: int = 128  # requests being answered (event streams included)
    backlog: int = 512
    write_seconds: float = 30.0  # a reader that stops reading is dropped after this
    idle_worker_seconds: float = 30.0  # an idle worker thread ends after this
    keep_alive_seconds: float = 5.0  # a kept connection's wait for its next request
    linger_seconds: float = 0.005  # a worker's wait on it before handing it back


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class _Pending:
    sock: socket.socket
    address: tuple[Any, ...]
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    head: _Head | None = None
    kept: bool = False  # served before: waiting (without a deadline's reply) for the next


@dataclass(frozen=True, slots=True)
class _Job:
    """A complete request for a worker thread."""

    sock: socket.socket
    address: tuple[Any, ...]
    head: _Head
    body: bytes
    keep: bool  # the connection may be kept after the response


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # names as sent, values as latin-1 text
    length: int
    body_start: int
    expect_continue: bool
    keep_alive: bool  # HTTP/1.1 and no ``Connection: close``


def _parse_head(data: bytes, *, limits: ServerLimits) -> _Head:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise _Reject(400, "malformed request head")
    lines = data[:end].split(b"\r\n")
    if len(lines) - 1 > limits.max_headers:
        raise _Reject(431, "too many header fields")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]):
        raise _Reject(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise _Reject(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if not target.startswith(b"/") or _TARGET_BAD.search(target):
        raise _Reject(400, "malformed request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Reject(400, "malformed header field")
        if _VALUE_BAD.search(value):
            raise _Reject(400, "control characters in a header field")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    lowered = [(n.lower(), v) for n, v in headers]
    if any(n == "transfer-encoding" for n, _ in lowered):
        raise _Reject(411, "send a Content-Length (chunked bodies are not accepted)")
    lengths = {v for n, v in lowered if n == "content-length"}
    length = 0
    if len(lengths) > 1:
        raise _Reject(400, "conflicting Content-Length")
    if lengths:
        text = lengths.pop()
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise _Reject(400, "bad Content-Length")
        length = int(text)
    if length > limits.max_body_bytes:
        raise _Reject(413, "the request body is too large")
    expect = any(n == "expect" and v.lower() == "100-continue" for n, v in lowered)
    closing = any(
        token.strip().lower() == "close"
        for n, v in lowered
        if n == "connection"
        for token in v.split(",")
    )
    return _Head(
        method=method.decode("ascii"),
        target=target.decode("latin-1"),
        version=version.decode("ascii"),
        headers=headers,
        length=length,
        body_start=end + 4,
        expect_continue=expect,
        keep_alive=version == b"HTTP/1.1" and not closing,
    )


def _plain(status: int, reason: str) -> bytes:
    body = (reason + "\n").encode("utf-8", errors="replace")
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii") + body


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Best effort on a non-blocking socket: what does not fit at once is not sent."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class HttpServer:
    """Serves ``app`` on ``host:port`` (port 0: any free one) until ``close``."""

    def __init__(
        self,
        app: WsgiApp,
        *,
        host: str,
        port: int,
        limits: ServerLimits | None = None,
        errors: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limits = limits or ServerLimits()
        self._errors = errors if errors is not None else sys.stderr
        self._now = monotonic
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(self.limits.backlog)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: dict[int, _Pending] = {}
        self._workers = threading.BoundedSemaphore(self.limits.max_workers)
        # Complete requests for the worker threads; ``_idle``: the workers waiting for one
        # that no queued request is meant for yet (guarded by ``_pool_lock``).
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Connections answered and kept, for the reader thread to wait on again.
        self._returned: queue.SimpleQueue[tuple[socket.socket, tuple[Any, ...], bytes]] = (
            queue.SimpleQueue()
        )
        self._next_expiry = 0.0
        self._pool_lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="admin-http", daemon=True)
        self.server_address: tuple[Any, ...] = listener.getsockname()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting and reading; drop connections still sending. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for pending in list(self._pending.values()):
            _close(pending.sock)
        self._pending.clear()
        self._close_returned()
        with self._pool_lock:
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(None)  # each worker ends after the request it is answering
        with contextlib.suppress(Exception):
            self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()

    def _close_returned(self) -> None:
        while True:
            try:
                sock, _address, _buffer = self._returned.get_nowait()
            except queue.Empty:
                return
            _close(sock)

    @property
    def pending(self) -> int:
        """Connections still sending their request, kept ones waiting for their next
        included (for tests and diagnostics)."""
        return len(self._pending)

    @property
    def idle(self) -> int:
        """Kept connections whose next request has not begun (for tests and diagnostics)."""
        return sum(p.kept and not p.buffer for p in list(self._pending.values()))

    # -- the reader thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing.is_set():
            events = self._selector.select(timeout=0.25)
            for key, _mask in events:
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    self._take_back()
                else:
                    try:
                        self._read(key.data)
                    except Exception as error:  # one bad connection must not end the loop
                        self._drop(key.data)
                        with contextlib.suppress(Exception):
                            self._errors.write(f"admin-http: {type(error).__name__}: {error}\n")
            now = self._now()
            if now >= self._next_expiry:
                self._next_expiry = now + _EXPIRE_EVERY
                self._expire()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of descriptors: try again on the next round
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # streamed events go out at once
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._wait_on(_Pending(sock, address, self._now() + self.limits.head_seconds))

    def _take_back(self) -> None:
        """Wait on the connections the workers answered and kept (with what they read of
        the next request)."""
        while True:
            try:
                sock, address, buffer = self._returned.get_nowait()
            except queue.Empty:
                return
            wait = self.limits.head_seconds if buffer else self.limits.keep_alive_seconds
            pending = _Pending(sock, address, self._now() + wait, bytearray(buffer), kept=True)
            try:
                self._wait_on(pending)
            except (OSError, ValueError):  # closed meanwhile
                _close(sock)
                continue
            if buffer:
                self._advance(pending)

    def _wait_on(self, pending: _Pending) -> None:
        if len(self._pending) >= self.limits.max_pending:
            # Make room by dropping the connection that has been sending longest.
            oldest = min(self._pending.values(), key=lambda p: p.deadline)
            self._drop(oldest)
        self._pending[pending.sock.fileno()] = pending
        self._selector.register(pending.sock, selectors.EVENT_READ, pending)

    def _read(self, pending: _Pending) -> None:
        try:
            chunk = pending.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(pending)
            return
        if not chunk:
            self._drop(pending)
            return
        if pending.kept and not pending.buffer:  # a kept connection's next request begins
            pending.deadline = self._now() + self.limits.head_seconds
        pending.buffer += chunk
        self._advance(pending)

    def _advance(self, pending: _Pending) -> None:
        """Parse what ``pending`` holds; hand it to a worker once complete."""
        try:
            if pending.head is None:
                self._read_head(pending)
            head = pending.head
            if head is not None and len(pending.buffer) - head.body_start >= head.length:
                self._dispatch(pending)
        except _Reject as reject:
            self._refuse(pending, reject.status, reject.reason)

    def _read_head(self, pending: _Pending) -> None:
        limits = self.limits
        buffer = pending.buffer
        if buffer.startswith(b"\r\n"):
            del buffer[:2]  # a stray line end before the request (RFC 9112 2.2)
        line_end = buffer.find(b"\r\n")
        if line_end > limits.max_line_bytes or (
            line_end < 0 and len(buffer) > limits.max_line_bytes
        ):
            raise _Reject(414, "the request line is too long")
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > limits.max_head_bytes:
                raise _Reject(431, "the request head is too large")
            return
        if end + 4 > limits.max_head_bytes:
            raise _Reject(431, "the request head is too large")
        head = _parse_head(bytes(buffer[: end + 4]), limits=limits)
        pending.head = head
        if head.length:
            pending.deadline = self._now() + limits.body_seconds
            if head.expect_continue and len(buffer) - head.body_start < head.length:
                _send_quietly(pending.sock, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _expire(self) -> None:
        now = self._now()
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            if pending.kept and not pending.buffer:
                self._drop(pending)  # idle since its last response: no request to answer
            else:
                self._refuse(pending, 408, "the request was not sent in time")

    def _forget(self, pending: _Pending) -> None:
        self._pending.pop(pending.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(pending.sock)

    def _drop(self, pending: _Pending) -> None:
        self._forget(pending)
        _close(pending.sock)

    def _refuse(self, pending: _Pending, status: int, reason: str) -> None:
        self._forget(pending)
        _send_quietly(pending.sock, _plain(status, reason))
        _close(pending.sock)

    def _dispatch(self, pending: _Pending) -> None:
        self._forget(pending)
        head = pending.head
        assert head is not None
        if not self._workers.acquire(blocking=False):
            _send_quietly(pending.sock, _plain(503, "the server is busy; try again"))
            _close(pending.sock)
            return
        end = head.body_start + head.length
        body = bytes(pending.buffer[head.body_start : end])
        keep = head.keep_alive and len(pending.buffer) == end  # nothing sent past it
        with self._pool_lock:
            waiting = self._idle > 0
            if waiting:
                self._idle -= 1  # a waiting worker takes it
            else:
                self._threads += 1
        self._jobs.put(_Job(pending.sock, pending.address, head, body, keep))
        if waiting:
            return
        worker = threading.Thread(target=self._work, name="admin-request", daemon=True)
        try:
            worker.start()
        except RuntimeError:  # no thread to be had: answer nothing, free the slot
            with self._pool_lock:
                self._threads -= 1
            with contextlib.suppress(queue.Empty):
                job = self._jobs.get_nowait()
                if job is not None:
                    _close(job.sock)
                    self._workers.release()

    # -- the worker threads ---------------------------------------------------------------

    def _work(self) -> None:
        """Answer queued requests until idle for ``idle_worker_seconds`` or closing."""
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=self.limits.idle_worker_seconds)
                except queue.Empty:
                    with self._pool_lock:
                        if self._idle:  # no queued request counts on this worker
                            self._idle -= 1
                            return
                    continue  # one is queued for a waiting worker: take it
                if job is None:  # closing: ``close`` put one None for each worker
                    return
                while job is not None:  # then the next request on its connection, if it came
                    job = self._answer(job)
                with self._pool_lock:
                    self._idle += 1
        finally:
            with self._pool_lock:
                self._threads -= 1

    def _answer(self, job: _Job) -> _Job | None:
        """Answer ``job``; the next request on its connection when it came at once."""
        sock = job.sock
        kept = False
        try:
            sock.settimeout(self.limits.write_seconds)
            environ = self._environ(sock, job.address, job.head, job.body)
            response = _Response(sock, job.head.method == "HEAD", keep=job.keep)
            response.run(self.app, environ)
            kept = response.kept and not self._closing.is_set()
        except ConnectionError:
            pass  # the client went away mid-response (a browser's stop, a load generator's end)
        except Exception as error:  # the app's own errors are its business (Bottle answers 500)
            with contextlib.suppress(Exception):
                self._errors.write(f"admin-http: {type(error).__name__}: {error}\n")
        finally:
            self._workers.release()
            if not kept:
                _close(sock)
        return self._linger(sock, job.address) if kept else None

    def _linger(self, sock: socket.socket, address: tuple[Any, ...]) -> _Job | None:
        """The next request on a kept connection if it comes whole within
        ``linger_seconds`` and a worker slot is free; else the connection goes back to
        the reader thread, with what was read of it."""
        limits = self.limits
        try:
            if limits.linger_seconds <= 0:
                raise TimeoutError  # no lingering: straight back to the reader
            sock.settimeout(limits.linger_seconds)
            chunk = sock.recv(65536)
        except TimeoutError:
            self._hand_back(sock, address, b"")
            return None
        except OSError:
            _close(sock)
            return None
        if not chunk:
            _close(sock)
            return None
        pending = _Pending(sock, address, self._now() + limits.head_seconds, bytearray(chunk))
        try:
            self._read_head(pending)
        except _Reject as reject:
            _send_quietly(sock, _plain(reject.status, reject.reason))
            _close(sock)
            return None
        head = pending.head
        end = head.body_start + head.length if head is not None else 0
        if head is None or len(pending.buffer) < end or not self._workers.acquire(blocking=False):
            self._hand_back(sock, address, bytes(pending.buffer))  # the reader goes on
            return None
        body = bytes(pending.buffer[head.body_start : end])
        keep = head.keep_alive and len(pending.buffer) == end
        return _Job(sock, address, head, body, keep)

    def _hand_back(self, sock: socket.socket, address: tuple[Any, ...], buffer: bytes) -> None:
        """Give a kept connection back to the reader thread for its next request."""
        try:
            sock.setblocking(False)
        except OSError:
            _close(sock)
            return
        self._returned.put((sock, address, buffer))
        with contextlib.suppress(OSError):  # full: the reader has wake bytes to read anyway
            self._wake_w.send(b"k")
        if self._closing.is_set():  # the reader may have ended before it took it
            self._close_returned()

    def _environ(
        self, sock: socket.socket, address: tuple[Any, ...], head: _Head, body: bytes
    ) -> dict[str, Any]:
        path, _, query = head.target.partition("?")
        server = self.server_address
        environ: dict[str, Any] = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": head.version,
            "REMOTE_ADDR": str(address[0]),
            "REMOTE_PORT": str(address[1]),
            "CONTENT_LENGTH": str(head.length) if head.length else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": self._errors,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            CONNECTION_KEY: sock,
            HEADER_NAMES_KEY: [name for name, _ in head.headers],
            UNDERSCORE_HEADERS_KEY: [name for name, _ in head.headers if "_" in name],
        }
        for name, value in head.headers:
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_LENGTH",):
                continue
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            if key in environ:
                joiner = "; " if key == "HTTP_COOKIE" else ", "
                environ[key] = environ[key] + joiner + value
            else:
                environ[key] = value
        return environ


class _Response:
    """Runs the WSGI app for one request and writes its response (PEP 3333).

    With ``keep``, the connection is left open (``kept``) when the app declared its
    body's length and sent exactly that; otherwise the head says ``Connection: close``.
    """

    def __init__(self, sock: socket.socket, head_only: bool, *, keep: bool = False) -> None:
        self._sock = sock
        self._head_only = head_only
        self._keep = keep
        self._status: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._sent = False
        self._length: int | None = None  # as the app declared it
        self._written = 0
        self.kept = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status is not None:
            raise AssertionError("start_response called twice without exc_info")
        self._status = status
        self._headers = []
        self._length = None
        for name, value in headers:
            lowered = name.lower()
            if lowered in _DROPPED_RESPONSE_HEADERS:
                continue
            if lowered == "content-length":
                text = value.strip()
                self._length = int(text) if text.isascii() and text.isdigit() else None
            self._headers.append((name, value))
        return self.write

    def write(self, data: bytes) -> None:
        if self._head_only:
            data = b""
        self._written += len(data)
        if not self._sent:
            self._send_head(data)  # in one piece with the first data: no Nagle stall
        elif data:
            self._sock.sendall(data)

    def _send_head(self, data: bytes = b"") -> None:
        assert self._status is not None, "write before start_response"
        self._keep = self._keep and self._length is not None
        lines = [f"HTTP/1.1 {self._status}"]
        lines += [f"{n}: {v}" for n, v in self._headers]
        if not self._keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._sent = True
        _send_both(self._sock, head, data)

    def run(self, app: WsgiApp, environ: dict[str, Any]) -> None:
        result = app(environ, self.start_response)
        try:
            for chunk in result:
                if chunk:
                    self.write(chunk)
            if not self._sent:
                self._send_head()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        self.kept = self._keep and (self._head_only or self._written == self._length)


def _send_both(sock: socket.socket, head: bytes, data: bytes) -> None:
    """``head`` then ``data`` in one system call when the socket takes them (no copy)."""
    if not data:
        sock.sendall(head)
        return
    sent = sock.sendmsg([head, data])
    if sent < len(head):
        sock.sendall(memoryview(head)[sent:])
        sock.sendall(data)
    elif sent < len(head) + len(data):
        sock.sendall(memoryview(data)[sent - len(head) :])
