"""The fork server's import set, pinned: every run is forked from it, and each module it
holds is memory that every fork copies the page tables of and every run's exit tears
down. A real fork server (started by the launcher, as the manager starts it) serves a
run of an app that uses the public API; then neither the server (its ``sys.modules`` as
it exits, written by an ``atexit`` hook of the app) nor the run (as its runner starts)
has imported any of the heavy modules below."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

from supervisor.core.records import Outcome
from supervisor.runs.forklauncher import ForkServerLauncher
from supervisor.runs.job import Job
from tests.launching import ROOT

# Loaded only where they are used (the manager, the CLI, an app that asks for them),
# never by a fork server or a run of an app that does not.
HEAVY = (
    "argparse",  # the fresh-interpreter child's command line
    "decimal",  # by fractions: durations typed as text
    "fractions",
    "psutil",  # the manager's process clean-up
    "subprocess",  # by psutil
    "supervisor.usecases.backend",
    "supervisor.usecases.health",
    "supervisor.store",
    "supervisor.manager",
    "supervisor.web",
    "supervisor.cli",
    "sqlite3",
    "jinja2",
    "bottle",
    "click",
    "croniter",
)

APP = """
import atexit, json, os, sys
from datetime import timedelta
from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("footprint")
schedulers = cfgscheduler.enable(cfg)


def report(ctx):
    with open({run_out!r}, "w") as out:
        json.dump(sorted(sys.modules), out)
    scheduler.logger_from(ctx).info("reported")


schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(id="report", name="Report", kind=scheduler.Kind.MANUAL, runner=report),
)
schedulers.use_cases.configure(
    user.su(),
    scheduler.Options(
        id="every", name="Every", kind=scheduler.Kind.SCHEDULE, runner=report,
        defaults=scheduler.Settings(
            start_delay=timedelta(seconds=1), pause_time=timedelta(seconds=10)
        ),
    ),
)

_SERVER = os.getpid()


def _write_modules():
    if os.getpid() == _SERVER:  # the fork server itself, not a run that exits normally
        with open({server_out!r}, "w") as out:
            json.dump(sorted(sys.modules), out)


atexit.register(_write_modules)
"""


def heavy_in(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_a_fork_server_and_its_run_import_none_of_the_heavy_modules(tmp_path: Path) -> None:
    server_out, run_out = tmp_path / "server.json", tmp_path / "run.json"
    (tmp_path / "footprint_app.py").write_text(
        APP.format(server_out=str(server_out), run_out=str(run_out))
    )
    launcher = ForkServerLauncher(
        "footprint_app:cfg", cwd=str(ROOT), sys_path=[str(tmp_path)], servers=1
    )
    launcher.start()
    try:
        job = Job(scheduler_id="report", run_id=uuid.uuid4().hex[:16], trigger="manual")
        end = launcher.spawn(job).supervise(
            sink=lambda batch: None, timeout=30, cancel=threading.Event()
        )
        assert end.outcome is Outcome.SUCCEEDED, end
    finally:
        launcher.close()  # the server exits normally: its atexit hook writes its modules
    server_modules = json.loads(server_out.read_text())
    run_modules = json.loads(run_out.read_text())
    assert "supervisor.runs.forkserver" in server_modules  # it is the fork server's set
    assert heavy_in(server_modules) == []
    assert heavy_in(run_modules) == []
