"""The code that runs one execution: inside a run's process, or in the current process.

In a run's process (forked by the fork server, or ``python -m supervisor.runs.child`` from
the fresh-interpreter launcher) the file descriptors are: 0 ``/dev/null``, 1 the stdout
pipe, 2 the stderr pipe, 3 the records pipe (``wire`` lines to the manager), 4 the cancel
pipe (the manager writes the reason), and nothing else; 3 and 4 are close-on-exec.
``run_child`` builds the ``Context``, forwards stdlib ``logging`` to the records pipe,
runs the runner, writes the result and exits with the result's status: ``EXIT_SUCCEEDED``
(0), ``EXIT_FAILED`` (1), or the code the runner gave ``sys.exit`` (mapped as Python
maps it, see ``exit_status``); any other ending is a crash. If the job names a cgroup,
the process joins it before anything else. A
``Command`` runner is exec'd instead (after an ``exec`` notice on the records pipe), so
its exit status is the outcome.

A runner's traceback (``failure``) starts in the runner's code and leaves out the
supervisor's own frames, in its exception chain too (``is_own_file`` tells them apart;
``exits`` does the same for a fault's stack dump in the stderr tail).

``execute`` runs one execution in the *current* process with any ``RecordSink`` (the
systemd mode's ``supervisor exec`` plugs its journald writer in); ``exec_command``
replaces the current process with a ``Command``.

May import ``context``, ``wire``, ``procs``, ``cgroups``, ``definitions``, ``records``,
``errors``, ``job``, and (in the process entry points only) ``app`` and ``registry``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, NoReturn

from supervisor.core.definitions import Command, Options
from supervisor.core.records import Level, LogRecord, Outcome
from supervisor.runs import cgroups, procs
from supervisor.runs.context import (
    Cancelled,
    Context,
    RecordSink,
    RunError,
    make_record,
    safe_str,
    type_name,
)
from supervisor.runs.job import MAX_RUN_ID as MAX_RUN_ID
from supervisor.runs.job import Job as Job
from supervisor.runs.wire import SUCCEEDED, RunResult, encode_exec, encode_log, encode_result

EXIT_SUCCEEDED: Final = 0
EXIT_FAILED: Final = 1
# The run's parent died before the child could tie its life to it.
EXIT_ORPHANED: Final = 120
# Setting up the run's process failed before the runner could start.
EXIT_SETUP_FAILED: Final = 121
# Where a run's process has its records pipe (write end) and cancel pipe (read end).
RECORDS_FD: Final = 3
CANCEL_FD: Final = 4


class PipeSink:
    """Writes records to the records pipe, one unbuffered line each (a crash loses none).

    Writes are serialized by a lock so lines from several threads never interleave (a
    re-entrant one: a signal handler may log while the interrupted code was logging).
    Once the manager is gone, records are dropped silently.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.RLock()
        self._broken = False

    def write(self, record: LogRecord) -> None:
        self.send(encode_log(record))

    def send(self, line: bytes) -> None:
        with self._lock:
            if self._broken:
                return
            view = memoryview(line)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                self._broken = True


# -- stdlib logging ---------------------------------------------------------------------

_STANDARD_ATTRIBUTES: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_FORMATTER: Final = logging.Formatter()


class ForwardingHandler(logging.Handler):
    """Sends stdlib ``logging`` records to a sink; ``extra`` values become fields."""

    def __init__(self, sink: RecordSink, run_id: str) -> None:
        super().__init__(logging.NOTSET)
        self._sink = sink
        self._run_id = run_id

    def createLock(self) -> None:
        """No lock: the sink serializes its writes itself (``RecordSink``), and a lock of
        our own, registered to be re-made after a fork, cost each run some 15 page copies."""
        self.lock = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, object] = {
                key: value
                for key, value in record.__dict__.items()
                if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
            }
            fields["logger"] = record.name
            if record.exc_info:
                fields["traceback"] = _FORMATTER.formatException(record.exc_info)
            elif record.exc_text:
                fields["traceback"] = record.exc_text
            if record.stack_info:
                fields["stack"] = record.stack_info
            try:
                message = record.getMessage()
            except Exception as error:  # msg % args failed: keep both, marked
                message = (
                    f"{safe_str(record.msg) or '<unrepresentable message>'} "
                    f"<unrepresentable: formatting it with its arguments raised "
                    f"{type(error).__name__}>"
                )
                fields["args"] = record.args
            self._sink.write(
                make_record(
                    self._run_id,
                    Level.from_number(record.levelno),
                    message,
                    fields,
                    created=record.created,
                )
            )
        except Exception:
            self.handleError(record)


