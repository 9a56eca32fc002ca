"""Tests for supervisor.systemd.units: names, quoting filters, golden files, systemd-analyze verify,
the sandbox (systemd-analyze security rates every generated service and the packaged one
"OK"), and the rendered units loaded and fired by a real (namespaced) systemd.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/test_units.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2
import pytest

from supervisor.core.definitions import Kind, Options, Settings, command
from supervisor.core.errors import DefinitionError
from supervisor.systemd.units import (
    RETRY_DROPIN_NAME,
    SETTINGS_DROPIN_NAME,
    RetryHandler,
    UnitFile,
    _environment,
    default_prefix,
    dst_warnings,
    one_line,
    quote_exec_arg,
    quote_executable,
    quote_word,
    render_retry_dropin,
    render_service_dropin,
    render_start_timer_dropin,
    render_timer_dropin,
    render_units,
    start_timer_name,
    timespan,
    unit_names,
)
from tests.systemd_ns import NamespacedSystemd, systemd_namespace

__all__ = ["systemd_namespace"]  # the fixture, used below by name

needs_analyze = pytest.mark.usefixtures("systemd_analyze")  # tests/conftest.py

GOLDEN = Path(__file__).parent / "golden"
TRICKY = "Nightly 50% \"quoted\" 'single' $HOME C:\\temp;  tabs\tand\nnewlines"


def run_nothing(ctx: object) -> None:
    """A runner; units never call it."""


def definitions() -> list[Options]:
    """A representative set: every kind, a tricky description, 6-field cron, dom+dow OR."""
    return [
        Options(
            id="my.test.failure",
            name="Fail with random",
            description=TRICKY,
            kind=Kind.SCHEDULE,
            runner=run_nothing,
            defaults=Settings(start_delay=timedelta(seconds=1), pause_time=timedelta(seconds=10)),
        ),
        Options(
            id="my.test.scheduler",
            name="Hello World Job",
            description="Runs once after startup and logs a greeting",
            kind=Kind.ONE_SHOT,
            runner=run_nothing,
            defaults=Settings(timeout=timedelta(minutes=5)),
        ),
        Options(
            id="reports.manual",
            name="Manual report",
            kind=Kind.MANUAL,
            runner=command(["/usr/bin/env", "true"]),
            user="reports",
        ),
        Options(
            id="cron.seconds",
            name="Every ten seconds at noon on weekends",
            kind=Kind.CRON,
            runner=run_nothing,
            defaults=Settings(
                cron="*/10 0 12 * * sat,sun",
                timezone="Europe/Berlin",
                timeout=timedelta(seconds=30),
            ),
        ),
        Options(
            id="cron.friday-13",
            name="The 13th or any Friday",
            kind=Kind.CRON,
            runner=run_nothing,
            defaults=Settings(cron="0 0 13 * fri", timezone="America/New_York"),
        ),
        Options(
            id="cron.weekly",
            name="Weekly",
            kind=Kind.CRON,
            runner=run_nothing,
            defaults=Settings(cron="@weekly", timeout=timedelta(hours=1, minutes=30)),
        ),
        Options(
            id="disabled.job",
            name="Disabled",
            kind=Kind.SCHEDULE,
            runner=run_nothing,
            defaults=Settings(pause_time=timedelta(milliseconds=1500), disabled=True),
        ),
        Options(
            id="trailing-",
            name="An ID ending in a dash",
            kind=Kind.ONE_SHOT,
            runner=run_nothing,
            defaults=Settings(start_delay=timedelta(days=1, seconds=1)),
        ),
    ]


def golden_render() -> list[UnitFile]:
    return render_units(
        definitions(),
        app_spec="examples.jobs:cfg",
        python="/opt/sched venv/bin/python3",
        working_dir="/srv/demo app",
        prefix="sched-demo",
        state_dir="/var/lib/sched-supervisor/demo",
        user="sched",
    )


def golden_dropins() -> dict[str, str]:
    by_id = {d.id: d for d in definitions()}
    changed = Settings(start_delay=timedelta(seconds=5), pause_time=timedelta(minutes=2))
    cron = Settings(cron="30 2 * * *", timezone="Europe/Berlin", timeout=timedelta(seconds=90))
    return {
        "my.test.failure.timer-dropin.conf": render_timer_dropin(by_id["my.test.failure"], changed),
        "my.test.failure.start-timer-dropin.conf": render_start_timer_dropin(
            by_id["my.test.failure"], changed
        ),
        "cron.weekly.timer-dropin.conf": render_timer_dropin(by_id["cron.weekly"], cron),
        "cron.weekly.service-dropin.conf": render_service_dropin(by_id["cron.weekly"], cron),
    }


# --- names ------------------------------------------------------------------------------


def test_unit_names() -> None:
    assert unit_names("sched-demo", "my.test.scheduler") == (
        "sched-demo-my.test.scheduler.service",
        "sched-demo-my.test.scheduler.timer",
    )


def test_a_schedules_start_timer_name() -> None:
    assert start_timer_name("sched-demo", "my.test.failure") == (
        "sched-demo-my.test.failure-start.timer"
    )
    assert start_timer_name("sched-demo", "a-") == "sched-demo-a\\x2d-start.timer"


def test_an_id_ending_in_a_dash_is_escaped_so_its_dropins_stay_its_own() -> None:
    assert unit_names("sched-demo", "a-") == (
        "sched-demo-a\\x2d.service",
        "sched-demo-a\\x2d.timer",
    )


def test_the_longest_id_and_prefix_fit_systemds_name_limit() -> None:
    service, timer = unit_names("p" * 100, "a" * 127 + "-")
    start = start_timer_name("p" * 100, "a" * 127 + "-")
    assert max(len(name.encode()) for name in (service, timer, start)) <= 255


def test_a_start_timer_that_would_share_a_name_is_refused() -> None:
    jobs = [
        Options(id="x", name="X", kind=Kind.SCHEDULE, runner=run_nothing),
        Options(id="x-start", name="X start", kind=Kind.ONE_SHOT, runner=run_nothing),
    ]
    with pytest.raises(DefinitionError, match="'x' and 'x-start'") as caught:
        render_units(
            jobs,
            app_spec="m:cfg",
            python="/usr/bin/python3",
            working_dir="/srv",
            prefix="sched-x",
            state_dir="/var/lib/x",
            user=None,
        )
    assert caught.value.field == "id"


@pytest.mark.parametrize("prefix", ["", "Sched", "sched-", "-sched", "sched demo", "p" * 101])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        unit_names(prefix, "x")
    assert caught.value.field == "prefix"


@pytest.mark.parametrize(
    ("app", "prefix"),
    [("demo", "sched-demo"), ("My Billing App!", "sched-my-billing-app"), ("--", "sched-app")],
)
def test_default_prefix(app: str, prefix: str) -> None:
    assert default_prefix(app) == prefix


# --- filters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain/path-1.2_x:y,z=@+", "plain/path-1.2_x:y,z=@+"),
        ("two words", '"two words"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("50%", '"50%%"'),
        ("line\nbreak\ttab\x01", '"line\\nbreak\\ttab\\x01"'),
        ("$HOME", '"$HOME"'),
        ("it's", '"it\'s"'),
        ("é", '"é"'),
    ],
)
def test_quote_word(text: str, quoted: str) -> None:
    assert quote_word(text) == quoted


@pytest.mark.parametrize("path", ['/opt/"q"/python', "/opt/back\\slash/python", "/a\nb"])
def test_executables_systemd_refuses(path: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        quote_executable(path)
    assert caught.value.field == "python"


def test_quote_executable_keeps_dollars() -> None:
    assert quote_executable("/opt/$x %h/python") == '"/opt/$x %%h/python"'


def test_quote_exec_arg_doubles_dollars() -> None:
    assert quote_exec_arg("$HOME and ${X}") == '"$$HOME and $${X}"'
    assert quote_exec_arg("100%") == '"100%%"'


def test_one_line() -> None:
    assert one_line("a\n b\t%c\\") == "a b %%c"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "infinity"),
        (timedelta(0), "0"),
        (timedelta(seconds=10), "10s"),
        (timedelta(hours=1, minutes=30), "1h 30min"),
        (timedelta(milliseconds=1500), "1s 500ms"),
        (timedelta(days=1, seconds=1), "1d 1s"),
        (timedelta(microseconds=7), "7us"),
    ],
)
def test_timespan(value: timedelta | None, text: str) -> None:
    assert timespan(value) == text


def test_templates_use_strict_undefined() -> None:
    with pytest.raises(jinja2.UndefinedError):
        _environment().get_template("service.j2").render()


# --- rendering ---------------------------------------------------------------------------


def test_units_per_kind() -> None:
    names = [unit.name for unit in golden_render()]
    assert names == [
        "sched-demo-my.test.failure.service",
        "sched-demo-my.test.failure.timer",  # SCHEDULE: the repeat timer (pause)
        "sched-demo-my.test.failure-start.timer",  # and the start timer (start delay)
        "sched-demo-my.test.scheduler.service",
        "sched-demo-my.test.scheduler.timer",
        "sched-demo-reports.manual.service",  # MANUAL: no timer
        "sched-demo-cron.seconds.service",
        "sched-demo-cron.seconds.timer",
        "sched-demo-cron.friday-13.service",
        "sched-demo-cron.friday-13.timer",
        "sched-demo-cron.weekly.service",
        "sched-demo-cron.weekly.timer",
        "sched-demo-disabled.job.service",  # disabled schedulers get units too
        "sched-demo-disabled.job.timer",
        "sched-demo-disabled.job-start.timer",
        "sched-demo-trailing\\x2d.service",
        "sched-demo-trailing\\x2d.timer",
    ]


def test_settings_lookup_overrides_defaults() -> None:
    (schedule, *_rest) = definitions()
    override = Settings(start_delay=timedelta(seconds=3), pause_time=timedelta(minutes=1))
    units = render_units(
        [schedule],
        app_spec="m:cfg",
        python="/usr/bin/python3",
        working_dir="/srv",
        prefix="sched-x",
        state_dir="/var/lib/x",
        user=None,
        settings=lambda scheduler_id: override,
    )
    timer, start_timer = units[1].text, units[2].text
    assert "OnUnitInactiveSec=1min\n" in timer
    assert "OnActiveSec" not in timer
    assert "OnActiveSec=3s\n" in start_timer
    assert "OnUnitInactiveSec" not in start_timer
    assert "User=" not in units[0].text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"python": "python3"}, "python"),
        ({"working_dir": "relative"}, "working_dir"),
        ({"state_dir": "/var/lib/x\n"}, "state_dir"),
        ({"python_path": ["/a:/b"]}, "python_path"),
        ({"user": "bad user"}, "user"),
        ({"app_spec": ""}, "app_spec"),
        ({"prefix": "Bad"}, "prefix"),
    ],
)
def test_bad_render_arguments(change: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {
        "app_spec": "m:cfg",
        "python": "/usr/bin/python3",
        "working_dir": "/srv",
        "prefix": "sched-x",
        "state_dir": "/var/lib/x",
        "user": None,
        **change,
    }
    with pytest.raises(DefinitionError) as caught:
        render_units(definitions(), **arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_timer_dropin_restates_every_trigger() -> None:
    dropins = golden_dropins()
    text = dropins["my.test.failure.timer-dropin.conf"]
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == [
        "[Timer]",
        "OnActiveSec=",
        "OnUnitInactiveSec=",
        "OnCalendar=",
        "OnUnitInactiveSec=2min",
    ]
    start = dropins["my.test.failure.start-timer-dropin.conf"]
    assert [line for line in start.splitlines() if not line.startswith("#")] == [
        "[Timer]",
        "OnActiveSec=",
        "OnUnitInactiveSec=",
        "OnCalendar=",
        "OnActiveSec=5s",
    ]
    assert "OnCalendar=*-*-* 02:30:00 Europe/Berlin\n" in dropins["cron.weekly.timer-dropin.conf"]
    assert "TimeoutStartSec=1min 30s\n" in dropins["cron.weekly.service-dropin.conf"]


def test_manual_has_no_timer_dropin() -> None:
    manual = next(d for d in definitions() if d.kind is Kind.MANUAL)
    with pytest.raises(DefinitionError):
        render_timer_dropin(manual, manual.defaults)


def test_only_schedule_has_a_start_timer_dropin() -> None:
    for options in definitions():
        if options.kind is not Kind.SCHEDULE:
            with pytest.raises(DefinitionError):
                render_start_timer_dropin(options, options.defaults)


def test_dst_warnings_name_the_next_affected_date() -> None:
    job = Options(
        id="nightly",
        name="Nightly",
        kind=Kind.CRON,
        runner=run_nothing,
        defaults=Settings(cron="30 2 * * *", timezone="America/New_York"),
    )
    (warning,) = dst_warnings(
        [job, *definitions()], start=datetime(2026, 6, 1, tzinfo=UTC), horizon_days=400
    )
    assert warning.startswith("scheduler nightly: 2027-03-14 (America/New_York)")


# --- golden files ------------------------------------------------------------------------


def golden_files() -> dict[str, str]:
    files = {unit.name: unit.text for unit in golden_render()}
    files.update(golden_dropins())
    return files


def test_golden_files() -> None:
    files = golden_files()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        GOLDEN.mkdir()
        for name, text in files.items():
            (GOLDEN / name).write_bytes(text.encode())
    on_disk = {path.name: path.read_bytes() for path in GOLDEN.iterdir()}
    assert sorted(on_disk) == sorted(files)
    for name, text in files.items():
        assert on_disk[name] == text.encode(), f"{name} differs from tests/golden/{name}"


# --- systemd-analyze verify -----------------------------------------------------------


def render_real(
    tmp_path: Path,
    *,
    python: str = sys.executable,
    user: str | None = None,
    interpreter: list[str] | None = None,
) -> list[Path]:
    state = tmp_path / "state dir"
    state.mkdir()
    units = render_units(
        definitions(),
        app_spec="examples.jobs:cfg",
        python=python,
        working_dir=str(Path(__file__).parent.parent),
        prefix="sched-demo",
        state_dir=str(state),
        user=user,
        interpreter_paths=interpreter or [],
    )
    directory = tmp_path / "units"
    directory.mkdir()
    for unit in units:
        (directory / unit.name).write_text(unit.text)
    return [directory / unit.name for unit in units]


@needs_analyze
@pytest.mark.parametrize("user", [None, "daemon", "no-such-user"])
def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path, user: str | None) -> None:
    paths = render_real(tmp_path, user=user)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""


@needs_analyze
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    paths = render_real(tmp_path, python="/nonexistent/python")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "/nonexistent/python" in result.stdout + result.stderr


# --- the sandbox: systemd-analyze security --------------------------------------------

PACKAGED_SERVICE = (
    Path(__file__).parent.parent / "packaging" / "debian" / "sched-supervisor.service"
)
MAX_EXPOSURE = 3.0  # systemd-analyze security's "OK"


def exposure(path: Path) -> float:
    """The overall exposure that ``systemd-analyze security --offline=true`` gives ``path``
    (the unit file alone: no systemd as PID 1 needed)."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for .*: (\d+\.\d+)", result.stdout)
    assert found, f"no exposure level for {path}:\n{result.stdout}{result.stderr}"
    return float(found.group(1))


