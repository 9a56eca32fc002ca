"""The escalation state machine under a fake monotonic clock: no processes, no sleeps."""

from __future__ import annotations

import pytest

from supervisor.runs.escalation import Action, Escalation, Stage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    timeout: float | None = None, grace: float = 5.0, head_start: float = 1.0
) -> tuple[Escalation, Clock]:
    clock = Clock()
    return Escalation(timeout=timeout, grace=grace, head_start=head_start, monotonic=clock), clock


def test_nothing_happens_until_asked() -> None:
    escalation, clock = make()
    clock.now += 10_000
    assert escalation.step(cancel=None, execd=False) is None
    assert escalation.stage is Stage.RUNNING
    assert escalation.wait() == float("inf")
    assert escalation.reason is None and not escalation.escalated


def test_cancel_then_head_start_then_sigterm_then_grace_then_sigkill() -> None:
    escalation, clock = make(grace=5.0, head_start=1.0)
    assert escalation.step(cancel="stop", execd=False) is Action.SEND_CANCEL
    assert (escalation.stage, escalation.reason) == (Stage.ASKED, "stop")
    assert not escalation.escalated
    assert escalation.wait() == 1.0
    clock.now += 0.999
    assert escalation.step(cancel="stop", execd=False) is None
    clock.now += 0.001
    assert escalation.step(cancel="stop", execd=False) is Action.TERMINATE
    assert escalation.escalated
    assert escalation.wait() == 5.0
    clock.now += 4.9
    assert escalation.step(cancel="stop", execd=False) is None
    clock.now += 0.1
    assert escalation.step(cancel="stop", execd=False) is Action.KILL
    assert escalation.stage is Stage.KILLED
    clock.now += 1000
    assert escalation.step(cancel="stop", execd=False) is None
    assert escalation.wait() == float("inf")


def test_the_timeout_is_a_reason_of_its_own() -> None:
    escalation, clock = make(timeout=3.0)
    assert escalation.wait() == 3.0
    clock.now += 2.0
    assert escalation.step(cancel=None, execd=False) is None
    assert escalation.wait() == 1.0
    clock.now += 1.0
    assert escalation.step(cancel=None, execd=False) is Action.SEND_CANCEL
    assert escalation.reason == "timeout"


def test_a_timeout_wins_over_a_cancel_seen_at_the_same_moment() -> None:
    escalation, clock = make(timeout=1.0)
    clock.now += 1.0
    escalation.step(cancel="shutdown", execd=False)
    assert escalation.reason == "timeout"


def test_the_reason_stays_the_first_one() -> None:
    escalation, clock = make()
    escalation.step(cancel="shutdown", execd=False)
    clock.now += 1.0
    escalation.step(cancel="stop", execd=False)
    assert escalation.reason == "shutdown"


def test_the_head_start_is_at_most_the_grace() -> None:
    escalation, clock = make(grace=0.2, head_start=1.0)
    escalation.step(cancel="stop", execd=False)
    assert escalation.wait() == pytest.approx(0.2)
    clock.now += 0.2
    assert escalation.step(cancel="stop", execd=False) is Action.TERMINATE


def test_a_program_gets_sigterm_first_and_that_is_no_escalation() -> None:
    escalation, clock = make(grace=2.0)
    assert escalation.step(cancel="stop", execd=True) is Action.TERMINATE
    assert not escalation.escalated
    clock.now += 2.0
    assert escalation.step(cancel="stop", execd=True) is Action.KILL
    assert escalation.escalated


def test_a_run_that_execs_after_it_was_asked_gets_sigterm_at_once() -> None:
    escalation, clock = make(grace=5.0, head_start=1.0)
    assert escalation.step(cancel="stop", execd=False) is Action.SEND_CANCEL
    clock.now += 0.1
    assert escalation.step(cancel="stop", execd=True) is Action.TERMINATE
    assert not escalation.escalated  # SIGTERM is the first request the program can read
    assert escalation.wait() == 5.0


def test_zero_grace_goes_straight_through() -> None:
    escalation, _ = make(grace=0.0)
    actions = [escalation.step(cancel="stop", execd=False) for _ in range(4)]
    assert actions == [Action.SEND_CANCEL, Action.TERMINATE, Action.KILL, None]
