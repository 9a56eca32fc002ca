"""The manager's handle on one fork server process: start it (bounded, cancellable),
ask it to spawn, signal and prepare, start runs on its spares, notice that the app's
files changed, close it.

Messages are ``forkmessages``; the launcher (``forklauncher``) owns the handles. Spawn
requests from several threads may be in flight at once (the server answers them in order;
answers are matched by request number). ``Prepared`` answers (spares) are read by
whichever thread reads the socket: one waiting for a spawn answer, or ``take_spare``,
which reads what is waiting without blocking.

May import ``forkmessages``, ``spawner``, ``job``, ``procs``, ``errors`` and the stdlib.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from supervisor.core.errors import AppLoadError, BackendError
from supervisor.runs import procs
from supervisor.runs.forkmessages import (
    MAX_PACKET,
    PREPARED_FDS,
    ClaimRequest,
    ExitRequest,
    LoadFailed,
    ModuleFile,
    Prepared,
    PrepareFailed,
    PrepareRequest,
    ProtocolError,
    Ready,
    SignalRequest,
    Spawned,
    SpawnFailed,
    SpawnRequest,
    decode,
    encode,
    module_file,
    receive,
)
from supervisor.runs.job import Job
from supervisor.runs.procs import MARKER_ENV
from supervisor.runs.spawner import Spawner, boot_code, path_args
from supervisor.runs.supervision import close_quietly

if TYPE_CHECKING:
    from supervisor.runs.cgroups import RunCgroup

SPAWN_TIMEOUT: Final = 10.0
# How long a dying fork server may take to exit (it kills its runs first).
SERVER_EXIT_SECONDS: Final = 5.0
# How long the server may take to report a run's status once its main process ended
# (it sweeps the run's marked processes first, waiting up to 2 s for them).
STATUS_SECONDS: Final = 5.0
# How often a start in progress looks at its cancel events.
_CANCEL_POLL_SECONDS: Final = 0.05
# A file modified this close to now may change again with the same mtime (the kernel's
# timestamps are coarse): its content is compared until it is older than this.
_RACY_SECONDS: Final = 1.0


class StartCancelled(Exception):
    """A start was given up because the launcher closed or the caller cancelled."""


class ModuleStamp:
    """What the manager knows of one module file: its stat and content when loaded."""

    def __init__(self, module: ModuleFile) -> None:
        self.path = module.path
        self.sha256 = module.sha256
        self.stat = (module.mtime_ns, module.size, module.inode)
        self.settled = False

    def changed(self) -> bool:
        """Has the content changed since the server imported it?"""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stat == self.stat and self.settled:
            return False
        now = module_file(self.path)
        if now.sha256 != self.sha256:
            return True
        self.stat = (now.mtime_ns, now.size, now.inode)
        self.settled = time.time() - now.mtime_ns / 1e9 > _RACY_SECONDS
        return False

    def digest(self) -> str:
        return module_file(self.path).sha256


@dataclass(frozen=True, slots=True)
class Spare:
    """A process the server forked ahead, waiting for a job on ``sock`` (an fd); its
    ``pidfd`` and the read end of its status pipe (``status_r``) are the manager's.
    ``placed``: forked into ``cgroup`` (else it joins it, or there is none)."""

    pid: int
    create_time: float
    pidfd: int
    status_r: int
    sock: int
    cgroup: RunCgroup | None
    placed: bool

    def close(self) -> None:
        """Drop it: it exits (end-of-file on its socket) and the server reaps it."""
        close_quietly([self.sock, self.pidfd, self.status_r])


_FILED: Final = object()  # a message that was filed (a spare), not an answer


@dataclass(eq=False, slots=True)
class _Sleeper:
    """A thread waiting while another reads the server's socket for everyone: for the
    answer to its request ``req``, or (``req`` None) for a spare. Each has a condition of
    its own, on the handle's lock, so that a read wakes just the threads it concerns
    (waking them all, for every message, cost the manager a thread switch per waiting
    thread)."""

    req: int | None
    woken: threading.Condition
    notified: bool = False

    def wake(self) -> None:
        self.notified = True
        self.woken.notify()


class ServerHandle:
    """The manager's handle on one fork server process."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sock = sock
        self.modules: tuple[ModuleStamp, ...] = ()
        # "" if the server forks runs into their cgroups (clone3), else why it cannot.
        self.placement = "clone3 not tried"
        # Spares asked for (their cgroups, or None: no cgroups) and spares ready.
        self._pending: list[RunCgroup | None] = []
        self._ready: list[Spare] = []
        self._dropped = False
        # Where the cgroup of a spare that could not be made goes (the launcher's).
        self.release_cgroup: Callable[[RunCgroup], None] | None = None
        self.live = 0
        self.draining = False
        self.closed = False
        self._requests = 0
        self._send_lock = threading.Lock()
        # Guards what follows; each waiting thread has a condition of its own on it.
        self._lock = threading.Lock()
        # Spawn answers: filed by request number for the thread waiting for each.
        self._sleepers: list[_Sleeper] = []  # in the order they began to wait
        self._answers: dict[int, tuple[Spawned | SpawnFailed, list[int]]] = {}
        self._waiting: set[int] = set()
        self._reading = False  # a thread is reading the socket for everyone
        self._broken: str | None = None

    @classmethod
    def start(
        cls,
        spawner: Spawner,
        *,
        app_spec: str,
        python: str,
        cwd: str | None,
        paths: Sequence[str],
        timeout: float,
        cancelled: Callable[[], bool],
        probe_cgroup: str | None = None,
    ) -> ServerHandle:
        """Start a server for ``app_spec``; with ``probe_cgroup`` (an empty cgroup v2 the
        caller made), it tries forking into it once and says how runs get into their
        cgroups (``placement``). Raises ``AppLoadError``, ``BackendError`` or
        ``StartCancelled``."""
        server = cls.launch(
            spawner,
            app_spec=app_spec,
            python=python,
            cwd=cwd,
            paths=paths,
            probe_cgroup=probe_cgroup,
        )
        server.await_ready(app_spec, timeout=timeout, cancelled=cancelled)
        return server

    @classmethod
    def launch(
        cls,
        spawner: Spawner,
        *,
        app_spec: str,
        python: str,
        cwd: str | None,
        paths: Sequence[str],
        probe_cgroup: str | None = None,
    ) -> ServerHandle:
        """Start a server's process, not waiting for it to import the app (servers
        launched together import it at the same time): ``await_ready`` next. Raises
        ``BackendError``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        env[MARKER_ENV] = procs.MARKER_PLACEHOLDER  # last: overwritten in place per run
        argv = [
            python,
            "-c",
            boot_code("runs.forkserver"),
            "--socket-fd",
            str(theirs.fileno()),
            "--app",
            app_spec,
            "--parent",
            str(os.getpid()),
            *path_args(paths),
            *(["--probe-cgroup", probe_cgroup] if probe_cgroup is not None else []),
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
        return cls(popen, ours)

    def await_ready(self, app_spec: str, *, timeout: float, cancelled: Callable[[], bool]) -> None:
        """Wait for a launched server to have imported the app (killed if it fails).
        Raises ``AppLoadError``, ``BackendError`` or ``StartCancelled``."""
        try:
            self._handshake(app_spec, timeout, cancelled)
        except BaseException:
            self.kill()
            raise

    def _handshake(self, app_spec: str, timeout: float, cancelled: Callable[[], bool]) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        deadline = time.monotonic() + timeout
        while not poller.poll(_CANCEL_POLL_SECONDS * 1000):
            if cancelled():
                raise StartCancelled
            if time.monotonic() >= deadline:
                raise AppLoadError(
                    f"--app {app_spec!r}: the app did not finish importing within "
                    f"{timeout:g}s (its fork server was stopped)"
                )
        try:
            data = self.sock.recv(MAX_PACKET)
        except OSError as error:
            raise BackendError(f"the fork server failed to start: {error}") from error
        if not data:
            raise AppLoadError(
                f"--app {app_spec!r}: the fork server exited while loading the app (see its stderr)"
            )
        try:
            message = decode(data)
        except ProtocolError as error:
            raise BackendError(str(error)) from error
        if isinstance(message, LoadFailed):
            raise AppLoadError(message.error)
        if not isinstance(message, Ready):
            raise BackendError(f"unexpected message from the fork server: {message!r}")
        expected = str(Path(__file__).resolve().parents[1])
        if os.path.realpath(message.package) != os.path.realpath(expected):
            raise BackendError(
                f"the fork server imported supervisor from {message.package}, not {expected}"
            )
        self.modules = tuple(ModuleStamp(module) for module in message.modules)
        self.placement = message.placement

    def stale(self) -> bool:
        """Has a module file of the app changed since the server imported it?"""
        return any(stamp.changed() for stamp in self.modules)

    def module_dirs(self) -> set[str]:
        """The directories of the app's module files (to watch for changes)."""
        return {os.path.dirname(stamp.path) for stamp in self.modules}

    def digests(self) -> tuple[str, ...]:
        return tuple(stamp.digest() for stamp in self.modules)

    def alive(self) -> bool:
        if self.closed:
            return False
        if self.popen.poll() is None:
            return True
        procs.disown_child(self.pid)  # reaped just now by poll()
        return False

    def stopped(self) -> bool:
        """Is the server process stopped (SIGSTOP, or traced)? It answers nothing then."""
        stat = procs.proc_stat(self.pid)
        return stat is not None and stat.state in ("T", "t")

    def request_spawn(self, job: Job, fds: Sequence[int]) -> tuple[int, float, int]:
        """Have the server fork ``job``: (pid, create time, pidfd). Threads may call this
        at the same time: answers are matched to requests by number, read by one waiting
        thread at a time. Raises ``OSError``/``ProtocolError`` if the server is gone or
        garbled, ``TimeoutError``, or ``BackendError`` if it refused."""
        with self._send_lock:
            self._requests += 1
            number = self._requests
            with self._lock:
                self._waiting.add(number)
            try:
                socket.send_fds(self.sock, [encode(SpawnRequest(req=number, job=job))], list(fds))
            except BaseException:
                with self._lock:
                    self._waiting.discard(number)
                raise
        try:
            answer, pidfds = self._await_answer(number, time.monotonic() + SPAWN_TIMEOUT)
        finally:
            with self._lock:
                self._waiting.discard(number)
                late = self._answers.pop(number, None)  # filed as this thread gave up
            if late is not None:
                close_quietly(late[1])
        if isinstance(answer, SpawnFailed):
            close_quietly(pidfds)
            raise BackendError(f"the fork server could not start the run: {answer.error}")
        if len(pidfds) != 1:
            close_quietly(pidfds)
            raise ProtocolError("the fork server's answer carried no pidfd")
        return answer.pid, answer.create_time, pidfds[0]

    def _await_answer(
        self, number: int, deadline: float
    ) -> tuple[Spawned | SpawnFailed, list[int]]:
        """The answer to request ``number``: read by this thread, or by another waiting
        one (which files it in ``_answers``)."""
        with self._lock:
            try:
                while True:
                    if number in self._answers:
                        return self._answers.pop(number)
                    if self._broken is not None:
                        raise ConnectionError(self._broken)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"the fork server did not answer within {SPAWN_TIMEOUT:g}s"
                        )
                    if self._reading:
                        self._sleep_locked(number, remaining)
                        continue
                    self._read_locked(remaining)
            finally:
                self._hand_over_locked()

    def _sleep_locked(self, req: int | None, timeout: float) -> None:
        """Wait (``_lock`` held) until a read concerns this thread, or the reader
        hands the reading over to it, or ``timeout`` seconds."""
        sleeper = _Sleeper(req, threading.Condition(self._lock))
        self._sleepers.append(sleeper)
        try:
            sleeper.woken.wait(timeout)
        finally:
            self._sleepers.remove(sleeper)

    def _wake_locked(self, req: int | None, spare: bool) -> None:
        """After a read: wake the thread the answer to ``req`` is for, and if ``spare``
        came, the first one waiting for a spare not woken yet (one woken for an earlier
        spare takes that one: two filed in a row are for two threads)."""
        for sleeper in self._sleepers:
            if req is not None and sleeper.req == req:
                sleeper.wake()
                req = None
            elif spare and sleeper.req is None and not sleeper.notified:
                sleeper.wake()
                spare = False
            if req is None and not spare:
                return

    def _hand_over_locked(self) -> None:
        """This thread will not read (again) for the others: unless one reads, or one
        was woken (it reads, or hands over in turn when it leaves), wake the first
        waiting thread to read in its place. On a broken connection, wake them all."""
        if self._broken is not None:
            for sleeper in self._sleepers:
                sleeper.wake()
            return
        if self._reading or any(sleeper.notified for sleeper in self._sleepers):
            return
        if self._sleepers:
            self._sleepers[0].wake()

    def _read_locked(self, timeout: float, *, for_a_spare: bool = False) -> bool:
        """Read one message (``_lock`` held, released while reading), waiting up to
        ``timeout`` seconds: file it (an answer for its waiting thread, a spare, which a
        thread waiting for one is woken for unless this one reads ``for_a_spare``: it
        takes it); False if none came."""
        self._reading = True
        self._lock.release()
        try:
            got = self._read_message(timeout)
        except (OSError, ProtocolError) as error:
            self._broken = f"the fork server's connection failed: {error}"
            raise
        finally:
            self._lock.acquire()
            self._reading = False
        if got is None:
            return False
        if got is _FILED:
            if not for_a_spare:
                self._wake_locked(None, spare=True)
            return True
        assert isinstance(got, tuple)
        answer, pidfds = got
        if answer.req in self._waiting:
            self._answers[answer.req] = got
            self._wake_locked(answer.req, spare=False)
        else:
            close_quietly(pidfds)  # an answer to an abandoned request
        return True

    def _read_message(
        self, timeout: float
    ) -> tuple[Spawned | SpawnFailed, list[int]] | object | None:
        """One message from the socket: a spawn answer, ``_FILED`` (a spare, filed), or
        None (none within ``timeout``, or not one of those)."""
        if timeout > 0:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            if not poller.poll(math.ceil(timeout * 1000)):
                return None
        try:
            reply, fds = receive(self.sock, PREPARED_FDS, wait=timeout > 0)
        except BlockingIOError:
            return None
        if not reply:
            close_quietly(fds)
            raise ConnectionError("the fork server closed the connection")
        try:
            answer = decode(reply)
        except ProtocolError:
            close_quietly(fds)
            raise
        if isinstance(answer, Spawned | SpawnFailed):
            return answer, fds
        if isinstance(answer, Prepared | PrepareFailed):
            self._file_spare(answer, fds)
            return _FILED
        close_quietly(fds)
        return None

    def _file_spare(self, answer: Prepared | PrepareFailed, fds: list[int]) -> None:
        """A spare is ready (or could not be made): file it, or drop it if unasked for."""
        with self._lock:
            index = next(
                (
                    i
                    for i, c in enumerate(self._pending)
                    if (None if c is None else str(c.path)) == answer.cgroup
                ),
                None,
            )
            cgroup = None if index is None else self._pending.pop(index)
            if isinstance(answer, Prepared) and index is not None and len(fds) == PREPARED_FDS:
                spare = Spare(
                    pid=answer.pid,
                    create_time=answer.create_time,
                    pidfd=fds[0],
                    status_r=fds[1],
                    sock=fds[2],
                    cgroup=cgroup,
                    placed=answer.placed,
                )
                if not self._dropped:
                    self._ready.append(spare)
                    return
        close_quietly(fds)  # a spare at end-of-file ends; the server reaps it
        if cgroup is not None and self.release_cgroup is not None:
            self.release_cgroup(cgroup)

    @property
    def spare_count(self) -> int:
        """Spares ready or asked for."""
        with self._lock:
            return len(self._ready) + len(self._pending)

    def prepare(self, cgroup: RunCgroup | None) -> None:
        """Have the server fork a spare process (into ``cgroup``); raises ``OSError``."""
        with self._lock:
            self._pending.append(cgroup)
        try:
            with self._send_lock:
                self.sock.send(
                    encode(PrepareRequest(cgroup=None if cgroup is None else str(cgroup.path)))
                )
        except BaseException:
            with self._lock:
                self._pending.remove(cgroup)
            raise

    def take_spare(self, timeout: float = SPAWN_TIMEOUT) -> Spare | None:
        """A spare ready for a run, or None if none is ready or asked for. One asked for
        is waited for (up to ``timeout`` seconds): the server forks in the order asked, so
        it comes before the answer to a spawn request sent now would."""
        deadline = time.monotonic() + timeout
        with self._lock:
            try:
                if not self._ready:
                    self._read_waiting_locked(hand_over=False)
                while not self._ready and self._pending and self._broken is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if self._reading:
                        self._sleep_locked(None, remaining)
                        continue
                    try:
                        self._read_locked(remaining, for_a_spare=True)
                    except (OSError, ProtocolError):
                        break
                return self._ready.pop(0) if self._ready else None
            finally:
                self._hand_over_locked()

    def ready_count(self) -> int:
        """How many spares are ready now, at least (never blocks). What waits on the
        socket is filed first only when none is filed: the messages come in the order
        the spares were asked for, so they are read when the filed ones are used up (a
        read that finds nothing is a syscall per start saved)."""
        with self._lock:
            if not self._ready:
                self._read_waiting_locked()
            return len(self._ready)

    def ready_spares(self) -> list[Spare]:
        """The spares ready now, the next one to be taken first (for tests, diagnostics)."""
        with self._lock:
            self._read_waiting_locked()
            return list(self._ready)

    def _read_waiting_locked(self, *, hand_over: bool = True) -> None:
        """File the messages waiting on the socket, unless another thread reads it; then
        hand the reading over, unless the caller goes on (``hand_over`` False: it hands
        over when it leaves)."""
        if not self._reading and self._broken is None:
            with contextlib.suppress(OSError, ProtocolError):
                while self._read_locked(0):
                    pass
            if hand_over:
                self._hand_over_locked()

    def start_on(self, spare: Spare, job: Job, fds: Sequence[int]) -> None:
        """Make ``spare`` run ``job`` (fds: records_w, stdout_w, stderr_w, cancel_r): claim
        it here, then send it the job; its socket is closed either way. Raises ``OSError``
        if the spare is gone (its pidfd and status pipe are closed then)."""
        with self._send_lock, contextlib.suppress(OSError):
            # (A server that is gone learns nothing: the run is the manager's then.)
            self.sock.send(encode(ClaimRequest(pid=spare.pid, run_id=job.run_id)))
        # (Its kind given: else the socket's family and type are asked of the kernel.)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, spare.sock)
        try:
            socket.send_fds(sock, [encode(SpawnRequest(req=0, job=job))], list(fds))
        except OSError:
            close_quietly([spare.pidfd, spare.status_r])
            raise
        finally:
            sock.close()

    def drop_spares(self) -> list[RunCgroup]:
        """Drop every spare (the server is going); the cgroups they had or would have."""
        with self._lock:
            self._dropped = True
            ready, self._ready = self._ready, []
            pending, self._pending = self._pending, []
            for sleeper in self._sleepers:  # no spare is coming now: none waits for one
                if sleeper.req is None:
                    sleeper.wake()
        for spare in ready:
            spare.close()
        return [c for c in [*(s.cgroup for s in ready), *pending] if c is not None]

    def signal_group(self, pid: int, signum: int) -> None:
        """Have the server signal the run's process group, unless the run was reaped."""
        with self._send_lock, contextlib.suppress(OSError):
            self.sock.send(encode(SignalRequest(pid=pid, signal=int(signum))))

    def wait_exit(self, timeout: float) -> None:
        """Wait until the server process has exited (it is dying); reap it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
            procs.disown_child(self.pid)

    def resume(self) -> None:
        """SIGCONT the server (stopped by someone)."""
        with contextlib.suppress(OSError):
            self.popen.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (a failed start, or stuck), reap it."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.popen.kill()
        self.popen.wait()
        procs.disown_child(self.pid)

    def close(self, *, timeout: float = SERVER_EXIT_SECONDS) -> bool:
        """Ask the server to exit (it kills its runs), wait for it, and reap it; True if
        it had to be killed (see ``wait_closed``)."""
        self.request_exit()
        return self.wait_closed(time.monotonic() + timeout)

    def request_exit(self) -> None:
        """Ask the server to exit (it kills its runs first); see ``wait_closed``."""
        if self.closed:
            return
        self.closed = True
        with self._send_lock, contextlib.suppress(OSError):
            self.sock.send(encode(ExitRequest()))
        with contextlib.suppress(OSError):
            self.sock.close()

    def wait_closed(self, deadline: float) -> bool:
        """Wait for the server to exit until ``deadline`` (monotonic), then kill it; reap.
        True if it had to be killed (stopped, say): its runs in progress were not killed
        by it then, and are the caller's to kill."""
        killed = False
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            killed = True
        procs.disown_child(self.pid)
        return killed
