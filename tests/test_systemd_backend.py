"""The systemd backend against a fake ``systemctl``/``journalctl`` (the command seam).

``FakeSystemd`` keeps unit properties in dicts, answers ``systemctl show`` like systemd
252 does, applies start/stop/restart/enable/disable to them, and filters a list of
journal entries by ``journalctl``'s match rules (same field ORed, fields ANDed, ``+``
between groups). The real thing is exercised by ``test_systemd_e2e``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.cli.client import UseCaseClient, systemd_client
from supervisor.cli.views import UnitFiles
from supervisor.core.clock import FakeClock
from supervisor.core.definitions import Kind, Options, Settings, command
from supervisor.core.errors import (
    AlreadyRunning,
    BackendError,
    DefinitionError,
    UnknownRun,
    UnknownScheduler,
)
from supervisor.core.records import (
    AuditEntry,
    Level,
    LogQuery,
    LogRecord,
    Outcome,
    Source,
    State,
    Trigger,
)
from supervisor.core.registry import Registry
from supervisor.core.settings import EffectiveSettings, SettingsChange, apply, from_store
from supervisor.service.mode import backend_choice
from supervisor.store.sqlite import SqliteStore
from supervisor.systemd import journal
from supervisor.systemd.backend import (
    MESSAGE_JOB_START,
    MESSAGE_PROCESS_EXIT,
    MESSAGE_UNIT_FAILURE,
    MESSAGE_UNIT_SUCCESS,
    Completed,
    DropIn,
    Systemd,
    SystemdBackend,
    outcome_of_exit,
    parse_show,
    parse_timespan_usec,
    parse_timestamp,
)
from supervisor.systemd.execone import EXIT_CANCELLED, EXIT_FAILED
from supervisor.systemd.journal import EVENT_RUN_END, EVENT_RUN_START
from supervisor.systemd.units import (
    SETTINGS_DROPIN_NAME,
    RetryHandler,
    UnitFile,
    render_resume_units,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MONOTONIC_NOW = 1000.0  # seconds since boot, the fake clock's monotonic


def noop(ctx: object) -> None:
    return None


class FakeLayout:
    def service_name(self, options: Options) -> str:
        return f"t-{options.id}.service"

    def timer_name(self, options: Options) -> str | None:
        return None if options.kind is Kind.MANUAL else f"t-{options.id}.timer"

    def start_timer_name(self, options: Options) -> str | None:
        return f"t-{options.id}-start.timer" if options.kind is Kind.SCHEDULE else None

    def resume_units(self, options: Options, *, until: datetime, runtime: bool) -> list[UnitFile]:
        """The real rendering, with this layout's names."""
        timers = [t for t in (self.timer_name(options), self.start_timer_name(options)) if t]
        handler = RetryHandler(python="/usr/bin/python3", package_dir="/opt/sched")
        return render_resume_units(
            options,
            service=self.service_name(options),
            timers=timers,
            until=until,
            handler=handler,
            runtime=runtime,
        )

    def settings_dropins(self, options: Options, settings: Settings) -> list[DropIn]:
        out = [
            DropIn(
                unit=self.service_name(options),
                name="50-settings.conf",
                text=f"[Service]\nTimeoutStartSec={settings.timeout or 'infinity'}\n",
            )
        ]
        timer = self.timer_name(options)
        if timer is not None:
            out.append(
                DropIn(
                    unit=timer,
                    name="50-settings.conf",
                    text="[Timer]\nOnUnitInactiveSec=\n"
                    f"OnUnitInactiveSec={settings.pause_time.total_seconds():g}s\n",
                )
            )
        start = self.start_timer_name(options)
        if start is not None:
            out.append(
                DropIn(
                    unit=start,
                    name="50-settings.conf",
                    text="[Timer]\nOnActiveSec=\n"
                    f"OnActiveSec={settings.start_delay.total_seconds():g}s\n",
                )
            )
        return out


def _matches(entry: Mapping[str, str], terms: Sequence[str]) -> bool:
    wanted: dict[str, set[str]] = {}
    for term in terms:
        key, _, value = term.partition("=")
        wanted.setdefault(key, set()).add(value)
    return all(entry.get(key) in values for key, values in wanted.items())


