"""The end of a timed pause (``supervisor.systemd.resume``) and its units
(``units.render_resume_units``), against the fake ``systemctl`` of
``test_systemd_backend``: nothing happens before the end; after it the timers are
enabled and started and the pause's units removed; a transient unit's file never is."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from supervisor.core.definitions import Kind, Options
from supervisor.systemd.resume import PauseUnits, remove_pause_units, resume
from supervisor.systemd.systemctl import Systemd
from supervisor.systemd.units import RetryHandler, calendar_second, render_resume_units
from tests.test_systemd_backend import FakeSystemd

UNTIL = datetime(2026, 3, 1, 14, 0, 0, 250_000, tzinfo=UTC)
SERVICE = "s-a.b.service"
TIMERS = ["s-a.b.timer", "s-a.b-start.timer"]


def _written(tmp_path: Path, *, runtime: bool = False) -> FakeSystemd:
    fake = FakeSystemd(tmp_path)
    for name in TIMERS:
        fake.add_unit(name, UnitFileState="disabled")
    options = Options(id="a.b", name="A B", kind=Kind.SCHEDULE, runner=lambda ctx: None)
    for unit in render_resume_units(
        options,
        service=SERVICE,
        timers=TIMERS,
        until=UNTIL,
        handler=RetryHandler(python="/usr/bin/python3", package_dir="/opt/x"),
        runtime=runtime,
    ):
        (tmp_path / unit.name).write_text(unit.text)
    fake(["systemctl", "daemon-reload"])
    fake(["systemctl", "enable", "--now", PauseUnits(service=SERVICE).timer])
    return fake


def test_the_units_fire_at_the_end_rounded_up_and_at_every_start(tmp_path: Path) -> None:
    _written(tmp_path, runtime=True)
    timer = (tmp_path / "s-a.b:resume.timer").read_text()
    assert "OnCalendar=2026-03-01 14:00:01 UTC\n" in timer and "OnActiveSec=0\n" in timer
    assert "Unit=s-a.b:resume.service\n" in timer and "WantedBy=timers.target" in timer
    service = (tmp_path / "s-a.b:resume.service").read_text()
    exec_line = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_line.startswith("ExecStart=/usr/bin/python3 -c ")
    assert f"--until-us {round(UNTIL.timestamp() * 1e6)} --runtime " in exec_line
    assert exec_line.endswith(" s-a.b.timer s-a.b-start.timer")
    assert calendar_second(UNTIL.replace(microsecond=0)) == "2026-03-01 14:00:00 UTC"
    with pytest.raises(ValueError, match="time zone"):
        calendar_second(UNTIL.replace(tzinfo=None))


def test_before_the_end_the_step_does_nothing(tmp_path: Path) -> None:
    fake = _written(tmp_path)
    before = len(fake.calls)
    ended = resume(
        service=SERVICE,
        timers=TIMERS,
        until=UNTIL,
        runtime=False,
        systemd=Systemd(fake),
        now=UNTIL - timedelta(seconds=1),
    )
    assert not ended and len(fake.calls) == before
    assert (tmp_path / "s-a.b:resume.timer").exists()


def test_after_the_end_the_timers_start_and_the_pause_units_go(tmp_path: Path) -> None:
    fake = _written(tmp_path)
    ended = resume(
        service=SERVICE,
        timers=TIMERS,
        until=UNTIL,
        runtime=False,
        systemd=Systemd(fake),
        now=UNTIL + timedelta(days=3),  # ended while the machine was down
    )
    assert ended
    verbs = fake.verbs()
    assert ("enable", *TIMERS) in verbs and ("start", "--no-block", *TIMERS) in verbs
    assert ("disable", "s-a.b:resume.timer") in verbs
    assert ("stop", "s-a.b:resume.timer") in verbs  # not its own service: the step runs
    assert not list(tmp_path.glob("*:resume.*"))
    assert "s-a.b:resume.timer" not in fake.units
    for name in TIMERS:
        assert fake.units[name]["UnitFileState"] == "enabled"
        assert fake.units[name]["ActiveState"] == "active"


def test_a_transient_resume_timer_is_stopped_and_no_file_is_removed(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path)
    transient = tmp_path / "transient"
    transient.mkdir()
    (transient / "s-a.b:resume.timer").write_text("[Timer]\n")
    fake.add_unit(
        "s-a.b:resume.timer",
        ActiveState="active",
        SubState="waiting",
        FragmentPath=str(transient / "s-a.b:resume.timer"),
    )
    assert remove_pause_units(Systemd(fake), SERVICE) == []
    assert (transient / "s-a.b:resume.timer").exists()
    assert ("stop", "s-a.b:resume.timer") in fake.verbs()


def test_without_a_pause_nothing_is_touched(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path)
    assert remove_pause_units(Systemd(fake), SERVICE) == []
    assert fake.verbs() == []


def test_generate_units_writes_no_pause_or_retry_timer(tmp_path: Path) -> None:
    # Those are made at run time (a pause, a failed run); what is generated is the units
    # and, for retries in the code, the retries drop-in.
    out = tmp_path / "units"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "supervisor", "generate-units"),
            *("--app", "tests.apps.systemd_retry_jobs:cfg", "--output-dir", str(out)),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert not [name for name in written if ":" in name]
    stem = "sched-systemd-retry-tests-rt"
    assert written == [
        f"{stem}.fail.service",
        f"{stem}.fail.service.d/60-sched-supervisor-retries.conf",
        f"{stem}.hold.service",
        f"{stem}.hold.service.d/60-sched-supervisor-retries.conf",
        f"{stem}.tick-start.timer",
        f"{stem}.tick.service",
        f"{stem}.tick.timer",
    ]