@needs_analyze
@pytest.mark.parametrize("user", [None, "daemon"])
@pytest.mark.parametrize("home", [False, True])
def test_every_generated_service_rates_ok_in_systemd_analyze_security(
    tmp_path: Path, user: str | None, home: bool
) -> None:
    paths = render_real(tmp_path, user=user, interpreter=["/home/dev/.pyenv"] if home else [])
    services = [path for path in paths if path.suffix == ".service"]
    assert len(services) == len(definitions())
    levels = {path.name: exposure(path) for path in services}
    assert max(levels.values()) <= MAX_EXPOSURE, levels
    # Root gets no capability either: the sandbox rates it nearly as well.
    assert all("CapabilityBoundingSet=\n" in path.read_text() for path in services)


@needs_analyze
def test_the_packaged_service_rates_ok_in_systemd_analyze_security() -> None:
    assert exposure(PACKAGED_SERVICE) <= MAX_EXPOSURE


@needs_analyze
def test_exposure_would_catch_an_unsandboxed_unit(tmp_path: Path) -> None:
    unit = tmp_path / "plain.service"
    unit.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    assert exposure(unit) > 9.0


MANAGER_PROBE = """\
import ctypes, os, socket, sys
state = sys.argv[1]
callback = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)  # libffi closure: no W+X page needed
assert callback() == 7
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER, as the manager does
own = open("/proc/self/cgroup").read().split("::", 1)[1].strip()
run_cgroup = "/sys/fs/cgroup" + own + "/run-probe"
os.mkdir(run_cgroup)  # a cgroup per run, in the delegated subtree
os.rmdir(run_cgroup)
with socket.socket(socket.AF_UNIX) as control:
    control.bind(os.path.join(state, "control.sock"))  # the control socket
with socket.socket() as admin:
    admin.bind(("127.0.0.1", 0))  # the Admin Center
    admin.listen()
pid = os.fork()  # a run
if pid == 0:
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
with open(os.path.join(state, "probe.ok"), "w") as done:
    done.write(str(os.getuid()))
print("manager probe passed")
"""