class FakeSystemd:
    """A fake ``systemctl``/``journalctl``; ``calls`` keeps every argv."""

    def __init__(self, unit_dir: Path) -> None:
        self.unit_dir = unit_dir
        self.units: dict[str, dict[str, str]] = {}
        self.entries: list[dict[str, str]] = []
        self.calls: list[tuple[str, ...]] = []
        self.fail_on: set[str] = set()
        self.invocations = iter(f"inv{n:04d}" for n in range(1, 10_000))
        self.transient: dict[str, list[str]] = {}

    def add_unit(self, name: str, **props: str) -> dict[str, str]:
        base = {
            "Id": name,
            "LoadState": "loaded",
            "ActiveState": "inactive",
            "SubState": "dead",
            "Result": "success",
            "FragmentPath": str(self.unit_dir / name),
            "UnitFileState": "static",
        }
        base.update(props)
        self.units[name] = base
        return base

    def __call__(self, argv: Sequence[str], *, timeout: float = 0) -> Completed:
        self.calls.append(tuple(argv))
        args = [a for a in argv[1:] if a not in ("--no-pager", "--quiet")]
        if args and args[0] in self.fail_on:
            return Completed(argv=tuple(argv), returncode=1, stdout="", stderr="boom")
        if argv[0] == "journalctl":
            return self._journalctl(args)
        if argv[0] == "systemd-run":
            return self._systemd_run(argv)
        verb, rest = args[0], args[1:]
        if verb == "show":
            properties = next(a for a in rest if a.startswith("--property=")).split("=", 1)[1]
            names = [a for a in rest if not a.startswith("--")]
            blocks = []
            for name in names:
                unit = self.units.get(name, {"Id": name, "LoadState": "not-found"})
                blocks.append(
                    "\n".join(f"{p}={unit[p]}" for p in properties.split(",") if p in unit)
                )
            return Completed(argv=tuple(argv), returncode=0, stdout="\n\n".join(blocks) + "\n")
        if verb == "daemon-reload":
            self._reload()
            return Completed(argv=tuple(argv), returncode=0, stdout="")
        names = [a for a in rest if not a.startswith("--")]
        if verb in ("enable", "disable") and "--now" in rest:
            self(["systemctl", verb, *(a for a in rest if a != "--now")])
            verb = "start" if verb == "enable" else "stop"
        for name in names:
            unit = self.units[name]
            if verb in ("start", "restart") and name.endswith(".timer"):
                unit.update(ActiveState="active", SubState="waiting")
            elif verb == "start":
                unit.update(
                    ActiveState="activating",
                    SubState="start",
                    InvocationID=next(self.invocations),
                )
            elif verb == "stop" and "/transient/" in unit["FragmentPath"]:
                del self.units[name]  # --collect: a stopped transient unit goes
            elif verb == "stop":
                unit.update(ActiveState="inactive", SubState="dead")
            elif verb == "enable":
                unit["UnitFileState"] = "enabled-runtime" if "--runtime" in rest else "enabled"
            elif verb == "disable":
                unit["UnitFileState"] = "disabled"
        return Completed(argv=tuple(argv), returncode=0, stdout="")

    def _reload(self) -> None:
        """``daemon-reload``: unit files written into ``unit_dir`` are loaded (disabled
        when they have an ``[Install]`` section), inactive units whose file has gone go."""
        for name, unit in list(self.units.items()):
            path = Path(unit["FragmentPath"])
            gone = path.parent == self.unit_dir and not path.exists()
            if gone and unit["ActiveState"] == "inactive" and path.name.count(":"):
                del self.units[name]
        for path in sorted(self.unit_dir.glob("*:*")):
            if path.is_file() and path.name not in self.units:
                text = path.read_text()
                described = [line for line in text.splitlines() if line.startswith("Description=")]
                self.add_unit(
                    path.name,
                    UnitFileState="disabled" if "[Install]" in text else "static",
                    Description=described[0].split("=", 1)[1] if described else "",
                )

    def _systemd_run(self, argv: Sequence[str]) -> Completed:
        """A transient timer, waiting; ``transient`` keeps each one's command."""
        options = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
        name = options["unit"]
        if f"{name}.timer" in self.units:
            return Completed(argv=tuple(argv), returncode=1, stdout="", stderr="already loaded")
        command = list(argv[list(argv).index("--") + 1 :])
        self.transient[name] = command
        self.add_unit(
            f"{name}.timer",
            ActiveState="active",
            SubState="waiting",
            Description=options["description"],
            FragmentPath=f"/run/systemd/transient/{name}.timer",
            NextElapseUSecRealtime=options.get("on-calendar", ""),
        )
        return Completed(argv=tuple(argv), returncode=0, stdout="")

    def _journalctl(self, args: list[str]) -> Completed:
        limit: int | None = None
        since = until = None
        priority: int | None = None
        terms: list[str] = []
        iterator = iter(args)
        for arg in iterator:
            if arg == "-n":
                limit = int(next(iterator))
            elif arg == "-p":
                priority = int(next(iterator).split("..")[1])
            elif arg.startswith("--since=@"):
                since = float(arg.split("@")[1])
            elif arg.startswith("--until=@"):
                until = float(arg.split("@")[1])
            elif arg in ("-o", "json", "--all"):
                continue
            else:
                terms.append(arg)
        groups: list[list[str]] = [[]]
        for term in terms:
            if term == "+":
                groups.append([])
            else:
                groups[-1].append(term)
        found = []
        for entry in self.entries:
            if terms and not any(_matches(entry, group) for group in groups):
                continue
            moment = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
            if since is not None and moment < since:
                continue
            if until is not None and moment > until:
                continue
            if priority is not None and int(entry.get("PRIORITY", "6")) > priority:
                continue
            found.append(entry)
        found.sort(key=lambda e: int(e["__REALTIME_TIMESTAMP"]))
        if limit is not None:
            found = found[-limit:]
        out = "".join(json.dumps(entry) + "\n" for entry in found)
        return Completed(argv=("journalctl", *args), returncode=0, stdout=out)

    def log(self, seconds: float, **fields: str) -> dict[str, str]:
        """Add a journal entry ``seconds`` after NOW."""
        usec = round((NOW.timestamp() + seconds) * 1e6)
        entry = {"__REALTIME_TIMESTAMP": str(usec), "PRIORITY": "6", **fields}
        self.entries.append(entry)
        return entry

    def verbs(self) -> list[tuple[str, ...]]:
        return [
            tuple(a for a in call[1:] if a != "--no-pager")
            for call in self.calls
            if call[0] == "systemctl" and "show" not in call
        ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "state" / "state.db") as opened:
        yield opened


@pytest.fixture
def registry() -> Registry:
    return make_registry()


def make_registry() -> Registry:
    registry = Registry()
    registry.add(
        Options(
            id="job.tick",
            name="Tick",
            kind=Kind.SCHEDULE,
            runner=noop,
            defaults=Settings(pause_time=timedelta(seconds=10)),
        )
    )
    registry.add(Options(id="job.manual", name="Manual", kind=Kind.MANUAL, runner=noop))
    registry.add(
        Options(
            id="job.cron",
            name="Cron",
            kind=Kind.CRON,
            runner=noop,
            defaults=Settings(cron="*/5 * * * *"),
        )
    )
    registry.add(
        Options(id="job.cmd", name="Cmd", kind=Kind.MANUAL, runner=command(["/bin/false"]))
    )
    return registry


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystemd:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    fake = FakeSystemd(unit_dir)
    fake.add_unit("t-job.tick.service")
    fake.add_unit("t-job.tick.timer", ActiveState="active", SubState="waiting")
    fake.add_unit("t-job.tick-start.timer", ActiveState="active", SubState="elapsed")
    fake.add_unit("t-job.manual.service")
    fake.add_unit("t-job.cron.service")
    fake.add_unit("t-job.cron.timer", ActiveState="active", SubState="waiting")
    fake.add_unit("t-job.cmd.service")
    return fake


