"""Starting runs crash-isolated and watching them: from a ``Job`` to an ``Exit``.

Two launchers share one contract (``Launcher``) and one supervision loop (``RunProcess``):

- ``ForkServerLauncher``: runs are forked from a single-threaded fork server that has
  imported the app once (see ``forkserver``); a few milliseconds per start. The server
  is restarted when a module file of the app changes.
- ``FreshInterpreterLauncher``: ``python -m supervisor.runs.child`` per run; the fallback.

For each run the manager side creates the pipes: records (``wire`` lines), stdout,
stderr, cancel (manager → run), and, for forked runs, a status pipe on which the fork
server writes the main process's wait status once it has reaped it. Every run has its
own session and process group; ``supervise`` reads the pipes into ``LogRecord`` batches,
enforces the timeout and cancellation (cancel message → a short head start → SIGTERM to
the group → grace → SIGKILL to the group), and at the end the group is killed and every
process carrying the run's marker is swept.

Captured output: each stdout line becomes an INFO record, each stderr line a WARNING
record (stderr carries diagnostics and progress as well as errors; tracebacks of failed
runs arrive as ERROR records on the records pipe). Bytes are decoded as UTF-8 with
``errors="replace"``; a line longer than ``MAX_OUTPUT_LINE`` bytes is split into
records of that size (fields ``{"partial": true}``), so memory stays bounded.

Process creation happens on one long-lived thread per launcher, because
PR_SET_PDEATHSIG fires when the *thread* that created a process exits.

May import ``child``, ``forkserver``, ``procs``, ``wire``, ``context``, ``records``,
``errors``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final, Protocol, TypeVar

from supervisor.core.errors import AppLoadError, BackendError
from supervisor.core.records import Level, LogRecord, Outcome, Source
from supervisor.runs import procs
from supervisor.runs.child import EXIT_FAILED, EXIT_SUCCEEDED, Job
from supervisor.runs.context import CANCEL_MESSAGES, NO_FIELDS
from supervisor.runs.procs import MARKER_ENV, become_subreaper, kill_leftovers, reap_orphans
from supervisor.runs.wire import MAX_LINE_BYTES, ExecNotice, RunResult, decode, problem_record

__all__ = [
    "MARKER_ENV",
    "CancelRequest",
    "Exit",
    "ForkServerLauncher",
    "FreshInterpreterLauncher",
    "Job",
    "Launcher",
    "RunProcess",
    "Sink",
    "become_subreaper",
    "kill_leftovers",
    "reap_orphans",
]

T = TypeVar("T")
Sink = Callable[[Sequence[LogRecord]], None]

BATCH_RECORDS: Final = 1000
BATCH_SECONDS: Final = 0.02
READ_SIZE: Final = 64 * 1024  # a pipe's default capacity
MAX_OUTPUT_LINE: Final = 32 * 1024
STDERR_TAIL_LINES: Final = 20
# How often an idle loop looks at the cancel event.
CANCEL_POLL_SECONDS: Final = 0.05
# After the main process ended and its group was killed, how long to wait for the pipes
# to reach end-of-file (something unmarked may still hold them).
DRAIN_SECONDS: Final = 2.0
READY_TIMEOUT: Final = 120.0
SPAWN_TIMEOUT: Final = 30.0
_PARTIAL: Final[Mapping[str, object]] = MappingProxyType({"partial": True})


# How long a cancelled run may take to end by itself before SIGTERM (at most the grace).
CANCEL_HEAD_START = 1.0


class CancelRequest(threading.Event):
    """A cancel event that also says why: ``request("shutdown")`` or ``request("stop")``.

    A plain ``threading.Event`` works too (its reason is ``stop``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.reason = "stop"

    def request(self, reason: str = "stop") -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """How a run ended. ``cancel_reason``: ``stop``/``shutdown``/``timeout`` or None.

    - SUCCEEDED: the runner returned (exit 0), or a command exited 0; ``result`` is a
      custom action's return value as text.
    - FAILED: the runner raised; ``error`` is ``"Type: message"``, a newline and the
      traceback (just the message for ``RunError``); or a command could not be exec'd.
    - CRASHED: any other end: ``"killed by signal SIGSEGV (11)"``, ``"exited with code
      3"``, ``"the fork server stopped while the run was in progress"``, followed by
      ``"\nlast stderr lines:\n..."`` (up to 20).
    - TIMED_OUT: ``"timed out after 5s"``; CANCELLED: ``"cancelled: the run was
      stopped"`` (or ``... the supervisor is shutting down``); either followed by ``";
      it did not end when asked and was killed by signal SIGKILL (9)"`` if it had to be.
    """

    outcome: Outcome
    exit_code: int | None
    signal: int | None
    error: str | None
    result: str | None
    cancel_reason: str | None = None


# -- reading the pipes ------------------------------------------------------------------


class _OutputReader:
    """Splits one output stream into line records, never holding more than one line."""

    def __init__(self, run_id: str, source: Source, level: Level, tail: int = 0) -> None:
        self.run_id = run_id
        self.source = source
        self.level = level
        self.partial = b""
        self.tail: collections.deque[str] | None = collections.deque(maxlen=tail) if tail else None

    def feed(self, data: bytes, now: datetime, out: list[LogRecord]) -> None:
        if self.partial:
            data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if len(data) > MAX_OUTPUT_LINE and max(map(len, lines), default=0) > MAX_OUTPUT_LINE:
            for line in lines:
                while len(line) > MAX_OUTPUT_LINE:
                    self._record(line[:MAX_OUTPUT_LINE], now, out, _PARTIAL)
                    line = line[MAX_OUTPUT_LINE:]
                self._record(line, now, out, NO_FIELDS)
        else:
            run_id, level, source = self.run_id, self.level, self.source
            texts = [line.decode("utf-8", "replace") for line in lines]
            out.extend(
                [
                    LogRecord(
                        time=now,
                        level=level,
                        message=text,
                        fields=NO_FIELDS,
                        run_id=run_id,
                        source=source,
                    )
                    for text in texts
                ]
            )
            if self.tail is not None:
                self.tail.extend(texts)
        while len(self.partial) > MAX_OUTPUT_LINE:
            self._record(self.partial[:MAX_OUTPUT_LINE], now, out, _PARTIAL)
            self.partial = self.partial[MAX_OUTPUT_LINE:]

    def close(self, now: datetime, out: list[LogRecord]) -> None:
        if self.partial:
            self._record(self.partial, now, out, NO_FIELDS)
            self.partial = b""

    def _record(
        self, piece: bytes, now: datetime, out: list[LogRecord], fields: Mapping[str, object]
    ) -> None:
        text = piece.decode("utf-8", "replace")
        out.append(
            LogRecord(
                time=now,
                level=self.level,
                message=text,
                fields=fields,
                run_id=self.run_id,
                source=self.source,
            )
        )
        if self.tail is not None:
            self.tail.append(text[:500])


class _RecordsReader:
    """Decodes the records pipe; remembers the result and the exec notice."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.partial = b""
        self.skipping = False
        self.result: RunResult | None = None
        self.exec: ExecNotice | None = None

    def feed(self, data: bytes, now: datetime, out: list[LogRecord]) -> None:
        if self.partial:
            data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if self.skipping and lines:
            lines.pop(0)  # the end of an over-long line
            self.skipping = False
        run_id = self.run_id
        for line in lines:
            if not line:
                continue
            message = decode(line, run_id=run_id)
            if isinstance(message, LogRecord):
                out.append(message)
            elif isinstance(message, RunResult):
                if self.result is None:
                    self.result = message
            else:
                self.exec = message
        if len(self.partial) > MAX_LINE_BYTES:
            out.append(problem_record(run_id, "record longer than 1 MiB dropped", self.partial))
            self.partial = b""
            self.skipping = True

    def close(self, now: datetime, out: list[LogRecord]) -> None:
        if self.partial and not self.skipping:
            self.feed(b"\n", now, out)
        self.partial = b""


# -- a run's process --------------------------------------------------------------------


@dataclass(slots=True)
class _Pipes:
    """The manager's ends (read records/stdout/stderr, write cancel) and the run's ends."""

    records_r: int
    records_w: int
    stdout_r: int
    stdout_w: int
    stderr_r: int
    stderr_w: int
    cancel_r: int
    cancel_w: int

    @classmethod
    def create(cls) -> _Pipes:
        made: list[int] = []
        try:
            for _ in range(4):
                made.extend(os.pipe())
        except OSError as error:
            _close_quietly(made)
            raise BackendError(f"cannot create the run's pipes: {error}") from error
        pipes = cls(*made)
        os.set_blocking(pipes.cancel_w, False)
        return pipes

    def run_ends(self) -> list[int]:
        return [self.records_w, self.stdout_w, self.stderr_w, self.cancel_r]

    def our_ends(self) -> list[int]:
        return [self.records_r, self.stdout_r, self.stderr_r, self.cancel_w]


def _close_quietly(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class RunProcess:
    """A started run: its main process's ``pid`` and ``create_time``, and ``supervise``."""

    def __init__(self, *, job: Job, pid: int, create_time: float, pipes: _Pipes) -> None:
        self.job = job
        self.run_id = job.run_id
        self.pid = pid
        self.create_time = create_time
        self._pipes = pipes
        self._status: int | None = None
        self._status_problem: str | None = None
        self._supervised = False

    # Implementations: an fd that becomes readable when the main process ends; a
    # handler that returns True once the wait status (or its absence) is known; a way
    # to signal the whole process group; and cleanup.

    def _exit_fd(self) -> int:
        raise NotImplementedError

    def _on_exit_fd(self) -> bool:
        raise NotImplementedError

    def _signal_group(self, signum: int) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Called once when supervision ends."""

    def supervise(
        self,
        *,
        sink: Sink,
        timeout: float | None,
        cancel: threading.Event,
        grace: float = 5.0,
    ) -> Exit:
        """Watch the run to its end; return how it ended. Call once, from one thread.

        ``sink`` receives batches of records (up to ``BATCH_RECORDS``, at least every
        ``BATCH_SECONDS`` while output flows, at once when it pauses); a slow sink slows
        the run down rather than filling memory. ``timeout`` (seconds, monotonic) and
        ``cancel`` end the run: cancel message, ``CANCEL_HEAD_START`` (at most ``grace``),
        SIGTERM to the process group, ``grace``, SIGKILL. If ``sink`` raises, the run is
        killed and the error propagates.
        """
        if self._supervised:
            raise RuntimeError("supervise() may be called once per run")
        self._supervised = True
        try:
            return self._supervise(sink, timeout, cancel, max(0.0, grace))
        except BaseException:
            self._kill_now()
            raise
        finally:
            _close_quietly([*self._pipes.our_ends(), self._exit_fd()])
            self._release()

    def _supervise(
        self, sink: Sink, timeout: float | None, cancel: threading.Event, grace: float
    ) -> Exit:
        pipes = self._pipes
        run_id = self.run_id
        records = _RecordsReader(run_id)
        stdout = _OutputReader(run_id, Source.STDOUT, Level.INFO)
        stderr = _OutputReader(run_id, Source.STDERR, Level.WARNING, tail=STDERR_TAIL_LINES)
        readers: dict[int, _RecordsReader | _OutputReader] = {
            pipes.records_r: records,
            pipes.stdout_r: stdout,
            pipes.stderr_r: stderr,
        }
        exit_fd = self._exit_fd()
        poller = select.poll()
        for fd in (*readers, exit_fd):
            poller.register(fd, select.POLLIN)
        batch: list[LogRecord] = []
        batch_started = 0.0
        started = time.monotonic()
        timeout_at = started + timeout if timeout is not None else float("inf")
        reason: str | None = None
        stage = first_stage = 0  # 1: cancel sent, 2: SIGTERM sent, 3: SIGKILL sent
        next_step = float("inf")
        ended = False
        drain_until = float("inf")
        inf = float("inf")
        while True:
            now = time.monotonic()
            if not ended:
                if reason is None and (now >= timeout_at or cancel.is_set()):
                    reason = "timeout" if now >= timeout_at else getattr(cancel, "reason", "stop")
                    if records.exec is None:
                        self._send_cancel(reason)
                        stage = first_stage = 1
                        # A short head start to end by itself; the grace follows SIGTERM.
                        next_step = now + min(grace, CANCEL_HEAD_START)
                    else:  # an exec'd program cannot read the cancel pipe: SIGTERM asks
                        self._signal_group(signal.SIGTERM)
                        stage = first_stage = 2
                        next_step = now + grace
                elif stage == 1 and records.exec is not None:
                    # It became a program after it was asked: the program cannot read
                    # the cancel pipe, so SIGTERM asks now.
                    self._signal_group(signal.SIGTERM)
                    stage = first_stage = 2
                    next_step = now + grace
                elif stage and now >= next_step:
                    stage += 1
                    self._signal_group(signal.SIGTERM if stage == 2 else signal.SIGKILL)
                    next_step = now + grace if stage == 2 else inf
            elif not readers or now >= drain_until:
                break
            if batch:
                wait_ms = 0  # flush as soon as the output pauses
            else:
                wait = min(
                    drain_until - now,
                    next_step - now,
                    timeout_at - now if reason is None else inf,
                    CANCEL_POLL_SECONDS if reason is None and not ended else inf,
                )
                wait_ms = -1 if wait == inf else max(0, math.ceil(wait * 1000))
            events = poller.poll(wait_ms)
            if not events:
                if batch:
                    _deliver(sink, batch)
                    batch = []
                continue
            stamp = datetime.now(UTC)
            for fd, _ in events:
                if fd == exit_fd:
                    if self._on_exit_fd():
                        ended = True
                        drain_until = time.monotonic() + DRAIN_SECONDS
                        poller.unregister(exit_fd)
                    continue
                reader = readers[fd]
                try:
                    data = os.read(fd, READ_SIZE)
                except OSError:
                    data = b""
                if not batch:
                    batch_started = now
                if data:
                    reader.feed(data, stamp, batch)
                else:
                    reader.close(stamp, batch)
                    poller.unregister(fd)
                    del readers[fd]
            if batch and (len(batch) >= BATCH_RECORDS or now - batch_started >= BATCH_SECONDS):
                _deliver(sink, batch)
                batch = []
        now_stamp = datetime.now(UTC)
        for reader in readers.values():
            reader.close(now_stamp, batch)
        if readers:
            batch.append(
                LogRecord(
                    time=now_stamp,
                    level=Level.WARNING,
                    message="output still held open by a process outside the run; stopped reading",
                    run_id=run_id,
                    source=Source.LOGGER,
                )
            )
        if batch:
            _deliver(sink, batch)
        return self._exit(records, stderr, reason, stage > first_stage, timeout)

    def _send_cancel(self, reason: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._pipes.cancel_w, reason.encode() + b"\n")

    def _kill_now(self) -> None:
        """After a failure of ours: SIGKILL the group and collect the status briefly."""
        with contextlib.suppress(Exception):
            self._signal_group(signal.SIGKILL)
            poller = select.poll()
            poller.register(self._exit_fd(), select.POLLIN)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if poller.poll(100) and self._on_exit_fd():
                    break

    def _exit(
        self,
        records: _RecordsReader,
        stderr: _OutputReader,
        reason: str | None,
        escalated: bool,
        timeout: float | None,
    ) -> Exit:
        status = self._status
        code, signum = (None, None) if status is None else procs.describe_status(status)
        result = records.result
        if reason is not None:
            how = _ending(code, signum, by_us=True) if escalated else None
            if reason == "timeout":
                error = f"timed out after {timeout:g}s"
                outcome = Outcome.TIMED_OUT
            else:
                error = f"cancelled: {CANCEL_MESSAGES.get(reason, reason)}"
                outcome = Outcome.CANCELLED
            if how is not None:
                error += f"; it did not end when asked and was {how}"
            return Exit(
                outcome=outcome,
                exit_code=code,
                signal=signum,
                error=error,
                result=None,
                cancel_reason=reason,
            )
        if status is None:
            problem = self._status_problem or "the run's exit status was lost"
            return Exit(
                outcome=Outcome.CRASHED,
                exit_code=None,
                signal=None,
                error=problem + _tail(stderr),
                result=None,
            )
        if records.exec is None and result is not None:
            if result.outcome is Outcome.SUCCEEDED and code == EXIT_SUCCEEDED:
                return Exit(
                    outcome=Outcome.SUCCEEDED,
                    exit_code=code,
                    signal=None,
                    error=None,
                    result=result.value,
                )
            if result.outcome is Outcome.FAILED and code == result.status:
                error = result.error or "failed"
                if result.traceback:
                    error += "\n" + result.traceback.rstrip("\n")
                return Exit(
                    outcome=Outcome.FAILED,
                    exit_code=code,
                    signal=None,
                    error=error,
                    result=None,
                )
        elif records.exec is not None and result is not None and code == EXIT_FAILED:
            return Exit(  # the program could not be exec'd
                outcome=Outcome.FAILED,
                exit_code=code,
                signal=None,
                error=result.error,
                result=None,
            )
        if code == 0 and (records.exec is not None or result is None):
            return Exit(
                outcome=Outcome.SUCCEEDED, exit_code=0, signal=None, error=None, result=None
            )
        error = _ending(code, signum)
        if result is not None and records.exec is None:
            error += f" after its runner ended {result.outcome.value}"
        return Exit(
            outcome=Outcome.CRASHED,
            exit_code=code,
            signal=signum,
            error=error + _tail(stderr),
            result=None,
        )


def _deliver(sink: Sink, batch: list[LogRecord]) -> None:
    if len(batch) <= BATCH_RECORDS:
        sink(batch)
    else:
        for start in range(0, len(batch), BATCH_RECORDS):
            sink(batch[start : start + BATCH_RECORDS])


def _ending(code: int | None, signum: int | None, *, by_us: bool = False) -> str:
    if signum is not None:
        try:
            text = f"killed by signal {signal.Signals(signum).name} ({signum})"
        except ValueError:
            text = f"killed by signal {signum}"
        if signum == signal.SIGKILL and not by_us:
            text += " (e.g. by the out-of-memory killer)"
        return text
    return f"exited with code {code}"


def _tail(stderr: _OutputReader) -> str:
    lines = list(stderr.tail or ())
    if not lines:
        return ""
    return "\nlast stderr lines:\n" + "\n".join(line[:500] for line in lines)


class _ForkedRun(RunProcess):
    """A run forked by a fork server; the server reaps it and reports on a status pipe."""

    def __init__(
        self,
        *,
        job: Job,
        pid: int,
        create_time: float,
        pipes: _Pipes,
        status_r: int,
        server: _ForkServer,
        on_done: Callable[[_ForkServer], None],
    ) -> None:
        super().__init__(job=job, pid=pid, create_time=create_time, pipes=pipes)
        self._status_r = status_r
        self._status_data = b""
        self._server = server
        self._on_done = on_done

    def _exit_fd(self) -> int:
        return self._status_r

    def _on_exit_fd(self) -> bool:
        try:
            data = os.read(self._status_r, 64)
        except OSError:
            data = b""
        if data:
            self._status_data += data
            return False
        try:
            self._status = int(self._status_data.strip())
        except ValueError:
            # The server died: the run was killed by its PDEATHSIG; sweep what is left.
            self._status_problem = "the fork server stopped while the run was in progress"
            procs.sweep(self.run_id, roots=None if not _subreaper() else [os.getpid()])
        return True

    def _signal_group(self, signum: int) -> None:
        self._server.signal_group(self.pid, signum)

    def _release(self) -> None:
        self._on_done(self._server)


class _SpawnedRun(RunProcess):
    """A run started as a fresh interpreter: our child; we wait for it ourselves."""

    def __init__(
        self,
        *,
        job: Job,
        pid: int,
        create_time: float,
        pipes: _Pipes,
        pidfd: int,
        popen: subprocess.Popen[bytes],
    ) -> None:
        super().__init__(job=job, pid=pid, create_time=create_time, pipes=pipes)
        self._pidfd = pidfd
        self._popen = popen
        self._reaped = False

    def _exit_fd(self) -> int:
        return self._pidfd

    def _on_exit_fd(self) -> bool:
        if self._reaped:
            return True
        # The main process is a zombie until we reap it, so its group id is still ours.
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        procs.sweep(self.run_id, roots=[os.getpid()] if _subreaper() else None)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = None
            self._status_problem = "the run's exit status was taken by someone else"
        self._reaped = True
        self._status = status
        self._popen.returncode = -1 if status is None else os.waitstatus_to_exitcode(status)
        procs.disown_child(self.pid)
        return True

    def _signal_group(self, signum: int) -> None:
        if not self._reaped:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signum)

    def _release(self) -> None:
        if not self._reaped:  # supervision failed before the end: do not leave a zombie
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self._popen.returncode = -1
            procs.disown_child(self.pid)


def _subreaper() -> bool:
    try:
        return procs.is_subreaper()
    except OSError:
        return False


# -- the launchers ----------------------------------------------------------------------


class Launcher(Protocol):
    """Starts runs of one app's schedulers, each in its own process and process group."""

    def start(self) -> None:
        """Get ready to spawn; raises ``AppLoadError`` if the app cannot be imported."""
        ...

    def close(self) -> None:
        """Stop; runs still in progress are killed. Call after they have been supervised."""
        ...

    def spawn(self, job: Job) -> RunProcess:
        """Start ``job`` (thread-safe); raises ``BackendError`` if it cannot be started."""
        ...


class _Spawner:
    """The one long-lived thread that creates a launcher's processes."""

    def __init__(self, name: str) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    def call(self, fn: Callable[[], T]) -> T:
        return self._executor.submit(fn).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _boot_code(module: str, function: str = "main") -> str:
    """``python -c`` code that imports this same ``supervisor`` package and runs ``main``."""
    parent = str(Path(__file__).resolve().parents[2])
    return (
        f"import sys; p = {parent!r}; p in sys.path or sys.path.insert(0, p); "
        f"from supervisor.{module} import {function}; {function}(sys.argv[1:])"
    )


def _path_args(paths: Sequence[str]) -> list[str]:
    return [arg for path in paths for arg in ("--path", str(path))]


@dataclass(frozen=True, slots=True)
class _FileStamp:
    path: str
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: str) -> _FileStamp:
        try:
            st = os.stat(path)
        except OSError:
            return cls(path, -1, -1, -1)
        return cls(path, st.st_mtime_ns, st.st_size, st.st_ino)


