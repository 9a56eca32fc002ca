"""Shared pieces of the benchmarks: generated apps, a quiet in-process service, percentiles."""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from supervisor.service.manager_mode import RunOptions, Service  # noqa: E402

# Schedulers with a no-op runner, each run again 1 ms after its last ended ({count} of them).
NOOP_APP = """
def noop(ctx):
    pass

for i in range({count}):
    add(id=f"bench.noop.{{i}}", name=f"noop {{i}}", kind=scheduler.Kind.SCHEDULE, runner=noop,
        defaults=scheduler.Settings(pause_time=timedelta(milliseconds=1)))
"""


@contextlib.contextmanager
def launcher_default(name: str, value: object) -> Iterator[None]:
    """The fork-server launcher the service makes gets ``name=value``, for what the
    service has no option for (the count of fork servers has one: ``start_service(...,
    fork_servers=N)``); a tree whose launcher has no such keyword runs unchanged."""
    from supervisor.runs.forklauncher import ForkServerLauncher

    defaults = ForkServerLauncher.__init__.__kwdefaults__
    if defaults is None or name not in defaults:
        yield
        return
    before = defaults[name]
    defaults[name] = value
    try:
        yield
    finally:
        defaults[name] = before


def joining_after_fork() -> contextlib.AbstractContextManager[None]:
    """Fork-server runs join their cgroup after fork (spares), as where clone3 is not
    available: the fallback, to compare with."""
    return launcher_default("into_cgroup", False)


def fork_server_pids() -> list[int]:
    """The fork servers: the children of this process that run ``runs.forkserver``."""
    from supervisor.runs import procs

    found = []
    for pid in procs.children(os.getpid()):
        with contextlib.suppress(OSError):
            if b"runs.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def write_app(directory: Path, module: str, body: str) -> str:
    """Write an app module into ``directory`` (put first on sys.path); return its spec."""
    directory.mkdir(parents=True, exist_ok=True)
    header = textwrap.dedent(
        """
        import os, sys, time
        from datetime import timedelta
        from supervisor import Configurator, cfgscheduler, scheduler, user
        cfg = Configurator("bench")
        schedulers = cfgscheduler.enable(cfg)
        def add(**kw):
            schedulers.use_cases.configure(user.su(), scheduler.Options(**kw))
        """
    )
    (directory / f"{module}.py").write_text(header + textwrap.dedent(body))
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return f"{module}:cfg"


def start_service(app_spec: str, state_dir: Path, **options: object) -> Service:
    service = Service(
        RunOptions(app_spec=app_spec, state_dir=state_dir, admin=None, **options),  # type: ignore[arg-type]
        log=io.StringIO(),
    )
    service.start()
    return service


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, millis: list[float]) -> str:
    return (
        f"{name:<36} n={len(millis):<4} p50={percentile(millis, 50):8.2f} ms  "
        f"p99={percentile(millis, 99):8.2f} ms  mean={statistics.fmean(millis):8.2f} ms"
    )