@pytest.fixture
def backend(registry: Registry, store: SqliteStore, fake: FakeSystemd) -> SystemdBackend:
    clock = FakeClock(NOW)
    clock.advance(MONOTONIC_NOW - clock.monotonic())
    return SystemdBackend(
        registry, store=store, layout=FakeLayout(), systemd=Systemd(fake), clock=clock
    )


def changed(scheduler_id: str, overrides: Mapping[str, Any]) -> EffectiveSettings:
    """The checked settings the use cases hand a backend for these overrides."""
    options = make_registry().get(scheduler_id)
    return apply(options, from_store(options, {}), SettingsChange.of(overrides))


# -- parsing --------------------------------------------------------------------------------


def test_parse_show_splits_blocks_per_unit() -> None:
    text = "Id=a.service\nActiveState=active\n\nId=b.timer\nNextElapseUSecRealtime=\n"
    assert parse_show(text, 2) == [
        {"Id": "a.service", "ActiveState": "active"},
        {"Id": "b.timer", "NextElapseUSecRealtime": ""},
    ]
    with pytest.raises(BackendError):
        parse_show(text, 3)


def test_parse_timestamps_in_both_forms() -> None:
    assert parse_timestamp("@1795703436") == datetime.fromtimestamp(1795703436, UTC)
    assert parse_timestamp("Thu 2026-11-26 14:30:45 UTC") == datetime(
        2026, 11, 26, 14, 30, 45, tzinfo=UTC
    )
    assert parse_timestamp("") is None
    assert parse_timestamp("n/a") is None


@pytest.mark.parametrize(
    ("text", "usec"),
    [
        ("21min 3.380957s", 1_263_380_957),
        ("1d 2h", 93_600_000_000),
        ("500ms", 500_000),
        ("0", 0),
        ("infinity", None),
        ("", None),
        ("12 parsecs", None),
    ],
)
def test_parse_timespans(text: str, usec: int | None) -> None:
    assert parse_timespan_usec(text) == usec


@pytest.mark.parametrize(
    ("result", "code", "status", "command_runner", "expected"),
    [
        ("success", 1, 0, False, (Outcome.SUCCEEDED, 0, None)),
        ("exit-code", 1, EXIT_FAILED, False, (Outcome.FAILED, 1, None)),
        ("exit-code", 1, EXIT_CANCELLED, False, (Outcome.CANCELLED, 143, None)),
        ("exit-code", 1, 124, False, (Outcome.TIMED_OUT, 124, None)),
        ("exit-code", 1, 1, True, (Outcome.FAILED, 1, None)),
        ("exit-code", 1, 3, True, (Outcome.FAILED, 3, None)),
        ("success", 1, 0, True, (Outcome.SUCCEEDED, 0, None)),
        ("signal", 2, 11, False, (Outcome.CRASHED, None, 11)),
        ("core-dump", 3, 6, False, (Outcome.CRASHED, None, 6)),
        ("success", 2, 15, True, (Outcome.CANCELLED, None, 15)),
        ("timeout", 2, 15, False, (Outcome.TIMED_OUT, None, 15)),
        ("timeout", 1, 143, False, (Outcome.TIMED_OUT, 143, None)),
    ],
)
def test_outcome_of_exit(
    result: str, code: int, status: int, command_runner: bool, expected: tuple[object, ...]
) -> None:
    assert (
        outcome_of_exit(result=result, code=code, status=status, command_runner=command_runner)
        == expected
    )


# -- status ---------------------------------------------------------------------------------


