"""Installing and uninstalling units with a manifest, against a fake systemctl.

The real install into a namespaced systemd is part of ``test_systemd_e2e``.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from pathlib import Path

import pytest

from supervisor.core.errors import BackendError, StoreError
from supervisor.service import mode, paths, systemd_mode
from supervisor.systemd import install as unitinstall
from supervisor.systemd.backend import DropIn, Systemd
from supervisor.systemd.install import (
    InstallPlan,
    RenderedUnit,
    install,
    manifest_path,
    read_manifest,
    uninstall,
)
from tests.test_systemd_backend import FakeSystemd

SERVICE = "[Service]\nType=oneshot\nExecStart=/bin/true\n"
TIMER = "[Timer]\nOnUnitInactiveSec=1s\n\n[Install]\nWantedBy=timers.target\n"
START_TIMER = "[Timer]\nOnActiveSec=1s\n\n[Install]\nWantedBy=timers.target\n"


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystemd:
    fake = FakeSystemd(tmp_path / "units")
    for name in ("a.service", "a.timer", "a-start.timer", "b.service", "b.timer", "m.service"):
        fake.add_unit(name)
    return fake


def plan(unit_dir: Path, **changes: object) -> InstallPlan:
    values: dict[str, object] = {
        "app_spec": "pkg.jobs:cfg",
        "unit_dir": unit_dir,
        "runtime": False,
        "units": [
            RenderedUnit(name="a.service", text=SERVICE),
            RenderedUnit(name="a.timer", text=TIMER),
            RenderedUnit(name="a-start.timer", text=START_TIMER),
            RenderedUnit(name="b.service", text=SERVICE),
            RenderedUnit(name="b.timer", text=TIMER),
            RenderedUnit(name="m.service", text=SERVICE),
        ],
        "cwd": "/srv/app",
        "sys_path": ["/srv/app"],
        "prefix": "",  # the fake units carry no prefix
        "dropin_names": [("a.timer", "50-settings.conf"), ("a.service", "50-settings.conf")],
        "start_timers": frozenset({"a-start.timer"}),
    }
    values.update(changes)
    return InstallPlan(**values)  # type: ignore[arg-type]


def test_install_writes_units_records_them_and_starts_timers(
    tmp_path: Path, fake: FakeSystemd
) -> None:
    unit_dir = tmp_path / "units"
    state = tmp_path / "state"
    report = install(plan(unit_dir), state_dir=state, systemd=Systemd(fake))
    assert (unit_dir / "a.service").read_text() == SERVICE
    assert oct((unit_dir / "a.timer").stat().st_mode & 0o777) == "0o644"
    # A start timer is started, never restarted: restarting an elapsed one (a reinstall)
    # would run its scheduler once more.
    assert fake.verbs() == [
        ("daemon-reload",),
        ("enable", "a.timer", "a-start.timer", "b.timer"),
        ("restart", "a.timer", "b.timer"),
        ("start", "a-start.timer"),
    ]
    assert report.started == ("a.timer", "a-start.timer", "b.timer")
    manifest = read_manifest(state)
    assert manifest is not None
    assert manifest.units == (
        "a.service",
        "a.timer",
        "a-start.timer",
        "b.service",
        "b.timer",
        "m.service",
    )
    assert manifest.enabled == ("a.timer", "a-start.timer", "b.timer")
    assert manifest.prefix == "" and manifest.app_spec == "pkg.jobs:cfg"
    assert oct(manifest_path(state).stat().st_mode & 0o777) == "0o600"
    assert paths.MANIFEST_NAME == unitinstall.MANIFEST_NAME


def test_disabled_timers_stay_stopped_and_runtime_installs_enable_for_this_boot(
    tmp_path: Path, fake: FakeSystemd
) -> None:
    install(
        plan(
            tmp_path / "units",
            runtime=True,
            disabled_timers=frozenset({"a.timer", "a-start.timer"}),
        ),
        state_dir=tmp_path / "state",
        systemd=Systemd(fake),
    )
    assert fake.verbs() == [
        ("daemon-reload",),
        ("disable", "--runtime", "a.timer", "a-start.timer"),
        ("stop", "a.timer", "a-start.timer"),
        ("enable", "--runtime", "b.timer"),
        ("restart", "b.timer"),
    ]


def test_settings_dropins_are_installed_with_the_units(tmp_path: Path, fake: FakeSystemd) -> None:
    dropin = DropIn(unit="a.timer", name="50-settings.conf", text="[Timer]\nOnActiveSec=\n")
    install(
        plan(tmp_path / "units", dropins=[dropin]), state_dir=tmp_path / "s", systemd=Systemd(fake)
    )
    assert (tmp_path / "units" / "a.timer.d" / "50-settings.conf").read_text() == dropin.text


def test_foreign_files_are_never_overwritten(tmp_path: Path, fake: FakeSystemd) -> None:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    (unit_dir / "b.timer").write_text("someone else's")
    with pytest.raises(BackendError, match="not installed by sched-supervisor"):
        install(plan(unit_dir), state_dir=tmp_path / "state", systemd=Systemd(fake))
    assert (unit_dir / "b.timer").read_text() == "someone else's"
    assert not (unit_dir / "a.service").exists()
    assert read_manifest(tmp_path / "state") is None
    assert fake.calls == []


def test_reinstalling_replaces_and_removes_what_is_no_longer_generated(
    tmp_path: Path, fake: FakeSystemd
) -> None:
    unit_dir = tmp_path / "units"
    state = tmp_path / "state"
    install(plan(unit_dir), state_dir=state, systemd=Systemd(fake))
    fewer = [RenderedUnit(name="a.service", text=SERVICE + "# v2\n")]
    report = install(plan(unit_dir, units=fewer), state_dir=state, systemd=Systemd(fake))
    assert (unit_dir / "a.service").read_text().endswith("# v2\n")
    assert not (unit_dir / "b.timer").exists()
    assert sorted(Path(p).name for p in report.removed) == [
        "a-start.timer",
        "a.timer",
        "b.service",
        "b.timer",
        "m.service",
    ]
    assert ("stop", "a.timer", "a-start.timer", "b.service", "b.timer", "m.service") in (
        fake.verbs()
    )
    assert ("disable", "a.timer", "a-start.timer", "b.timer") in fake.verbs()


def test_shadowing_units_in_etc_are_reported(tmp_path: Path, fake: FakeSystemd) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "a.service").write_text(SERVICE)
    report = install(
        plan(tmp_path / "run", runtime=True),
        state_dir=tmp_path / "state",
        systemd=Systemd(fake),
        other_unit_dirs=[etc],
    )
    assert report.warnings == (
        f"{etc / 'a.service'} also exists ({tmp_path / 'run'} wins over it)",
    )


def test_uninstall_removes_exactly_what_was_installed(tmp_path: Path, fake: FakeSystemd) -> None:
    unit_dir = tmp_path / "units"
    state = tmp_path / "state"
    unit_dir.mkdir()
    (unit_dir / "unrelated.service").write_text("keep me")
    install(plan(unit_dir), state_dir=state, systemd=Systemd(fake))
    # the backend wrote a settings drop-in later; a user added one of their own
    (unit_dir / "a.timer.d").mkdir()
    (unit_dir / "a.timer.d" / "50-settings.conf").write_text("[Timer]\n")
    (unit_dir / "b.service.d").mkdir()
    (unit_dir / "b.service.d" / "90-mine.conf").write_text("[Service]\n")
    fake.calls.clear()
    report = uninstall(state_dir=state, systemd=Systemd(fake), unit_dirs=(unit_dir,))
    assert sorted(p.relative_to(unit_dir).as_posix() for p in unit_dir.rglob("*")) == [
        "b.service.d",
        "b.service.d/90-mine.conf",
        "unrelated.service",
    ]
    assert str(unit_dir / "a.timer.d" / "50-settings.conf") in report.removed
    assert fake.verbs() == [
        ("stop", "a.timer", "a-start.timer", "b.timer"),
        ("stop", "a.service", "b.service", "m.service"),
        ("disable", "a.timer", "a-start.timer", "b.timer"),
        ("daemon-reload",),
        (
            "reset-failed",
            "a.service",
            "a.timer",
            "a-start.timer",
            "b.service",
            "b.timer",
            "m.service",
        ),
    ]
    assert read_manifest(state) is None
    with pytest.raises(BackendError, match="no units are installed"):
        uninstall(state_dir=state, systemd=Systemd(fake), unit_dirs=(unit_dir,))


@pytest.mark.parametrize(
    ("units", "files"),
    [
        (["sched-x-a.service"], ["{unit_dir}/sched-x-a.service", "{victim}"]),
        (["sched-x-a.service"], ["{unit_dir}/../victim"]),
        (["sched-x-a.service", "ssh.service"], ["{unit_dir}/ssh.service"]),
        (["sched-x-a.service"], ["{unit_dir}/sched-x-a.service.d/../../victim"]),
    ],
    ids=["outside-file", "dotdot", "foreign-unit", "dropin-dotdot"],
)
def test_regression_uninstall_touches_nothing_a_manifest_lists_beyond_its_units(
    tmp_path: Path, fake: FakeSystemd, units: list[str], files: list[str]
) -> None:
    """A planted manifest once made root delete any file it listed."""
    unit_dir = tmp_path / "units"
    state = tmp_path / "state"
    unit_dir.mkdir()
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (unit_dir / "ssh.service").write_text("[Service]\n")
    (unit_dir / "sched-x-a.service").write_text("[Service]\n")
    manifest = {
        "version": 1,
        "app_spec": "pkg.jobs:cfg",
        "unit_dir": str(unit_dir),
        "runtime": False,
        "units": units,
        "files": [f.format(victim=victim, unit_dir=unit_dir) for f in files],
        "enabled": [],
        "prefix": "sched-x-",
    }
    manifest_path(state).write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="refusing to uninstall"):
        uninstall(state_dir=state, systemd=Systemd(fake), unit_dirs=(unit_dir,))
    assert victim.read_text() == "keep me"
    assert (unit_dir / "ssh.service").exists()
    assert (unit_dir / "sched-x-a.service").exists()
    assert fake.calls == [], "nothing may be stopped or disabled either"


def test_a_damaged_manifest_is_reported(tmp_path: Path) -> None:
    manifest_path(tmp_path).write_text("{not json")
    with pytest.raises(StoreError, match="damaged"):
        read_manifest(tmp_path)
    manifest_path(tmp_path).write_text(json.dumps({"version": 99}))
    with pytest.raises(StoreError, match="version"):
        read_manifest(tmp_path)


# -- which state directory each mode uses by default ---------------------------------------


def test_systemd_mode_never_shares_the_managers_default_state_dir(tmp_path: Path) -> None:
    # Root: the Debian service's manager owns /var/lib/sched-supervisor; install-units'
    # manifest and store go beside it (the service once found them root-owned in its own).
    assert mode.units_state_dir(None, {}, uid=0, home=tmp_path) == Path(
        "/var/lib/sched-supervisor-units"
    )
    user_default = tmp_path / ".local" / "state" / "sched-supervisor-units"
    assert mode.units_state_dir(None, {}, uid=1000, home=tmp_path) == user_default
    # Given ones are used as they are.
    explicit = {"SUPERVISOR_STATE_DIR": str(tmp_path / "s")}
    assert mode.units_state_dir(None, explicit, uid=0) == tmp_path / "s"
    assert mode.units_state_dir("/srv/x", {}, uid=0) == Path("/srv/x")


def test_operator_commands_find_the_mode_in_use(tmp_path: Path) -> None:
    def chosen(**env: str) -> Path:
        return mode.operator_state_dir(None, env, uid=1000, home=tmp_path)

    manager = tmp_path / ".local" / "state" / "sched-supervisor"
    units = manager.with_name("sched-supervisor-units")
    assert chosen() == manager  # nothing anywhere: the manager's
    units.mkdir(parents=True)
    (units / "systemd-units.json").write_text("{}")
    assert chosen() == units  # units installed, no manager here
    manager.mkdir()
    (manager / "control.sock").write_text("")
    assert chosen() == manager  # a manager runs on its default
    assert chosen(SUPERVISOR_BACKEND="systemd") == units
    assert chosen(SUPERVISOR_BACKEND="manager") == manager
    (manager / "control.sock").unlink()
    (manager / "systemd-units.json").write_text("{}")  # an install from before the split
    assert chosen() == manager
    assert chosen(SUPERVISOR_BACKEND="systemd") == manager
    assert mode.operator_state_dir("/srv/x", {}, uid=1000) == Path("/srv/x")


def test_the_packaged_command_runs_units_as_the_service_user() -> None:
    try:
        pwd.getpwnam(paths.SERVICE_USER)
        exists = True
    except KeyError:
        exists = False
    packaged = systemd_mode.default_unit_user(packaged=True)
    assert packaged == (paths.SERVICE_USER if exists else None)
    assert systemd_mode.default_unit_user(packaged=False) is None
    # This checkout is not the Debian package's private directory.
    assert systemd_mode.default_unit_user() is None


def test_units_run_the_venvs_supervisor_only_when_it_runs_this_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "supervisor").mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "supervisor").write_text("#!/venv/bin/python\n")
    monkeypatch.setattr(systemd_mode.sys, "prefix", str(venv))
    monkeypatch.setattr(systemd_mode.sys, "base_prefix", "/usr")
    monkeypatch.setattr(systemd_mode, "package_dir", lambda: site)
    assert systemd_mode.venv_command((str(tmp_path / "app"),)) == str(venv / "bin" / "supervisor")
    # Another `supervisor` package on the path would shadow it: keep python -c.
    (tmp_path / "app" / "supervisor").mkdir(parents=True)
    assert systemd_mode.venv_command((str(tmp_path / "app"),)) is None
    # An editable checkout (the package outside the venv): python -c.
    monkeypatch.setattr(systemd_mode, "package_dir", lambda: tmp_path / "checkout")
    assert systemd_mode.venv_command(()) is None
    # No virtualenv at all.
    monkeypatch.setattr(systemd_mode.sys, "base_prefix", str(venv))
    monkeypatch.setattr(systemd_mode, "package_dir", lambda: site)
    assert systemd_mode.venv_command(()) is None


def test_generated_units_name_the_interpreters_real_home() -> None:
    # This venv's python links into its base installation: the units must see that too
    # (ProtectHome= read-only rather than hidden when it is under /root or /home).
    found = systemd_mode.interpreter_paths()
    assert os.path.realpath(sys.executable) in found
    assert sys.base_prefix in found


def test_uninstall_stops_a_pauses_resume_and_a_planned_retry(
    tmp_path: Path, fake: FakeSystemd
) -> None:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    install(plan(unit_dir), state_dir=tmp_path / "state", systemd=Systemd(fake))
    for name in ("a:resume.timer", "b:retry.timer"):
        fake.add_unit(
            name, ActiveState="active", SubState="waiting", FragmentPath=f"/run/transient/{name}"
        )
    fake.calls.clear()
    uninstall(state_dir=tmp_path / "state", systemd=Systemd(fake), unit_dirs=(unit_dir,))
    assert ("stop", "a:resume.timer", "b:retry.timer") in fake.verbs()
    assert "a:resume.timer" not in fake.units and "b:retry.timer" not in fake.units


def test_retries_set_in_the_code_get_their_dropin_at_install() -> None:
    from supervisor.core.definitions import Kind, Options, Settings
    from supervisor.systemd.backend import TemplateLayout
    from supervisor.systemd.install import settings_dropins
    from supervisor.systemd.units import RETRY_DROPIN_NAME

    def run(ctx: object) -> None:
        return None

    retrying = Options(id="r", name="R", kind=Kind.MANUAL, runner=run, defaults=Settings(retries=2))
    plain = Options(id="p", name="P", kind=Kind.MANUAL, runner=run)
    layout = TemplateLayout("sched-x")
    (dropin,) = settings_dropins(layout, [retrying, plain], {})
    assert (dropin.unit, dropin.name) == ("sched-x-r.service", RETRY_DROPIN_NAME)
    assert "--retries 2 --retry-delay-us 30000000" in dropin.text
    overridden = settings_dropins(layout, [retrying], {"r": {"retries": 0}})
    assert [d.name for d in overridden] == ["50-sched-supervisor-settings.conf"]


def test_generate_units_writes_the_retry_dropins_of_the_code(tmp_path: Path) -> None:
    written, _ = systemd_mode.generate_units(
        "tests.apps.systemd_retry_jobs:cfg",
        state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        user=None,
        prefix="sched-rt",
    )
    dropins = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in written if p.suffix == ".conf"
    )
    assert dropins == [
        "sched-rt-rt.fail.service.d/60-sched-supervisor-retries.conf",
        "sched-rt-rt.hold.service.d/60-sched-supervisor-retries.conf",
    ]
