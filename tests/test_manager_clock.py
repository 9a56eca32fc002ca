"""The manager's shell under an injected clock, a real SQLite file and fake launchers.

Timing (no bursts after wall-clock jumps, the pause across restarts), a store that fails
for a while (disk full), and a launch that hangs. The launchers here are test doubles
that finish each run at once (or block until told), so these tests are about the shell;
real child processes are covered by test_manager and test_launcher.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from supervisor.core.clock import FakeClock, SystemClock
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.errors import AlreadyRunning, BackendError
from supervisor.core.records import LogRecord, Outcome, State, Trigger
from supervisor.core.registry import Registry
from supervisor.core.settings import from_store
from supervisor.manager.machine import CANCELLED_BEFORE_START
from supervisor.manager.shell import RETRY_SECONDS, WALL_CLOCK_CHECK_SECONDS, Manager, ManagerConfig
from supervisor.runs.launcher import Exit, Job, StillRunning
from supervisor.store.sqlite import SqliteStore
from tests.waiting import wait_for

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class InstantRun:
    def __init__(self, job: Job) -> None:
        self.pid = 0
        self.create_time = 0.0
        self.job = job

    def supervise(
        self,
        *,
        sink: Callable[[Sequence[LogRecord]], None],
        timeout: float | None,
        cancel: threading.Event,
        grace: float = 5.0,
        still_running: StillRunning | None = None,
        ended: Callable[[Exit], None] | None = None,
    ) -> Exit:
        return Exit(outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None)


class InstantLauncher:
    containment = "test double"

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def start(self) -> None: ...

    def close(self) -> None: ...

    def spawn(self, job: Job, *, cancel: threading.Event | None = None) -> InstantRun:
        self.jobs.append(job)
        return InstantRun(job)


def noop(ctx: object) -> None:
    return None


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Manager, FakeClock, InstantLauncher, SqliteStore]]:
    registry = Registry()
    registry.add(
        Options(
            id="pause",
            name="Pause",
            kind=Kind.SCHEDULE,
            runner=noop,
            defaults=Settings(start_delay=timedelta(hours=1), pause_time=timedelta(hours=1)),
        )
    )
    registry.add(
        Options(
            id="cron",
            name="Cron",
            kind=Kind.CRON,
            runner=noop,
            defaults=Settings(cron="0 * * * *", timezone="UTC"),
        )
    )
    clock = FakeClock(START)
    launcher = InstantLauncher()
    store = SqliteStore.open(tmp_path / "state.db")
    manager = Manager(registry, store=store, launcher=launcher, clock=clock)
    manager.open()
    yield manager, clock, launcher, store
    manager.close(wait=10)
    store.close()


def poke(manager: Manager) -> None:
    """Make the planner look at the clock now (it would on its own at its next timeout)."""
    manager.wake()


def runs_of(launcher: InstantLauncher, scheduler_id: str) -> list[Job]:
    return [j for j in launcher.jobs if j.scheduler_id == scheduler_id]


def test_a_wall_clock_jump_forward_causes_no_burst(
    rig: tuple[Manager, FakeClock, InstantLauncher, SqliteStore],
) -> None:
    manager, clock, launcher, _ = rig
    # Three days of wall time pass in an instant (NTP step, operator error).
    clock.jump_wall(3 * 24 * 3600)
    # Cron plans are checked against the wall clock at least this often.
    clock.advance(WALL_CLOCK_CHECK_SECONDS)
    poke(manager)
    # The cron scheduler runs once for all the hours it "missed", not 72 times.
    wait_for(lambda: runs_of(launcher, "cron"), what="one cron run")
    assert manager.wait_idle("cron", 5)
    poke(manager)
    assert len(runs_of(launcher, "cron")) == 1
    # The delay-based scheduler measures monotonic time: nothing is due yet.
    assert runs_of(launcher, "pause") == []
    status = manager.status("cron")
    assert status.next_planned_at == datetime(2026, 3, 4, 13, 0, tzinfo=UTC)


def test_delays_follow_monotonic_time(
    rig: tuple[Manager, FakeClock, InstantLauncher, SqliteStore],
) -> None:
    manager, clock, launcher, store = rig
    clock.advance(3600)
    poke(manager)
    wait_for(lambda: runs_of(launcher, "pause"), what="the first run after the start delay")
    assert manager.wait_idle("pause", 5)
    (run,) = store.runs("pause")
    assert run.trigger is Trigger.SCHEDULE
    # The next run waits the pause from the end of this one.
    assert manager.status("pause").next_planned_at == START + timedelta(hours=2)
    clock.advance(3599)
    poke(manager)
    assert len(runs_of(launcher, "pause")) == 1
    clock.advance(1)
    poke(manager)
    wait_for(lambda: len(runs_of(launcher, "pause")) == 2, what="the second run")


def test_a_wall_clock_step_back_does_not_repeat_cron_runs(
    rig: tuple[Manager, FakeClock, InstantLauncher, SqliteStore],
) -> None:
    manager, clock, launcher, _ = rig
    clock.advance(3600)  # 13:00: the hourly run is due
    poke(manager)
    wait_for(lambda: runs_of(launcher, "cron"), what="the 13:00 run")
    assert manager.wait_idle("cron", 5)
    clock.jump_wall(-1800)  # back to 12:30 by the wall clock
    clock.advance(1700)  # 12:58:20: still before the next planned 14:00
    poke(manager)
    assert len(runs_of(launcher, "cron")) == 1


def test_a_store_failure_at_launch_is_retried_and_planning_goes_on(
    rig: tuple[Manager, FakeClock, InstantLauncher, SqliteStore],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manager, clock, launcher, store = rig
    real_insert = store.insert_run
    failures = iter([OSError("database is locked")])

    def flaky_insert(run: object) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real_insert(run)

    monkeypatch.setattr(store, "insert_run", flaky_insert)
    clock.advance(3600)  # both schedulers are due; the first insert fails
    poke(manager)
    wait_for(lambda: launcher.jobs, what="the run that could be recorded")
    assert "database is locked" in capsys.readouterr().err
    clock.advance(RETRY_SECONDS)
    poke(manager)
    wait_for(
        lambda: {j.scheduler_id for j in launcher.jobs} == {"pause", "cron"},
        what="the failed start to be retried",
    )


def test_a_store_failure_at_the_end_of_a_run_does_not_wedge_the_scheduler(
    rig: tuple[Manager, FakeClock, InstantLauncher, SqliteStore],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manager, clock, launcher, store = rig

    def broken_finish(run_id: str, **_: object) -> None:
        raise OSError("database disk image is malformed")

    monkeypatch.setattr(store, "finish_run", broken_finish)
    clock.advance(3600)
    poke(manager)
    wait_for(lambda: runs_of(launcher, "pause"), what="the run")
    assert manager.wait_idle("pause", 5)
    status = manager.status("pause")
    assert status.state.value == "paused"
    assert status.last_outcome is Outcome.SUCCEEDED
    assert status.next_planned_at == START + timedelta(hours=2)
    assert "could not record the end of run" in capsys.readouterr().err


def test_a_cron_run_missed_while_down_runs_once_at_start_unless_switched_off(
    tmp_path: Path,
) -> None:
    registry = Registry()
    registry.add(
        Options(
            id="cron",
            name="Cron",
            kind=Kind.CRON,
            runner=noop,
            defaults=Settings(cron="0 * * * *", timezone="UTC"),
        )
    )
    clock = FakeClock(START)
    with SqliteStore.open(tmp_path / "state.db") as store:
        first = InstantLauncher()
        manager = Manager(registry, store=store, launcher=first, clock=clock)
        manager.open()
        clock.advance(3600)  # 13:00: one ordinary run
        poke(manager)
        wait_for(lambda: first.jobs, what="the 13:00 run")
        assert manager.wait_idle("cron", 5)
        manager.close(wait=10)

        clock.jump_wall(5 * 3600)  # down until 18:00:00: 14:00 … 18:00 were missed
        for catch_up, expected in ((False, []), (True, ["missed"])):
            launcher = InstantLauncher()
            again = Manager(
                registry,
                store=store,
                launcher=launcher,
                clock=clock,
                config=ManagerConfig(catch_up_missed_cron=catch_up),
            )
            again.open()
            poke(again)
            if expected:
                wait_for(lambda: launcher.jobs, what="the caught-up run")  # noqa: B023
                assert again.wait_idle("cron", 5)
            poke(again)
            assert [j.trigger for j in launcher.jobs] == expected
            again.close(wait=10)


# -- restarts: the pause since the last run holds across them ----------------------------


def schedule_registry(**settings: object) -> Registry:
    registry = Registry()
    defaults: dict[str, object] = {"pause_time": timedelta(hours=1)}
    defaults.update(settings)
    registry.add(
        Options(
            id="hourly",
            name="Hourly",
            kind=Kind.SCHEDULE,
            runner=noop,
            defaults=Settings(**defaults),
        )
    )
    return registry


def open_manager(
    registry: Registry, store: SqliteStore, clock: FakeClock, launcher: object, **config: object
) -> Manager:
    manager = Manager(
        registry,
        store=store,
        launcher=launcher,
        clock=clock,
        config=ManagerConfig(**config),
        report=lambda message: None,
    )
    manager.open()
    return manager


def test_regression_a_crash_looping_manager_does_not_run_a_schedule_on_every_start(
    tmp_path: Path,
) -> None:
    registry = schedule_registry()
    clock = FakeClock(START)
    with SqliteStore.open(tmp_path / "state.db") as store:
        first = InstantLauncher()
        manager = open_manager(registry, store, clock, first)
        wait_for(lambda: first.jobs, what="the first run at the first start")
        assert manager.wait_idle("hourly", 5)
        manager.close(wait=10)
        (run,) = store.runs("hourly")
        assert run.ended_at is not None
        # The manager restarts every 10 s for 5 minutes: the hourly job does not run.
        for _ in range(30):
            clock.advance(10)
            launcher = InstantLauncher()
            again = open_manager(registry, store, clock, launcher)
            again.wake()
            status = again.status("hourly")
            assert status.next_planned_at == run.ended_at + timedelta(hours=1)
            again.close(wait=10)
            assert launcher.jobs == []
        # Once the pause since the last end is over, the next start runs it.
        clock.advance(3600 - 300)
        launcher = InstantLauncher()
        again = open_manager(registry, store, clock, launcher)
        wait_for(lambda: launcher.jobs, what="the run after the pause")
        again.close(wait=10)
        assert len(store.runs("hourly")) == 2


def test_after_a_restart_an_explicit_start_delay_still_applies(tmp_path: Path) -> None:
    registry = schedule_registry(start_delay=timedelta(minutes=90))
    clock = FakeClock(START)
    with SqliteStore.open(tmp_path / "state.db") as store:
        launcher = InstantLauncher()
        manager = open_manager(registry, store, clock, launcher)
        clock.advance(90 * 60)
        manager.wake()
        wait_for(lambda: launcher.jobs, what="the first run")
        assert manager.wait_idle("hourly", 5)
        manager.close(wait=10)
        clock.advance(60)
        again = open_manager(registry, store, clock, InstantLauncher())
        # max(start + start_delay, last end + pause): the start delay is the later one.
        assert again.status("hourly").next_planned_at == clock.now() + timedelta(minutes=90)
        again.close(wait=10)


# -- a store that is full for a while -------------------------------------------------


class DiskFull:
    """Makes some of a store's writes raise like SQLite on a full disk, until cleared."""

    def __init__(self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
        self.full = True
        self.attempts = 0
        for name in names:
            real = getattr(store, name)
            monkeypatch.setattr(store, name, self._wrap(real))

    def _wrap(self, real: Callable[..., object]) -> Callable[..., object]:
        def write(*args: object, **kwargs: object) -> object:
            if self.full:
                self.attempts += 1
                raise sqlite3.OperationalError("database or disk is full")
            return real(*args, **kwargs)

        return write


def test_regression_failed_starts_show_as_failing_and_are_reported_once_per_streak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = schedule_registry(pause_time=timedelta(seconds=1))
    clock = FakeClock(START)
    reports: list[str] = []
    with SqliteStore.open(tmp_path / "state.db") as store:
        disk = DiskFull(store, monkeypatch, "insert_run")
        launcher = InstantLauncher()
        manager = Manager(
            registry,
            store=store,
            launcher=launcher,
            clock=clock,
            report=reports.append,
        )
        manager.open()
        try:
            wait_for(lambda: disk.attempts == 1, what="the first failed start")
            for attempt in range(2, 6):  # the retries fail too
                clock.advance(300)
                manager.wake()
                wait_for(lambda: disk.attempts == attempt, what=f"attempt {attempt}")  # noqa: B023
            status = wait_for(
                lambda: (s := manager.status("hourly")).failed_starts == 5 and s,
                what="five failed starts",
            )
            assert status.state is State.FAILING
            assert status.last_outcome is Outcome.CRASHED
            assert status.last_error == "could not start a run: database or disk is full"
            assert status.next_planned_at is not None
            assert [r for r in reports if "could not start" in r] == [
                "could not start a run of hourly: database or disk is full"
            ]
            assert launcher.jobs == []
            disk.full = False  # space returns
            clock.advance(300)
            manager.wake()
            wait_for(lambda: launcher.jobs, what="the start once space returned")
            assert manager.wait_idle("hourly", 5)
            status = manager.status("hourly")
            assert status.state is State.PAUSED and status.failed_starts == 0
            assert status.last_outcome is Outcome.SUCCEEDED and status.last_error is None
            assert "runs of hourly start again after 5 failed start(s)" in reports
        finally:
            manager.close(wait=10)


def test_regression_an_end_row_that_cannot_be_stored_is_retried_until_it_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = schedule_registry()
    clock = FakeClock(START)
    reports: list[str] = []
    with SqliteStore.open(tmp_path / "state.db") as store:
        disk = DiskFull(store, monkeypatch, "finish_run")
        launcher = InstantLauncher()
        manager = Manager(
            registry,
            store=store,
            launcher=launcher,
            clock=clock,
            config=ManagerConfig(store_retry_seconds=0.01, store_retry_max_seconds=0.05),
            report=reports.append,
        )
        manager.open()
        try:
            wait_for(lambda: disk.attempts >= 5, what="several tries to store the end")
            # The status tells the truth from memory meanwhile.
            status = manager.status("hourly")
            assert status.state is State.PAUSED
            assert status.last_outcome is Outcome.SUCCEEDED
            assert status.next_planned_at == START + timedelta(hours=1)
            (run,) = store.runs("hourly")
            assert run.outcome is None
            assert len([r for r in reports if "could not record the end" in r]) == 1
            disk.full = False
            stored = wait_for(
                lambda: (runs := store.runs("hourly")) and runs[0].outcome and runs[0],
                what="the end row once space returned",
            )
            assert stored.outcome is Outcome.SUCCEEDED and stored.ended_at is not None
            assert any("records the ends of runs again" in r for r in reports)
        finally:
            manager.close(wait=10)


# -- a launch that hangs (a fork server slow to come up) ---------------------------------


class CancellableRun(InstantRun):
    def supervise(
        self,
        *,
        sink: Callable[[Sequence[LogRecord]], None],
        timeout: float | None,
        cancel: threading.Event,
        grace: float = 5.0,
        still_running: StillRunning | None = None,
        ended: Callable[[Exit], None] | None = None,
    ) -> Exit:
        if cancel.is_set():
            return Exit(
                outcome=Outcome.CANCELLED,
                exit_code=None,
                signal=None,
                error="cancelled: the run was stopped",
                result=None,
                cancel_reason="stop",
            )
        return super().supervise(sink=sink, timeout=timeout, cancel=cancel, grace=grace)


class SlowLauncher(InstantLauncher):
    """``spawn`` blocks until ``release`` is set (a fork server importing a slow app).

    Like the real launchers it gives up with ``BackendError`` when ``cancel`` is set
    meanwhile, unless ``ignores_cancel`` (a launch nothing can interrupt).
    """

    def __init__(self, *, ignores_cancel: bool = False) -> None:
        super().__init__()
        self.release = threading.Event()
        self.waiting = threading.Event()
        self.ignores_cancel = ignores_cancel

    def spawn(self, job: Job, *, cancel: threading.Event | None = None) -> InstantRun:
        self.waiting.set()
        deadline = time.monotonic() + 60
        while not self.release.wait(0.01) and time.monotonic() < deadline:
            if cancel is not None and cancel.is_set() and not self.ignores_cancel:
                raise BackendError("cancelled while the app was loading")
        self.jobs.append(job)
        return CancellableRun(job)


def manual_registry() -> Registry:
    registry = Registry()
    registry.add(Options(id="manual", name="Manual", kind=Kind.MANUAL, runner=noop))
    return registry


def test_regression_stop_during_a_pending_launch_cancels_it_and_says_so(tmp_path: Path) -> None:
    clock = FakeClock(START)
    launcher = SlowLauncher()
    with SqliteStore.open(tmp_path / "state.db") as store:
        manager = open_manager(manual_registry(), store, clock, launcher)
        try:
            run_id = manager.execute("manual", actor="ada")
            assert launcher.waiting.wait(10)
            # The launch hangs; the manager does not: reads, refusals and Stop answer.
            status = manager.status("manual")
            assert status.run_phase == "starting" and status.current_run_id == run_id
            with pytest.raises(AlreadyRunning) as refused:
                manager.execute("manual", actor="bob")
            assert refused.value.run_id == run_id
            manager.stop("manual", actor="ada")
            # Stop cancels the pending launch itself: no need to wait for the app to load.
            assert manager.wait_idle("manual", 10)
            assert manager.status("manual").state is State.STOPPED
            # The end row of a run that never began is stored just after the state moved.
            run = wait_for(
                lambda: (r := store.get_run(run_id)).outcome and r, what="the cancelled run"
            )
            assert run.outcome is Outcome.CANCELLED
            assert run.error == CANCELLED_BEFORE_START["stop"]
            assert launcher.jobs == []  # no process was started
        finally:
            launcher.release.set()
            manager.close(wait=10)


def test_stop_during_a_launch_nothing_can_interrupt_ends_the_run_once_it_starts(
    tmp_path: Path,
) -> None:
    clock = FakeClock(START)
    launcher = SlowLauncher(ignores_cancel=True)
    with SqliteStore.open(tmp_path / "state.db") as store:
        manager = open_manager(manual_registry(), store, clock, launcher)
        try:
            run_id = manager.execute("manual", actor="ada")
            assert launcher.waiting.wait(10)
            manager.stop("manual", actor="ada")
            status = manager.status("manual")
            assert status.run_phase == "stopping"  # not "stopped" while nothing has stopped
            launcher.release.set()
            assert manager.wait_idle("manual", 10)
            assert manager.status("manual").state is State.STOPPED
            wait_for(
                lambda: store.get_run(run_id).outcome is Outcome.CANCELLED,
                what="the run cancelled once it started",
            )
        finally:
            launcher.release.set()
            manager.close(wait=10)


def test_regression_close_keeps_its_deadline_while_a_launch_hangs(tmp_path: Path) -> None:
    clock = FakeClock(START)
    launcher = SlowLauncher(ignores_cancel=True)
    with SqliteStore.open(tmp_path / "state.db") as store:
        manager = open_manager(manual_registry(), store, clock, launcher)
        try:
            run_id = manager.execute("manual", actor="ada")
            assert launcher.waiting.wait(10)
            began = time.monotonic()
            manager.close(wait=0.5)
            assert time.monotonic() - began < 2.0
            run = store.get_run(run_id)
            assert run.outcome is Outcome.INTERRUPTED
            assert run.error is not None and "did not end within 0.5s" in run.error
        finally:
            launcher.release.set()
        # The late launch touches nothing once the manager is closed.
        wait_for(lambda: launcher.jobs, what="the late launch to return")
        assert store.get_run(run_id).outcome is Outcome.INTERRUPTED


def test_close_calls_grace_over_once_the_grace_has_passed_and_records_what_it_ended(
    tmp_path: Path,
) -> None:
    clock = FakeClock(START)
    launcher = SlowLauncher(ignores_cancel=True)
    with SqliteStore.open(tmp_path / "state.db") as store:
        manager = open_manager(manual_registry(), store, clock, launcher, grace_seconds=0.3)
        calls: list[float] = []

        def grace_over() -> None:  # as the service's closing of the launcher: the run ends
            calls.append(time.monotonic())
            launcher.release.set()

        try:
            run_id = manager.execute("manual", actor="ada")
            assert launcher.waiting.wait(10)
            began = time.monotonic()
            manager.close(wait=5, grace_over=grace_over)
            took = time.monotonic() - began
        finally:
            launcher.release.set()
        assert len(calls) == 1
        assert calls[0] - began >= 0.3  # not before the grace is over
        assert took < 5  # the end came after grace_over: close did not wait out its wait
        run = store.get_run(run_id)
        assert run.outcome is Outcome.CANCELLED  # its own end, not "interrupted"


def test_close_does_not_call_grace_over_when_the_runs_ended_in_time(tmp_path: Path) -> None:
    clock = FakeClock(START)
    with SqliteStore.open(tmp_path / "state.db") as store:
        manager = open_manager(manual_registry(), store, clock, InstantLauncher())
        run_id = manager.execute("manual", actor="ada")
        wait_for(lambda: store.get_run(run_id).outcome, what="the run's end")
        calls: list[str] = []
        manager.close(wait=5, grace_over=lambda: calls.append("called"))
        assert calls == []


# -- a next run due within SOON_SECONDS: started by the thread that saw the end ----------


def test_runs_due_soon_after_each_end_keep_their_pause_and_stop_and_close(tmp_path: Path) -> None:
    """A 1 ms pause: each next run is started by the thread that recorded the end before
    it (not the planner); the pause still holds, Stop still ends the series, and a
    pause made longer goes back to the planner."""
    registry = Registry()
    registry.add(
        Options(
            id="tight",
            name="Tight",
            kind=Kind.SCHEDULE,
            runner=noop,
            defaults=Settings(pause_time=timedelta(milliseconds=1)),
        )
    )
    launcher = InstantLauncher()
    store = SqliteStore.open(tmp_path / "state.db")
    manager = Manager(registry, store=store, launcher=launcher, clock=SystemClock())
    manager.open()
    try:
        wait_for(lambda: len(runs_of(launcher, "tight")) >= 30, timeout=20, what="30 runs")
        manager.stop("tight", actor="alice")
        assert manager.wait_idle("tight", 10)
        count = len(runs_of(launcher, "tight"))
        time.sleep(0.05)  # a run due 1 ms later would have started by now
        assert len(runs_of(launcher, "tight")) == count
        finished = sorted(
            (r for r in store.runs("tight", limit=1000) if r.ended_at is not None),
            key=lambda r: r.started_at,
        )
        assert len(finished) >= 30
        for earlier, later in itertools.pairwise(finished):
            assert earlier.ended_at is not None
            assert later.started_at - earlier.ended_at >= timedelta(milliseconds=1)
        # Started again with a long pause: the next run is the planner's, after it.
        manager.start("tight", actor="alice")
        wait_for(lambda: len(runs_of(launcher, "tight")) > count, timeout=10, what="a run")
        manager.update_settings(
            "tight",
            from_store(registry.get("tight"), {"pause_time": timedelta(hours=1)}),
        )
        assert manager.wait_idle("tight", 10)
        settled = len(runs_of(launcher, "tight"))
        time.sleep(0.05)
        assert len(runs_of(launcher, "tight")) == settled
        assert manager.status("tight").next_planned_at is not None
    finally:
        manager.close(wait=10)
        store.close()
