"""What each owner shows of its schedulers, for every host to show (``cluster_status``).

An owner publishes the status of each scheduler it holds (state, current run, last and
next times, last outcome, last actor, the operator's decision) when it changed, under
the lease it holds; the other hosts read the rows of the current owners with the leases,
so a host that does not own a scheduler shows its owner's state, not its own idle copy.

May import ``core`` and ``cluster.db``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from supervisor.cluster.db import Connection
from supervisor.core.records import Decision, DecisionKind, Outcome, SchedulerStatus, State


@dataclass(frozen=True, slots=True, kw_only=True)
class Shown:
    """What an owner publishes of one scheduler's status (``cluster_status``)."""

    scheduler_id: str
    host: str
    state: str
    run_phase: str | None
    current_run_id: str | None
    last_started_at: datetime | None
    last_completed_at: datetime | None
    next_planned_at: datetime | None
    last_outcome: str | None
    last_error: str | None
    last_actor: str | None
    decision: str | None  # the operator's decision in force, as JSON

    @classmethod
    def of(cls, host: str, status: SchedulerStatus) -> Shown:
        return cls(
            scheduler_id=status.id,
            host=host,
            state=status.state.value,
            run_phase=status.run_phase,
            current_run_id=status.current_run_id,
            last_started_at=status.last_started_at,
            last_completed_at=status.last_completed_at,
            next_planned_at=status.next_planned_at,
            last_outcome=None if status.last_outcome is None else status.last_outcome.value,
            last_error=status.last_error,
            last_actor=status.last_actor,
            decision=_decision_text(status.decision),
        )

    @classmethod
    def of_row(cls, scheduler_id: str, row: tuple[Any, ...]) -> Shown:
        return cls(scheduler_id=scheduler_id, **dict(zip(SHOWN_COLUMNS, row, strict=True)))

    def row(self, scheduler_id: str, token: int) -> tuple[Any, ...]:
        return (scheduler_id, token, *(getattr(self, name) for name in SHOWN_COLUMNS))

    def over(self, status: SchedulerStatus) -> SchedulerStatus:
        """``status`` (this host's) as its owner shows it."""
        return replace(
            status,
            host=self.host,
            state=State(self.state),
            run_phase=self.run_phase,
            current_run_id=self.current_run_id,
            last_started_at=self.last_started_at,
            last_completed_at=self.last_completed_at,
            next_planned_at=self.next_planned_at,
            last_outcome=None if self.last_outcome is None else Outcome(self.last_outcome),
            last_error=self.last_error,
            last_actor=self.last_actor,
            decision=_decision_of(self.decision),
        )


def _decision_text(decision: Decision | None) -> str | None:
    if decision is None:
        return None
    return json.dumps(
        {
            "kind": decision.kind.value,
            "actor": decision.actor,
            "at": decision.at.isoformat(),
            "reason": decision.reason,
            "until": None if decision.until is None else decision.until.isoformat(),
        }
    )


def _decision_of(text: str | None) -> Decision | None:
    if text is None:
        return None
    raw = json.loads(text)
    return Decision(
        kind=DecisionKind(raw["kind"]),
        actor=raw["actor"],
        at=datetime.fromisoformat(raw["at"]),
        reason=raw["reason"],
        until=None if raw["until"] is None else datetime.fromisoformat(raw["until"]),
    )


SHOWN_COLUMNS = (
    "host",
    "state",
    "run_phase",
    "current_run_id",
    "last_started_at",
    "last_completed_at",
    "next_planned_at",
    "last_outcome",
    "last_error",
    "last_actor",
    "decision",
)

# The owners' published statuses come with the owners (a row of a former owner is ignored).
SEE_OWNERS = f"""
SELECT l.scheduler_id, l.holder, {", ".join(f"s.{c}" for c in SHOWN_COLUMNS)}
  FROM cluster_leases AS l
  LEFT JOIN cluster_status AS s ON s.scheduler_id = l.scheduler_id AND s.host = l.holder
 WHERE l.scheduler_id = ANY(%s) AND l.holder IS NOT NULL AND l.expires_at > clock_timestamp()
"""  # noqa: S608 (composed of constants only)

# Only under a lease this host still holds: a former owner cannot overwrite the new one's.
PUBLISH = """
INSERT INTO cluster_status AS s (scheduler_id, token, host, state, run_phase, current_run_id,
       last_started_at, last_completed_at, next_planned_at, last_outcome, last_error,
       last_actor, decision, updated_at)
SELECT u.*, clock_timestamp()
  FROM unnest(%(c0)s::text[], %(c1)s::bigint[], %(c2)s::text[], %(c3)s::text[],
              %(c4)s::text[], %(c5)s::text[], %(c6)s::timestamptz[], %(c7)s::timestamptz[],
              %(c8)s::timestamptz[], %(c9)s::text[], %(c10)s::text[], %(c11)s::text[],
              %(c12)s::text[])
       AS u(scheduler_id, token, host, state, run_phase, current_run_id, last_started_at,
            last_completed_at, next_planned_at, last_outcome, last_error, last_actor,
            decision)
  JOIN cluster_leases AS l ON l.scheduler_id = u.scheduler_id AND l.token = u.token
   AND l.holder = %(holder)s
ON CONFLICT (scheduler_id) DO UPDATE SET
       token = EXCLUDED.token, host = EXCLUDED.host, state = EXCLUDED.state,
       run_phase = EXCLUDED.run_phase, current_run_id = EXCLUDED.current_run_id,
       last_started_at = EXCLUDED.last_started_at,
       last_completed_at = EXCLUDED.last_completed_at,
       next_planned_at = EXCLUDED.next_planned_at, last_outcome = EXCLUDED.last_outcome,
       last_error = EXCLUDED.last_error, last_actor = EXCLUDED.last_actor,
       decision = EXCLUDED.decision, updated_at = EXCLUDED.updated_at
"""


def publish(conn: Connection, *, holder: str, changed: list[tuple[int, Shown]]) -> None:
    """Write ``changed`` (each with the token of the lease it is shown under); a row whose
    lease ``holder`` no longer holds with that token is skipped."""
    rows = [shown.row(shown.scheduler_id, token) for token, shown in changed]
    params: dict[str, Any] = {
        f"c{i}": list(column) for i, column in enumerate(zip(*rows, strict=True))
    }
    conn.execute(PUBLISH, {"holder": holder, **params})


def see_owners(
    conn: Connection, scheduler_ids: list[str]
) -> tuple[dict[str, str], dict[str, Shown]]:
    """Who owns each of ``scheduler_ids`` now (by the database clock), and what each
    owner published of it (absent: nothing yet)."""
    rows = conn.execute(SEE_OWNERS, (scheduler_ids,)).fetchall()
    owners = {row[0]: row[1] for row in rows}
    shown = {row[0]: Shown.of_row(row[0], row[2:]) for row in rows if row[2] is not None}
    return owners, shown
