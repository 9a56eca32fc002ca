"""Schedulers for the SQLite store fault tests: a quick repeating run that logs, and a long
run that logs while it lasts (in progress across a store outage)."""

from __future__ import annotations

from datetime import timedelta

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("store-fault-tests")
schedulers = cfgscheduler.enable(cfg)


def tick(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("tick", padding="x" * 200)


def long_run(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    n = 0
    while ctx.sleep(0.1):
        n += 1
        log.info("still going", n=n)
    error = ctx.err()
    assert error is not None
    raise error


schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="f.tick",
        name="Tick",
        description="Repeats quickly and logs",
        kind=scheduler.Kind.SCHEDULE,
        runner=tick,
        defaults=scheduler.Settings(start_delay=timedelta(0), pause_time=timedelta(seconds=1)),
    ),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="f.long",
        name="Long",
        description="Runs until stopped and logs ten lines a second",
        kind=scheduler.Kind.MANUAL,
        runner=long_run,
    ),
)
