"""The manager's timing under an injected clock: no bursts after wall-clock jumps.

The launcher here is a test double that finishes each run at once, so these tests are
about planning only; real child processes are covered by test_manager and test_launcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from supervisor.core.clock import FakeClock
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.records import LogRecord, Outcome, Trigger
from supervisor.core.registry import Registry
from supervisor.manager.shell import RETRY_SECONDS, WALL_CLOCK_CHECK_SECONDS, Manager, ManagerConfig
from supervisor.runs.launcher import Exit, Job
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
    ) -> Exit:
        return Exit(outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None)


class InstantLauncher:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def start(self) -> None: ...

    def close(self) -> None: ...

    def spawn(self, job: Job) -> InstantRun:
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
    manager = Manager(registry, store=store, launcher=launcher, clock=clock)  # type: ignore[arg-type]
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
        real_insert(run)  # type: ignore[arg-type]

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
        manager = Manager(registry, store=store, launcher=first, clock=clock)  # type: ignore[arg-type]
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
                launcher=launcher,  # type: ignore[arg-type]
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
