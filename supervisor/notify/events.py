"""What a notification says: a frozen value and its JSON form.

May import ``core`` and the stdlib.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class NotificationKind(enum.Enum):
    FAILURE = "failure"  # a run failed, crashed or timed out after a success (or first run)
    RECOVERY = "recovery"  # a run succeeded after failures
    MISSED = "missed"  # the scheduler did not start when it was expected to (dead-man's switch)


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    kind: NotificationKind
    app: str
    host: str
    scheduler_id: str
    scheduler_name: str
    at: datetime
    run_id: str | None = None
    outcome: str | None = None
    error: str | None = None
    failures_in_a_row: int = 0
    expected_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("Notification.at must be an aware datetime")

    @property
    def subject(self) -> str:
        """A one-line summary, e.g. for an email subject."""
        name = f"{self.scheduler_name} ({self.scheduler_id})"
        if self.kind is NotificationKind.FAILURE:
            return f"[{self.app}@{self.host}] {name} {self.outcome or 'failed'}"
        if self.kind is NotificationKind.RECOVERY:
            return f"[{self.app}@{self.host}] {name} recovered"
        return f"[{self.app}@{self.host}] {name} did not run when expected"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": self.kind.value,
            "app": self.app,
            "host": self.host,
            "scheduler_id": self.scheduler_id,
            "scheduler_name": self.scheduler_name,
            "at": self.at.isoformat(),
            "run_id": self.run_id,
            "outcome": self.outcome,
            "error": self.error,
            "failures_in_a_row": self.failures_in_a_row,
            "expected_at": None if self.expected_at is None else self.expected_at.isoformat(),
            "summary": self.subject,
        }

    def to_text(self) -> str:
        """A plain-text body: what happened, since when, and the error in full."""
        lines = [self.subject, ""]
        lines.append(f"scheduler: {self.scheduler_id}")
        lines.append(f"host:      {self.host}")
        lines.append(f"time:      {self.at.isoformat()}")
        if self.run_id:
            lines.append(f"run:       {self.run_id}")
        if self.outcome:
            lines.append(f"outcome:   {self.outcome}")
        if self.failures_in_a_row:
            lines.append(f"failures in a row: {self.failures_in_a_row}")
        if self.expected_at:
            lines.append(f"expected at: {self.expected_at.isoformat()}")
        if self.error:
            lines += ["", self.error]
        return "\n".join(lines) + "\n"
