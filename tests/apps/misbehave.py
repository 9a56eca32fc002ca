"""Misbehaving schedulers for the launcher tests: every way a run can end.

Each scheduler is MANUAL; the tests start them through a launcher directly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import psutil

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("misbehave")
schedulers = cfgscheduler.enable(cfg)
SPEW_LINES = 1_000_000
_log = logging.getLogger("misbehave")


def ok(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info("hello", n=1, who="world", obj=object(), nested={"a": [1, 2.5, None]})
    _log.info("from stdlib", extra={"colour": "green"})
    _log.debug("debug is dropped at the default level")
    print("plain output")
    print("no newline at the end", end="")
    sys.stdout.flush()
    print("to stderr", file=sys.stderr)
    log.warning("context", scheduler_id=ctx.scheduler_id, trigger=ctx.trigger)


def first(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info("first")


def raises(ctx: scheduler.Context) -> None:
    raise RuntimeError("ops - started to panic")


def _pause(ctx: scheduler.Context) -> None:
    ctx.sleep("soon")  # type: ignore[arg-type]  # fails inside the supervisor's code


def raises_through_ours(ctx: scheduler.Context) -> None:
    try:
        _pause(ctx)
    except TypeError as error:
        raise ValueError("the pause is not a number") from error


def run_error(ctx: scheduler.Context) -> None:
    raise scheduler.RunError("failed randomly")


def exit3(ctx: scheduler.Context) -> None:
    print("about to exit", file=sys.stderr, flush=True)
    os._exit(3)


def segfault(ctx: scheduler.Context) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _descend(depth: int) -> None:
    if depth == 0:
        os.kill(os.getpid(), signal.SIGSEGV)
    _descend(depth - 1)


def segfault_deep(ctx: scheduler.Context) -> None:
    _descend(12)  # a dump longer than the stderr tail once our frames are counted


def abort(ctx: scheduler.Context) -> None:
    os.abort()


def cooperative(ctx: scheduler.Context) -> None:
    log = scheduler.logger_from(ctx)
    log.info("waiting", deadline=None if ctx.deadline is None else ctx.deadline.isoformat())
    while ctx.sleep(0.05):
        pass
    error = ctx.err()
    assert error is not None
    log.info("asked to end", reason=str(error))
    raise error


def stubborn(ctx: scheduler.Context) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    scheduler.logger_from(ctx).info("ignoring every request to end")
    while True:
        time.sleep(0.05)


def _escape() -> tuple[int, float]:
    """Fork a grandchild that leaves the run's session and sleeps forever."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(ready_w, b"x")
        while True:
            time.sleep(1)
    os.read(ready_r, 1)  # it has left the session
    return pid, psutil.Process(pid).create_time()


def grandchild(ctx: scheduler.Context) -> None:
    """Leave an escaped grandchild behind and end; report it."""
    pid, started = _escape()
    scheduler.logger_from(ctx).info("grandchild", pid=pid, create_time=started)


def grandchild_hang(ctx: scheduler.Context) -> None:
    """An escaped grandchild, and a main process that ignores SIGTERM and hangs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid, started = _escape()
    scheduler.logger_from(ctx).info(
        "grandchild",
        pid=pid,
        create_time=started,
        me=os.getpid(),
        me_create_time=psutil.Process().create_time(),
    )
    while True:
        time.sleep(0.05)


def fds(ctx: scheduler.Context) -> None:
    """Report the run's open fds: target and whether programs it starts inherit them."""
    found: dict[str, object] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[name] = [os.readlink(f"/proc/self/fd/{name}"), os.get_inheritable(int(name))]
        except OSError:
            continue  # the directory listing's own fd
    scheduler.logger_from(ctx).info("fds", fds=found)


def spew(ctx: scheduler.Context) -> None:
    for i in range(SPEW_LINES):
        print(i)


def long_line(ctx: scheduler.Context) -> None:
    sys.stdout.write("x" * 100_000 + "\nend\n")


class _Unprintable(Exception):
    """An error whose message cannot be made: ``str()`` raises."""

    def __str__(self) -> str:
        raise ValueError("no message for you")


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def str_raises(ctx: scheduler.Context) -> None:
    raise _Unprintable()


def run_error_str_raises(ctx: scheduler.Context) -> None:
    class Unprintable(scheduler.RunError):
        def __str__(self) -> str:
            raise ValueError("no message")

    raise Unprintable()


def sys_exit(code: object) -> Any:
    def runner(ctx: scheduler.Context) -> None:
        sys.exit(code)  # type: ignore[arg-type]

    return runner


def bad_log_values(ctx: scheduler.Context) -> None:
    """Log values that cannot be shown as they are, then end well."""
    log = scheduler.logger_from(ctx)
    loop: list[object] = [1]
    loop.append(loop)
    wide: list[object] = []
    for _ in range(8):
        wide = [wide] * 50  # 50**8 paths through shared lists
    log.info("big int", n=10**5000)
    log.info("recursive", value=loop, mapping={"self": loop})
    log.info("broken repr", value=_BrokenRepr())
    log.info("shared", value=wide)
    log.info(_BrokenRepr())  # type: ignore[arg-type]
    logging.getLogger("misbehave").info("%d apples", "seven")
    logging.getLogger("misbehave").info("big extra", extra={"n": 10**5000})
    log.info("still logging")