@pytest.mark.systemd
def test_the_packaged_sandbox_keeps_what_the_manager_needs(
    systemd_namespace: NamespacedSystemd,
) -> None:
    """The packaged service's sandbox settings, as a user with Debian's python3 (as the
    package runs), around a probe doing what the manager does: ctypes, a subreaper, a
    cgroup per run, its sockets, forks, journald."""
    ns = systemd_namespace
    text = PACKAGED_SERVICE.read_text()
    service = text.split("[Service]\n", 1)[1].split("\n[Install]", 1)[0]
    # The host's /var/lib is the namespace's: the probe's state lives in the shared dir.
    dropped = (
        "ExecStart=",
        "ExecCondition=",
        "EnvironmentFile=",
        "Environment=",
        "User=",
        "Group=",
        "StateDirectory",
        "WorkingDirectory=",
        "Restart",
        "Type=",
    )
    sandbox = [line for line in service.splitlines() if not line.startswith(dropped)]
    assert "Delegate=yes" in sandbox and "MemoryDenyWriteExecute=yes" in sandbox
    state = ns.shared_dir / "manager-state"
    state.mkdir()
    os.chown(state, 1, 1)  # daemon
    probe = ns.shared_dir / "probe.py"
    probe.write_text(MANAGER_PROBE)
    ns.write_unit(
        "manager-probe.service",
        "[Service]\nType=oneshot\nUser=daemon\n"
        f"ExecStart=/usr/bin/python3 {probe} {state}\nReadWritePaths={state}\n"
        + "\n".join(sandbox)
        + "\n",
    )
    ns.daemon_reload()
    started = ns.systemctl("start", "manager-probe.service")
    journal = ns.journalctl("-u", "manager-probe.service", "-o", "cat").stdout
    assert started.returncode == 0, journal
    assert "manager probe passed" in journal
    assert (state / "probe.ok").read_text() == "1"


