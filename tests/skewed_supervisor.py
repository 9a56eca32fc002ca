"""``python -m tests.skewed_supervisor SECONDS ARGS…``: ``supervisor ARGS…`` on a host whose
wall clock is SECONDS off (negative: behind). ``SystemClock.now`` is shifted before the
CLI starts, so everything the manager reads from its clock (plans, run and log times,
what it asks the cluster for) is off; monotonic time is not. For the clock-skew tests
(tests/cluster_managers.py).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from supervisor.core import clock


def skew_wall_clock(seconds: float) -> None:
    shift = timedelta(seconds=seconds)
    true_now = clock.SystemClock.now

    def skewed(self: clock.SystemClock) -> datetime:
        return true_now(self) + shift

    clock.SystemClock.now = skewed  # type: ignore[method-assign]


if __name__ == "__main__":
    skew_wall_clock(float(sys.argv[1]))
    sys.argv = ["supervisor", *sys.argv[2:]]
    from supervisor.cli.main import main

    main()
