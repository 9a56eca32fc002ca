"""Runners that attack what surrounds them, for the run-isolation tests.

Each scheduler is MANUAL; the tests start them through a launcher directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("hostile")
schedulers = cfgscheduler.enable(cfg)


def _kill_parent(signum: signal.Signals) -> Any:
    def runner(ctx: scheduler.Context) -> None:
        parent = os.getppid()
        scheduler.logger_from(ctx).info("signalling my parent", parent=parent)
        os.kill(parent, signum)

    return runner


def waiter(ctx: scheduler.Context) -> None:
    """Wait until asked to end, then end cancelled; or, told by a file, succeed."""
    log = scheduler.logger_from(ctx)
    log.info("waiting", pid=os.getpid())
    while ctx.sleep(0.05):
        if os.path.exists(os.environ.get("HOSTILE_RELEASE", "/nonexistent")):
            log.info("released")
            return
    error = ctx.err()
    assert error is not None
    raise error


def escape(ctx: scheduler.Context) -> None:
    """Start a program that leaves the session with an empty environment (no marker)."""
    child = subprocess.Popen(
        ["setsid", "env", "-i", "sleep", "300"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # setsid forks when it is a group leader; env and sleep exec in place.
        found = _sleeper(child.pid)
        if found is not None:
            scheduler.logger_from(ctx).info("escaped", pid=found[0], start=found[1])
            break
        time.sleep(0.01)
    if ctx.trigger == "hang":
        while ctx.sleep(0.05):
            pass


def _sleeper(pid: int) -> tuple[int, int] | None:
    """The ``sleep 300`` process that ``pid`` became or started, and its start ticks."""
    for candidate in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{candidate}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{candidate}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        if argv[:2] == [b"sleep", b"300"]:
            return candidate, int(stat[stat.rindex(b")") + 2 :].split()[19])
    return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir("/proc"):
        if not task.isdigit():
            continue
        try:
            with open(f"/proc/{task}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
            found.append(int(task))
    return found


def dispositions(ctx: scheduler.Context) -> None:
    """Report this Python runner's signal dispositions."""
    with open("/proc/self/status") as handle:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    scheduler.logger_from(ctx).info(
        "dispositions",
        sigign=status["SigIgn"],
        sigblk=status["SigBlk"],
        sigcgt=status["SigCgt"],
        sighup=str(signal.getsignal(signal.SIGHUP)),
        sigint=str(signal.getsignal(signal.SIGINT)),
    )


def configure(id: str, runner: Any) -> None:
    schedulers.use_cases.configure(
        user.su(),
        scheduler.Options(id=id, name=id, kind=scheduler.Kind.MANUAL, runner=runner),
    )


for _signal in (signal.SIGKILL, signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGSTOP):
    configure(f"kill-parent.{_signal.name.lower()}", _kill_parent(_signal))
configure("waiter", waiter)
configure("escape", escape)
configure("dispositions", dispositions)
configure(
    "command-signals", scheduler.command(["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"])
)