def test_code_under_home_is_read_only_not_hidden(tmp_path: Path) -> None:
    def protect_home(**arguments: object) -> set[str]:
        units = render_units(
            definitions(),
            app_spec="examples.jobs:cfg",
            python="/usr/bin/python3",
            working_dir="/srv/app",
            prefix="sched-demo",
            state_dir="/var/lib/x",
            user=None,
            **arguments,  # type: ignore[arg-type]
        )
        return {line for unit in units for line in unit.text.splitlines() if "ProtectHome" in line}

    assert protect_home() == {"ProtectHome=yes"}
    for arguments in (
        {"python_path": ["/srv/app", "/home/alice/lib"]},
        {"interpreter_paths": ["/root/.pyenv/versions/3.11.7"]},
        {"package_dir": "/run/user/1000/checkout"},
    ):
        assert protect_home(**arguments) == {"ProtectHome=read-only"}, arguments


@pytest.mark.parametrize(
    ("field", "arguments"),
    [
        ("python", {"python": "/tmp/venv/bin/python"}),
        ("working_dir", {"working_dir": "/var/tmp/app"}),
        ("python_path", {"python_path": ["/srv/app", "/tmp/lib"]}),
        ("interpreter_paths", {"interpreter_paths": ["/tmp/pyenv/../pyenv"]}),
    ],
)
def test_code_under_a_private_tmp_is_refused(field: str, arguments: dict[str, object]) -> None:
    base: dict[str, object] = {
        "app_spec": "examples.jobs:cfg",
        "python": "/usr/bin/python3",
        "working_dir": "/srv/app",
        "prefix": "sched-demo",
        "state_dir": "/var/lib/x",
        "user": None,
    }
    with pytest.raises(DefinitionError, match="PrivateTmp") as caught:
        render_units(definitions(), **{**base, **arguments})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_venvs_supervisor_script_starts_the_exec() -> None:
    (service, *_rest) = render_units(
        definitions()[:1],
        app_spec="examples.jobs:cfg",
        python="/srv/venv/bin/python",
        working_dir="/srv/app",
        prefix="sched-demo",
        state_dir="/var/lib/x",
        user="sched",
        supervisor_command="/srv/venv/bin/supervisor",
        package_dir="/srv/venv/lib/python3.11/site-packages",
    )
    (line,) = [line for line in service.text.splitlines() if line.startswith("ExecStart=")]
    assert line == "ExecStart=/srv/venv/bin/supervisor exec --app examples.jobs:cfg my.test.failure"


