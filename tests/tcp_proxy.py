"""A TCP proxy for tests that injects connection failures between clients and a server.

``FaultyProxy`` listens on a free port of 127.0.0.1 and forwards each connection to the
target. With probability ``refuse`` a new connection is closed at once; each chunk passed
in either direction cuts the connection (both ways, mid-conversation) with probability
``cut``. ``partition`` holds every byte back (connections stay open, as in a network
partition) until ``heal``. ``blackhole`` swallows the connections open then, and those
made until ``heal``: every byte either side sends is taken (the sender sees it
acknowledged, as a middlebox would) and dropped, and nothing is closed on the other side
when one side closes, so the server's session lingers as it would behind a lost network.
A swallowed connection never carries a byte again, even after ``heal``. ``faults``
changes the chances. Seeded, so a
failing run can be repeated. Threads only; ``close`` stops it all.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from types import TracebackType


class FaultyProxy:
    def __init__(
        self, target: tuple[str, int], *, refuse: float, cut: float, seed: int = 1
    ) -> None:
        self._target = target
        self._refuse = refuse
        self._cut = cut
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._swallowing = False
        self._swallowed: set[socket.socket] = set()  # both ends of each swallowed connection
        self.accepted = self.refused = self.cuts = 0
        self._thread = threading.Thread(target=self._accept, name="proxy accept", daemon=True)
        self._thread.start()

    def _roll(self, chance: float) -> bool:
        with self._lock:
            return self._random.random() < chance

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            if self._roll(self._refuse):
                with self._lock:
                    self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
                if self._swallowing:
                    self._swallowed.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="proxy pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        swallowed = False
        try:
            while True:
                chunk = source.recv(65536)
                with self._lock:
                    swallowed = source in self._swallowed
                if not chunk:
                    break
                if swallowed:
                    continue  # taken and dropped
                while not self._flowing.wait(0.05):
                    if self._closed.is_set():
                        return
                if self._roll(self._cut):
                    with self._lock:
                        self.cuts += 1
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            # A swallowed connection's other side is told nothing: it stays open until
            # the proxy closes.
            for end in (source,) if swallowed else (source, sink):
                self._shut(end)

    def _shut(self, end: socket.socket) -> None:
        with self._lock:
            self._open.discard(end)
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def faults(self, *, refuse: float, cut: float) -> None:
        """Refuse and cut with these chances from now on (0 and 0: no more faults)."""
        with self._lock:
            self._refuse, self._cut = refuse, cut

    def partition(self) -> None:
        self._flowing.clear()

    def blackhole(self) -> None:
        """Swallow every open connection, and each new one until ``heal``."""
        with self._lock:
            self._swallowing = True
            self._swallowed.update(self._open)

    def heal(self) -> None:
        with self._lock:
            self._swallowing = False
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._server.close()
        with self._lock:
            ends = list(self._open)
        for end in ends:
            self._shut(end)
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