def threads_logging(ctx: scheduler.Context) -> None:
    """Stdlib logging from several threads at once, then one left logging after the end."""

    def talk(number: int) -> None:
        for line in range(200):
            _log.info("thread %d line %d", number, line, extra={"pad": "x" * 300})

    threads = [threading.Thread(target=talk, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def escape_clean(ctx: scheduler.Context) -> None:
    """Leave a process behind that left the session, cleared its environment (the marker
    goes with it) and was double-forked into a fresh program; report it and end."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() > 0:  # the sleeper's parent is gone at once
            os._exit(0)
        os.dup2(ready_w, 1)
        program = "import os, time; print(os.getpid(), flush=True); time.sleep(300)"
        os.execve(sys.executable, [sys.executable, "-c", program], {})
    os.waitpid(pid, 0)
    os.close(ready_w)
    with os.fdopen(ready_r) as ready:
        sleeper = int(ready.readline())
    started = psutil.Process(sleeper).create_time()
    with open(f"/proc/{sleeper}/cgroup") as membership:
        cgroups = [line.split(":", 2)[2] for line in membership.read().splitlines()]
    scheduler.logger_from(ctx).info("escaped", pid=sleeper, create_time=started, cgroups=cgroups)


def hog(ctx: scheduler.Context) -> None:
    """Allocate memory until the OOM killer ends the process."""
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))


# What a run could send an operator's terminal: a window title (OSC), a bare ESC that
# clears the screen, a CR that rewrites the line, a C1 CSI, DEL, a bidi override.
TERMINAL_TRICKS = "\x1b]0;owned\x07title \x1bc\x1b[2J cleared\rfake \x9b31m red\x7f \u202eabc"


def terminal_tricks(ctx: scheduler.Context) -> None:
    scheduler.logger_from(ctx).info(TERMINAL_TRICKS, trick=TERMINAL_TRICKS)
    print(TERMINAL_TRICKS, flush=True)


def terminal_tricks_fail(ctx: scheduler.Context) -> None:
    raise RuntimeError(TERMINAL_TRICKS)


def action_tricks() -> object:
    return TERMINAL_TRICKS


def action_tricks_fail() -> object:
    raise ValueError(TERMINAL_TRICKS)


def action_answer() -> object:
    logging.getLogger("misbehave").info("computing the answer")
    return 42


def action_broken() -> object:
    raise ValueError("no answer today")


def configure(id: str, runner: Any, **more: Any) -> None:
    schedulers.use_cases.configure(
        user.su(),
        scheduler.Options(
            id=id,
            name=id.replace(".", " "),
            kind=scheduler.Kind.MANUAL,
            runner=runner,
            **more,
        ),
    )


configure("ok", ok)
configure("first", first)
configure("raises", raises)
configure("raises-through-ours", raises_through_ours)
configure("run-error", run_error)
configure("exit3", exit3)
configure("segfault", segfault)
configure("segfault-deep", segfault_deep)
configure("abort", abort)
configure("cooperative", cooperative)
configure("stubborn", stubborn)
configure("grandchild", grandchild)
configure("grandchild-hang", grandchild_hang)
configure("fds", fds)
configure("spew", spew)
configure("long-line", long_line)
configure("command", scheduler.command(["sh", "-c", "echo hi; echo oops >&2; exit 4"]))
configure("command-ok", scheduler.command(["sh", "-c", 'echo "marker=$SUPERVISOR_RUN_ID"']))
configure(
    "command-signals", scheduler.command(["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"])
)
configure("command-hang", scheduler.command(["sleep", "60"]))
configure("command-missing", scheduler.command(["/nonexistent/program"]))
configure("str-raises", str_raises)
configure("run-error-str-raises", run_error_str_raises)
configure("sys-exit-3", sys_exit(3))
configure("sys-exit-text", sys_exit("the disk is full"))
configure("sys-exit-none", sys_exit(None))
configure("sys-exit-256", sys_exit(256))
configure("sys-exit-true", sys_exit(True))
configure("sys-exit-huge", sys_exit(10**5000))
configure("bad-log-values", bad_log_values)
configure("escape-clean", escape_clean)
configure("threads-logging", threads_logging)
configure("hog", hog)
configure("terminal-tricks", terminal_tricks)
configure(
    "terminal-tricks-fail",
    terminal_tricks_fail,
    actions=[
        scheduler.CustomAction(id="tricks", title="Tricks", action=action_tricks),
        scheduler.CustomAction(id="tricks-fail", title="Tricks", action=action_tricks_fail),
    ],
)
configure(
    "actions",
    first,
    actions=[
        scheduler.CustomAction(id="answer", title="Answer", action=action_answer),
        scheduler.CustomAction(id="broken", title="Broken", action=action_broken),
    ],
)