def test_a_command_runner_may_write_and_execute_memory() -> None:
    by_name = {unit.name: unit.text for unit in golden_render()}
    assert "MemoryDenyWriteExecute" not in by_name["sched-demo-reports.manual.service"]
    assert "MemoryDenyWriteExecute=yes" in by_name["sched-demo-my.test.scheduler.service"]


def test_a_schedulers_own_user_wins_over_the_default() -> None:
    by_name = {unit.name: unit.text for unit in golden_render()}
    assert "\nUser=reports\n" in by_name["sched-demo-reports.manual.service"]
    assert "\nUser=sched\n" in by_name["sched-demo-my.test.scheduler.service"]


def test_a_bad_user_is_refused_at_configure_time() -> None:
    with pytest.raises(DefinitionError) as caught:
        Options(id="x", name="x", kind=Kind.MANUAL, runner=run_nothing, user="no body")
    assert caught.value.field == "user"


# --- a real systemd ----------------------------------------------------------------------

WEIRD = "we ird %h $HOME \"q\" 's' back\\slash é #;"
WEIRD_BIN = "b in %h $HOME é #;"  # no quotes or backslashes: systemd refuses them there
DUMP = """\
#!{python}
import json, os, sys, time
state = os.environ["SUPERVISOR_STATE_DIR"]
record = {{
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "pythonpath": os.environ.get("PYTHONPATH"),
    "state_dir": state,
    "time": time.time(),
}}
with open(os.path.join(state, sys.argv[-1] + ".runs"), "a") as runs:
    runs.write(json.dumps(record) + "\\n")
"""


