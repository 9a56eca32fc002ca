"""The fresh-interpreter launcher: ``python -m supervisor.runs.child`` per run (the fallback).

Slow (the app is imported by every run) but simple: each run is our own child, watched
through a pidfd and reaped here.

May import ``supervision``, ``containment``, ``spawner``, ``job``, ``procs``, ``errors``
and the stdlib.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from supervisor.core.errors import AppLoadError, BackendError
from supervisor.runs import procs
from supervisor.runs.containment import Containment
from supervisor.runs.job import Job
from supervisor.runs.procs import MARKER_ENV
from supervisor.runs.spawner import Spawner, boot_code, path_args
from supervisor.runs.supervision import RunPipes, RunProcess, close_quietly

if TYPE_CHECKING:
    from supervisor.runs.cgroups import RunCgroup

START_TIMEOUT: Final = 60.0
_CANCEL_POLL_SECONDS: Final = 0.05


class _SpawnedRun(RunProcess):
    """A run started as a fresh interpreter: our child; we wait for it ourselves."""

    def __init__(
        self,
        *,
        job: Job,
        pid: int,
        create_time: float,
        pipes: RunPipes,
        cgroup: RunCgroup | None,
        release_cgroup: Callable[[RunCgroup], None] | None,
        pidfd: int,
        popen: subprocess.Popen[bytes],
    ) -> None:
        super().__init__(
            job=job,
            pid=pid,
            create_time=create_time,
            pipes=pipes,
            cgroup=cgroup,
            release_cgroup=release_cgroup,
        )
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

    def _close_exit_fds(self) -> None:
        close_quietly([self._pidfd])

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


class FreshInterpreterLauncher:
    """Starts each run as ``python -m supervisor.runs.child`` (slow; the fallback)."""

    def __init__(
        self,
        app_spec: str,
        *,
        python: str | None = None,
        cwd: str | None = None,
        sys_path: Sequence[str] = (),
        start_timeout: float = START_TIMEOUT,
        containment: Containment | None = None,
    ) -> None:
        self.app_spec = app_spec
        self.start_timeout = start_timeout
        self._python = python or sys.executable
        self._cwd = cwd
        self._paths = tuple(sys_path)
        self._spawner: Spawner | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._containment = containment
        self._swept = False

    @property
    def containment(self) -> str:
        """What contains the runs: ``cgroup v2``, ``cgroup v1`` or process groups."""
        if self._containment is None:
            self._containment = Containment.detect()
        return self._containment.kind

    def start(self) -> None:
        """Check that the app imports (in a fresh interpreter, as runs will); raises
        ``AppLoadError`` if it does not (or not within ``start_timeout``), and
        ``BackendError`` if ``close`` interrupted the check."""
        self._closing.clear()
        if self._containment is None:
            self._containment = Containment.detect()
        if not self._swept:
            self._swept = True
            self._containment.sweep_leftovers()
        check = subprocess.Popen(
            [
                self._python,
                "-c",
                boot_code("runs.child", "check_app"),
                "--app",
                self.app_spec,
                *path_args(self._paths),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self._cwd,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                _, stderr = check.communicate(timeout=_CANCEL_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if self._closing.is_set() or time.monotonic() >= deadline:
                    check.kill()
                    check.communicate()
                    if self._closing.is_set():
                        raise BackendError(
                            "the app check was given up: the launcher is closing"
                        ) from None
                    raise AppLoadError(
                        f"--app {self.app_spec!r}: the app did not finish importing within "
                        f"{self.start_timeout:g}s"
                    ) from None
        if check.returncode != 0:
            lines = stderr.decode("utf-8", "replace").strip().splitlines()
            raise AppLoadError(lines[-1] if lines else f"the app check exited {check.returncode}")
        with self._lock:
            if self._spawner is None:
                self._spawner = Spawner("run-starter")

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            spawner, self._spawner = self._spawner, None
        if spawner is not None:
            spawner.close()
        if self._containment is not None:
            self._containment.close()

    def spawn(self, job: Job, *, cancel: threading.Event | None = None) -> RunProcess:
        """Start ``job``; raises ``BackendError`` if it cannot be started."""
        with self._lock:
            spawner = self._spawner
        if spawner is None:
            raise BackendError("the launcher is not started")
        containment = self._containment
        # A job that names its own cgroup joins that one (the caller's to manage).
        cgroup = None if containment is None or job.cgroup else containment.create(job.run_id)
        if cgroup is not None:
            job = replace(job, cgroup=str(cgroup.path))
        try:
            pipes = RunPipes.create()
        except BaseException:
            _remove(cgroup)
            raise
        env = dict(os.environ)
        env[MARKER_ENV] = job.run_id
        argv = [
            self._python,
            "-c",
            boot_code("runs.child"),
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
            *path_args(self._paths),
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
            close_quietly(pipes.our_ends())
            _remove(cgroup)
            raise BackendError(f"cannot start the run: {error}") from error
        finally:
            close_quietly(pipes.run_ends())
        return _SpawnedRun(
            job=job,
            pid=popen.pid,
            create_time=started,
            pipes=pipes,
            cgroup=cgroup,
            release_cgroup=containment.release if containment is not None else None,
            pidfd=pidfd,
            popen=popen,
        )


def _remove(cgroup: RunCgroup | None) -> None:
    if cgroup is not None:
        with contextlib.suppress(OSError):
            cgroup.remove()