def test_a_waiting_timer_is_paused_with_its_next_elapse(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.tick.timer"]["NextElapseUSecMonotonic"] = "16min 50.5s"  # 1010.5 s
    fake.units["t-job.cron.timer"]["NextElapseUSecRealtime"] = "Sun 2026-03-01 12:05:00 UTC"
    statuses = {s.id: s for s in backend.statuses()}
    assert statuses["job.tick"].state is State.PAUSED
    assert statuses["job.tick"].next_planned_at == NOW + timedelta(seconds=10.5)
    assert statuses["job.cron"].next_planned_at == NOW + timedelta(minutes=5)
    assert statuses["job.manual"].state is State.PAUSED
    assert statuses["job.manual"].next_planned_at is None


def test_a_running_service_names_its_invocation(backend: SystemdBackend, fake: FakeSystemd) -> None:
    fake.units["t-job.tick.service"].update(
        ActiveState="activating",
        SubState="start",
        InvocationID="abc123",
        ExecMainStartTimestamp=f"@{NOW.timestamp():.0f}",
    )
    status = backend.status("job.tick")
    assert status.state is State.RUNNING
    assert status.current_run_id == "abc123"
    assert status.last_started_at == NOW
    assert status.next_planned_at is None


def test_last_outcome_and_error_of_a_failed_run(backend: SystemdBackend, fake: FakeSystemd) -> None:
    _main_process_ended(
        fake.units["t-job.tick.service"],
        invocation="inv-f",
        result="exit-code",
        code="1",
        status=str(EXIT_FAILED),
        after=2,
    )
    fake.log(
        2,
        SCHEDULER_ID="job.tick",
        RUN_ID="inv-f",
        SUPERVISOR_EVENT=EVENT_RUN_END,
        SUPERVISOR_OUTCOME="failed",
        SUPERVISOR_ERROR="RuntimeError: boom",
    )
    status = backend.status("job.tick")
    assert status.last_outcome is Outcome.FAILED
    assert status.last_error == "RuntimeError: boom"
    assert status.last_completed_at == NOW + timedelta(seconds=2)


def test_a_crash_is_described_from_the_exit_status(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    _main_process_ended(
        fake.units["t-job.tick.service"],
        invocation="inv-c",
        result="core-dump",
        code="3",
        status="11",
    )
    status = backend.status("job.tick")
    assert status.last_outcome is Outcome.CRASHED
    assert status.last_error == "Dumped core after signal SIGSEGV (11)"


def test_stopped_elapsed_disabled_and_missing(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    fake.units["t-job.tick.timer"].update(ActiveState="inactive", SubState="dead")
    assert backend.status("job.tick").state is State.STOPPED
    fake.units["t-job.tick.timer"].update(ActiveState="active", SubState="elapsed")
    assert backend.status("job.tick").state is State.STOPPED
    store.set_overrides("job.tick", {"disabled": True})
    assert backend.status("job.tick").state is State.DISABLED
    del fake.units["t-job.cron.timer"]
    del fake.units["t-job.cron.service"]
    status = backend.status("job.cron")
    assert status.state is State.STOPPED
    assert status.last_error is not None and "not installed" in status.last_error


# -- controls -------------------------------------------------------------------------------


def test_execute_starts_the_service_without_blocking_and_returns_the_invocation(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.manual.service"]["InvocationID"] = "old"
    run_id = backend.execute("job.manual", actor="ann")
    assert run_id == "inv0001"
    assert ("start", "--no-block", "t-job.manual.service") in fake.verbs()


def test_execute_while_running_is_refused_naming_the_run(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.manual.service"].update(ActiveState="activating", InvocationID="busy1")
    with pytest.raises(AlreadyRunning, match="busy1"):
        backend.execute("job.manual", actor="ann")
    assert not any(verb[0] == "start" for verb in fake.verbs())


def test_execute_of_a_missing_unit_says_install(backend: SystemdBackend, fake: FakeSystemd) -> None:
    del fake.units["t-job.manual.service"]
    with pytest.raises(BackendError, match="install-units"):
        backend.execute("job.manual", actor="ann")


def test_before_its_first_run_a_schedule_waits_on_its_start_timer(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.tick.timer"].update(ActiveState="active", SubState="elapsed")
    fake.units["t-job.tick-start.timer"].update(
        SubState="waiting", NextElapseUSecMonotonic="16min 45s"
    )
    status = backend.status("job.tick")
    assert status.state is State.PAUSED
    assert status.next_planned_at == NOW + timedelta(seconds=5)


def test_stop_stops_timers_then_service_and_start_starts_both_timers(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.stop("job.tick", actor="ann")
    assert fake.verbs() == [
        ("stop", "t-job.tick.timer", "t-job.tick-start.timer", "t-job.tick.service")
    ]
    assert backend.status("job.tick").state is State.STOPPED
    backend.start("job.tick", actor="ann")
    # The repeat timer first: it must be active when the first run ends, to arm.
    assert fake.verbs()[1:] == [("start", "t-job.tick.timer"), ("start", "t-job.tick-start.timer")]
    assert backend.status("job.tick").state is State.PAUSED
    backend.start("job.tick", actor="ann")  # already waiting: nothing to do
    assert len(fake.verbs()) == 3


def test_start_restarts_an_elapsed_start_timer(backend: SystemdBackend, fake: FakeSystemd) -> None:
    fake.units["t-job.tick.timer"].update(ActiveState="active", SubState="elapsed")
    backend.start("job.tick", actor="ann")
    assert fake.verbs() == [("restart", "t-job.tick-start.timer")]


def test_start_while_a_run_is_on_changes_nothing(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.tick.timer"].update(SubState="running")
    backend.start("job.tick", actor="ann")
    assert fake.verbs() == []


def test_start_restarts_an_elapsed_timer_of_other_kinds(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.cron.timer"].update(ActiveState="active", SubState="elapsed")
    backend.start("job.cron", actor="ann")
    assert fake.verbs() == [("restart", "t-job.cron.timer")]


def test_a_manual_scheduler_is_stopped_until_started(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.stop("job.manual", actor="ann")
    assert fake.verbs() == [("stop", "t-job.manual.service")]
    assert backend.status("job.manual").state is State.STOPPED
    backend.start("job.manual", actor="ann")
    assert backend.status("job.manual").state is State.PAUSED


# -- settings -------------------------------------------------------------------------------


def test_settings_write_dropins_next_to_the_units_reload_and_restart(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    backend.update_settings("job.tick", changed("job.tick", {"pause_time": timedelta(seconds=3)}))
    timer_dropin = fake.unit_dir / "t-job.tick.timer.d" / "50-settings.conf"
    assert timer_dropin.read_text() == "[Timer]\nOnUnitInactiveSec=\nOnUnitInactiveSec=3s\n"
    assert (fake.unit_dir / "t-job.tick.service.d" / "50-settings.conf").exists()
    assert (fake.unit_dir / "t-job.tick-start.timer.d" / "50-settings.conf").exists()
    # The reload re-plans the waiting repeat timer; the elapsed start timer stays so
    # (restarting it would run the scheduler once more).
    assert fake.verbs() == [("daemon-reload",)]
    assert store.overrides("job.tick") == {"pause_time": timedelta(seconds=3)}
    assert backend.overrides("job.tick") == {"pause_time": timedelta(seconds=3)}

    backend.reset_settings("job.tick")
    assert not timer_dropin.exists()
    assert not timer_dropin.parent.exists()
    assert store.overrides("job.tick") == {}
    assert not (fake.unit_dir / "t-job.tick-start.timer.d").exists()
    assert fake.verbs()[-1:] == [("daemon-reload",)]


def test_a_start_timer_still_waiting_is_restarted_with_the_new_start_delay(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.tick.timer"].update(SubState="elapsed")
    fake.units["t-job.tick-start.timer"].update(SubState="waiting")
    backend.update_settings("job.tick", changed("job.tick", {"start_delay": timedelta(seconds=30)}))
    assert fake.verbs() == [("daemon-reload",), ("restart", "t-job.tick-start.timer")]


def test_a_waiting_timer_of_other_kinds_restarts_on_a_settings_change(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.update_settings("job.cron", changed("job.cron", {"cron": "*/7 * * * *"}))
    assert fake.verbs() == [("daemon-reload",), ("restart", "t-job.cron.timer")]


def test_a_stopped_timer_stays_stopped_after_a_settings_change(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.tick.timer"].update(ActiveState="inactive", SubState="dead")
    backend.update_settings("job.tick", changed("job.tick", {"pause_time": timedelta(seconds=3)}))
    assert fake.verbs() == [("daemon-reload",)]


def test_disabling_disables_and_stops_the_timer_and_enabling_brings_it_back(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    timers = ("t-job.tick.timer", "t-job.tick-start.timer")
    for timer in timers:
        fake.units[timer]["UnitFileState"] = "enabled"
    backend.update_settings("job.tick", changed("job.tick", {"disabled": True}))
    assert fake.verbs()[-2:] == [("disable", *timers), ("stop", *timers)]
    assert backend.status("job.tick").state is State.DISABLED
    backend.start("job.tick", actor="ann")  # disabled: start changes nothing
    assert fake.units["t-job.tick.timer"]["ActiveState"] == "inactive"
    backend.reset_settings("job.tick")
    assert fake.verbs()[-3:] == [
        ("enable", *timers),
        ("start", "t-job.tick.timer"),
        ("start", "t-job.tick-start.timer"),
    ]
    assert backend.status("job.tick").state is State.PAUSED


def test_runtime_units_are_enabled_for_this_boot_only(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    fake.units["t-job.tick.timer"].update(
        UnitFileState="enabled-runtime", FragmentPath="/run/systemd/system/t-job.tick.timer"
    )
    fake.units["t-job.tick.service"]["FragmentPath"] = str(fake.unit_dir / "t-job.tick.service")
    fake.units["t-job.tick.timer"]["FragmentPath"] = str(fake.unit_dir / "t-job.tick.timer")
    backend.update_settings("job.tick", changed("job.tick", {"disabled": True}))
    assert ("disable", "--runtime", "t-job.tick.timer") in fake.verbs()


def test_a_failed_reload_puts_the_old_files_back_and_stores_nothing(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    backend.update_settings("job.tick", changed("job.tick", {"pause_time": timedelta(seconds=3)}))
    dropin = fake.unit_dir / "t-job.tick.timer.d" / "50-settings.conf"
    before = dropin.read_text()
    fake.fail_on.add("daemon-reload")
    with pytest.raises(BackendError, match="boom"):
        backend.update_settings(
            "job.tick", changed("job.tick", {"pause_time": timedelta(seconds=7)})
        )
    assert dropin.read_text() == before
    assert store.overrides("job.tick") == {"pause_time": timedelta(seconds=3)}


def test_settings_of_a_manual_scheduler_touch_only_its_service(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    backend.update_settings("job.manual", changed("job.manual", {"timeout": timedelta(minutes=5)}))
    assert (fake.unit_dir / "t-job.manual.service.d" / "50-settings.conf").exists()
    assert fake.verbs() == [("daemon-reload",)]


# -- logs and runs --------------------------------------------------------------------------


def _record(
    fake: FakeSystemd, seconds: float, run_id: str, message: str, **extra: str
) -> dict[str, str]:
    return fake.log(
        seconds,
        SCHEDULER_ID="job.tick",
        RUN_ID=run_id,
        MESSAGE=message,
        SUPERVISOR_SOURCE="logger",
        _SYSTEMD_INVOCATION_ID=run_id,
        **extra,
    )


def _systemd_message(
    fake: FakeSystemd,
    seconds: float,
    run_id: str,
    message_id: str,
    priority: str,
    *,
    unit: str = "t-job.tick.service",
    **extra: str,
) -> None:
    fake.log(
        seconds,
        UNIT=unit,
        _PID="1",
        INVOCATION_ID=run_id,
        MESSAGE_ID=message_id,
        MESSAGE=f"systemd says {message_id[:6]}",
        PRIORITY=priority,
        **extra,
    )


def _main_process_ended(
    unit: dict[str, str], *, invocation: str, result: str, code: str, status: str, after: int = 0
) -> None:
    """What ``systemctl show`` says of a service whose main process, started at NOW, ended
    ``after`` seconds later (``code``: 1 exited, 2 killed, 3 dumped core; ``status``)."""
    unit.update(
        Result=result,
        InvocationID=invocation,
        ExecMainStartTimestamp=f"@{NOW.timestamp():.0f}",
        ExecMainExitTimestamp=f"@{NOW.timestamp() + after:.0f}",
        ExecMainCode=code,
        ExecMainStatus=status,
    )


COMMAND_UNIT = "t-job.cmd.service"


def _command_ended(
    fake: FakeSystemd, seconds: float, run_id: str, *, how: str, status: str, result: str | None
) -> None:
    """systemd's notices of a command run's end: its process ``how`` (exited, killed) with
    ``status``, then the unit succeeded (``result`` None) or failed with ``result``."""
    _systemd_message(
        fake,
        seconds,
        run_id,
        MESSAGE_PROCESS_EXIT,
        "5",
        unit=COMMAND_UNIT,
        EXIT_CODE=how,
        EXIT_STATUS=status,
    )
    if result is None:
        _systemd_message(fake, seconds + 0.1, run_id, MESSAGE_UNIT_SUCCESS, "6", unit=COMMAND_UNIT)
    else:
        _systemd_message(
            fake,
            seconds + 0.1,
            run_id,
            MESSAGE_UNIT_FAILURE,
            "4",
            unit=COMMAND_UNIT,
            UNIT_RESULT=result,
        )


def _run(
    fake: FakeSystemd, start: float, run_id: str, *, outcome: str | None, trigger: str = "schedule"
) -> None:
    _systemd_message(fake, start, run_id, MESSAGE_JOB_START, "6")
    fake.log(
        start + 0.1,
        SCHEDULER_ID="job.tick",
        RUN_ID=run_id,
        SUPERVISOR_EVENT=EVENT_RUN_START,
        SUPERVISOR_TRIGGER=trigger,
        PRIORITY="7",
    )
    _record(fake, start + 0.2, run_id, f"hello from {run_id}", F_N="1", SUPERVISOR_FIELDS="{}")
    if outcome is not None:
        fake.log(
            start + 0.3,
            SCHEDULER_ID="job.tick",
            RUN_ID=run_id,
            SUPERVISOR_EVENT=EVENT_RUN_END,
            SUPERVISOR_OUTCOME=outcome,
            **({"SUPERVISOR_ERROR": "it broke"} if outcome != "succeeded" else {}),
        )


def test_logs_are_our_records_and_systemds_notices_in_time_order(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    _run(fake, 0, "r1", outcome="succeeded")
    _systemd_message(fake, 0.5, "r1", MESSAGE_UNIT_SUCCESS, "6")
    fake.log(
        0.25,
        SCHEDULER_ID="job.tick",
        MESSAGE="printed",
        _TRANSPORT="stdout",
        _SYSTEMD_INVOCATION_ID="r1",
    )
    _systemd_message(fake, 0.6, "r1", MESSAGE_PROCESS_EXIT, "5", EXIT_CODE="exited")
    fake.log(0.7, SCHEDULER_ID="other", MESSAGE="not ours")
    found = backend.logs(LogQuery(scheduler_id="job.tick"))
    assert [r.message for _, r in found] == [
        "hello from r1",
        "printed",
        f"systemd says {MESSAGE_PROCESS_EXIT[:6]}",
    ]
    assert [r.source for _, r in found] == [Source.LOGGER, Source.STDOUT, Source.LOGGER]
    assert all(r.run_id == "r1" for _, r in found)
    cursors = [c for c, _ in found]
    assert cursors == sorted(cursors)
    assert [
        r.message for _, r in backend.logs(LogQuery(scheduler_id="job.tick", after=cursors[0]))
    ] == [
        "printed",
        f"systemd says {MESSAGE_PROCESS_EXIT[:6]}",
    ]
    assert [
        r.message for _, r in backend.logs(LogQuery(scheduler_id="job.tick", before=cursors[1]))
    ] == ["hello from r1"]
    assert [r.message for _, r in backend.logs(LogQuery(scheduler_id="job.tick", limit=1))] == [
        f"systemd says {MESSAGE_PROCESS_EXIT[:6]}"
    ]


def test_logs_filter_by_level_and_run(backend: SystemdBackend, fake: FakeSystemd) -> None:
    _run(fake, 0, "r1", outcome="succeeded")
    _run(fake, 10, "r2", outcome="succeeded")
    _record(fake, 10.5, "r2", "bad news", PRIORITY="3")
    assert [r.message for _, r in backend.logs(LogQuery(scheduler_id="job.tick", run_id="r2"))] == [
        "hello from r2",
        "bad news",
    ]
    found = backend.logs(LogQuery(scheduler_id="job.tick", min_level=Level.WARNING))
    assert [(r.message, r.level) for _, r in found] == [("bad news", Level.ERROR)]


def test_runs_are_one_per_invocation_newest_first(
    backend: SystemdBackend, fake: FakeSystemd, store: SqliteStore
) -> None:
    _run(fake, 0, "r1", outcome="succeeded")
    _systemd_message(fake, 0.4, "r1", MESSAGE_UNIT_SUCCESS, "6")
    _run(fake, 10, "r2", outcome="failed")
    _systemd_message(
        fake, 10.4, "r2", MESSAGE_PROCESS_EXIT, "5", EXIT_CODE="exited", EXIT_STATUS="1"
    )
    _systemd_message(fake, 10.5, "r2", MESSAGE_UNIT_FAILURE, "4", UNIT_RESULT="exit-code")
    # r3: killed by SIGKILL (OOM?) before exec could say anything
    _run(fake, 20, "r3", outcome=None, trigger="manual")
    _systemd_message(
        fake, 20.4, "r3", MESSAGE_PROCESS_EXIT, "5", EXIT_CODE="killed", EXIT_STATUS="9"
    )
    _systemd_message(fake, 20.5, "r3", MESSAGE_UNIT_FAILURE, "4", UNIT_RESULT="signal")
    # r4: timed out (systemd's TimeoutStartSec)
    _run(fake, 30, "r4", outcome="cancelled")
    _systemd_message(fake, 30.5, "r4", MESSAGE_UNIT_FAILURE, "4", UNIT_RESULT="timeout")
    # r5: still running
    _run(fake, 40, "r5", outcome=None)
    fake.units["t-job.tick.service"].update(ActiveState="activating", InvocationID="r5")
    store.add_audit(
        AuditEntry(
            time=NOW, actor="ann", action="execute", scheduler_id="job.tick", detail="run r3"
        )
    )
    runs = backend.runs("job.tick")
    assert [r.run_id for r in runs] == ["r5", "r4", "r3", "r2", "r1"]
    by_id = {r.run_id: r for r in runs}
    assert by_id["r1"].outcome is Outcome.SUCCEEDED
    assert by_id["r1"].trigger is Trigger.SCHEDULE
    assert by_id["r1"].started_at == NOW  # systemd started the job then
    assert by_id["r1"].ended_at == NOW + timedelta(seconds=0.4)
    assert (by_id["r2"].outcome, by_id["r2"].error, by_id["r2"].exit_code) == (
        Outcome.FAILED,
        "it broke",
        1,
    )
    r3 = by_id["r3"]
    assert (r3.outcome, r3.signal, r3.trigger, r3.triggered_by) == (
        Outcome.CRASHED,
        9,
        Trigger.MANUAL,
        "ann",
    )
    assert r3.error == "Killed by signal SIGKILL (9)"
    assert by_id["r4"].outcome is Outcome.TIMED_OUT
    assert by_id["r5"].outcome is None and by_id["r5"].ended_at is None
    assert [r.run_id for r in backend.runs("job.tick", limit=2)] == ["r5", "r4"]
    assert backend.run("r2").outcome is Outcome.FAILED
    with pytest.raises(UnknownRun):
        backend.run("nope")


def test_a_command_runners_exit_status_is_a_failure_unless_zero(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    # Before: crashed, "Exited with code 1"; the manager now says failed, "exit code 1".
    _main_process_ended(
        fake.units["t-job.cmd.service"], invocation="c1", result="exit-code", code="1", status="1"
    )
    status = backend.status("job.cmd")
    assert status.last_outcome is Outcome.FAILED
    assert status.last_error == "exit code 1"


def test_a_command_runners_runs_fail_on_a_non_zero_exit_and_crash_on_a_signal(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    # Before: both were crashed ("Exited with code 3"); the manager says failed, "exit code 3".
    for start, run_id, how, status, result in (
        (0, "c1", "exited", "3", "exit-code"),
        (10, "c2", "killed", "11", "signal"),
        (20, "c3", "exited", "0", None),
    ):
        _systemd_message(fake, start, run_id, MESSAGE_JOB_START, "6", unit=COMMAND_UNIT)
        _command_ended(fake, start + 0.4, run_id, how=how, status=status, result=result)
    by_id = {run.run_id: run for run in backend.runs("job.cmd")}
    failed, crashed, succeeded = by_id["c1"], by_id["c2"], by_id["c3"]
    assert (failed.outcome, failed.exit_code, failed.error) == (Outcome.FAILED, 3, "exit code 3")
    assert (crashed.outcome, crashed.signal, crashed.error) == (
        Outcome.CRASHED,
        11,
        "Killed by signal SIGSEGV (11)",
    )
    assert (succeeded.outcome, succeeded.exit_code, succeeded.error) == (
        Outcome.SUCCEEDED,
        0,
        None,
    )


def test_a_command_that_exits_143_after_a_stop_was_cancelled_as_under_the_manager(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    # Before: FAILED, "exit code 143" (a command trapping SIGTERM exits 128 + 15); the
    # manager says CANCELLED for a run a Stop ended.
    service = fake.units[COMMAND_UNIT]
    for start, run_id in ((0, "s1"), (10, "s2")):
        service.update(ActiveState="active", SubState="running", InvocationID=run_id)
        _systemd_message(fake, start, run_id, MESSAGE_JOB_START, "6", unit=COMMAND_UNIT)
        if run_id == "s1":
            backend.stop("job.cmd", actor="alice", reason="ERP")
        else:
            service.update(ActiveState="inactive", SubState="dead")  # it ended by itself
        _command_ended(fake, start + 0.4, run_id, how="exited", status="143", result="exit-code")
    by_id = {run.run_id: run for run in backend.runs("job.cmd")}
    stopped, failed = by_id["s1"], by_id["s2"]
    assert (stopped.outcome, stopped.exit_code, stopped.error) == (
        Outcome.CANCELLED,
        143,
        "cancelled: the run was stopped",
    )
    assert (failed.outcome, failed.exit_code, failed.error) == (
        Outcome.FAILED,
        143,
        "exit code 143",
    )
    # The status's last outcome says so too, for the run the Stop ended.
    _main_process_ended(
        service, invocation="s1", result="exit-code", code="1", status="143", after=1
    )
    status = backend.status("job.cmd")
    assert status.last_outcome is Outcome.CANCELLED
    assert status.last_error == "cancelled: the run was stopped"


def test_a_run_without_an_end_that_is_not_running_was_interrupted(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    _run(fake, 0, "r1", outcome=None)
    (run,) = backend.runs("job.tick")
    assert run.outcome is Outcome.INTERRUPTED


def test_location_tells_persistent_from_runtime(backend: SystemdBackend, fake: FakeSystemd) -> None:
    fake.units["t-job.tick.service"]["FragmentPath"] = "/etc/systemd/system/t-job.tick.service"
    fake.units["t-job.tick.timer"]["FragmentPath"] = "/etc/systemd/system/t-job.tick.timer"
    assert backend.location("job.tick").kind == "mixed"  # the start timer lives elsewhere
    start = "/etc/systemd/system/t-job.tick-start.timer"
    fake.units["t-job.tick-start.timer"]["FragmentPath"] = start
    location = backend.location("job.tick")
    assert (location.kind, location.start_timer_path) == ("persistent", start)
    fake.units["t-job.manual.service"]["FragmentPath"] = "/run/systemd/system/x.service"
    assert backend.location("job.manual").kind == "runtime"


# -- the CLI's client in systemd mode -------------------------------------------------------


def test_the_backend_is_chosen_by_environment_then_by_the_manifest(tmp_path: Path) -> None:
    assert backend_choice(tmp_path, {}) == "manager"
    assert backend_choice(tmp_path, {"SUPERVISOR_BACKEND": "systemd"}) == "systemd"
    (tmp_path / "systemd-units.json").write_text("{}")
    assert backend_choice(tmp_path, {}) == "systemd"
    assert backend_choice(tmp_path, {"SUPERVISOR_BACKEND": "manager"}) == "manager"
    with pytest.raises(DefinitionError, match="SUPERVISOR_BACKEND"):
        backend_choice(tmp_path, {"SUPERVISOR_BACKEND": "cron"})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[UseCaseClient, FakeSystemd]]:
    fake = FakeSystemd(tmp_path / "units")
    (tmp_path / "units").mkdir()
    for scheduler_id in ("sd.tick", "sd.manual", "sd.cron", "sd.fail", "sd.command"):
        fake.add_unit(f"sched-systemd-tests-{scheduler_id}.service")
    for scheduler_id in ("sd.tick", "sd.cron"):
        fake.add_unit(
            f"sched-systemd-tests-{scheduler_id}.timer", ActiveState="active", SubState="waiting"
        )
    fake.add_unit(
        "sched-systemd-tests-sd.tick-start.timer", ActiveState="active", SubState="elapsed"
    )
    made = systemd_client(
        tmp_path / "state", app_spec="tests.apps.systemd_jobs:cfg", systemd=Systemd(fake)
    )
    yield made, fake
    made.close()


def test_the_client_answers_like_the_managers(client: tuple[UseCaseClient, FakeSystemd]) -> None:
    systemd_client, fake = client
    assert systemd_client.info().backend == "systemd"
    listed = systemd_client.statuses()
    assert [s.id for s in listed] == ["sd.tick", "sd.manual", "sd.cron", "sd.fail", "sd.command"]
    assert listed[0].state is State.PAUSED and listed[0].kind is Kind.SCHEDULE
    run_id = systemd_client.execute("sd.manual")
    with pytest.raises(AlreadyRunning, match=run_id) as refused:
        systemd_client.execute("sd.manual")
    assert refused.value.exit_code == 4
    with pytest.raises(UnknownScheduler) as unknown:
        systemd_client.status("nope")
    assert unknown.value.exit_code == 3
    view = systemd_client.update_settings(
        "sd.tick", SettingsChange(pause_time=timedelta(seconds=5))
    )
    assert list(view.overrides) == ["pause_time"]
    dropin = fake.unit_dir / "sched-systemd-tests-sd.tick.timer.d" / SETTINGS_DROPIN_NAME
    assert "OnUnitInactiveSec=5s" in dropin.read_text()
    store = SqliteStore.open(fake.unit_dir.parent / "state" / "state.db")
    try:
        actions = [entry.action for _, entry in store.audit(scheduler_id="sd.tick")]
    finally:
        store.close()
    assert actions == ["update settings"]
    status = systemd_client.status("sd.manual")
    assert status.last_actor is not None
    assert status.units == UnitFiles(
        kind="other",
        service=str(fake.unit_dir / "sched-systemd-tests-sd.manual.service"),
        timer=None,
        start_timer=None,
    )
    tick_units = systemd_client.status("sd.tick").units
    assert tick_units is not None
    assert tick_units.start_timer == str(fake.unit_dir / "sched-systemd-tests-sd.tick-start.timer")
    assert systemd_client.run_action("sd.manual", "ping") == "pong"


def test_while_running_the_last_finished_run_comes_from_the_journal(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    _run(fake, 0, "r1", outcome="failed")
    _systemd_message(fake, 0.5, "r1", MESSAGE_UNIT_FAILURE, "4", UNIT_RESULT="exit-code")
    _run(fake, 10, "r2", outcome=None)
    fake.units["t-job.tick.service"].update(ActiveState="activating", InvocationID="r2")
    status = backend.status("job.tick")
    assert status.state is State.RUNNING and status.current_run_id == "r2"
    assert status.last_outcome is Outcome.FAILED
    assert status.last_error == "it broke"
    assert status.last_completed_at == NOW + timedelta(seconds=0.5)


def _ours(
    fake: FakeSystemd,
    seconds: float,
    scheduler_id: str,
    run_id: str,
    message: str,
    *,
    level: Level = Level.INFO,
    **fields: object,
) -> None:
    made = LogRecord(
        time=NOW + timedelta(seconds=seconds),
        level=level,
        message=message,
        fields=fields,
        run_id=run_id,
        source=Source.LOGGER,
    )
    entry = journal.record_entry(made, scheduler_id=scheduler_id)
    fake.log(seconds, **{key: str(value) for key, value in entry}, _SYSTEMD_INVOCATION_ID=run_id)


def test_log_search_maps_onto_journalctl_and_filters_the_rest(
    backend: SystemdBackend, fake: FakeSystemd
) -> None:
    _ours(fake, 1, "job.tick", "t1", "Connecting to ERP", order_id=42)
    _ours(fake, 2, "job.manual", "m1", "ERP refused", level=Level.ERROR, order_id=42)
    _ours(fake, 3, "job.tick", "t1", "plain", note="erp-2")
    _ours(fake, 4, "job.cron", "c1", "cron failed", level=Level.ERROR, order_id="43")
    _ours(fake, 5, "elsewhere", "e1", "ERP but not ours", level=Level.ERROR)

    def messages(**query: Any) -> list[str]:
        return [r.message for _, r in backend.logs(LogQuery(**query))]

    every: dict[str, Any] = {"scheduler_id": None}
    assert messages(**every, min_level=Level.ERROR) == ["ERP refused", "cron failed"]
    assert messages(**every, text="erp") == ["Connecting to ERP", "ERP refused", "plain"]
    assert messages(**every, fields=(("order_id", "42"),)) == ["Connecting to ERP", "ERP refused"]
    since = NOW + timedelta(seconds=2.5)
    assert messages(**every, since=since) == ["plain", "cron failed"]
    assert messages(**every, until=since) == ["Connecting to ERP", "ERP refused"]
    assert messages(**every, run_id="m1") == ["ERP refused"]
    assert messages(scheduler_id="job.tick", text="ERP", limit=1) == ["plain"]
    searched = [call for call in fake.calls if call[0] == "journalctl"]
    field_search = next(call for call in searched if "F_ORDER_ID=42" in call)
    assert "SCHEDULER_ID=job.cron" in field_search and "SCHEDULER_ID=elsewhere" not in field_search
    timed = next(call for call in searched if f"--since=@{since.timestamp():.6f}" in call)
    assert not [a for a in timed if a.startswith("--until")]  # until is not journald's
