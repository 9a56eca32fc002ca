"""Which containment is in force for a launcher's runs, and the per-run cgroups it makes.

Where a cgroup hierarchy is writable (``cgroups.detect``: cgroup v2, else v1) every run
gets its own cgroup, which its process joins first: whatever the run does (``setsid``, a
cleared environment), killing the cgroup kills all of it. Elsewhere runs are contained by
their process group and the marker sweep (see ``procs``), which is also the fallback
after every run. ``kind`` names what is in force, for ``status``.

At start, the run cgroups that dead managers left (kill -9 of manager and fork server)
are killed and removed.

May import ``cgroups`` (lazily: the module may be missing) and the stdlib.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from supervisor.runs.cgroups import CgroupRoot, RunCgroup

PROCESS_GROUP: Final = "process group + marker sweep"


class Containment:
    """The cgroup root of a launcher's runs, or none (``kind`` says which)."""

    def __init__(self, root: CgroupRoot | None) -> None:
        self.root = root

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
        """``cgroup v2``, ``cgroup v1`` or ``process group + marker sweep``."""
        return PROCESS_GROUP if self.root is None else self.root.kind

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
            return self.root.create(run_id)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.root is not None:
            with contextlib.suppress(OSError):
                self.root.close()
