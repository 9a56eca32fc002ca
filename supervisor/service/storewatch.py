"""Watching a SQLite store's writes, so operators see when it cannot be written.

``WatchedStore`` stands in front of the store the manager, its log writer and the Admin
Center write through: each write that fails because of the store itself (a full disk, a
read-only file or directory, a lock another process holds past the busy timeout, a corrupt
file, an I/O error) tells the ``StoreHealth`` cell what is wrong, read from the SQLite
error's own code (``sqlite3.Error.sqlite_errorname``, kept as the ``StoreError``'s cause)
or the ``OSError``'s errno, never from message text; each write that succeeds tells it
the store takes writes again. Errors about the input (an unknown run, a run stored twice)
say nothing of the store's health and are passed on untouched, as every error is.

While the writes fail, ``StoreProbe`` writes one meta key every few seconds from a thread
of its own (a locked database makes each write wait for the busy timeout), so the outage
ends even when nothing else writes. One write that goes through ends nothing: the outage
ends once the writes have held (``StoreHealth``: two in a row, far enough apart), so a
store that fails and works by turns is one outage, not a stream of them.
May import ``core``, ``store.protocols``, ``usecases.health`` and the stdlib.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from supervisor.core.clock import Clock
from supervisor.core.storeproblems import Backlog, StoreProblem, classify, reason_of
from supervisor.store.protocols import Store
from supervisor.usecases.health import StoreHealth

# The store calls that write (every other call only reads).
WRITES: Final = frozenset(
    {
        "set_overrides",
        "delete_overrides",
        "set_decision",
        "insert_run",
        "set_run_process",
        "finish_run",
        "mark_interrupted",
        "append_logs",
        "add_lost_logs",
        "add_audit",
        "add_user",
        "change_user",
        "set_meta",
    }
)
PROBE_KEY: Final = "store_probe"
PROBE_SECONDS: Final = 2.0


class WatchedStore:
    """``store`` with every write's outcome told to ``health`` (at ``clock.now()``); any
    other attribute is the store's own. Use it as the ``Store`` it wraps (``as_store``)."""

    def __init__(
        self, store: Store, health: StoreHealth, clock: Clock, *, path: Path | None = None
    ) -> None:
        """``path``: the database file; an I/O error writing it is told as read-only when
        the file, its journal or its directory cannot be written (an immutable file, a
        file system remounted read-only: SQLite tells both as an I/O error)."""
        self._store = store
        self._health = health
        self._clock = clock
        self._path = path

    @property
    def wrapped(self) -> Store:
        return self._store

    def note_backlog(self, backlog: Backlog) -> None:
        """What the log writer keeps for the store (``manager.logwriter.BacklogSink``)."""
        self._health.note_backlog(backlog)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in WRITES or not callable(attribute):
            return attribute
        watched = self._watched(name)
        # Kept on this object: the next look-up finds it without ``__getattr__``. The
        # wrapper looks the write up on the store at each call, so a write patched on the
        # store (or its class) after this is the one called.
        setattr(self, name, watched)
        return watched

    def _watched(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = getattr(self._store, name)(*args, **kwargs)
            except Exception as error:
                problem = classify(error)
                if problem is not None:
                    reason = reason_of(error)
                    if problem is StoreProblem.IO_ERROR and self._path is not None:
                        unwritable = not_writable(self._path)
                        if unwritable is not None:
                            problem = StoreProblem.READ_ONLY
                            reason = f"{reason} ({unwritable})"
                    self._health.write_failed(at=self._clock.now(), problem=problem, reason=reason)
                raise
            self._health.write_succeeded()
            return result

        return call


def not_writable(path: Path) -> str | None:
    """Which of the database ``path``, its WAL journal and its directory cannot be
    written, and why (``access(2)``: an immutable file or a read-only file system refuses
    even root), or None."""
    for candidate in (path.parent, path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if candidate.exists() and not os.access(candidate, os.W_OK):
                mounted = os.statvfs(candidate).f_flag & os.ST_RDONLY
                why = "on a read-only file system" if mounted else "not writable"
                return f"{candidate} is {why}"
        except OSError as error:
            return f"{candidate}: {error.strerror or error}"
    return None


def as_store(watched: WatchedStore) -> Store:
    """``watched`` typed as the store it stands in for (it forwards every attribute)."""
    store: Any = watched
    return store  # type: ignore[no-any-return]


class StoreProbe:
    """While ``health`` says the writes fail, writes ``PROBE_KEY`` every ``seconds`` from
    a daemon thread through ``store`` (a ``WatchedStore``: its outcome is told). ``close``
    stops it (waits at most ``seconds`` plus one write)."""

    def __init__(
        self,
        store: Store,
        health: StoreHealth,
        clock: Clock,
        *,
        seconds: float = PROBE_SECONDS,
    ) -> None:
        self._store = store
        self._health = health
        self._clock = clock
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="store-probe", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._seconds + 1.0)

    def probe(self) -> bool:
        """One probe while the writes fail (as the thread makes it): whether it wrote."""
        if not self._health.writes_failing:
            return False
        # A failure is told to the health by the watched store; tried again.
        with contextlib.suppress(Exception):
            self._store.set_meta(PROBE_KEY, self._clock.now().isoformat())
            return True
        return False

    def _loop(self) -> None:
        while not self._stop.wait(self._seconds):
            self.probe()
