"""Schedulers for the systemd-mode tests of pauses and retries: a quick SCHEDULE to pause,
a MANUAL that always fails (two retries, 1 s apart at first) and one that holds until
stopped, then would fail (it must not be retried: a stopped run is cancelled).

``rt.hold`` holds (cancellable) while ``$SD_TEST_HOLD_FILE`` (default
``/run/sched-supervisor-retry-hold``) exists.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from supervisor import Configurator, cfgscheduler, scheduler, user

HOLD_FILE = Path(os.environ.get("SD_TEST_HOLD_FILE", "/run/sched-supervisor-retry-hold"))

cfg = Configurator("systemd-retry-tests")
schedulers = cfgscheduler.enable(cfg)


def tick(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("tick", entered=time.time())


def fail(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("failing", entered=time.time())
    raise scheduler.RunError("the upstream is down")


def hold_then_fail(ctx: scheduler.Context) -> None:
    while HOLD_FILE.exists():
        if not ctx.sleep(0.05):
            return
    raise scheduler.RunError("held and failed")


schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="rt.tick",
        name="Tick",
        kind=scheduler.Kind.SCHEDULE,
        runner=tick,
        defaults=scheduler.Settings(pause_time=timedelta(milliseconds=500)),
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="rt.fail",
        name="Always fails",
        kind=scheduler.Kind.MANUAL,
        runner=fail,
        defaults=scheduler.Settings(retries=2, retry_delay=timedelta(seconds=1)),
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="rt.hold",
        name="Holds, then fails",
        kind=scheduler.Kind.MANUAL,
        runner=hold_then_fail,
        defaults=scheduler.Settings(retries=2, retry_delay=timedelta(seconds=1)),
    ),
)
