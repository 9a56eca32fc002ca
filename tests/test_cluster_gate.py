"""The manager's cluster hooks (``manager/cluster_gate.py``) with a scripted gate.

A real ``Manager`` with real child processes (the fork server) and a real SQLite file; only
the cluster is a script (``ScriptedGate``), so each rule of the seam is shown on its own:
no run without a claimed slot, a fenced end is kept as ``interrupted``, a lost lease
cancels the run in flight, and a control for a scheduler another host owns goes there.
The real gate on PostgreSQL is in tests/test_cluster_member.py and
tests/test_cluster_manager.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.app import load_app
from supervisor.core.clock import SystemClock
from supervisor.core.errors import AlreadyRunning, BackendError, StoreError
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, Trigger
from supervisor.manager.cluster_gate import GateHooks
from supervisor.manager.shell import Manager, ManagerConfig
from supervisor.runs.launcher import ForkServerLauncher
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.schedulers import enable
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.manager_jobs:cfg"
REPEAT = "m.repeat"  # SCHEDULE, 200 ms pause
HANG = "m.hang"  # MANUAL, runs until cancelled
CRON = "m.cron"  # CRON, 03:00 Europe/Berlin


@dataclass
class ScriptedGate:
    """A cluster of one's own making: which schedulers this host owns, whether run ends are
    refused, what the other hosts answer."""

    owned: set[str] = field(default_factory=set)
    fence: bool = False
    answer: dict[str, Any] = field(default_factory=lambda: {"ok": True, "run_id": "elsewhere"})
    claims: list[tuple[str, str, str | None]] = field(default_factory=list)
    slots: dict[str, datetime] = field(default_factory=dict)  # run ID -> the slot claimed
    ends: list[tuple[str, str]] = field(default_factory=list)
    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    shared: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hooks: GateHooks | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return "here"

    def bind(self, hooks: GateHooks) -> None:
        self.hooks = hooks

    def owns(self, scheduler_id: str) -> bool:
        return scheduler_id in self.owned

    def owner(self, scheduler_id: str) -> str | None:
        return "here" if scheduler_id in self.owned else "there"

    def shown(self, status: SchedulerStatus) -> SchedulerStatus:
        return replace(status, host=self.owner(status.id))

    def claim(
        self,
        scheduler_id: str,
        run_id: str,
        *,
        slot: datetime,
        trigger: str,
        pause: timedelta | None = None,
    ) -> str | None:
        refused = None if scheduler_id in self.owned else "not the owner"
        with self.lock:
            self.claims.append((scheduler_id, run_id, refused))
            self.slots[run_id] = slot
        return refused

    def record_end(self, run_id: str, outcome: str) -> bool:
        with self.lock:
            self.ends.append((run_id, outcome))
        return not self.fence

    def send(
        self, scheduler_id: str, kind: str, payload: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        self.sent.append((scheduler_id, kind, payload))
        return self.answer

    def share_settings(self, scheduler_id: str, overrides: Mapping[str, Any]) -> None:
        self.shared.append((scheduler_id, dict(overrides)))

    def refused(self, scheduler_id: str) -> int:
        with self.lock:
            return sum(1 for sid, _, why in self.claims if sid == scheduler_id and why)


@pytest.fixture
def launcher() -> Iterator[ForkServerLauncher]:
    made = ForkServerLauncher(APP, cwd=str(ROOT))
    made.start()
    yield made
    made.close()


@pytest.fixture
def gate() -> ScriptedGate:
    return ScriptedGate()


@pytest.fixture
def reports() -> list[str]:
    return []


@pytest.fixture
def parts(
    tmp_path: Path, launcher: ForkServerLauncher, gate: ScriptedGate, reports: list[str]
) -> Iterator[tuple[Manager, SqliteStore]]:
    store = SqliteStore.open(tmp_path / "state.db")
    manager = Manager(
        enable(load_app(APP)).registry,
        store=store,
        launcher=launcher,
        clock=SystemClock(),
        config=ManagerConfig(grace_seconds=0.5),
        report=reports.append,
        gate=gate,
    )
    manager.open()
    yield manager, store
    manager.close()
    store.close()


def test_no_run_without_a_claimed_slot_and_each_end_goes_through_the_gate(
    parts: tuple[Manager, SqliteStore], gate: ScriptedGate
) -> None:
    manager, store = parts
    wait_for(lambda: gate.refused(REPEAT) >= 3, timeout=10, what="three refused claims")
    assert store.runs(REPEAT, limit=10) == []  # another host owns it: nothing ran here
    assert manager.status(REPEAT).host == "there"
    gate.owned.add(REPEAT)
    ran = wait_for(
        lambda: [r for r in store.runs(REPEAT, limit=10) if r.outcome], timeout=10, what="a run"
    )
    claimed = {run_id for sid, run_id, why in gate.claims if sid == REPEAT and why is None}
    assert {run.run_id for run in ran} <= claimed
    assert (ran[-1].run_id, "succeeded") in gate.ends
    assert manager.runs(REPEAT)[0].host == "here"
    assert manager.status(REPEAT).host == "here"


def test_a_refused_end_is_kept_as_interrupted_and_reported(
    parts: tuple[Manager, SqliteStore], gate: ScriptedGate, reports: list[str]
) -> None:
    _, store = parts
    gate.owned.add(REPEAT)
    gate.fence = True
    run = wait_for(
        lambda: [r for r in store.runs(REPEAT, limit=10) if r.outcome], timeout=10, what="a run"
    )[-1]
    assert run.outcome is Outcome.INTERRUPTED
    assert run.error is not None and run.error.startswith("fenced:")
    assert any(f"run {run.run_id} of {REPEAT} was fenced" in line for line in reports)


def test_a_lost_lease_cancels_the_run_in_flight(
    parts: tuple[Manager, SqliteStore], gate: ScriptedGate
) -> None:
    manager, store = parts
    gate.owned.add(HANG)
    run_id = manager.execute(HANG, actor="ops")
    wait_for(lambda: manager.status(HANG).run_phase == "running", timeout=10, what="running")
    gate.owned.discard(HANG)
    assert gate.hooks is not None
    gate.hooks.lease_lost(HANG)
    assert manager.wait_idle(HANG, timeout=10)
    run = store.get_run(run_id)
    assert run.outcome is Outcome.CANCELLED
    assert run.error is not None and "lost the lease" in run.error
    assert (run_id, "cancelled") in gate.ends


def test_controls_for_a_scheduler_another_host_owns_go_there(
    parts: tuple[Manager, SqliteStore], gate: ScriptedGate
) -> None:
    manager, store = parts
    assert manager.execute(HANG, actor="ops") == "elsewhere"
    manager.stop(REPEAT, actor="ops")
    assert [(sid, kind) for sid, kind, _ in gate.sent] == [(HANG, "execute"), (REPEAT, "stop")]
    assert gate.sent[0][2]["actor"] == "ops"
    assert store.runs(HANG, limit=10) == []  # nothing ran here
    gate.answer = {"ok": False, "error_type": "AlreadyRunning", "run_id": "r1", "error": "busy"}
    with pytest.raises(AlreadyRunning) as raised:
        manager.execute(HANG, actor="ops")
    assert raised.value.run_id == "r1"
    gate.answer = {"ok": False, "error": "shutting down", "host": "there"}
    with pytest.raises(BackendError, match="there: shutting down"):
        manager.start(REPEAT, actor="ops")


def test_a_command_from_another_host_is_carried_out_here(
    parts: tuple[Manager, SqliteStore], gate: ScriptedGate
) -> None:
    manager, store = parts
    gate.owned.add(HANG)
    assert gate.hooks is not None
    answer = gate.hooks.obey(HANG, "execute", {"actor": "ops@there"})
    assert answer["ok"] is True
    wait_for(lambda: manager.status(HANG).run_phase == "running", timeout=10, what="running")
    assert store.get_run(answer["run_id"]).triggered_by == "ops@there"
    again = gate.hooks.obey(HANG, "execute", {"actor": "ops@there"})
    assert again == {
        "ok": False,
        "error": again["error"],
        "error_type": "AlreadyRunning",
        "run_id": answer["run_id"],
    }
    assert gate.hooks.obey(HANG, "stop", {"actor": "ops@there"}) == {"ok": True}
    assert manager.wait_idle(HANG, timeout=10)
    assert gate.sent == []  # carried out here, not sent on


def test_a_missed_cron_slot_is_run_at_once_claiming_that_slot(
    parts: tuple[Manager, SqliteStore], gate: ScriptedGate
) -> None:
    manager, store = parts
    gate.owned.add(CRON)
    assert gate.hooks is not None
    slot = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    gate.hooks.run_missed(CRON, slot)
    run = wait_for(
        lambda: [r for r in store.runs(CRON, limit=10) if r.outcome], timeout=10, what="a run"
    )[0]
    assert gate.slots[run.run_id] == slot
    assert run.triggered_by is not None and "missed" in run.triggered_by
    # Not for a stopped scheduler.
    manager.stop(CRON, actor="ops")
    gate.hooks.run_missed(CRON, slot)
    assert [r.run_id for r in store.runs(CRON, limit=10)] == [run.run_id]


def test_stop_reasons_and_pauses_travel_to_the_owner_and_back(
    parts: tuple[Manager, SqliteStore], gate: ScriptedGate
) -> None:
    manager, _ = parts
    until = datetime(2030, 1, 1, tzinfo=UTC)
    manager.stop(REPEAT, actor="ops", reason="maintenance")
    manager.pause(HANG, actor="ops", until=until, reason="quiet hours")
    assert [(sid, kind) for sid, kind, _ in gate.sent] == [(REPEAT, "stop"), (HANG, "pause")]
    assert gate.sent[0][2]["reason"] == "maintenance"
    assert gate.sent[1][2] == {"actor": "ops", "until": until.isoformat(), "reason": "quiet hours"}
    # On the owner, the same payload is carried out.
    gate.owned.update({REPEAT, HANG})
    assert gate.hooks is not None
    assert gate.hooks.obey(HANG, "pause", gate.sent[1][2]) == {"ok": True}
    decision = manager.status(HANG).decision
    assert decision is not None and decision.until == until and decision.reason == "quiet hours"
    assert gate.hooks.obey(REPEAT, "stop", gate.sent[0][2]) == {"ok": True}
    stopped = manager.status(REPEAT).decision
    assert stopped is not None and stopped.reason == "maintenance"
    assert gate.hooks.obey(HANG, "pause", {"until": "not a time"})["ok"] is False


def test_runs_left_by_another_host_are_marked_at_a_later_poll_when_the_store_fails(
    parts: tuple[Manager, SqliteStore],
    gate: ScriptedGate,
    reports: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, store = parts
    began = datetime.now(UTC) - timedelta(seconds=5)
    left, ended = (
        RunRecord(
            run_id=run_id,
            scheduler_id=REPEAT,
            trigger=Trigger.SCHEDULE,
            triggered_by=None,
            started_at=began,
            host="there",
        )
        for run_id in ("left-open", "ended-there")
    )
    store.insert_run(left)
    store.insert_run(ended)
    failures = [StoreError("database is locked")] * 2
    mark = store.mark_interrupted

    def flaky(run_id: str, *, ended_at: datetime, error: str | None) -> None:
        if failures:
            raise failures.pop()
        mark(run_id, ended_at=ended_at, error=error)

    monkeypatch.setattr(store, "mark_interrupted", flaky)
    assert gate.hooks is not None
    # The takeover's marks fail: kept for the next poll, reported once.
    assert gate.hooks.leases_taken([REPEAT]) is False
    assert store.get_run(left.run_id).outcome is None
    # Meanwhile the other host ends one of them itself: that end stays.
    store.finish_run(
        ended.run_id,
        ended_at=datetime.now(UTC),
        outcome=Outcome.SUCCEEDED,
        exit_code=0,
        signal=None,
        error=None,
    )
    assert gate.hooks.leases_taken([]) is True
    marked = store.get_run(left.run_id)
    assert marked.outcome is Outcome.INTERRUPTED
    assert marked.error is not None and "another host took the scheduler over" in marked.error
    assert store.get_run(ended.run_id).outcome is Outcome.SUCCEEDED
    assert gate.hooks.leases_taken([]) is True  # nothing left: nothing done
    assert sum("could not mark" in line for line in reports) == 1
    assert any("marked now" in line for line in reports)
