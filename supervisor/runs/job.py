"""What one run executes: a ``Job``, as the manager hands it to a launcher.

A ``Job`` crosses process boundaries (a fork-server request, a fresh interpreter's
argument) as a JSON object; ``to_json``/``from_json`` are that format. ``cgroup`` is the
directory of the run's own cgroup, which the run's process joins first (see
``cgroups``), or None where runs are contained by process group and marker only.

May import the stdlib only (and ``procs`` for the marker's size).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from supervisor.runs.procs import MARKER_PLACEHOLDER

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
# The same test as ``_RUN_ID.fullmatch`` without the regex engine (a forked spare builds
# its job, and every object it touches is a page copied): the first character, and no
# character left once those the pattern allows are stripped.
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_RUN_ID_CHARS = _ALNUM + "._:-"
# A run id is written over the fork server's marker placeholder, so it must fit in it.
MAX_RUN_ID = len(MARKER_PLACEHOLDER) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """What to execute: one run of a scheduler, or one of its custom actions."""

    scheduler_id: str
    run_id: str
    trigger: str
    deadline: datetime | None = None  # aware UTC: when the timeout will end the run
    action_id: str | None = None
    cgroup: str | None = None  # the run's cgroup directory, joined first (see ``cgroups``)

    def __post_init__(self) -> None:
        run_id = self.run_id
        if (
            not run_id
            or run_id[0] not in _ALNUM
            or run_id.strip(_RUN_ID_CHARS)
            or len(run_id) > MAX_RUN_ID
        ):
            raise ValueError(
                f"run_id {self.run_id!r} must match {_RUN_ID.pattern}, "
                f"at most {MAX_RUN_ID} characters"
            )
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise ValueError("deadline must be an aware datetime")
        if self.cgroup is not None and not self.cgroup.startswith("/"):  # os.path.isabs
            raise ValueError(f"cgroup {self.cgroup!r} must be an absolute path")

    def to_json(self) -> dict[str, Any]:
        return {
            "scheduler_id": self.scheduler_id,
            "run_id": self.run_id,
            "trigger": self.trigger,
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
            "action_id": self.action_id,
            "cgroup": self.cgroup,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Job:
        """Raises ``KeyError``, ``TypeError`` or ``ValueError`` for a malformed object."""
        deadline = obj.get("deadline")
        return cls(
            scheduler_id=str(obj["scheduler_id"]),
            run_id=str(obj["run_id"]),
            trigger=str(obj["trigger"]),
            deadline=None if deadline is None else datetime.fromisoformat(deadline),
            action_id=None if obj.get("action_id") is None else str(obj["action_id"]),
            cgroup=None if obj.get("cgroup") is None else str(obj["cgroup"]),
        )
