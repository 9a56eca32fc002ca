"""Starting runs crash-isolated and watching them: the contract, from a ``Job`` to an ``Exit``.

Two launchers share one contract (``Launcher``), and what they return shares another
(``RunHandle``):

- ``ForkServerLauncher`` (``forklauncher``): runs are forked from a single-threaded fork
  server that has imported the app once (``forkserver``); a few milliseconds per start.
  Runs do not depend on the server once started.
- ``FreshInterpreterLauncher`` (``freshlauncher``): ``python -m supervisor.runs.child``
  per run; the fallback.

Every run has its own session and process group, and its own cgroup where one is
writable (``containment``); ``supervise`` (``supervision``) reads its pipes into
``LogRecord`` batches (``capture``), ends it on timeout or cancellation (``escalation``:
cancel message → a short head start → SIGTERM to the group → grace → SIGKILL), kills
what is left, and tells how it ended (``exits.classify_exit``).

May import the modules of ``runs`` and ``errors``; this module only names them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from supervisor.runs.capture import Sink
from supervisor.runs.exits import Exit
from supervisor.runs.forklauncher import ForkServerLauncher
from supervisor.runs.freshlauncher import FreshInterpreterLauncher
from supervisor.runs.job import Job
from supervisor.runs.procs import MARKER_ENV, become_subreaper, kill_leftovers, reap_orphans
from supervisor.runs.supervision import RunProcess, StillRunning

__all__ = [
    "MARKER_ENV",
    "CancelRequest",
    "Exit",
    "ForkServerLauncher",
    "FreshInterpreterLauncher",
    "Job",
    "Launcher",
    "RunHandle",
    "RunProcess",
    "Sink",
    "StillRunning",
    "become_subreaper",
    "kill_leftovers",
    "reap_orphans",
]


class CancelRequest(threading.Event):
    """A cancel event that also says why: ``request("shutdown")`` or ``request("stop")``.

    A plain ``threading.Event`` works too (its reason is ``stop``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.reason = "stop"

    def request(self, reason: str = "stop") -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


class RunHandle(Protocol):
    """A started run, as a launcher returns it."""

    @property
    def pid(self) -> int:
        """The run's main process (also its process group and session id)."""
        ...

    @property
    def create_time(self) -> float:
        """When the main process started (epoch seconds, as psutil computes it)."""
        ...

    def supervise(
        self,
        *,
        sink: Sink,
        timeout: float | None,
        cancel: threading.Event,
        grace: float = 5.0,
        still_running: StillRunning | None = None,
        ended: Callable[[Exit], None] | None = None,
    ) -> Exit:
        """Watch the run to its end and say how it ended; call once. Never raises for
        the run's own failures (they are an ``Exit``); raises what ``sink`` raised
        (after killing the run), and ``RuntimeError`` on a second call.
        ``still_running`` (seconds, callback): call it once if the run lasts that long.
        ``ended``: called with the ``Exit`` before the run's resources are given back
        (a handle may also not call it: then the caller goes on after the return)."""
        ...


class Launcher(Protocol):
    """Starts runs of one app's schedulers, each in its own process and process group."""

    @property
    def containment(self) -> str:
        """What contains the runs: ``cgroup v2``, ``cgroup v1`` or ``process group +
        marker sweep``."""
        ...

    def start(self) -> None:
        """Get ready to spawn; raises ``AppLoadError`` if the app cannot be imported
        (or not within the launcher's start timeout), ``BackendError`` if ``close`` was
        called meanwhile."""
        ...

    def close(self) -> None:
        """Stop; runs still in progress are killed. Call after they have been supervised.
        May be called from another thread while ``start`` waits: it gives up promptly."""
        ...

    def spawn(self, job: Job, *, cancel: threading.Event | None = None) -> RunHandle:
        """Start ``job`` (thread-safe); raises ``BackendError`` if it cannot be started,
        also when ``cancel`` is set while the launcher has to (re)load the app for it."""
        ...