def install_logging(sink: RecordSink, run_id: str) -> Callable[[], None]:
    """Forward the root logger's records to ``sink``; return a function that undoes it.

    Handlers that would print to stdout/stderr are set aside meanwhile (their lines would
    come back as duplicates), and a root logger still at the default WARNING level is
    lowered to INFO so ``logging.info`` reaches the run's log.
    """
    root = logging.getLogger()
    handler = ForwardingHandler(sink, run_id)
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    set_aside = [
        h
        for h in root.handlers
        if type(h) is logging.StreamHandler and getattr(h, "stream", None) in streams
    ]
    for old in set_aside:
        root.removeHandler(old)
    root.addHandler(handler)
    level = root.level
    if level == logging.WARNING:
        root.setLevel(logging.INFO)

    def undo() -> None:
        root.removeHandler(handler)
        for old in set_aside:
            root.addHandler(old)
        if level == logging.WARNING:
            root.setLevel(level)

    return undo


class ForkedLogging:
    """A run's records sink and its stdlib ``logging`` forwarding, built once in the fork
    server for every run it forks; ``install`` in a run's process does what is left of
    ``install_logging`` (which cost each run's process some 60 page copies: what the child
    touches first is copied, what it only reads stays shared).

    Built after the app is loaded, and the server changes no logging set-up afterwards
    (it logs nothing itself), so the stdout/stderr handlers to set aside are known here,
    and a root logger still at WARNING is lowered to INFO here, once (``setLevel`` walks
    every logger to clear its cache): each run starts as ``install_logging`` leaves it.
    """

    def __init__(self, records_fd: int) -> None:
        self.sink = PipeSink(records_fd)
        self._handler = ForwardingHandler(self.sink, "")
        self._root = root = logging.getLogger()
        streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        self._set_aside = [
            h
            for h in root.handlers
            if type(h) is logging.StreamHandler and getattr(h, "stream", None) in streams
        ]
        if root.level == logging.WARNING:
            root.setLevel(logging.INFO)

    def install(self, run_id: str) -> None:
        """In a forked run's process: forward the root logger's records to ``sink``."""
        self._handler._run_id = run_id
        # The handlers list itself, without ``logging``'s module lock: the process has
        # one thread yet (the lock's acquire and release were some pages copied).
        handlers = self._root.handlers
        for old in self._set_aside:
            if old in handlers:
                handlers.remove(old)
        if self._handler not in handlers:
            handlers.append(self._handler)


# -- one execution ----------------------------------------------------------------------


def execute(
    options: Options,
    job: Job,
    *,
    sink: RecordSink,
    cancel_fd: int | None = None,
    forward_logging: bool = True,
) -> RunResult:
    """Run ``job`` (the runner, or the custom action ``job.action_id``) in this process.

    Records go to ``sink``; cancellation is read from ``cancel_fd`` (see
    ``context.CancelPipe`` for a channel a signal handler can write to). Never raises
    for the runner's errors: they become a FAILED result (also logged as an ERROR
    record). A ``Command`` runner cannot run in-process: use ``exec_command``.
    """
    if job.action_id is None and isinstance(options.runner, Command):
        raise TypeError(f"{options.id}: a command runner is exec'd, see exec_command()")
    ctx = _context(job, sink, cancel_fd)
    undo = install_logging(sink, job.run_id) if forward_logging else None
    try:
        return _call(options, job, ctx, sink)
    finally:
        ctx.close()
        if undo is not None:
            undo()


def _context(job: Job, sink: RecordSink, cancel_fd: int | None) -> Context:
    return Context(
        scheduler_id=job.scheduler_id,
        run_id=job.run_id,
        trigger=job.trigger,
        deadline=job.deadline,
        sink=sink,
        cancel_fd=cancel_fd,
    )


