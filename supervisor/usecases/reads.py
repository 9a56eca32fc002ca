"""A backend's two status reads, through the use cases as one subject.

What the notification watcher and the metrics collector read (``notify.feed.RunSource``):
permission-checked like every use case; reads write no audit. May import ``core`` and
``usecases``.
"""

from __future__ import annotations

from supervisor.core.access import Permission, Subject
from supervisor.core.records import RunRecord, SchedulerStatus
from supervisor.usecases.schedulers import UseCases


def reader(name: str) -> Subject:
    """A subject that may list schedulers and read their runs, nothing else."""
    return Subject(name=name, permissions=frozenset({Permission.LIST, Permission.STATUS}))


class UseCaseReads:
    def __init__(self, use_cases: UseCases, subject: Subject) -> None:
        self._use_cases = use_cases
        self._subject = subject

    def statuses(self) -> list[SchedulerStatus]:
        return self._use_cases.list(self._subject)

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        return self._use_cases.runs(self._subject, scheduler_id, limit=limit)
