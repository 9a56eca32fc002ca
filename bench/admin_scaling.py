"""Concurrent clients on the Admin Center (issue 10): 1 and 10 clients GET a route as fast
as they can, beside the same load on a static file (the floor: the HTTP server, the guard
and the session, no page work), with and without keep-alive.

The load comes from ``wrk`` (Debian: ``apt-get install -y wrk``), a C load generator that
costs the machine little beside the server it measures. Without it, a plain-socket Python
client in a process of its own stands in (one request per connection), and the report
says so: it keeps about a core busy itself, so on 2 cores it understates what the server
scales to. 1 and 10 clients take turns (``ROUNDS`` times) so a neighbour's load hits both
alike; the machine's load average is printed before and after.

Beside them, the same load on a bare one-thread Python server (``--bare``: a selector
loop answering a fixed reply, nothing else): what any Python server gets from these
cores and this client.

The most any server could reach is bounded by the CPU the machine spends per request:
``cores / (server + client CPU seconds per request at 10 clients)`` requests/s. Divided
by one client's requests/s, that is the highest factor these cores allow whatever the
server does; it is printed beside each factor measured.

Run by ``bench.bench_admin``; ``python -m bench.admin_scaling --clients ...`` is the
Python stand-in's load process, ``--bare`` the bare server. May import the stdlib and
``bench.common``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import percentile

TARGET = 3.0
TARGET_P99_MS = 100.0
ROUNDS = 4
FLOOR_PATH = "/static/favicon.svg"  # the same server, guard and session, no page work
FLOOR = "floor: a static file"
OVERVIEW = "overview, gzip (as browsers ask)"
BARE = "bare Python server, one thread"
BROWSER = "gzip, deflate, br"  # what browsers accept
WRK_INSTALL = "apt-get install -y wrk"
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(slots=True)
class Measured:
    """What ``ROUNDS`` turns of one load gave: requests, seconds, CPU seconds spent by
    the server's process and by the client, and per-turn latency percentiles (ms)."""

    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return sorted(self.p50s)[len(self.p50s) // 2] if self.p50s else 0.0

    @property
    def p99(self) -> float:
        return max(self.p99s, default=0.0)  # the worst turn's


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wrk(url: str, headers: list[str], clients: int, seconds: float, script: Path) -> Measured:
    whole = max(1, round(seconds))  # wrk takes whole seconds
    command = ["wrk", "-t1", f"-c{clients}", f"-d{whole}s", "--timeout", "10s"]
    command += ["-s", str(script)]
    for header in headers:
        command += ["-H", header]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    found = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", done.stdout, re.M)
    if found is None:
        raise RuntimeError(f"wrk gave no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    requests, micros, p50, p99, bad_status, failed = (int(g) for g in found.groups())
    if bad_status or failed:
        raise RuntimeError(f"{bad_status} non-2xx replies and {failed} socket errors from {url}")
    return Measured(requests, micros / 1e6, 0.0, [p50 / 1000], [p99 / 1000])


def _python(
    host: str, port: int, headers: list[str], path: str, clients: int, seconds: float
) -> Measured:
    command = [sys.executable, "-m", "bench.admin_scaling", "--clients", host, str(port)]
    command += [path, str(clients), str(seconds), json.dumps(headers)]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root)
    result = json.loads(done.stdout)
    times = result["latencies"]
    return Measured(
        len(times), result["seconds"], 0.0, [percentile(times, 50)], [percentile(times, 99)]
    )


def _cpu_of(pid: int | None) -> float:
    """CPU seconds process ``pid`` has used (0 for None)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    host: str,
    port: int,
    path: str,
    headers: list[str],
    seconds: float,
    *,
    use_wrk: bool,
    server_pid: int | None = None,
) -> dict[int, Measured]:
    """1 and 10 clients on ``path``, taking turns; CPU of this process, the client's and
    that of the server process ``server_pid`` when it is another."""
    found = {1: Measured(), 10: Measured()}
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as temp:
        script = Path(temp) / "result.lua"
        script.write_text(WRK_SCRIPT)
        for _ in range(ROUNDS):
            for clients in (1, 10):
                cpu_before = time.process_time() + _children_cpu() + _cpu_of(server_pid)
                if use_wrk:
                    url = f"http://{host}:{port}{path}"
                    turn = _wrk(url, headers, clients, seconds / ROUNDS, script)
                else:
                    turn = _python(host, port, headers, path, clients, seconds / ROUNDS)
                total = found[clients]
                total.cpu += (
                    time.process_time() + _children_cpu() + _cpu_of(server_pid) - cpu_before
                )
                total.requests += turn.requests
                total.seconds += turn.seconds
                total.p50s += turn.p50s
                total.p99s += turn.p99s
    return found


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _print_rows(label: str, mode: str, found: dict[int, Measured], cores: int) -> float:
    """Print 1 and 10 clients' rows; the factor."""
    one, ten = found[1], found[10]
    cpu_each = ten.cpu / ten.requests if ten.requests else float("inf")
    ceiling = cores / cpu_each / one.rate if one.rate else 0.0
    for clients, got in found.items():
        each = got.cpu / got.requests * 1000 if got.requests else 0.0
        most = f"{ceiling:6.2f}x" if clients == 10 else ""
        print(
            f"  {label:34} {mode:>5} {clients:7d} {got.rate:8.0f} {got.p50:7.2f}"
            f" {got.p99:7.1f} {got.rate / one.rate:5.2f}x {each:7.3f} {most:>7}"
        )
    return ten.rate / one.rate if one.rate else 0.0


def report(host: str, port: int, cookie: str, seconds: float, schedulers: int) -> bool:
    """The figures of 1 vs 10 clients; whether the overview reached the target."""
    use_wrk = shutil.which("wrk") is not None
    cores = os.cpu_count() or 1
    client = "wrk (C, 1 thread)" if use_wrk else "a Python socket client"
    print(
        f"\noverview at {schedulers:,} schedulers: 1 client vs 10 concurrent clients"
        f" ({cores} cores, load average {_load_average()}; clients: {client})"
    )
    if not use_wrk:
        print(
            f"  wrk is not installed ({WRK_INSTALL} on Debian): a Python client stands in,"
            " one request per connection; it needs about a core itself, so these factors"
            " understate the server's"
        )
    print(
        f"  {'route':34} {'conn':>5} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'x1':>6} {'ms CPU':>7} {'most x1':>7}"
    )
    routes = [
        (FLOOR, FLOOR_PATH, BROWSER),
        (OVERVIEW, "/", BROWSER),
        ("overview, uncompressed", "/", "identity"),
    ]
    modes = ["keep", "close"] if use_wrk else ["close"]
    factors: dict[tuple[str, str], float] = {}
    p99s: dict[str, float] = {}
    with _bare_server() as (bare_port, bare_pid):
        for mode in modes:
            for label, path, encoding in routes:
                headers = [f"Cookie: {cookie}", "Accept: text/html", f"Accept-Encoding: {encoding}"]
                if mode == "close":
                    headers.append("Connection: close")
                found = measure(host, port, path, headers, seconds, use_wrk=use_wrk)
                factors[(mode, label)] = _print_rows(label, mode, found, cores)
                if label == OVERVIEW:
                    p99s[mode] = found[10].p99
            headers = ["Connection: close"] if mode == "close" else []
            found = measure(
                "127.0.0.1", bare_port, "/", headers, seconds, use_wrk=use_wrk, server_pid=bare_pid
            )
            factors[(mode, BARE)] = _print_rows(BARE, mode, found, cores)
    print(f"  load average after: {_load_average()}")
    print(
        "  ms CPU: the server's and the client's CPU per request; most x1: the factor"
        f" {cores} cores allow at that CPU per request (cores / CPU per request / 1 client)"
    )
    ok = True
    for mode in modes:
        factor, p99 = factors[(mode, OVERVIEW)], p99s[mode]
        print(
            f"  {mode}: 10 clients get {factor:.2f}x one client's req/s on the overview with"
            f" p99 {p99:.1f} ms (target >= {TARGET:.0f}x, p99 <= {TARGET_P99_MS:.0f} ms);"
            f" the floor {factors[(mode, FLOOR)]:.2f}x, a bare Python server"
            f" {factors[(mode, BARE)]:.2f}x"
        )
        ok = ok and factor >= TARGET and p99 <= TARGET_P99_MS
    return ok


@contextlib.contextmanager
def _bare_server() -> Iterator[tuple[int, int]]:
    """The bare server in a process of its own: (its port, its pid), until the end."""
    command = [sys.executable, "-m", "bench.admin_scaling", "--bare"]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline()), process.pid
    finally:
        if process.stdin is not None:
            process.stdin.close()  # its end
        process.wait(10)


