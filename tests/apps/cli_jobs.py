"""Schedulers for the CLI tests: a run that logs then fails with a traceback, one that
hangs until stopped, a CRON in its own zone, and IDs that look alike."""

from __future__ import annotations

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("cli-tests")
schedulers = cfgscheduler.enable(cfg)


def chatty_failure(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    for n in range(15):
        log.info(f"line {n}")
    raise RuntimeError("the report server is down\nsecond line of the reason")


def hang(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("hanging")
    while ctx.sleep(0.05):
        pass


def quiet(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("fine")


def configure(options: scheduler.Options) -> None:
    schedulers.use_cases.configure(user.su(), options)


configure(
    scheduler.Options(
        id="c.report", name="Report", kind=scheduler.Kind.MANUAL, runner=chatty_failure
    )
)
configure(scheduler.Options(id="c.hang", name="Hang", kind=scheduler.Kind.MANUAL, runner=hang))
configure(scheduler.Options(id="c.quiet", name="Quiet", kind=scheduler.Kind.MANUAL, runner=quiet))
configure(
    scheduler.Options(
        id="c.nightly",
        name="Nightly",
        kind=scheduler.Kind.CRON,
        runner=quiet,
        defaults=scheduler.Settings(cron="30 2 * * *", timezone="America/New_York"),
    )
)