class _ForkServer:
    """The manager's handle on one fork server process."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sock = sock
        self.modules: tuple[_FileStamp, ...] = ()
        self.live = 0
        self.draining = False
        self.closed = False
        self._requests = 0
        self._send_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        spawner: _Spawner,
        *,
        app_spec: str,
        python: str,
        cwd: str | None,
        paths: Sequence[str],
    ) -> _ForkServer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        env[MARKER_ENV] = procs.MARKER_PLACEHOLDER  # last: overwritten in place per run
        argv = [
            python,
            "-c",
            _boot_code("runs.forkserver"),
            "--socket-fd",
            str(theirs.fileno()),
            "--app",
            app_spec,
            "--parent",
            str(os.getpid()),
            *_path_args(paths),
        ]

        def launch() -> subprocess.Popen[bytes]:
            with procs.owning_children() as own:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                    env=env,
                    cwd=cwd,
                )
                own(popen.pid)
                return popen

        try:
            popen = spawner.call(launch)
        except OSError as error:
            ours.close()
            raise BackendError(f"cannot start the fork server: {error}") from error
        finally:
            theirs.close()
        server = cls(popen, ours)
        try:
            server._handshake()
        except BaseException:
            server.close(timeout=1.0)
            raise
        return server

    def _handshake(self) -> None:
        self.sock.settimeout(READY_TIMEOUT)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            raise BackendError(
                f"the fork server did not become ready within {READY_TIMEOUT:g}s"
            ) from None
        except OSError as error:
            raise BackendError(f"the fork server failed to start: {error}") from error
        finally:
            self.sock.settimeout(None)
        if not data:
            raise AppLoadError("the fork server exited while loading the app (see its stderr)")
        message = json.loads(data)
        if message.get("op") == "load_failed":
            raise AppLoadError(str(message.get("error")))
        if message.get("op") != "ready":
            raise BackendError(f"unexpected message from the fork server: {message!r}")
        expected = str(Path(__file__).resolve().parents[1])
        if os.path.realpath(message.get("package", "")) != os.path.realpath(expected):
            raise BackendError(
                f"the fork server imported supervisor from {message.get('package')}, not {expected}"
            )
        self.modules = tuple(
            _FileStamp(str(path), int(mtime), int(size), int(inode))
            for path, mtime, size, inode in message.get("modules", ())
        )

    def stale(self) -> bool:
        """Has a module file of the app changed since the server imported it?"""
        return any(_FileStamp.of(stamp.path) != stamp for stamp in self.modules)

    def alive(self) -> bool:
        if self.closed:
            return False
        if self.popen.poll() is None:
            return True
        procs.disown_child(self.pid)  # reaped just now by poll()
        return False

    def request_spawn(self, job: Job, fds: Sequence[int]) -> tuple[int, float]:
        """Have the server fork ``job``; callers serialize these (the launcher's lock)."""
        self._requests += 1
        number = self._requests
        message = json.dumps({"op": "spawn", "req": number, "job": job.to_json()}).encode()
        with self._send_lock:
            socket.send_fds(self.sock, [message], list(fds))
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the fork server did not answer within {SPAWN_TIMEOUT:g}s")
            if not poller.poll(math.ceil(remaining * 1000)):
                continue
            reply = self.sock.recv(1 << 16)
            if not reply:
                raise ConnectionError("the fork server closed the connection")
            answer = json.loads(reply)
            if answer.get("req") == number:
                break  # (an answer to an abandoned request is skipped)
        if not answer.get("ok"):
            raise BackendError(f"the fork server could not start the run: {answer.get('error')}")
        return int(answer["pid"]), float(answer["create_time"])

    def signal_group(self, pid: int, signum: int) -> None:
        """Have the server signal the run's process group, unless the run was reaped."""
        message = json.dumps({"op": "signal", "pid": pid, "signal": int(signum)}).encode()
        with self._send_lock, contextlib.suppress(OSError):
            self.sock.send(message)

    def close(self, *, timeout: float = 10.0) -> None:
        """Ask the server to exit (it kills its runs), wait for it, and reap it."""
        if self.closed:
            return
        self.closed = True
        with self._send_lock, contextlib.suppress(OSError):
            self.sock.send(b'{"op": "exit"}')
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        procs.disown_child(self.pid)


class ForkServerLauncher:
    """Forks runs from a fork server that imported the app (``module:attribute``) once.

    ``python``: the interpreter for the fork server (default: this one); ``cwd``: its
    working directory (default: ours; ``load_app`` puts it on ``sys.path``);
    ``sys_path``: directories to put first on its ``sys.path``.
    """

    def __init__(
        self,
        app_spec: str,
        *,
        python: str | None = None,
        cwd: str | None = None,
        sys_path: Sequence[str] = (),
    ) -> None:
        self.app_spec = app_spec
        self._python = python or sys.executable
        self._cwd = cwd
        self._paths = tuple(sys_path)
        self._lock = threading.Lock()
        self._spawner: _Spawner | None = None
        self._server: _ForkServer | None = None
        self._draining: list[_ForkServer] = []
        self._failed: tuple[tuple[_FileStamp, ...], str] | None = None
        self.restarts = 0

    @property
    def server_pid(self) -> int | None:
        """The pid of the current fork server (for tests and diagnostics)."""
        server = self._server
        return None if server is None else server.pid

    def start(self) -> None:
        with self._lock:
            if self._spawner is None:
                self._spawner = _Spawner("fork-server-starter")
            if self._server is None:
                self._server = self._start_server()

    def _start_server(self) -> _ForkServer:
        assert self._spawner is not None
        return _ForkServer.start(
            self._spawner,
            app_spec=self.app_spec,
            python=self._python,
            cwd=self._cwd,
            paths=self._paths,
        )

    def close(self) -> None:
        with self._lock:
            servers = [*self._draining, *([self._server] if self._server else [])]
            self._server = None
            self._draining = []
            spawner, self._spawner = self._spawner, None
        for server in servers:
            server.close()
        if spawner is not None:
            spawner.close()

    def check_reload(self) -> bool:
        """Restart the fork server if the app's code changed; True if it was restarted.

        Raises ``AppLoadError`` if the changed app no longer imports (the old server
        is kept meanwhile, so runs in progress are not disturbed).
        """
        with self._lock:
            return self._reload_if_stale()

    def _reload_if_stale(self) -> bool:
        server = self._server
        if server is None:
            raise BackendError("the launcher is not started")
        if server.alive() and not server.stale():
            return False
        stamps = tuple(_FileStamp.of(stamp.path) for stamp in server.modules)
        if server.alive() and self._failed is not None and self._failed[0] == stamps:
            raise AppLoadError(self._failed[1])
        try:
            fresh = self._start_server()
        except AppLoadError as error:
            self._failed = (stamps, str(error))
            raise
        self._failed = None
        self._server = fresh
        self.restarts += 1
        self._retire(server)
        return True

    def _retire(self, server: _ForkServer) -> None:
        """Close ``server`` once its runs are done (lock held)."""
        server.draining = True
        if server.live == 0 or not server.alive():
            server.close(timeout=5.0)
        else:
            self._draining.append(server)

    def _run_done(self, server: _ForkServer) -> None:
        with self._lock:
            server.live -= 1
            if server.draining and server.live <= 0 and server in self._draining:
                self._draining.remove(server)
                server.close(timeout=5.0)

    def spawn(self, job: Job) -> RunProcess:
        pipes = _Pipes.create()
        try:
            status_r, status_w = os.pipe()
        except OSError as error:
            _close_quietly([*pipes.our_ends(), *pipes.run_ends()])
            raise BackendError(f"cannot create the run's pipes: {error}") from error
        run_ends = [*pipes.run_ends(), status_w]
        try:
            with self._lock:
                server, pid, started = self._spawn_locked(job, run_ends)
                server.live += 1
        except BaseException:
            _close_quietly([*pipes.our_ends(), status_r])
            raise
        finally:
            _close_quietly(run_ends)
        return _ForkedRun(
            job=job,
            pid=pid,
            create_time=started,
            pipes=pipes,
            status_r=status_r,
            server=server,
            on_done=self._run_done,
        )

    def _spawn_locked(self, job: Job, fds: Sequence[int]) -> tuple[_ForkServer, int, float]:
        try:
            self._reload_if_stale()
            server = self._server
            assert server is not None
            try:
                return (server, *server.request_spawn(job, fds))
            except (OSError, ValueError):
                # The server died or garbled its answer: start a new one, try once more.
                self._retire(server)
                self._server = None
                self._server = server = self._start_server()
                self.restarts += 1
                return (server, *server.request_spawn(job, fds))
        except AppLoadError as error:
            raise BackendError(f"the app failed to load: {error}") from error
        except (OSError, ValueError) as error:
            raise BackendError(f"cannot start the run: {error}") from error


class FreshInterpreterLauncher:
    """Starts each run as ``python -m supervisor.runs.child`` (slow; the fallback)."""

    def __init__(
        self,
        app_spec: str,
        *,
        python: str | None = None,
        cwd: str | None = None,
        sys_path: Sequence[str] = (),
    ) -> None:
        self.app_spec = app_spec
        self._python = python or sys.executable
        self._cwd = cwd
        self._paths = tuple(sys_path)
        self._spawner: _Spawner | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Check that the app imports (in a fresh interpreter, as runs will)."""
        check = subprocess.run(
            [
                self._python,
                "-c",
                _boot_code("runs.child", "check_app"),
                "--app",
                self.app_spec,
                *_path_args(self._paths),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self._cwd,
            check=False,
        )
        if check.returncode != 0:
            lines = check.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AppLoadError(lines[-1] if lines else f"the app check exited {check.returncode}")
        with self._lock:
            if self._spawner is None:
                self._spawner = _Spawner("run-starter")

    def close(self) -> None:
        with self._lock:
            spawner, self._spawner = self._spawner, None
        if spawner is not None:
            spawner.close()

    def spawn(self, job: Job) -> RunProcess:
        with self._lock:
            spawner = self._spawner
        if spawner is None:
            raise BackendError("the launcher is not started")
        pipes = _Pipes.create()
        env = dict(os.environ)
        env[MARKER_ENV] = job.run_id
        argv = [
            self._python,
            "-c",
            _boot_code("runs.child"),
            "--app",
            self.app_spec,
            "--job",
            json.dumps(job.to_json()),
            "--records-fd",
            str(pipes.records_w),
            "--cancel-fd",
            str(pipes.cancel_r),
            "--parent",
            str(os.getpid()),
            *_path_args(self._paths),
        ]

        def launch() -> tuple[subprocess.Popen[bytes], int, float]:
            with procs.owning_children() as own:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=pipes.stdout_w,
                    stderr=pipes.stderr_w,
                    pass_fds=(pipes.records_w, pipes.cancel_r),
                    start_new_session=True,
                    env=env,
                    cwd=self._cwd,
                )
                own(popen.pid)
            # Unreaped until supervise reaps it: the pid cannot be recycled meanwhile.
            return popen, os.pidfd_open(popen.pid), procs.create_time(popen.pid)

        try:
            popen, pidfd, started = spawner.call(launch)
        except Exception as error:
            _close_quietly(pipes.our_ends())
            raise BackendError(f"cannot start the run: {error}") from error
        finally:
            _close_quietly(pipes.run_ends())
        return _SpawnedRun(
            job=job,
            pid=popen.pid,
            create_time=started,
            pipes=pipes,
            pidfd=pidfd,
            popen=popen,
        )