def install(
    ns: NamespacedSystemd,
    tmp_name: str,
    options: list[Options],
    *,
    bin_name: str | None = None,
    **overrides: object,
) -> tuple[Path, Callable[[str], list[dict[str, object]]]]:
    """Render ``options`` with a dump script as "python" and install them in ``ns``."""
    base = ns.shared_dir / tmp_name
    bin_dir = ns.shared_dir / (bin_name or f"{tmp_name}.bin")
    work, state = base / "work", base / "state"
    for directory in (bin_dir, work, state):
        directory.mkdir(parents=True)
    dump = bin_dir / "dump"
    dump.write_text(DUMP.format(python=sys.executable))
    dump.chmod(0o755)
    arguments: dict[str, object] = {
        "app_spec": "examples.jobs:cfg",
        "python": str(dump),
        "working_dir": str(work),
        "prefix": "sched-test",
        "state_dir": str(state),
        "user": None,
        # The dump's interpreter (this venv's, maybe linked under /root) must stay visible.
        "interpreter_paths": [os.path.realpath(sys.executable), sys.base_prefix],
        **overrides,
    }
    for unit in render_units(options, **arguments):  # type: ignore[arg-type]
        ns.write_unit(unit.name, unit.text)
        if unit.name.endswith(".service"):
            # The sandbox lets a run write nowhere but its /tmp: an administrator's drop-in
            # grants the dump its directory.
            grant = f"[Service]\nReadWritePaths={quote_word(str(arguments['state_dir']))}\n"
            ns.write_unit(f"{unit.name}.d/writable.conf", grant)
    ns.daemon_reload()

    def runs(scheduler_id: str) -> list[dict[str, object]]:
        path = Path(str(arguments["state_dir"])) / f"{scheduler_id}.runs"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    return Path(str(arguments["state_dir"])), runs


@pytest.mark.systemd
def test_quoting_survives_systemd(systemd_namespace: NamespacedSystemd) -> None:
    ns = systemd_namespace
    weird_base = ns.shared_dir / WEIRD  # working and state dirs under it
    job = Options(
        id="quoting", name="Quoting", description=TRICKY, kind=Kind.MANUAL, runner=run_nothing
    )
    _state, runs = install(ns, WEIRD, [job], bin_name=WEIRD_BIN, app_spec=f"mod {WEIRD}:cfg")
    started = ns.systemctl("start", "sched-test-quoting.service")
    assert started.returncode == 0, (
        started.stderr + ns.journalctl("-u", "sched-test-quoting").stdout
    )
    (record,) = runs("quoting")
    assert record["argv"] == ["-m", "supervisor", "exec", "--app", f"mod {WEIRD}:cfg", "quoting"]
    assert record["cwd"] == str(weird_base / "work")
    assert record["pythonpath"] == str(weird_base / "work")
    assert record["state_dir"] == str(weird_base / "state")
    shown = ns.show("sched-test-quoting.service", "Description", "SyslogIdentifier")
    assert shown["Description"] == "Quoting: " + " ".join(TRICKY.split())
    assert shown["SyslogIdentifier"] == "quoting"


@pytest.mark.systemd
def test_rendered_timers_fire(systemd_namespace: NamespacedSystemd) -> None:
    ns = systemd_namespace
    jobs = [
        Options(
            id="schedule",
            name="Schedule",
            kind=Kind.SCHEDULE,
            runner=run_nothing,
            defaults=Settings(
                start_delay=timedelta(milliseconds=400), pause_time=timedelta(milliseconds=300)
            ),
        ),
        Options(id="once", name="Once", kind=Kind.ONE_SHOT, runner=run_nothing),
        Options(
            id="every-second",
            name="Every second",
            kind=Kind.CRON,
            runner=run_nothing,
            defaults=Settings(cron="* * * * * *", timezone="Europe/Berlin"),
        ),
        Options(id="manual", name="Manual", kind=Kind.MANUAL, runner=run_nothing),
    ]
    _state, runs = install(ns, "fire", jobs)
    started = time.time()
    # The start timer alone: it wants (and is ordered after) the repeat timer.
    ns.systemctl(
        "start",
        "sched-test-schedule-start.timer",
        "sched-test-once.timer",
        "sched-test-every-second.timer",
    )
    assert ns.show("sched-test-schedule.timer", "ActiveState")["ActiveState"] == "active"
    ns.wait_until(lambda: len(runs("schedule")) >= 3, 15, message="three SCHEDULE runs")
    ns.wait_until(lambda: len(runs("every-second")) >= 2, 15, message="two CRON runs")
    ns.wait_until(lambda: runs("once"), 15, message="the ONE_SHOT run (OnActiveSec=0)")
    times = [float(str(r["time"])) for r in runs("schedule")]
    assert times[0] - started >= 0.4  # the start delay, once
    assert all(0.25 < later - earlier < 1.0 for earlier, later in itertools.pairwise(times))
    assert ns.show("sched-test-schedule-start.timer", "SubState")["SubState"] == "elapsed"
    # MANUAL: started again and again, never hits the start limit.
    for _ in range(7):
        assert ns.systemctl("start", "sched-test-manual.service").returncode == 0
    assert len(runs("manual")) == 7
    assert len(runs("once")) == 1
    assert ns.show("sched-test-once.timer", "SubState")["SubState"] == "elapsed"


