"""``supervisor.systemd.retry``, the step systemd runs after each run of a scheduler with
retries, against the fake ``systemctl`` of ``test_systemd_backend`` (the real one:
``test_systemd_pause_retry``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from supervisor.core.definitions import Settings
from supervisor.core.records import Outcome
from supervisor.systemd.backend import Completed, Systemd
from supervisor.systemd.retry import RunEnd, after_run, journal_entries
from tests.test_systemd_backend import NOW, FakeSystemd

SERVICE = "t-job.service"
SETTINGS = Settings(retries=2, retry_delay=timedelta(seconds=30))
FAILED = RunEnd(run_id="inv1", result="exit-code", exit_code=1, exit_status=1)


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystemd:
    fake = FakeSystemd(tmp_path)
    fake.add_unit(SERVICE, ExecMainStartTimestamp=f"@{NOW.timestamp() + 100:.0f}")
    return fake


def _after(fake: FakeSystemd, end: RunEnd = FAILED, settings: Settings = SETTINGS) -> Outcome:
    decided = after_run(
        end,
        scheduler_id="job",
        service=SERVICE,
        settings=settings,
        command_runner=False,
        systemd=Systemd(fake),
        now=NOW,
    )
    return decided.outcome


def _fired(fake: FakeSystemd, attempt: int, *, at: float = 99) -> None:
    """The retry timer of ``attempt`` fired ``at`` seconds after NOW."""
    fake.add_unit(
        "t-job:retry.service",
        ActiveState="active",
        SubState="exited",
        Description=f"Retry {attempt} of 2 of scheduler job",
        ExecMainStartTimestamp=f"@{NOW.timestamp() + at:.0f}",
        FragmentPath="/run/systemd/transient/t-job:retry.service",
    )


def test_a_failed_first_try_plans_retry_1_after_retry_delay(fake: FakeSystemd) -> None:
    assert _after(fake) is Outcome.FAILED
    (run,) = [call for call in fake.calls if call[0] == "systemd-run"]
    assert "--on-active=30000ms" in run and "--unit=t-job:retry" in run
    assert "--description=Retry 1 of 2 of scheduler job" in run
    assert run[-4:] == ("systemctl", "start", "--no-block", SERVICE)


def test_the_run_a_fired_retry_timer_started_is_that_retry_and_the_wait_doubles(
    fake: FakeSystemd,
) -> None:
    _fired(fake, 1)
    _after(fake)
    assert "t-job:retry.service" not in fake.units  # removed
    (run,) = [call for call in fake.calls if call[0] == "systemd-run"]
    assert "--on-active=60000ms" in run and "--description=Retry 2 of 2 of scheduler job" in run


def test_no_retry_after_the_last_one(fake: FakeSystemd) -> None:
    _fired(fake, 2)
    _after(fake)
    assert not fake.transient


def test_a_regular_run_before_a_planned_retry_wins_and_counts_as_a_first_try(
    fake: FakeSystemd,
) -> None:
    fake.add_unit(
        "t-job:retry.timer",
        ActiveState="active",
        SubState="waiting",
        Description="Retry 2 of 2 of scheduler job",
        FragmentPath="/run/systemd/transient/t-job:retry.timer",
    )
    _after(fake)
    assert ("stop", "t-job:retry.timer") in fake.verbs()
    assert "--description=Retry 1 of 2 of scheduler job" in fake.calls[-1]


def test_a_retry_timer_that_fired_after_the_run_began_did_not_start_it(
    fake: FakeSystemd,
) -> None:
    _fired(fake, 2, at=120)  # fired while this run went on: the start joined it
    _after(fake)
    assert "--description=Retry 1 of 2 of scheduler job" in fake.calls[-1]


@pytest.mark.parametrize(
    "end",
    [
        RunEnd(run_id="inv1", result="success", exit_code=1, exit_status=0),
        RunEnd(run_id="inv1", result="exit-code", exit_code=1, exit_status=143),  # cancelled
        RunEnd(run_id="inv1", result="signal", exit_code=2, exit_status=15),  # systemctl stop
    ],
)
def test_succeeded_and_cancelled_runs_are_not_retried(fake: FakeSystemd, end: RunEnd) -> None:
    _after(fake, end)
    assert not fake.transient


def test_crashes_and_timeouts_are_retried(fake: FakeSystemd) -> None:
    crash = RunEnd.from_environ(
        {
            "INVOCATION_ID": "inv1",
            "SERVICE_RESULT": "core-dump",
            "EXIT_CODE": "dumped",
            "EXIT_STATUS": "SEGV",
        }
    )
    assert crash.exit_status == 11
    assert _after(fake, crash) is Outcome.CRASHED and fake.transient
    del fake.units["t-job:retry.timer"], fake.transient["t-job:retry"]
    timeout = RunEnd(run_id="inv1", result="timeout", exit_code=2, exit_status=9)
    assert _after(fake, timeout) is Outcome.TIMED_OUT and fake.transient


def test_the_journal_says_which_try_it_was_and_what_comes_next() -> None:
    from supervisor.systemd.retry import Decided

    decided = Decided(attempt=1, outcome=Outcome.FAILED, planned=2, planned_at=NOW)
    event, notice = journal_entries(decided, scheduler_id="job", run_id="inv1", of=3)
    fields = dict(event)
    assert fields["SUPERVISOR_EVENT"] == "run_retry" and fields["SUPERVISOR_ATTEMPT"] == "1"
    assert fields["SUPERVISOR_RETRY_ATTEMPT"] == "2" and fields["RUN_ID"] == "inv1"
    assert dict(notice)["MESSAGE"] == "retry 2 of 3 at 2026-03-01 12:00:00 UTC"


class _Stopping(FakeSystemd):
    """``systemctl list-jobs`` shows a stop job for the service."""

    def __call__(self, argv: Sequence[str], *, timeout: float = 0) -> Completed:
        if "list-jobs" in argv:
            self.calls.append(tuple(argv))
            return Completed(argv=tuple(argv), returncode=0, stdout=f"12 {SERVICE} stop running\n")
        return super().__call__(argv, timeout=timeout)


def test_a_run_that_failed_while_being_stopped_is_not_retried(tmp_path: Path) -> None:
    fake = _Stopping(tmp_path)
    fake.add_unit(SERVICE)
    assert _after(fake) is Outcome.FAILED  # e.g. a command that trapped SIGTERM and exited 1
    assert not fake.transient


def test_exec_and_the_retry_step_read_the_same_exit_statuses() -> None:
    from supervisor.runs import child
    from supervisor.systemd import execone, systemctl

    assert execone.EXIT_CODES is systemctl.EXIT_CODES
    assert systemctl.EXIT_CODES[Outcome.SUCCEEDED] == child.EXIT_SUCCEEDED
    assert systemctl.EXIT_CODES[Outcome.FAILED] == child.EXIT_FAILED