def _call(options: Options, job: Job, ctx: Context, sink: RecordSink) -> RunResult:
    what = "action" if job.action_id is not None else "run"
    try:
        if job.action_id is not None:
            action = options.action(job.action_id)
            if action is None:
                raise RunError(f"scheduler {options.id!r} has no action {job.action_id!r}")
            value = action.action()
            return RunResult(outcome=Outcome.SUCCEEDED, value=_value_text(value))
        runner = options.runner
        assert not isinstance(runner, Command)
        runner(ctx)
        return SUCCEEDED
    except BaseException as error:
        result = failure(error)
        # A run that ends because it was asked to (Stop, shutdown) did not fail: a WARNING.
        asked = ctx.err()
        cancelled = isinstance(asked, Cancelled) and asked.reason in ("stop", "shutdown")
    if result.outcome is Outcome.SUCCEEDED:  # sys.exit(0)
        return result
    fields = {} if result.traceback is None else {"traceback": result.traceback}
    level, said = (Level.WARNING, "ended on cancel") if cancelled else (Level.ERROR, "failed")
    with contextlib.suppress(Exception):
        sink.write(make_record(job.run_id, level, f"{what} {said}: {result.error}", fields))
    return result


def failure(error: BaseException) -> RunResult:
    """How a runner that raised ``error`` ended; never raises, whatever ``error`` does.

    ``RunError`` and ``Cancelled``: failed with just the message. ``SystemExit``: the exit
    status Python would give (``exit_status``), failed unless it is 0. Anything else:
    failed with ``summary`` and the traceback.
    """
    try:
        if isinstance(error, RunError | Cancelled):
            text = safe_str(error)
            return RunResult(outcome=Outcome.FAILED, error=text or summary(error))
        if isinstance(error, SystemExit):
            return _exit_result(error.code)
        return RunResult(outcome=Outcome.FAILED, error=summary(error), traceback=_traceback(error))
    except Exception:  # nothing above should raise; this keeps the promise if it does
        return RunResult(outcome=Outcome.FAILED, error=type_name(error))


def exit_status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives a Python process: None is 0; an int is
    taken modulo 256 (255 beyond a C long); anything else is printed and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        number = int.__int__(code)
        return number & 0xFF if -(2**63) <= number < 2**63 else 255
    return 1


def _exit_result(code: object) -> RunResult:
    status = exit_status(code)
    if status == 0:
        return RunResult(outcome=Outcome.SUCCEEDED, exit_code=0)
    if isinstance(code, int):
        try:
            shown = int.__repr__(int.__int__(code)) if not isinstance(code, bool) else repr(code)
        except ValueError:  # too many digits to show
            shown = f"<an int of {int.__int__(code).bit_length()} bits>"
        return RunResult(
            outcome=Outcome.FAILED, error=f"sys.exit({shown}) was called", exit_code=status
        )
    # Python prints a non-int code as the message: it is the error people read.
    text = safe_str(code)
    if text is None:
        text = (
            f"sys.exit() was called with a {type_name(code)} whose message could not be formatted"
        )
    return RunResult(
        outcome=Outcome.FAILED, error=text or "sys.exit('') was called", exit_code=status
    )


def _value_text(value: object) -> str | None:
    if value is None:
        return None
    text = safe_str(value)
    return text if text is not None else f"<the {type_name(value)} returned could not be formatted>"


def _traceback(error: BaseException) -> str | None:
    """The traceback as the runner's author reads it: it starts in the runner's code, and
    frames of the supervisor's own modules are left out (a line says how many) in it and
    in every exception it chains; a stack of only our frames is kept whole."""
    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    try:
        shown = traceback.TracebackException(type(error), error, tb, compact=True)
        _hide_own_frames(shown, set())
        return "".join(shown.format())
    except Exception as problem:
        return f"(the traceback could not be formatted: {type_name(problem)})"


# The directory of the ``supervisor`` package, as imported and with links resolved.
_OWN_DIRS: Final = tuple(
    {
        str(path) + os.sep
        for path in (Path(__file__).parent.parent, Path(__file__).resolve().parent.parent)
    }
)


def is_own_file(filename: str) -> bool:
    """The file is one of the supervisor's own modules (not the app's, not a library's)."""
    return filename.startswith(_OWN_DIRS)


