"""The JSON shapes of the CLI's ``--json`` output, also spoken on the control socket.

May import ``core``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from supervisor.core.records import Decision, LogRecord, RunRecord, SchedulerStatus
from supervisor.core.settings import EffectiveSettings
from supervisor.core.settings import as_json as settings_as_json
from supervisor.usecases.health import StoreTrouble, trouble_json


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def status_json(status: SchedulerStatus) -> dict[str, Any]:
    return {
        "id": status.id,
        "name": status.name,
        "description": status.description,
        "kind": status.kind.value,
        "state": status.state.value,
        "last_started_at": iso(status.last_started_at),
        "last_completed_at": iso(status.last_completed_at),
        "next_planned_at": iso(status.next_planned_at),
        "last_outcome": None if status.last_outcome is None else status.last_outcome.value,
        "last_error": status.last_error,
        "settings": settings_as_json(status.settings),
        "current_run_id": status.current_run_id,
        "last_actor": status.last_actor,
        "actions": [{"id": a, "title": t} for a, t in status.actions],
        "failed_starts": status.failed_starts,
        "run_phase": status.run_phase,
        "containment": status.containment,
        "current_pid": status.current_pid,
        "state_since": iso(status.state_since),
        "decision": decision_json(status.decision),
        "retry": None
        if not status.retry_attempt
        else {"attempt": status.retry_attempt, "of": status.retries},
        **({"host": status.host} if status.host is not None else {}),  # --cluster only
    }


def with_store(status: dict[str, Any], trouble: StoreTrouble | None) -> dict[str, Any]:
    """``status`` (a ``status_json``) with the store's trouble, if there is one: its
    ``state`` names the problem (``unreachable``, ``disk_full``, ``read_only``, ...)."""
    return status if trouble is None else {**status, "store": trouble_json(trouble)}


def decision_json(decision: Decision | None) -> dict[str, Any] | None:
    """Who stopped, disabled or paused a scheduler, when, why, until when (or None)."""
    if decision is None:
        return None
    return {
        "kind": decision.kind.value,
        "actor": decision.actor,
        "at": iso(decision.at),
        "reason": decision.reason,
        "until": iso(decision.until),
        "text": decision.describe(),
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "scheduler_id": run.scheduler_id,
        "trigger": run.trigger.value,
        "triggered_by": run.triggered_by,
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "outcome": None if run.outcome is None else run.outcome.value,
        "exit_code": run.exit_code,
        "signal": run.signal,
        "error": run.error,
        **({"host": run.host} if run.host is not None else {}),  # --cluster only
    }


def log_json(record: LogRecord, *, cursor: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": iso(record.time),
        "level": record.level.name.lower(),
        "message": record.message,
        "fields": dict(record.fields),
        "run_id": record.run_id,
        "source": record.source.value,
    }
    if cursor is not None:
        out["cursor"] = cursor
    return out


def settings_view_json(view: EffectiveSettings) -> dict[str, Any]:
    return {
        "effective": settings_as_json(view.effective),
        "defaults": settings_as_json(view.defaults),
        "overridden": sorted(view.overrides),
    }
