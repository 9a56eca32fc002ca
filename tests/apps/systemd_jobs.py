"""Schedulers for the systemd-mode tests: a quick SCHEDULE, a MANUAL that can be held, a
6-field CRON, a failing MANUAL and a command runner.

``sd.manual`` holds (sleeping, cancellable) while the file ``HOLD_FILE`` exists: the
end-to-end test creates it in the namespace's private ``/run`` to keep a run going (other
tests name another file with ``$SD_TEST_HOLD_FILE``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from supervisor import Configurator, cfgscheduler, scheduler, user

HOLD_FILE = Path(os.environ.get("SD_TEST_HOLD_FILE", "/run/sched-supervisor-test-hold"))
BIG_FIELD_CHARS = 60_000

cfg = Configurator("systemd-tests")
schedulers = cfgscheduler.enable(cfg)


def tick(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info(
        "tick",
        n=42,
        who="world",
        note="first line\nsecond line",
        nested={"a": [1, 2]},
        entered=time.time(),
    )
    logging.getLogger("sd.stdlib").warning("from stdlib logging", extra={"colour": "blue"})
    print("plain stdout line", flush=True)
    print("plain stderr line", file=sys.stderr, flush=True)


def manual(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    big = {f"blob{i}": str(i) * BIG_FIELD_CHARS for i in range(5)}  # ~300 kB: a memfd entry
    log.info("manual run", trigger=ctx.trigger, **big)
    while HOLD_FILE.exists():
        if not ctx.sleep(0.05):
            log.warning("stopping early", reason=str(ctx.err()))
            error = ctx.err()
            assert error is not None
            raise error
    log.info("manual done")


def cron(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("cron fired", entered=time.time())


def ping() -> str:
    return "pong"


def fail(ctx: scheduler.Context) -> None:
    raise scheduler.RunError("nothing to do today")


schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="sd.tick",
        name="Tick",
        description="Every second after the previous run",
        kind=scheduler.Kind.SCHEDULE,
        runner=tick,
        defaults=scheduler.Settings(
            start_delay=timedelta(seconds=1), pause_time=timedelta(seconds=1)
        ),
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="sd.manual",
        name="Manual",
        description="Runs when asked; holds while the hold file exists",
        kind=scheduler.Kind.MANUAL,
        runner=manual,
        actions=[scheduler.CustomAction(id="ping", title="Ping", action=ping)],
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="sd.cron",
        name="Cron",
        description="Every three seconds (6-field cron)",
        kind=scheduler.Kind.CRON,
        runner=cron,
        defaults=scheduler.Settings(cron="*/3 * * * * *", timezone="UTC"),
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="sd.fail",
        name="Fail",
        description="Always fails",
        kind=scheduler.Kind.MANUAL,
        runner=fail,
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="sd.command",
        name="Command",
        description="A command runner that exits 3",
        kind=scheduler.Kind.MANUAL,
        runner=scheduler.command(["/bin/sh", "-c", "echo from-command; exit 3"]),
    ),
)