def hidden_frames_line(count: int) -> str:
    """The line that stands for ``count`` frames of the supervisor left out of a stack."""
    return f"  [{count} frame{'s' if count != 1 else ''} of sched-supervisor hidden]"


class _StackWithoutOwnFrames(traceback.StackSummary):
    """Formats its frames without the supervisor's, one line standing for each stretch."""

    def format(self) -> list[str]:
        lines: list[str] = []
        stretch: list[traceback.FrameSummary] = []
        hidden = 0
        for frame in self:
            if is_own_file(frame.filename):
                if stretch:
                    lines += traceback.StackSummary.from_list(stretch).format()
                    stretch = []
                hidden += 1
                continue
            if hidden:
                lines.append(hidden_frames_line(hidden) + "\n")
                hidden = 0
            stretch.append(frame)
        if stretch:
            lines += traceback.StackSummary.from_list(stretch).format()
        if hidden:
            lines.append(hidden_frames_line(hidden) + "\n")
        return lines


def _hide_own_frames(shown: traceback.TracebackException, seen: set[int]) -> None:
    """Hide our frames in ``shown``, its cause, context and group members."""
    if id(shown) in seen:
        return
    seen.add(id(shown))
    stack = shown.stack
    if any(not is_own_file(frame.filename) for frame in stack):
        kept = _StackWithoutOwnFrames()
        kept.extend(stack)
        shown.stack = kept
    for chained in (shown.__cause__, shown.__context__, *(shown.exceptions or ())):
        if chained is not None:
            _hide_own_frames(chained, seen)


def summary(error: BaseException) -> str:
    """``Type: message`` (or just ``Type``): how an error is named in records; never
    raises (an error whose ``str()`` raises is named with a note saying so)."""
    name = type_name(error)
    text = safe_str(error)
    if text is None:
        return f"{name} (its message could not be formatted: str() raised)"
    return f"{name}: {text}" if text else name


def command_environment(command: Command) -> dict[str, str]:
    env = dict(os.environ)
    env.update(command.env)
    return env


