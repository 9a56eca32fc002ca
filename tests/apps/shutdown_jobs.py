"""Schedulers for the shutdown tests: runs that do not end when asked to.

Each run writes its pids into ``$SHUTDOWN_MARKS`` (``<name>.<run_id>``: the main process
first, then its children) once it is under way, so a test knows when to send SIGTERM.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("shutdown-tests")
schedulers = cfgscheduler.enable(cfg)


def _started(ctx: scheduler.Context, name: str, pids: list[int]) -> None:
    marks = Path(os.environ["SHUTDOWN_MARKS"])
    text = "\n".join(str(pid) for pid in pids)
    (marks / f".{name}.{ctx.run_id}").write_text(text)
    (marks / f".{name}.{ctx.run_id}").rename(marks / f"{name}.{ctx.run_id}")


def _stubborn(ctx: scheduler.Context, name: str, pause: float) -> None:
    """Ignores the cancel request and SIGTERM, logging a numbered record every ``pause``."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log = scheduler.logger_from(ctx)
    log.info("not listening")
    _started(ctx, name, [os.getpid()])
    n = 0
    while True:
        n += 1
        log.info("still here", n=n)
        time.sleep(pause)


def stubborn(ctx: scheduler.Context) -> None:
    _stubborn(ctx, "stubborn", 0.01)


def chatty(ctx: scheduler.Context) -> None:
    """Stubborn, and fills its records pipe within a second once nobody reads it."""
    _stubborn(ctx, "chatty", 0.001)


def with_children(ctx: scheduler.Context) -> None:
    """Ignores SIGTERM, and so do its two children: one in its process group, one in a
    session of its own; both hold the run's stdout."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = []
    for own_session in (False, True):
        pid = os.fork()
        if pid == 0:
            if own_session:
                os.setsid()
            while True:
                print("child", os.getpid(), flush=True)
                time.sleep(0.05)
        children.append(pid)
    scheduler.logger_from(ctx).info("children started", children=children)
    _started(ctx, "children", [os.getpid(), *children])
    while True:
        time.sleep(0.05)


def _add(scheduler_id: str, runner: Callable[[scheduler.Context], None]) -> None:
    schedulers.use_cases.configure(
        user.su(),
        scheduler.Options(
            id=scheduler_id, name=scheduler_id, kind=scheduler.Kind.MANUAL, runner=runner
        ),
    )


_add("s.stubborn", stubborn)
_add("s.children", with_children)
_add("s.chatty", chatty)
