"""Schedulers for the Backend conformance suite (``tests/test_backend_contract.py``).

- ``c.manual`` (MANUAL) logs one record with a field, then holds (sleeping, cancellable)
  while the file ``$CONTRACT_HOLD_FILE`` exists; custom actions ``ping`` and ``boom``.
- ``c.repeat`` (SCHEDULE) waits an hour before its first run: it never runs in a test.
- ``c.cron`` (CRON) at 03:00 Berlin time.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from supervisor import Configurator, cfgscheduler, scheduler, user

HOLD_FILE = Path(os.environ.get("CONTRACT_HOLD_FILE", "/run/sched-contract-hold"))
RUN_MESSAGE = "contract run"

cfg = Configurator("contract")
schedulers = cfgscheduler.enable(cfg)


def held(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info(RUN_MESSAGE, n=7, trigger=ctx.trigger)
    while HOLD_FILE.exists():
        if not ctx.sleep(0.05):  # woken early: asked to end
            error = ctx.err()
            assert error is not None
            raise error
    log.info("released")


def idle(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("idle run")


def ping() -> str:
    return "pong"


def boom() -> str:
    raise RuntimeError("no luck today")


schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="c.manual",
        name="Held manual job",
        description="Runs when asked; holds while the hold file exists",
        kind=scheduler.Kind.MANUAL,
        runner=held,
        actions=[
            scheduler.CustomAction(id="ping", title="Ping", action=ping),
            scheduler.CustomAction(id="boom", title="Boom", action=boom),
        ],
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="c.repeat",
        name="Hourly job",
        kind=scheduler.Kind.SCHEDULE,
        runner=idle,
        defaults=scheduler.Settings(start_delay=timedelta(hours=1), pause_time=timedelta(hours=1)),
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="c.cron",
        name="Nightly job",
        kind=scheduler.Kind.CRON,
        runner=idle,
        defaults=scheduler.Settings(cron="0 3 * * *", timezone="Europe/Berlin"),
    ),
)