def exec_command(command: Command) -> NoReturn:
    """Replace this process with ``command`` (raises OSError if it cannot be exec'd).

    Signal dispositions Python changed (SIGPIPE, SIGXFSZ ignored) and the signal mask
    are reset first, as ``subprocess`` does, so the program behaves as from a shell.
    """
    if command.cwd is not None:
        os.chdir(command.cwd)
    for name in ("SIGPIPE", "SIGXFSZ"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.execvpe(command.argv[0], list(command.argv), command_environment(command))  # noqa: S606


# -- a run's process --------------------------------------------------------------------


def setup_stdio() -> None:
    """Fresh text streams on fds 1 and 2 (UTF-8, line-buffered), and fault tracebacks."""
    sys.stdout = open(  # noqa: SIM115 - lives as long as the process
        1, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    faulthandler.enable(file=sys.stderr, all_threads=True)


def run_child(
    load: Callable[[], Options],
    job: Job,
    *,
    records_fd: int,
    cancel_fd: int,
    forked: ForkedLogging | None = None,
) -> NoReturn:
    """Run ``job`` in this (run's) process, report on the records pipe, and exit.

    First of all the process joins ``job.cgroup`` (if given), so everything it starts
    is in the run's cgroup; if that fails the run goes on, with a WARNING record.
    ``forked``: the sink (on ``records_fd``) and logging the fork server built for it.
    """
    code = EXIT_SETUP_FAILED
    try:
        joined = _join_cgroup(job)
        sink = PipeSink(records_fd) if forked is None else forked.sink
        if joined is not None:
            sink.write(joined)
        code = _run(load, job, sink, records_fd=records_fd, cancel_fd=cancel_fd, forked=forked)
    finally:
        flush_stdio()
        os._exit(code)


def _join_cgroup(job: Job) -> LogRecord | None:
    """Join the run's cgroup; a WARNING record (for the run's log) if that failed."""
    if job.cgroup is None:
        return None
    try:
        cgroups.join_self(job.cgroup)
    except OSError as error:
        return make_record(
            job.run_id,
            Level.WARNING,
            "the run's process could not join its cgroup: processes it starts may outlive it",
            {"cgroup": job.cgroup, "error": str(error)},
        )
    return None


def _run(
    load: Callable[[], Options],
    job: Job,
    sink: PipeSink,
    *,
    records_fd: int,
    cancel_fd: int,
    forked: ForkedLogging | None,
) -> int:
    try:
        options = load()
    except BaseException as error:
        sink.send(encode_result(RunResult(outcome=Outcome.FAILED, error=summary(error))))
        return EXIT_FAILED
    if job.action_id is None and isinstance(options.runner, Command):
        return _exec_in_child(options.runner, sink, records_fd, cancel_fd)
    try:
        # ``execute`` without the undoing: this process ends with the run (the context's
        # fds close, and stdlib logging goes on reaching the run's log until then).
        ctx = _context(job, sink, cancel_fd)
        if forked is None:
            install_logging(sink, job.run_id)
        else:
            forked.install(job.run_id)
        result = _call(options, job, ctx, sink)
    except BaseException as error:  # our own set-up failed, not the runner
        result = RunResult(
            outcome=Outcome.FAILED,
            error=f"the run's process failed: {summary(error)}",
            traceback=_traceback(error),
        )
    flush_stdio()
    sink.send(encode_result(result))
    return result.status


def _exec_in_child(command: Command, sink: PipeSink, records_fd: int, cancel_fd: int) -> int:
    sink.send(encode_exec(command.argv))
    os.set_inheritable(records_fd, False)
    os.set_inheritable(cancel_fd, False)
    try:
        exec_command(command)
    except OSError as error:
        message = f"cannot execute {command.argv[0]!r}: {error.strerror or error}"
        sink.send(encode_result(RunResult(outcome=Outcome.FAILED, error=message)))
    return EXIT_FAILED


def flush_stdio() -> None:
    """Flush print output before the process ends or is replaced."""
    for stream in (sys.stdout, sys.stderr):
        try:  # (not contextlib.suppress: a forked run would run its code for the first time)
            stream.flush()
        except Exception:  # noqa: S112 - a closed or broken stream: nothing to flush to
            continue


def load_options(app_spec: str, scheduler_id: str) -> Options:
    """Import the app and find ``scheduler_id``'s definition (a process entry point's job)."""
    from supervisor.core.app import load_app
    from supervisor.core.registry import registry_of

    return registry_of(load_app(app_spec)).get(scheduler_id)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m supervisor.runs.child``: one run in a fresh interpreter (the fallback)."""
    import argparse  # (here: the fork server, which imports this module, has no use for it)

    parser = argparse.ArgumentParser(prog="python -m supervisor.runs.child")
    parser.add_argument("--app", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--records-fd", type=int, required=True)
    parser.add_argument("--cancel-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--path", action="append", default=[])
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        procs.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != args.parent:
        os._exit(EXIT_ORPHANED)
    sys.path[0:0] = args.path
    job = Job.from_json(json.loads(args.job))
    # The same layout as a forked run: records on 3, cancel on 4, neither inherited by
    # the programs the runner starts.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (args.records_fd, args.cancel_fd)]
    for fd in (args.records_fd, args.cancel_fd):
        os.close(fd)
    os.dup2(high[0], RECORDS_FD, inheritable=False)
    os.dup2(high[1], CANCEL_FD, inheritable=False)
    for fd in high:
        os.close(fd)
    setup_stdio()
    run_child(
        lambda: load_options(args.app, job.scheduler_id),
        job,
        records_fd=RECORDS_FD,
        cancel_fd=CANCEL_FD,
    )


def check_app(argv: Sequence[str] | None = None) -> None:
    """Exit 0 if ``--app`` imports, else print the load error and exit 2."""
    import argparse

    from supervisor.core.app import load_app
    from supervisor.core.errors import AppLoadError

    parser = argparse.ArgumentParser(prog="python -m supervisor.runs.child check")
    parser.add_argument("--app", required=True)
    parser.add_argument("--path", action="append", default=[])
    args = parser.parse_args(argv)
    sys.path[0:0] = args.path
    try:
        load_app(args.app)
    except AppLoadError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    from supervisor.runs.child import main as _main

    _main()
