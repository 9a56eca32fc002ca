# examples/jobs.py
import time
from datetime import timedelta

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("demo")  # the application
schedulers = cfgscheduler.enable(cfg)  # idempotent: a second call returns the same object


def hello(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info("Hello from scheduler")


schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="my.test.scheduler",
        name="Hello World Job",
        description="Runs once after startup and logs a greeting",
        kind=scheduler.Kind.ONE_SHOT,
        runner=hello,
    ),
)


def fail_with_random(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info("hello world")
    for _ in range(100):
        if ctx.err() is not None:
            raise ctx.err()
        time.sleep(0.5)
        r = int(time.time() * 1000) % 1234
        if r == 0:
            raise RuntimeError("ops - started to panic")
        if r == 1:
            raise scheduler.RunError("failed randomly")
        log.info("the random source did not hit me", value=r)


schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="my.test.failure",
        name="Fail with random",
        description="This scheduler runs scheduled and fails in random ways",
        kind=scheduler.Kind.SCHEDULE,
        defaults=scheduler.Settings(
            start_delay=timedelta(seconds=1), pause_time=timedelta(seconds=10)
        ),
        runner=fail_with_random,
    ),
)
