"""The retry rule both backends share (``supervisor.core.retries``): which runs are
retried, as which try, after what wait, and which try is the last; and that the step
systemd runs after every run gets it without importing the manager or the planner."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from supervisor.core.definitions import Settings
from supervisor.core.records import Outcome
from supervisor.core.retries import RETRY_DELAY_CAP, NextTry, next_try, retry_wait

SETTINGS = Settings(retries=3, retry_delay=timedelta(seconds=20))


def test_the_wait_doubles_from_retry_delay_up_to_the_cap() -> None:
    many = Settings(retries=10, retry_delay=timedelta(seconds=20))
    waits = [retry_wait(many, n).total_seconds() for n in range(1, 11)]
    assert waits == [20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert retry_wait(many, 10_000) == RETRY_DELAY_CAP
    long = Settings(retries=2, retry_delay=timedelta(hours=2))
    assert retry_wait(long, 1) == retry_wait(long, 2) == timedelta(hours=2)


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.CRASHED, Outcome.TIMED_OUT])
def test_a_failed_crashed_or_timed_out_first_try_gets_retry_1(outcome: Outcome) -> None:
    assert next_try(SETTINGS, outcome=outcome, attempt=0) == NextTry(
        attempt=1, wait=timedelta(seconds=20)
    )


@pytest.mark.parametrize("outcome", [Outcome.SUCCEEDED, Outcome.CANCELLED, None])
def test_a_succeeded_cancelled_or_unfinished_run_is_not_retried(outcome: Outcome | None) -> None:
    assert next_try(SETTINGS, outcome=outcome, attempt=0) is None


def test_each_retry_plans_the_next_until_the_last() -> None:
    tries = [next_try(SETTINGS, outcome=Outcome.FAILED, attempt=k) for k in range(4)]
    assert tries[:3] == [
        NextTry(attempt=1, wait=timedelta(seconds=20)),
        NextTry(attempt=2, wait=timedelta(seconds=40)),
        NextTry(attempt=3, wait=timedelta(seconds=80)),
    ]
    assert tries[3] is None  # retry 3 of 3 was the last


def test_no_retries_and_disabled_schedulers_plan_none() -> None:
    assert next_try(Settings(), outcome=Outcome.FAILED, attempt=0) is None
    disabled = Settings(retries=3, disabled=True)
    assert next_try(disabled, outcome=Outcome.FAILED, attempt=0) is None


def test_bad_numbers_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="starts at 1, got 0"):
        retry_wait(SETTINGS, 0)
    with pytest.raises(ValueError, match="negative"):
        NextTry(attempt=1, wait=timedelta(seconds=-1))


def test_systemd_retry_step_imports_neither_the_manager_nor_the_planner() -> None:
    # Regression: systemd.retry took the rule from manager.machine, which pulled in the
    # planner, the cron timing and zoneinfo on every run's end.
    probe = (
        "import json, sys; import supervisor.systemd.retry; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('supervisor'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "supervisor.core.retries" in loaded
    heavy = {
        m
        for m in loaded
        if m.startswith(("supervisor.manager", "supervisor.store", "supervisor.core.planning"))
        or m in ("supervisor.core.timing", "supervisor.core.cronexpr", "supervisor.core.registry")
    }
    assert heavy == set()
