"""The retry rule (setting ``retries``), shared by both backends: whether a finished run is
tried again, as which try, and how long after its end.

A run that failed, crashed or timed out is retried up to ``retries`` times: the first
retry ``retry_delay`` after its end, each further one after twice the wait before, capped
at ``max(retry_delay, RETRY_DELAY_CAP)``. A cancelled run (Stop, shutdown) is never
retried, nor is a run of a disabled scheduler. What else holds a retry back (the manager
closing, a Stop job in systemd) is the backend's to say.

Pure: no clock, no I/O. It runs in ``systemd.retry`` after every run, so it may import
``definitions``, ``records`` and the standard library only (no planning, no croniter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from supervisor.core.definitions import Settings
from supervisor.core.records import Outcome

RETRY_DELAY_CAP: Final = timedelta(hours=1)
RETRIED_OUTCOMES: Final = frozenset({Outcome.FAILED, Outcome.CRASHED, Outcome.TIMED_OUT})
# 2**40 first delays exceed any cap (and keep the shift small).
_DOUBLINGS_ENOUGH: Final = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class NextTry:
    """The retry to plan: its number (1 is the first retry) and its wait after the run."""

    attempt: int
    wait: timedelta

    def __post_init__(self) -> None:
        if self.attempt < 1:
            raise ValueError(f"a retry's number starts at 1, got {self.attempt}")
        if self.wait < timedelta(0):
            raise ValueError(f"a retry's wait cannot be negative, got {self.wait}")


def retry_wait(settings: Settings, attempt: int) -> timedelta:
    """How long after a failed run retry number ``attempt`` (1, 2, ...) starts: the first
    ``retry_delay``, each further one twice the one before, capped."""
    if attempt < 1:
        raise ValueError(f"a retry's number starts at 1, got {attempt}")
    cap = max(settings.retry_delay, RETRY_DELAY_CAP)
    if attempt > _DOUBLINGS_ENOUGH:
        return cap
    return min(settings.retry_delay * (1 << (attempt - 1)), cap)


def next_try(settings: Settings, *, outcome: Outcome | None, attempt: int) -> NextTry | None:
    """The retry after a run that was try ``attempt`` (0: a first try, k: retry k) and
    ended ``outcome`` (None: not ended); None when it is not retried: its outcome is not
    one retried, the scheduler is disabled, or the ``retries`` are used up (the last)."""
    if outcome not in RETRIED_OUTCOMES or settings.disabled or attempt >= settings.retries:
        return None
    return NextTry(attempt=attempt + 1, wait=retry_wait(settings, attempt + 1))
