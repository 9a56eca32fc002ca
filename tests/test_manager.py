"""The manager with real child processes and a real SQLite file."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.core.access import su
from supervisor.core.errors import AlreadyRunning, BackendError
from supervisor.core.records import LogQuery, Outcome, RunRecord, Source, State, Trigger
from supervisor.manager.shell import CLOSE_MARGIN_SECONDS
from supervisor.runs.launcher import ForkServerLauncher, Job
from supervisor.service.manager_mode import RunOptions, Service
from supervisor.store.sqlite import SqliteStore
from tests.commands import supervisor
from tests.waiting import wait_for

APP = "tests.apps.manager_jobs:cfg"
ROOT = Path(__file__).resolve().parent.parent


def make_service(state_dir: Path, **overrides: object) -> Service:
    options = RunOptions(app_spec=APP, state_dir=state_dir, admin=None, grace_seconds=0.5)
    if overrides:
        from dataclasses import replace

        options = replace(options, **overrides)  # type: ignore[arg-type]
    service = Service(options, log=io.StringIO())
    service.start()
    return service


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setenv("TEST_PID_DIR", str(tmp_path))
    running = make_service(tmp_path / "state")
    yield running
    running.close()


def finished_runs(service: Service, scheduler_id: str) -> list[RunRecord]:
    return [r for r in service.use_cases.runs(su(), scheduler_id) if r.outcome]


def wait_finished(service: Service, scheduler_id: str, count: int = 1) -> list[RunRecord]:
    return wait_for(
        lambda: (runs := finished_runs(service, scheduler_id)) and len(runs) >= count and runs,
        timeout=20,
        what=f"{count} finished run(s) of {scheduler_id}",
    )


def test_one_shot_runs_once_logs_fields_and_stops(service: Service) -> None:
    use_cases = service.use_cases
    (run,) = wait_finished(service, "m.oneshot")
    assert run.outcome is Outcome.SUCCEEDED
    assert run.trigger is Trigger.START
    assert use_cases.status(su(), "m.oneshot").state is State.STOPPED
    records = wait_for(
        lambda: use_cases.logs(su(), LogQuery(scheduler_id="m.oneshot")), what="logs stored"
    )
    by_message = {r.message: r for _, r in records}
    assert by_message["hello"].fields == {"n": 1, "who": "world"}
    assert by_message["hello"].source is Source.LOGGER
    assert by_message["plain output"].source is Source.STDOUT
    assert all(r.run_id == run.run_id for _, r in records)


def test_schedule_repeats_with_the_pause_after_each_run(service: Service) -> None:
    runs = wait_finished(service, "m.repeat", count=3)
    ordered = sorted(runs, key=lambda r: r.started_at)
    for earlier, later in itertools.pairwise(ordered):
        assert earlier.ended_at is not None
        # The pause (200 ms) is measured from the end of one run to the start of the next.
        assert later.started_at - earlier.ended_at >= timedelta(milliseconds=190)
    assert all(r.outcome is Outcome.SUCCEEDED for r in runs)


def test_execute_now_is_refused_while_running_naming_the_run(service: Service) -> None:
    use_cases = service.use_cases
    run_id = use_cases.execute(su(), "m.hang")
    wait_for(lambda: use_cases.status(su(), "m.hang").state is State.RUNNING)
    with pytest.raises(AlreadyRunning) as refused:
        use_cases.execute(su(), "m.hang")
    assert run_id in str(refused.value)
    use_cases.stop(su(), "m.hang")
    (run,) = wait_finished(service, "m.hang")
    assert run.run_id == run_id
    assert run.outcome is Outcome.CANCELLED
    assert use_cases.status(su(), "m.hang").state is State.STOPPED


def test_stop_plans_nothing_more_until_started(service: Service) -> None:
    use_cases = service.use_cases
    wait_finished(service, "m.repeat", count=1)
    use_cases.stop(su(), "m.repeat")
    assert service.manager is not None
    assert service.manager.wait_idle("m.repeat", 10)
    status = use_cases.status(su(), "m.repeat")
    assert status.state is State.STOPPED
    assert status.next_planned_at is None
    assert status.last_actor == "root"
    count = len(finished_runs(service, "m.repeat"))
    use_cases.start(su(), "m.repeat")
    wait_finished(service, "m.repeat", count=count + 2)


def test_timeout_ends_the_run_as_timed_out(service: Service) -> None:
    service.use_cases.execute(su(), "m.slow")
    (run,) = wait_finished(service, "m.slow")
    assert run.outcome is Outcome.TIMED_OUT


def test_crash_and_failure_are_outcomes_not_manager_errors(service: Service) -> None:
    use_cases = service.use_cases
    use_cases.execute(su(), "m.crash")
    use_cases.execute(su(), "m.fail")
    (crashed,) = wait_finished(service, "m.crash")
    (failed,) = wait_finished(service, "m.fail")
    assert crashed.outcome is Outcome.CRASHED
    assert crashed.exit_code == 3
    assert failed.outcome is Outcome.FAILED
    assert failed.error is not None and "nothing to do today" in failed.error
    status = use_cases.status(su(), "m.fail")
    assert status.last_outcome is Outcome.FAILED
    assert status.last_error == failed.error


def test_settings_change_replans_a_waiting_scheduler_at_once(service: Service) -> None:
    use_cases = service.use_cases
    before = use_cases.status(su(), "m.waiting").next_planned_at
    assert before is not None
    use_cases.update_settings(su(), "m.waiting", {"start_delay": timedelta(milliseconds=50)})
    after = use_cases.status(su(), "m.waiting").next_planned_at
    assert after is not None and after < before - timedelta(minutes=59)
    wait_finished(service, "m.waiting")
    # Disabling through settings stops planning, and the state says so.
    use_cases.update_settings(su(), "m.waiting", {"disabled": True})
    status = use_cases.status(su(), "m.waiting")
    assert status.state is State.DISABLED
    assert status.next_planned_at is None


def test_cron_scheduler_plans_its_next_wall_clock_time(service: Service) -> None:
    status = service.use_cases.status(su(), "m.cron")
    assert status.state is State.PAUSED
    assert status.next_planned_at is not None
    berlin = status.next_planned_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute) == (3, 0)


def test_restart_keeps_history_and_settings(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = make_service(state)
    try:
        (run,) = wait_finished(first, "m.oneshot")
        first.use_cases.update_settings(su(), "m.waiting", {"disabled": True})
    finally:
        first.close()
    second = make_service(state)
    try:
        runs = second.use_cases.runs(su(), "m.oneshot")
        assert run.run_id in [r.run_id for r in runs]
        assert second.use_cases.status(su(), "m.waiting").state is State.DISABLED
        # A ONE_SHOT runs again at the next start of the supervisor.
        wait_finished(second, "m.oneshot", count=2)
    finally:
        second.close()


def test_kill_9_of_the_manager_leaves_no_run_and_marks_it_interrupted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "TEST_PID_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    manager = subprocess.Popen(
        supervisor("run", "--app", APP, "--state-dir", str(state), "--no-admin"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (state / "control.sock").exists(), timeout=20, what="control socket")
        run_id = subprocess.run(
            supervisor("execute", "m.hang", "--state-dir", str(state), "--json"),
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        pid_file = wait_for(
            lambda: next(iter(tmp_path.glob("*.pid")), None), timeout=20, what="run pid file"
        )
        run_pid = int(pid_file.read_text())
        run_process = psutil.Process(run_pid)
        os.kill(manager.pid, signal.SIGKILL)
        manager.wait(10)

        def gone() -> bool:
            try:
                return run_process.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(gone, timeout=10, what="the run to die with its manager")
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait()
    restarted = make_service(state)
    try:
        run = restarted.use_cases.run(su(), pid_file.stem)
        assert run.outcome is Outcome.INTERRUPTED
        assert run.run_id in run_id
        assert run.error is not None and "manager" in run.error
    finally:
        restarted.close()
    with SqliteStore.open(state / "state.db") as store:
        assert store.unfinished_runs() == []


def test_a_run_that_lasts_gets_its_process_stored_for_crash_recovery(
    service: Service, tmp_path: Path
) -> None:
    """The pid of a run is stored once it has run ``PROCESS_ROW_SECONDS`` (a shorter run
    needs none: recovery finds one without it by its marker and cgroup)."""
    use_cases = service.use_cases
    run_id = use_cases.execute(su(), "m.hang")
    pid_file = tmp_path / f"{run_id}.pid"
    run_pid = wait_for(
        lambda: pid_file.exists() and pid_file.read_text().strip() and int(pid_file.read_text()),
        timeout=20,
        what="the run's pid file",
    )

    def stored() -> tuple[int, int, float] | None:
        path = f"file:{tmp_path / 'state' / 'state.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(path, uri=True)) as db:
            row = db.execute(
                "SELECT pid, pgid, create_time FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return row if row is not None and row[0] is not None else None

    pid, pgid, create_time = wait_for(stored, timeout=10, what="the run's process stored")
    assert pid == pgid == run_pid
    assert create_time == pytest.approx(psutil.Process(run_pid).create_time(), abs=1)
    use_cases.stop(su(), "m.hang")
    (run,) = wait_finished(service, "m.hang")
    assert run.outcome is Outcome.CANCELLED


def test_start_while_a_stopped_run_is_still_ending_takes_effect_after_it(
    service: Service,
) -> None:
    use_cases = service.use_cases
    run_id = use_cases.execute(su(), "m.stubborn")
    wait_for(
        lambda: use_cases.logs(su(), LogQuery(scheduler_id="m.stubborn", run_id=run_id)),
        what="the run to start",
    )
    use_cases.stop(su(), "m.stubborn")
    use_cases.start(su(), "m.stubborn")  # the run ignores SIGTERM: it is still ending now
    assert use_cases.status(su(), "m.stubborn").state is State.RUNNING
    (run,) = wait_finished(service, "m.stubborn")
    assert run.outcome is Outcome.CANCELLED
    assert run.signal == signal.SIGKILL
    status = use_cases.status(su(), "m.stubborn")
    assert status.state is State.PAUSED
    # Started again: the start delay (1 h) applies, not nothing and not the pause.
    assert status.next_planned_at is not None and run.ended_at is not None
    assert status.next_planned_at - run.ended_at >= timedelta(minutes=59)


def test_shutdown_meets_its_grace_with_a_run_that_ignores_sigterm(tmp_path: Path) -> None:
    running = make_service(tmp_path / "state")
    use_cases = running.use_cases
    run_id = use_cases.execute(su(), "m.stubborn")
    wait_for(
        lambda: use_cases.logs(su(), LogQuery(scheduler_id="m.stubborn", run_id=run_id)),
        what="the run to start",
    )
    began = time.monotonic()
    running.close()  # grace 0.5 s: cancel, SIGTERM (ignored), SIGKILL
    assert time.monotonic() - began < 0.5 + CLOSE_MARGIN_SECONDS
    with SqliteStore.open(tmp_path / "state" / "state.db") as store:
        run = store.get_run(run_id)
    assert run.outcome is Outcome.CANCELLED
    assert run.signal == signal.SIGKILL


def test_regression_a_real_runs_outcome_lands_once_the_store_takes_writes_again(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = service.store
    assert store is not None
    real_finish = store.finish_run
    full = threading.Event()
    full.set()
    attempts: list[str] = []

    def finish_run(run_id: str, **fields: Any) -> RunRecord:
        if full.is_set():
            attempts.append(run_id)
            raise sqlite3.OperationalError("database or disk is full")
        return real_finish(run_id, **fields)

    monkeypatch.setattr(store, "finish_run", finish_run)
    use_cases = service.use_cases
    run_id = use_cases.execute(su(), "m.fail")
    # Other schedulers of the app run too (and fail to store): count this run only.
    wait_for(lambda: attempts.count(run_id) >= 2, what="the end row to be retried")
    status = use_cases.status(su(), "m.fail")
    assert status.state is State.PAUSED  # m.fail is MANUAL: waiting for a trigger
    assert status.last_outcome is Outcome.FAILED  # from memory, while the store refuses
    assert use_cases.run(su(), run_id).outcome is None
    full.clear()
    run = wait_for(
        lambda: (r := use_cases.run(su(), run_id)).outcome and r, what="the stored outcome"
    )
    assert run.outcome is Outcome.FAILED
    assert run.error is not None and "nothing to do today" in run.error


def test_regression_a_restart_does_not_run_a_schedule_before_its_pause_is_over(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = make_service(state)
    try:
        use_cases = first.use_cases
        use_cases.update_settings(su(), "m.repeat", {"pause_time": timedelta(hours=1)})
        wait_finished(first, "m.repeat")
        wait_finished(first, "m.oneshot")
        assert first.manager is not None and first.manager.wait_idle("m.repeat", 10)
        runs = finished_runs(first, "m.repeat")
    finally:
        first.close()
    last_end = max(r.ended_at for r in runs if r.ended_at is not None)
    second = make_service(state)
    try:
        status = second.use_cases.status(su(), "m.repeat")
        assert status.state is State.PAUSED
        assert status.next_planned_at == last_end + timedelta(hours=1)
        # The one-shot of the same app runs at this start, as it should; m.repeat does not.
        wait_finished(second, "m.oneshot", count=2)
        assert len(second.use_cases.runs(su(), "m.repeat")) == len(runs)
    finally:
        second.close()


def test_regression_a_scheduler_whose_starts_fail_says_so_on_the_cli(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: object, job: Job, *, cancel: object = None) -> object:
        raise BackendError("the app failed to load: ImportError: no module named 'gone'")

    # The real fork-server launcher, made to refuse every start from now on.
    monkeypatch.setattr(ForkServerLauncher, "spawn", refuse)
    use_cases = service.use_cases
    wait_for(
        lambda: use_cases.status(su(), "m.repeat").state is State.FAILING,
        what="m.repeat to show its failed start",
    )
    shown = json.loads(
        subprocess.run(
            supervisor("status", "m.repeat", "--state-dir", str(service.state_dir), "--json"),
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert shown["state"] == "failing"
    assert shown["last_outcome"] == "crashed"
    assert shown["last_error"].startswith("could not start a run: the app failed to load")
    assert shown["next_planned_at"] is not None  # a retry is planned