@pytest.mark.systemd
def test_settings_dropin_replaces_triggers_of_its_own_timer_only(
    systemd_namespace: NamespacedSystemd,
) -> None:
    ns = systemd_namespace
    slow = Settings(start_delay=timedelta(hours=1), pause_time=timedelta(hours=1))
    jobs = [
        Options(id="a-", name="A", kind=Kind.SCHEDULE, runner=run_nothing, defaults=slow),
        Options(id="a-b", name="AB", kind=Kind.SCHEDULE, runner=run_nothing, defaults=slow),
    ]
    _state, runs = install(ns, "dropin", jobs)
    dash_timer, sibling_timer = (
        unit_names("sched-test", "a-")[1],
        unit_names("sched-test", "a-b")[1],
    )
    dash_start, sibling_start = (
        start_timer_name("sched-test", "a-"),
        start_timer_name("sched-test", "a-b"),
    )
    ns.systemctl("start", dash_start, sibling_start, check=True)
    fast = Settings(start_delay=timedelta(0), pause_time=timedelta(milliseconds=200))
    ns.write_unit(f"{dash_timer}.d/{SETTINGS_DROPIN_NAME}", render_timer_dropin(jobs[0], fast))
    ns.write_unit(
        f"{dash_start}.d/{SETTINGS_DROPIN_NAME}", render_start_timer_dropin(jobs[0], fast)
    )
    ns.daemon_reload()
    ns.systemctl("restart", dash_start, check=True)  # it still waits: the new delay applies
    ns.wait_until(lambda: len(runs("a-")) >= 3, 15, message="runs under the new settings")
    for timer, wanted in ((dash_timer, "OnUnitInactiveUSec=200ms"), (dash_start, "OnActiveUSec=0")):
        monotonic = ns.show(timer, "TimersMonotonic")["TimersMonotonic"]
        assert wanted in monotonic
        # Only the triggers count: next_elapse is on the host's monotonic clock (its uptime).
        assert "USec=1h" not in monotonic
    for timer, wanted in ((sibling_timer, "OnUnitInactiveUSec=1h"), (sibling_start, "=1h")):
        sibling = ns.show(timer, "TimersMonotonic", "DropInPaths")
        assert wanted in sibling["TimersMonotonic"]
        assert sibling["DropInPaths"] == ""
    assert runs("a-b") == []


CONTROL_SERVICE = """\
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo run >> {runs}'
"""
ONE_TIMER_SCHEDULE = """\
[Timer]
Unit=control.service
OnActiveSec=0
OnUnitInactiveSec=1h
AccuracySec=1ms
"""


@pytest.mark.systemd
def test_daemon_reload_never_runs_a_schedule_again_systemd_issue_31914(
    systemd_namespace: NamespacedSystemd,
) -> None:
    """Regression test for github.com/systemd/systemd/issues/31914 (systemd 252): a reload
    re-arms ``OnActiveSec=`` of a waiting timer. With start delay and pause on one timer,
    every reload ran a SCHEDULE scheduler once more. A control unit with that old layout
    proves each reload (and a re-exec, as a systemd upgrade does) did re-arm such timers:
    it runs again after each one. The rendered SCHEDULE units do not, and keep their
    next run; neither does an elapsed ONE_SHOT timer."""
    ns = systemd_namespace
    jobs = [
        Options(
            id="schedule",
            name="Schedule",
            kind=Kind.SCHEDULE,
            runner=run_nothing,
            defaults=Settings(start_delay=timedelta(0), pause_time=timedelta(hours=1)),
        ),
        Options(id="once", name="Once", kind=Kind.ONE_SHOT, runner=run_nothing),
    ]
    state, runs = install(ns, "reload", jobs)
    control_runs = state / "control.runs"
    ns.write_unit("control.service", CONTROL_SERVICE.format(runs=control_runs))
    ns.write_unit("control.timer", ONE_TIMER_SCHEDULE)
    ns.daemon_reload()

    def control() -> int:
        return len(control_runs.read_text().splitlines()) if control_runs.exists() else 0

    repeat, start = (
        unit_names("sched-test", "schedule")[1],
        start_timer_name("sched-test", "schedule"),
    )
    ns.systemctl("start", start, "sched-test-once.timer", "control.timer", check=True)
    ns.wait_until(lambda: runs("schedule") and runs("once") and control(), 10, message="first runs")

    def settled() -> dict[str, str] | None:
        shown = {
            "start": ns.show(start, "SubState")["SubState"],
            "once": ns.show("sched-test-once.timer", "SubState")["SubState"],
            "repeat": ns.show(repeat, "SubState")["SubState"],
            "service": ns.show("sched-test-schedule.service", "ActiveState")["ActiveState"],
        }
        wanted = {"start": "elapsed", "once": "elapsed", "repeat": "waiting", "service": "inactive"}
        return shown if shown == wanted else None

    ns.wait_until(settled, 10, message="the start timer elapsed, the repeat timer waiting")

    def marks() -> tuple[str, str, str]:
        """The next run, the start timer's last trigger and the last run's invocation."""
        return (
            ns.show(repeat, "NextElapseUSecMonotonic")["NextElapseUSecMonotonic"],
            ns.show(start, "LastTriggerUSec")["LastTriggerUSec"],
            ns.show("sched-test-schedule.service", "InvocationID")["InvocationID"],
        )

    before = marks()
    for verb in ("daemon-reload", "daemon-reload", "daemon-reexec"):
        control_before = control()
        ns.systemctl(verb, check=True)
        ns.wait_until(
            lambda n=control_before: control() > n, 20, message=f"a control run after {verb}"
        )
        ns.wait_until(settled, 10, message=f"our timers after {verb}")
        assert marks() == before, verb
    assert len(runs("schedule")) == 1
    assert len(runs("once")) == 1


