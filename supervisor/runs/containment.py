"""Which containment is in force for a launcher's runs, and the per-run cgroups it makes.

Where a cgroup hierarchy is writable (``cgroups.detect``: cgroup v2, else v1) every run
gets its own cgroup, which its process is forked into (cgroup v2 with ``clone3``, see
``clone``) or joins first: whatever the run does (``setsid``, a cleared environment),
killing the cgroup kills all of it. Elsewhere runs are contained by
their process group and the marker sweep (see ``procs``), which is also the fallback
after every run. ``kind`` names what is in force, for ``status``.

At start, the run cgroups that dead managers left (kill -9 of manager and fork server)
are killed and removed. A finished run's cgroup is removed by a background thread
(``release``): removing a cgroup takes the kernel a while, and the run has ended by then.

May import ``cgroups`` (lazily: the module may be missing) and the stdlib.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from supervisor.runs.cgroups import CgroupRoot, RunCgroup

PROCESS_GROUP: Final = "process group + marker sweep"
# How long ``close`` waits for the cgroups of finished runs to be removed.
CLOSE_SECONDS: Final = 5.0


class Containment:
    """The cgroup root of a launcher's runs, or none (``kind`` says which)."""

    def __init__(
        self, root: CgroupRoot | None, *, report: Callable[[str], None] | None = None
    ) -> None:
        self.root = root
        self._finished: queue.SimpleQueue[RunCgroup | None] = queue.SimpleQueue()
        self._remover: threading.Thread | None = None
        self._lock = threading.Lock()
        self._report = report or _report_on_stderr
        self._failing = False  # the last cgroup creation failed (reported once a streak)
        self.uncontained = 0  # runs that got no cgroup although cgroups are in force

    @classmethod
    def detect(cls) -> Containment:
        """A cgroup per run where the OS lets us, else process groups; never raises."""
        try:
            from supervisor.runs import cgroups
        except ImportError:
            return cls(None)
        try:
            return cls(cgroups.detect())
        except (OSError, ValueError):
            return cls(None)

    @property
    def kind(self) -> str:
        """``cgroup v2``, ``cgroup v1`` or ``process group + marker sweep``; with how many
        runs fell back to the process group when their cgroup could not be made."""
        if self.root is None:
            return PROCESS_GROUP
        if self.uncontained:
            return f"{self.root.kind} ({self.uncontained} run(s) without: {PROCESS_GROUP})"
        return self.root.kind

    def sweep_leftovers(self) -> int:
        """Kill and remove the run cgroups of managers that are gone; how many there were."""
        if self.root is None:
            return 0
        try:
            leftovers = self.root.leftovers()
        except OSError:
            return 0
        for cgroup in leftovers:
            cgroup.kill()
            with contextlib.suppress(OSError):
                cgroup.remove()
        return len(leftovers)

    def create(self, run_id: str) -> RunCgroup | None:
        """A new cgroup for ``run_id``, or None (no cgroups here, or it cannot be made:
        the run is then contained by its process group and marker)."""
        if self.root is None:
            return None
        try:
            made = self.root.create(run_id)
        except (OSError, ValueError) as error:
            with self._lock:
                self.uncontained += 1
                first = not self._failing
                self._failing = True
            if first:
                self._report(
                    f"could not make a cgroup for run {run_id} ({error}); runs are contained "
                    f"by their process group and marker sweep until that works again"
                )
            return None
        with self._lock:
            again, self._failing = self._failing, False
        if again:
            self._report("run cgroups can be made again")
        return made

    def release(self, cgroup: RunCgroup) -> None:
        """The run of ``cgroup`` is over: kill what may be left in it and remove it, soon."""
        with self._lock:
            if self._remover is None:
                self._remover = threading.Thread(
                    target=self._remove_finished, name="run-cgroup-remover", daemon=True
                )
                self._remover.start()
        self._finished.put(cgroup)

    def _remove_finished(self) -> None:
        while (cgroup := self._finished.get()) is not None:
            with contextlib.suppress(OSError):
                try:
                    # A run's own supervision removes its cgroup when it is empty, so
                    # what comes here was busy then: try the rmdir first all the same
                    # (what was left may have exited since), then kill what is in it.
                    cgroup.remove()
                except OSError:  # EBUSY: something is still in it
                    cgroup.kill()
                    cgroup.remove()

    def close(self) -> None:
        """Remove the cgroups of finished runs (waiting up to ``CLOSE_SECONDS``)."""
        with self._lock:
            remover, self._remover = self._remover, None
        if remover is not None:
            self._finished.put(None)
            remover.join(CLOSE_SECONDS)
        if self.root is not None:
            with contextlib.suppress(OSError):
                self.root.close()


def _report_on_stderr(message: str) -> None:
    print(f"supervisor: {message}", file=sys.stderr, flush=True)