def bare() -> None:
    """A one-thread Python HTTP server answering every request with a fixed reply
    (keep-alive unless asked to close); its port out; it ends when stdin closes."""
    import selectors
    import socket

    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    closing = reply.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    print(listener.getsockname()[1], flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                return
            if key.fileobj is listener:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        sock, _ = listener.accept()
                        sock.setblocking(False)
                        selector.register(sock, selectors.EVENT_READ)
                continue
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            close = not data or b"connection: close" in data.lower()
            if data:
                with contextlib.suppress(OSError):
                    sock.send(closing if close else reply)
            if close:
                selector.unregister(sock)
                sock.close()


# -- the Python stand-in's load process ----------------------------------------------------


def fetch(host: str, port: int, request: bytes, buffer: bytearray) -> int:
    """One request on a new connection, read to its end (the server closes); the status.

    A plain socket client with one reused buffer, so the load costs the client little
    beside the server it measures (as a browser would, not a Python HTTP library)."""
    import socket

    view = memoryview(buffer)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        size = 0
        while True:
            if size == len(buffer):
                raise AssertionError("the response is larger than the client's buffer")
            got = sock.recv_into(view[size:])
            if not got:
                break
            size += got
    end = buffer.find(b"\r\n\r\n", 0, size)
    head = bytes(view[:end]).lower()
    if not head.startswith(b"http/1.1 "):
        raise AssertionError(head)
    found = re.search(rb"\r\ncontent-length: *(\d+)", head)
    if found is not None and int(found.group(1)) != size - end - 4:
        raise AssertionError(f"a short response: {size - end - 4} of {found.group(1)!r} bytes")
    return int(head[9:12])


def load(host: str, port: int, path: str, clients: int, seconds: float, headers: list[str]) -> None:
    """``clients`` threads GET ``path`` for ``seconds``, one request per connection; JSON
    of the latencies out."""
    latencies: list[float] = []
    lock = threading.Lock()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *headers, "Connection: close"]
    request = ("\r\n".join(dict.fromkeys(lines)) + "\r\n\r\n").encode("ascii")
    start = threading.Barrier(clients + 1)
    stop_at = 0.0

    def client() -> None:
        buffer = bytearray(8 << 20)
        mine = []
        start.wait()
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status = fetch(host, port, request, buffer)
            mine.append((time.perf_counter() - started) * 1000)
            assert status == 200, status
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    stop_at = time.perf_counter() + seconds
    start.wait()
    for thread in threads:
        thread.join()
    print(json.dumps({"seconds": seconds, "latencies": latencies}))


if __name__ == "__main__":
    if sys.argv[1:] == ["--bare"]:
        bare()
        sys.exit(0)
    if sys.argv[1:2] != ["--clients"] or len(sys.argv) != 8:
        sys.exit("usage: python -m bench.admin_scaling --clients HOST PORT PATH N SECONDS JSON")
    _host, _port, _path, _clients, _seconds, _headers = sys.argv[2:]
    load(_host, int(_port), _path, int(_clients), float(_seconds), json.loads(_headers))