@pytest.mark.systemd
def test_prefix_dropins_are_why_a_trailing_dash_is_escaped(
    systemd_namespace: NamespacedSystemd,
) -> None:
    """Without the escape, "x-a-.timer.d/" would apply to "x-a-b.timer" as well."""
    ns = systemd_namespace
    for name in ("x-a-", "x-a-b"):
        ns.write_unit(f"{name}.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        ns.write_unit(f"{name}.timer", f"[Timer]\nOnActiveSec=1h\nUnit={name}.service\n")
    ns.write_unit("x-a-.timer.d/override.conf", "[Timer]\nOnActiveSec=\nOnActiveSec=5h\n")
    ns.daemon_reload()
    shown = ns.show("x-a-b.timer", "DropInPaths", "TimersMonotonic")
    assert shown["DropInPaths"] == "/etc/systemd/system/x-a-.timer.d/override.conf"
    assert "OnActiveUSec=5h" in shown["TimersMonotonic"]


# --- retries drop-in ---------------------------------------------------------------------

RETRY_HANDLER = RetryHandler(python=sys.executable, package_dir="/opt/sched supervisor")


def _retrying(**settings: object) -> Options:
    return Options(
        id="rt.job",
        name="Retrying",
        kind=Kind.CRON,
        runner=run_nothing,
        defaults=Settings(cron="0 3 * * *", **settings),  # type: ignore[arg-type]
    )


def test_a_retry_dropin_runs_the_retry_step_after_every_run_as_root() -> None:
    options = _retrying(retries=3, retry_delay=timedelta(seconds=90))
    text = render_retry_dropin(
        options, options.defaults, service="sched-demo-rt.job.service", handler=RETRY_HANDLER
    )
    assert text is not None
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStopPost=")]
    assert line.startswith(f"ExecStopPost=-+{sys.executable} -c ")
    assert "sys.path.insert(0, '/opt/sched supervisor')" in line
    assert line.endswith(
        "--scheduler rt.job --service sched-demo-rt.job.service --retries 3 "
        "--retry-delay-us 90000000"
    )
    assert "the first 1min 30s after its end" in text
    assert "Restart=" not in text  # not systemd's restarts: see render_retry_dropin


def test_no_retry_dropin_without_retries_or_when_disabled() -> None:
    for options in (_retrying(), _retrying(retries=2, disabled=True)):
        assert (
            render_retry_dropin(
                options, options.defaults, service="x.service", handler=RETRY_HANDLER
            )
            is None
        )


def test_a_command_runners_retry_step_reads_its_exit_as_a_commands() -> None:
    options = Options(
        id="rt.cmd",
        name="Command",
        kind=Kind.MANUAL,
        runner=command(["/bin/false"]),
        defaults=Settings(retries=1),
    )
    text = render_retry_dropin(
        options, options.defaults, service="x.service", handler=RETRY_HANDLER
    )
    assert text is not None and text.rstrip().endswith("--command-runner")


@needs_analyze
def test_a_service_with_its_retry_dropin_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    paths = render_real(tmp_path)
    service = next(p for p in paths if p.name == "sched-demo-my.test.failure.service")
    options = _retrying(retries=2)
    text = render_retry_dropin(
        options,
        options.defaults,
        service=service.name,
        handler=RetryHandler(python=sys.executable, package_dir=str(Path(__file__).parents[1])),
    )
    assert text is not None
    dropin = service.parent / f"{service.name}.d" / RETRY_DROPIN_NAME
    dropin.parent.mkdir()
    dropin.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(service)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""
