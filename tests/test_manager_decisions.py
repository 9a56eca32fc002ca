"""Stop, pause, disable and retries in the real manager: real child processes, a real
SQLite file, restarts of the manager on the same state directory, and the CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.access import su, with_role
from supervisor.core.errors import BackendError, DefinitionError
from supervisor.core.records import (
    DecisionKind,
    Level,
    LogQuery,
    LogRecord,
    Outcome,
    State,
    Trigger,
)
from supervisor.service.manager_mode import Service
from supervisor.store.sqlite import SqliteStore, state_db_path
from tests.commands import supervisor
from tests.test_manager import ROOT, finished_runs, make_service, wait_finished
from tests.waiting import wait_for

ALICE = with_role("alice", "admin")


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setenv("TEST_PID_DIR", str(tmp_path))
    running = make_service(tmp_path / "state")
    yield running
    running.close()


def warnings(use_cases: Any, run_id: str) -> list[LogRecord]:
    query = LogQuery(scheduler_id="m.hang", run_id=run_id)
    return [r for _, r in use_cases.logs(su(), query) if r.level >= Level.WARNING]


def test_a_stopped_run_is_cancelled_and_logged_as_a_warning_naming_who_and_why(
    service: Service,
) -> None:
    use_cases = service.use_cases
    assert use_cases is not None
    run_id = use_cases.execute(ALICE, "m.hang")
    wait_for(lambda: use_cases.status(su(), "m.hang").run_phase == "running")
    use_cases.stop(ALICE, "m.hang", reason="ERP maintenance")
    (run,) = wait_finished(service, "m.hang")
    assert run.run_id == run_id and run.outcome is Outcome.CANCELLED
    assert run.error is not None and run.error.startswith("stopped by alice ")
    assert run.error.endswith(" UTC: ERP maintenance")
    records = wait_for(
        lambda: len(found := warnings(use_cases, run_id)) == 2 and found,
        what="the runner's own warning too",
    )
    assert {r.level for r in records} == {Level.WARNING}  # no ERROR at all
    assert {r.message for r in records} == {run.error, "run ended on cancel: the run was stopped"}
    assert not [r for r in records if "run failed" in r.message]
    status = use_cases.status(su(), "m.hang")
    assert status.state is State.STOPPED
    assert status.decision is not None and status.decision.reason == "ERP maintenance"
    (entry,) = [e for _, e in use_cases.audit(su(), scheduler_id="m.hang") if e.action == "stop"]
    assert (entry.actor, entry.detail) == ("alice", "ERP maintenance")


def test_a_pause_runs_nothing_until_its_time_then_resumes_by_itself(service: Service) -> None:
    use_cases = service.use_cases
    assert use_cases is not None
    wait_finished(service, "m.repeat")
    until = datetime.now(UTC) + timedelta(seconds=1.5)
    use_cases.pause(ALICE, "m.repeat", until=until, reason="ERP maintenance")
    assert service.manager is not None and service.manager.wait_idle("m.repeat", 10)
    status = use_cases.status(su(), "m.repeat")
    assert status.state is State.STOPPED and status.next_planned_at is None
    assert status.decision is not None and status.decision.until == until
    count = len(finished_runs(service, "m.repeat"))
    wait_finished(service, "m.repeat", count=count + 2)
    started = sorted(r.started_at for r in finished_runs(service, "m.repeat"))
    assert started[count] >= until  # the first run after the pause: not before its end
    assert use_cases.status(su(), "m.repeat").decision is None


def test_a_pause_and_a_disable_reason_survive_a_restart_of_the_manager(tmp_path: Path) -> None:
    state = tmp_path / "state"
    until = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    first = make_service(state)
    try:
        assert first.use_cases is not None
        first.use_cases.pause(ALICE, "m.waiting", until=until, reason="ERP maintenance")
        first.use_cases.disable(ALICE, "m.stubborn", reason="broken upstream")
    finally:
        first.close()
    with SqliteStore.open(state_db_path(state)) as store:  # what the file holds
        stored = store.all_decisions()
    assert stored["m.waiting"].until == until
    assert stored["m.stubborn"].kind is DecisionKind.DISABLED
    second = make_service(state)
    try:
        use_cases = second.use_cases
        assert use_cases is not None
        paused = use_cases.status(su(), "m.waiting")
        assert paused.state is State.STOPPED and paused.decision is not None
        assert paused.decision.describe().startswith("paused until ")
        assert paused.decision.reason == "ERP maintenance"
        disabled = use_cases.status(su(), "m.stubborn")
        assert disabled.state is State.DISABLED and disabled.decision is not None
        assert disabled.decision.reason == "broken upstream"
        use_cases.resume(ALICE, "m.waiting")
        use_cases.enable(ALICE, "m.stubborn")
        assert use_cases.status(su(), "m.waiting").decision is None
        assert use_cases.status(su(), "m.stubborn").decision is None
    finally:
        second.close()
    with SqliteStore.open(state_db_path(state)) as store:
        assert store.all_decisions() == {}


def test_a_pause_that_ended_while_the_manager_was_down_is_over_at_the_next_start(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = make_service(state)
    try:
        assert first.use_cases is not None
        soon = datetime.now(UTC) + timedelta(milliseconds=300)
        first.use_cases.pause(ALICE, "m.waiting", until=soon)
    finally:
        first.close()
    wait_for(lambda: datetime.now(UTC) > soon, what="the end of the pause")
    second = make_service(state)
    try:
        assert second.use_cases is not None
        status = second.use_cases.status(su(), "m.waiting")
        assert status.state is State.PAUSED and status.decision is None
        assert status.next_planned_at is not None  # planned again from this start
    finally:
        second.close()
    with SqliteStore.open(state_db_path(state)) as store:
        assert store.all_decisions() == {}  # forgotten at that start


def test_a_failed_run_is_retried_with_doubling_waits_then_given_up(service: Service) -> None:
    use_cases = service.use_cases
    assert use_cases is not None
    change = {"retries": 2, "retry_delay": timedelta(milliseconds=400)}
    use_cases.update_settings(ALICE, "m.fail", change)
    use_cases.execute(ALICE, "m.fail")
    status = wait_for(
        lambda: (s := use_cases.status(su(), "m.fail")).retry_attempt and s,
        what="the first retry planned",
    )
    assert (status.retry_attempt, status.retries) == (1, 2)
    runs = sorted(wait_finished(service, "m.fail", count=3), key=lambda r: r.started_at)
    assert [r.trigger for r in runs] == [Trigger.MANUAL, Trigger.RETRY, Trigger.RETRY]
    assert all(r.outcome is Outcome.FAILED for r in runs)
    gaps = [
        (later.started_at - earlier.ended_at).total_seconds()
        for earlier, later in itertools.pairwise(runs)
        if earlier.ended_at is not None
    ]
    assert gaps[0] >= 0.39 and gaps[1] >= 0.79  # 400 ms, then twice that
    assert service.manager is not None and service.manager.wait_idle("m.fail", 10)
    status = use_cases.status(su(), "m.fail")
    assert status.retry_attempt == 0 and status.next_planned_at is None  # given up


def test_a_stop_while_a_retry_is_pending_drops_it_and_start_does_not_bring_it_back(
    service: Service,
) -> None:
    use_cases = service.use_cases
    assert use_cases is not None
    use_cases.update_settings(ALICE, "m.fail", {"retries": 3, "retry_delay": timedelta(hours=1)})
    use_cases.execute(ALICE, "m.fail")
    pending = wait_for(
        lambda: (s := use_cases.status(su(), "m.fail")).retry_attempt and s,
        what="the retry planned",
    )
    assert pending.next_planned_at is not None  # a MANUAL plans only its retry
    use_cases.stop(ALICE, "m.fail", reason="looking into it")
    status = use_cases.status(su(), "m.fail")
    assert status.state is State.STOPPED
    assert (status.retry_attempt, status.next_planned_at) == (0, None)
    use_cases.start(ALICE, "m.fail")
    status = use_cases.status(su(), "m.fail")
    assert status.state is not State.STOPPED
    assert (status.retry_attempt, status.next_planned_at) == (0, None)
    (run,) = finished_runs(service, "m.fail")
    assert run.outcome is Outcome.FAILED


def test_a_run_cancelled_at_shutdown_is_not_retried_after_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PID_DIR", str(tmp_path))
    state = tmp_path / "state"
    first = make_service(state)
    try:
        use_cases = first.use_cases
        assert use_cases is not None
        change = {"retries": 3, "retry_delay": timedelta(hours=1)}
        use_cases.update_settings(ALICE, "m.hang", change)
        use_cases.execute(ALICE, "m.hang")
        wait_for(lambda: use_cases.status(su(), "m.hang").run_phase == "running")
    finally:
        first.close()  # cancels the run
    second = make_service(state)
    try:
        assert second.use_cases is not None
        status = second.use_cases.status(su(), "m.hang")
        assert status.last_outcome is Outcome.CANCELLED
        assert status.state is not State.STOPPED  # nothing else would keep a retry away
        assert (status.retry_attempt, status.next_planned_at) == (0, None)
        (run,) = finished_runs(second, "m.hang")
        assert run.outcome is Outcome.CANCELLED and run.error is not None
        assert "shutting down" in run.error
    finally:
        second.close()


def test_bad_pauses_and_retries_are_refused_naming_the_field(service: Service) -> None:
    use_cases = service.use_cases
    assert use_cases is not None
    with pytest.raises(DefinitionError) as caught:
        use_cases.pause(ALICE, "m.waiting", until=datetime.now(UTC) - timedelta(minutes=1))
    assert caught.value.field == "until"
    with pytest.raises(DefinitionError) as caught:
        use_cases.update_settings(ALICE, "m.waiting", {"retries": -1})
    assert caught.value.field == "retries"
    with pytest.raises(DefinitionError) as caught:
        use_cases.stop(ALICE, "m.waiting", reason="x" * 501)
    assert caught.value.field == "reason"
    use_cases.disable(ALICE, "m.waiting")
    with pytest.raises(BackendError, match="disabled"):
        use_cases.pause(ALICE, "m.waiting", until=datetime.now(UTC) + timedelta(hours=1))


def run_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        supervisor(*args, "--state-dir", str(state)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_stops_pauses_resumes_and_disables_with_reasons(service: Service) -> None:
    state = service.options.state_dir
    done = run_cli(state, "pause", "m.waiting", "--until", "2h", "--reason", "ERP maintenance")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("paused m.waiting until ")
    status = json.loads(run_cli(state, "status", "m.waiting", "--json").stdout)
    assert status["state"] == "stopped"
    assert status["decision"]["kind"] == "paused"
    assert status["decision"]["reason"] == "ERP maintenance"
    until = datetime.fromisoformat(status["decision"]["until"])
    assert timedelta(minutes=119) < until - datetime.now(UTC) <= timedelta(hours=2)
    shown = run_cli(state, "status", "m.waiting").stdout
    assert "decision:" in shown and "ERP maintenance" in shown
    assert run_cli(state, "resume", "m.waiting").returncode == 0
    assert json.loads(run_cli(state, "status", "m.waiting", "--json").stdout)["decision"] is None
    done = run_cli(state, "disable", "m.waiting", "--reason", "broken upstream")
    assert done.returncode == 0, done.stderr
    status = json.loads(run_cli(state, "status", "m.waiting", "--json").stdout)
    assert status["state"] == "disabled" and status["decision"]["reason"] == "broken upstream"
    refused = run_cli(state, "pause", "m.waiting", "--until", "18:00")
    assert refused.returncode != 0 and "disabled" in refused.stderr
    assert run_cli(state, "enable", "m.waiting").returncode == 0
    done = run_cli(state, "stop", "m.waiting", "--reason", "ERP maintenance")
    assert done.returncode == 0 and done.stdout == "stopped m.waiting: ERP maintenance\n"
    bad = run_cli(state, "pause", "m.waiting", "--until", "soon")
    assert bad.returncode == 2 and "until" in bad.stderr
    done = run_cli(state, "settings", "m.waiting", "--retries", "2", "--retry-delay", "1m")
    assert done.returncode == 0, done.stderr
    assert "retries:" in done.stdout and "retry_delay:" in done.stdout
