"""Schedulers for the manager and CLI tests: quick, repeating, hanging and crashing runs."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("manager-tests")
schedulers = cfgscheduler.enable(cfg)


def _note_pid(ctx: scheduler.Context) -> None:
    directory = os.environ.get("TEST_PID_DIR")
    if directory:
        Path(directory, f"{ctx.run_id}.pid").write_text(str(os.getpid()))


def greet(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("hello", n=1, who="world")
    print("plain output")


def tick(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("tick")


def hang(ctx: scheduler.Context) -> None:
    _note_pid(ctx)
    scheduler.logger_from(ctx).info("hanging")
    while ctx.sleep(0.05):
        pass
    error = ctx.err()
    assert error is not None
    raise error


def stubborn(ctx: scheduler.Context) -> None:
    """Ignores cancellation and SIGTERM: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _note_pid(ctx)
    scheduler.logger_from(ctx).info("not listening")
    while True:
        time.sleep(0.05)


def crash(ctx: scheduler.Context) -> None:
    print("about to exit", flush=True)
    os._exit(3)


def fail(ctx: scheduler.Context) -> None:
    raise scheduler.RunError("nothing to do today")


def configure(options: scheduler.Options) -> None:
    schedulers.use_cases.configure(user.su(), options)


configure(
    scheduler.Options(
        id="m.oneshot",
        name="One shot",
        kind=scheduler.Kind.ONE_SHOT,
        runner=greet,
        defaults=scheduler.Settings(start_delay=timedelta(milliseconds=100)),
    )
)
configure(
    scheduler.Options(
        id="m.repeat",
        name="Repeat",
        kind=scheduler.Kind.SCHEDULE,
        runner=tick,
        defaults=scheduler.Settings(pause_time=timedelta(milliseconds=200)),
    )
)
configure(
    scheduler.Options(
        id="m.waiting",
        name="Waiting",
        kind=scheduler.Kind.SCHEDULE,
        runner=tick,
        defaults=scheduler.Settings(start_delay=timedelta(hours=1), pause_time=timedelta(hours=1)),
    )
)
configure(scheduler.Options(id="m.hang", name="Hang", kind=scheduler.Kind.MANUAL, runner=hang))
configure(
    scheduler.Options(
        id="m.slow",
        name="Slow",
        kind=scheduler.Kind.MANUAL,
        runner=hang,
        defaults=scheduler.Settings(timeout=timedelta(milliseconds=300)),
    )
)
configure(
    scheduler.Options(
        id="m.stubborn",
        name="Stubborn",
        kind=scheduler.Kind.SCHEDULE,
        runner=stubborn,
        defaults=scheduler.Settings(start_delay=timedelta(hours=1), pause_time=timedelta(hours=1)),
    )
)
configure(scheduler.Options(id="m.crash", name="Crash", kind=scheduler.Kind.MANUAL, runner=crash))


def count_rows() -> str:
    return f"42 rows in process {os.getpid()}"


def broken_action() -> str:
    raise RuntimeError("the cache server is down")


configure(
    scheduler.Options(
        id="m.fail",
        name="Fail",
        kind=scheduler.Kind.MANUAL,
        runner=fail,
        actions=[
            scheduler.CustomAction(id="count", title="Count rows", action=count_rows),
            scheduler.CustomAction(id="broken", title="Broken", action=broken_action),
        ],
    )
)
configure(
    scheduler.Options(
        id="m.cron",
        name="Cron",
        kind=scheduler.Kind.CRON,
        runner=tick,
        defaults=scheduler.Settings(cron="0 3 * * *", timezone="Europe/Berlin"),
    )
)
