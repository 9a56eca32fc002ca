"""The Debian package: build it, install it with apt, use it, remove it, purge it.

Marker ``deb``, opt-in: ``pytest`` alone deselects these tests (``addopts`` in
pyproject.toml) and they run only when the marker expression names ``deb`` itself
(``sudo .venv/bin/pytest -m deb``; ``-m systemd`` does not opt in). This changes the
machine, as a server's administrator would: it builds
``sched-supervisor_<version>_all.deb`` with ``packaging/build-deb.sh`` (installing the
build dependencies with apt), installs it and Debian's ``supervisor`` package
(supervisord, to show that both live side by side) with ``apt-get install``, and purges
both at the end (supervisord only if this test installed it; the Python libraries they
pulled in stay). Needs root, apt-get and dpkg, and skips otherwise; it also skips if
sched-supervisor is already installed, unless ``CI`` or ``SCHED_SUPERVISOR_DEB_TEST=replace``
is set.

Never anyone else's state: the purge deletes ``/var/lib/sched-supervisor`` and
``/etc/sched-supervisor``, so the tests refuse (skip, naming the directory) when either,
or systemd mode's ``/var/lib/sched-supervisor-units``, exists with content they did not
create. What they create gets a marker file (``MARKER``); a directory is purged only
while it carries it, so a run interrupted after the install can be rerun.

The tests run in file order and share one installation; the last one removes and purges.
Services never start on the host: a ``policy-rc.d`` denies them during the installs (the
Debian way), and the service is started in a systemd booted in private namespaces
(``tests/systemd_ns.py``). Imports pytest, the standard library, ``tests.commands`` and
``tests.systemd_ns``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.commands import command
from tests.required import skip_or_fail
from tests.systemd_ns import NamespacedSystemd, unavailable_reason, wait_until

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "packaging" / "build-deb.sh"
PACKAGE = "sched-supervisor"
PRIVATE_DIR = Path("/usr/share/sched-supervisor")
COMMAND = Path("/usr/bin/supervisor")
CONFFILE = Path("/etc/sched-supervisor/sched-supervisor.conf")
STATE_DIR = Path("/var/lib/sched-supervisor")
UNITS_STATE_DIR = Path("/var/lib/sched-supervisor-units")  # install-units' default as root
GUARDED_DIRS = (STATE_DIR, CONFFILE.parent, UNITS_STATE_DIR)
MARKER = ".created-by-sched-supervisor-deb-test"
UNIT = Path("/lib/systemd/system/sched-supervisor.service")
DEMO_PATH = "/usr/share/sched-supervisor/demo"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
DEBIAN_DEPENDS = (
    "python3-click",
    "python3-jinja2",
    "python3-psutil",
    "python3-bottle",
    "python3-prometheus-client",
)
# Debian's tools and Python only: never a virtualenv's or pyenv's python3 first on PATH.
CLEAN_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return version


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    check: bool = True,
    cwd: Path = Path("/"),
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with Debian's tools first on PATH, from ``/`` unless told (so that
    ``python3 -c`` never imports this repository's ``supervisor``)."""
    result = subprocess.run(
        command([str(arg) for arg in argv]),  # default signal dispositions
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    """``apt-get -y ARGS``; on a machine whose package lists are missing, update once."""
    # Another apt on the machine (an install running beside the tests): wait for its lock.
    argv = ["apt-get", "-y", "-o", "Dpkg::Use-Pty=0", "-o", "DPkg::Lock::Timeout=600", *args]
    result = run(argv, timeout=600, check=False)
    if result.returncode != 0 and "Unable to locate package" in result.stderr:
        run(["apt-get", "update", "-o", "DPkg::Lock::Timeout=600"], timeout=600)
        result = run(argv, timeout=600, check=False)
    if result.returncode != 0:
        raise AssertionError(
            f"apt-get {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def installed(package: str) -> bool:
    status = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return status.returncode == 0 and status.stdout.startswith("ii")


def dpkg_status(package: str) -> str:
    """The first two letters of dpkg's status ("ii", "rc"), or "" if dpkg never heard of it."""
    status = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return status.stdout[:2] if status.returncode == 0 else ""


@contextlib.contextmanager
def services_denied() -> Iterator[None]:
    """No service may start on the host while packages install (policy-rc.d, exit 101)."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text(
        "#!/bin/sh\n# sched-supervisor's deb test: start no services\nexit 101\n"
    )
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def runs_json(
    state_dir: Path | str, *, runner: NamespacedSystemd | None = None
) -> list[dict[str, Any]]:
    argv = [str(COMMAND), "runs", "my.test.scheduler", "--json", "--state-dir", str(state_dir)]
    result = runner.run(argv, env=CLEAN_ENV) if runner else run(argv, check=False)
    if result.returncode != 0:
        return []
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def succeeded_run(
    state_dir: Path | str, *, runner: NamespacedSystemd | None = None
) -> dict[str, Any] | None:
    for record in runs_json(state_dir, runner=runner):
        if record["outcome"] == "succeeded":
            return record
    return None


# -- the installation shared by the tests ---------------------------------------------------


def opted_in(markexpr: str) -> bool:
    """Whether ``-m EXPR`` names ``deb`` other than as ``not deb``: these tests purge
    system state, so only an explicit ``-m deb`` (or ``-m "deb and ..."``) runs them."""
    tokens = re.findall(r"[\w-]+|\S", markexpr)
    return any(
        token == "deb" and (index == 0 or tokens[index - 1] != "not")
        for index, token in enumerate(tokens)
    )


def foreign_content(directory: Path) -> list[str]:
    """What ``directory`` holds that these tests did not create (nothing if it carries
    ``MARKER``, or does not exist)."""
    try:
        entries = sorted(entry.name for entry in directory.iterdir())
    except FileNotFoundError:
        return []
    return [] if MARKER in entries else entries


def mark_as_ours(directory: Path) -> None:
    """Put ``MARKER`` into ``directory``: only right after these tests created it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("created by tests/test_deb.py, which purges it\n")


def state_guard_reason() -> str | None:
    """Why the tests must not go on: a guarded directory holds someone else's state."""
    for directory in GUARDED_DIRS:
        foreign = foreign_content(directory)
        if foreign:
            more = " ..." if len(foreign) > 3 else ""
            return (
                f"{directory} exists and holds {', '.join(foreign[:3])}{more}, which these "
                "tests did not create: installing and purging the package would replace or "
                "delete it. Move it away (or use a fresh machine) to run the deb tests"
            )
    return None


def skip_reason(markexpr: str = "deb") -> str | None:
    if not opted_in(markexpr):
        return (
            "the deb tests install and purge system packages: run them explicitly, "
            "as root, with `sudo .venv/bin/pytest -m deb`"
        )
    if os.geteuid() != 0:
        return "needs root: installs the Debian package with apt"
    missing = [tool for tool in ("apt-get", "dpkg", "dpkg-query") if shutil.which(tool) is None]
    if missing:
        return f"not a Debian system ({', '.join(missing)} missing)"
    if installed(PACKAGE) and not (
        os.environ.get("CI") or os.environ.get("SCHED_SUPERVISOR_DEB_TEST") == "replace"
    ):
        return (
            f"{PACKAGE} is already installed here and this test would purge it (and its state "
            "in /var/lib/sched-supervisor); set SCHED_SUPERVISOR_DEB_TEST=replace to allow it"
        )
    return state_guard_reason()


@pytest.fixture(scope="module")
def deb_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = skip_reason(str(request.config.getoption("markexpr") or ""))
    if reason is not None:
        pytest.skip(reason)
    output = tmp_path_factory.mktemp("deb")
    scratch = tmp_path_factory.mktemp("deb-build")
    built = run(
        ["sh", BUILD_SCRIPT, "--install-build-deps", "--output-dir", output],
        env={"TMPDIR": str(scratch)},
        timeout=900,
    )
    deb = Path(built.stdout.strip().splitlines()[-1])
    assert deb == output / f"{PACKAGE}_{project_version()}_all.deb"
    assert deb.is_file()
    return deb


@pytest.fixture(scope="module")
def package(deb_file: Path) -> Iterator[Path]:
    """sched-supervisor installed with apt beside Debian's supervisor; purged afterwards."""
    reason = state_guard_reason()  # again: the build took minutes
    if reason is not None:
        pytest.skip(reason)
    had_supervisord = installed("supervisor")
    try:
        with services_denied():
            if not had_supervisord:
                apt_get("install", "--no-install-recommends", "supervisor")
            apt_get("install", "--no-install-recommends", str(deb_file))
        # Absent or empty a moment ago: what is there now is the package's, unless another
        # process made the state directory meanwhile (then it is not ours to purge).
        owner = STATE_DIR.stat().st_uid
        if owner == pwd.getpwnam(PACKAGE).pw_uid:
            mark_as_ours(STATE_DIR)
        mark_as_ours(CONFFILE.parent)
        yield deb_file
    finally:
        purge_if_ours()
        if not had_supervisord and dpkg_status("supervisor"):
            apt_get("purge", "supervisor")
            shutil.rmtree("/var/log/supervisor", ignore_errors=True)


def purge_if_ours() -> None:
    """Purge the package if the directories the purge deletes are ours (or gone); else
    only remove it, which keeps them, and fail saying so."""
    if not dpkg_status(PACKAGE):
        return
    foreign = [str(d) for d in (STATE_DIR, CONFFILE.parent) if foreign_content(d)]
    if foreign:
        apt_get("remove", PACKAGE)
        pytest.fail(f"{PACKAGE} removed, not purged: {', '.join(foreign)} lost the test's marker")
    (CONFFILE.parent / MARKER).unlink(missing_ok=True)  # dpkg removes it only when empty
    apt_get("purge", PACKAGE)


# -- the guard (no root, no package: these run with every `pytest`) --------------------------


@pytest.mark.parametrize(
    ("markexpr", "expected"),
    [
        ("deb", True),
        ("deb and systemd", True),
        ("systemd or deb", True),
        ("", False),
        ("not deb", False),
        ("systemd", False),
        ("systemd and not deb", False),
        ("debian", False),
    ],
)
def test_only_an_explicit_deb_marker_expression_opts_in(markexpr: str, expected: bool) -> None:
    assert opted_in(markexpr) is expected
    if not expected:
        assert "sudo .venv/bin/pytest -m deb" in (skip_reason(markexpr) or "")


def test_pytest_alone_deselects_the_deb_tests_and_m_systemd_skips_them() -> None:
    def collected(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, __file__],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )

    plain = collected("--collect-only", "-q")
    assert "test_remove_keeps_the_state_and_purge_deletes_it" not in plain.stdout
    assert "test_only_an_explicit_deb_marker_expression_opts_in" in plain.stdout
    deb = collected("--collect-only", "-q", "-m", "deb")
    assert "test_remove_keeps_the_state_and_purge_deletes_it" in deb.stdout
    # -m systemd selects the deb tests that need systemd too: they skip, installing nothing.
    systemd = collected("-m", "systemd", "-rs")
    assert "run them explicitly, as root, with `sudo .venv/bin/pytest -m deb`" in systemd.stdout
    assert " passed" not in systemd.stdout, systemd.stdout


def test_a_state_dir_with_foreign_content_stops_the_deb_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, etc, units = tmp_path / "state", tmp_path / "etc", tmp_path / "units"
    monkeypatch.setattr(sys.modules[__name__], "GUARDED_DIRS", (state, etc, units))
    assert state_guard_reason() is None  # none exists
    state.mkdir()
    assert state_guard_reason() is None  # empty
    (state / "state.db").write_text("a user's real state")
    reason = state_guard_reason()
    assert reason is not None and str(state) in reason and "state.db" in reason
    (state / "state.db").unlink()
    mark_as_ours(state)
    (state / "state.db").write_text("ours: written after the marker")
    assert state_guard_reason() is None
    (units / "systemd-units.json").parent.mkdir()
    (units / "systemd-units.json").write_text("{}")
    assert str(units) in (state_guard_reason() or "")


# -- the tests, in order ---------------------------------------------------------------------


@pytest.mark.deb
def test_installs_into_a_private_directory_with_debian_dependencies(package: Path) -> None:
    version = run([COMMAND, "--version"]).stdout
    assert version.strip() == f"supervisor, version {project_version()}"
    assert COMMAND.read_text().splitlines()[0] == "#!/usr/bin/python3 -I"

    files = run(["dpkg", "-L", PACKAGE]).stdout.splitlines()
    assert f"{PRIVATE_DIR}/supervisor/cli/main.py" in files
    assert f"{PRIVATE_DIR}/croniter/croniter.py" in files
    # pyproject.toml's layout: admin/ and templates/ ship inside the supervisor package.
    for source_dir, patterns in (
        ("admin", ("*.html", "*.css", "*.js", "*.svg")),
        ("templates", ("*.j2",)),
    ):
        for pattern in patterns:
            for source in (REPO / source_dir).glob(pattern):
                assert f"{PRIVATE_DIR}/supervisor/{source_dir}/{source.name}" in files
    assert any(f.startswith(f"{PRIVATE_DIR}/supervisor/admin/") for f in files)
    assert not [f for f in files if "/dist-packages/" in f or "/site-packages/" in f]
    assert not [f for f in files if "__pycache__" in f], "bytecode is made at install time"
    # ... by py3compile, in the postinst:
    assert list((PRIVATE_DIR / "supervisor" / "cli" / "__pycache__").glob("main.cpython-3*.pyc"))

    depends = run(["dpkg-query", "-W", "-f=${Depends}", PACKAGE]).stdout
    for dependency in (*DEBIAN_DEPENDS, "python3-dateutil", "python3 (>= 3.11)"):
        assert dependency in depends
    assert "croniter" not in depends

    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE]).stdout
    assert str(CONFFILE) in conffiles

    # The installed service: silent under systemd-analyze verify, rated "OK" for exposure.
    verify = run(["systemd-analyze", "verify", "--man=no", UNIT], check=False)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    security = run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT])
    level = re.search(r"Overall exposure level for .*: (\d+\.\d+)", security.stdout)
    assert level is not None and float(level.group(1)) <= 3.0, security.stdout

    user = pwd.getpwnam(PACKAGE)
    assert user.pw_uid < 1000
    assert user.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    assert user.pw_dir == str(STATE_DIR)
    state = STATE_DIR.stat()
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (user.pw_uid, 0o700)


@pytest.mark.deb
def test_runs_the_examples_with_debian_python_and_vendored_croniter(
    package: Path, tmp_path: Path
) -> None:
    # The vendored croniter 7, not Debian's 1.3.5: no impossible local times across DST
    # (1.3.5 answers 02:30+01:00 on 2026-03-29 in Berlin, a time that does not exist).
    planned = run(
        [
            *(COMMAND, "next-runs", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin"),
            *("--from", "2026-03-28T00:00:00+01:00", "--count", "3", "--json"),
        ],
        cwd=tmp_path,
    )
    berlin = ZoneInfo("Europe/Berlin")
    times = json.loads(planned.stdout)
    assert len(times) == 3
    for text in times:
        assert datetime.fromisoformat(text).astimezone(berlin).isoformat() == text

    # The examples shipped with the package. PYTHONPATH (here: the repository, which has
    # its own supervisor/ package) is ignored; SUPERVISOR_APP_PATH names the app's place.
    state_dir = tmp_path / "state"
    env = {**CLEAN_ENV, "SUPERVISOR_APP_PATH": DEMO_PATH, "PYTHONPATH": str(REPO)}
    manager = subprocess.Popen(
        [COMMAND, "run", "--app", "examples.jobs:cfg", "--state-dir", state_dir, "--no-admin"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def recorded() -> dict[str, Any] | None:
        if manager.poll() is not None:
            output, _ = manager.communicate()
            raise AssertionError(f"the manager exited {manager.returncode}:\n{output}")
        return succeeded_run(state_dir)

    try:
        record = wait_until(recorded, 60, interval=0.2, message="a succeeded run")
        assert record["trigger"] == "start"
        logs = run(
            [COMMAND, "logs", "my.test.scheduler", "--json", "--state-dir", state_dir],
            env={"PYTHONPATH": str(REPO)},
        )
        messages = [json.loads(line)["message"] for line in logs.stdout.splitlines()]
        assert "Hello from scheduler" in messages
    finally:
        if manager.poll() is None:
            manager.send_signal(signal.SIGTERM)
        output, _ = manager.communicate(timeout=60)
    assert manager.returncode == 0, output


@pytest.mark.deb
def test_coexists_with_debians_supervisor(package: Path) -> None:
    assert installed("supervisor")
    assert run(["supervisord", "--version"]).stdout.strip()
    assert run(["echo_supervisord_conf"]).stdout.startswith("; Sample supervisor config file")
    # Debian's python3 still imports supervisord's module from dist-packages ...
    theirs = run(["python3", "-c", "import supervisor.options as o; print(o.__file__)"])
    assert theirs.stdout.startswith("/usr/lib/python3/dist-packages/supervisor/")
    # ... while our command imports ours, from the private directory.
    ours = run(
        [
            "python3",
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(PRIVATE_DIR)!r}); "
            "import supervisor.systemd.units as u; print(u.__file__)",
        ]
    )
    assert ours.stdout.startswith(f"{PRIVATE_DIR}/supervisor/")
    assert run([COMMAND, "--version"]).returncode == 0
    # The manual page supervisor(1) stays supervisord's; ours is sched-supervisor(1).
    assert run(["dpkg", "-S", "/usr/share/man/man1/supervisor.1.gz"]).stdout.startswith(
        "supervisor:"
    )
    assert run(["dpkg", "-S", "/usr/share/man/man1/sched-supervisor.1.gz"]).stdout.startswith(
        f"{PACKAGE}:"
    )


@pytest.mark.deb
@pytest.mark.systemd
def test_service_runs_the_configured_app_in_systemd(package: Path) -> None:
    skip_or_fail("systemd", unavailable_reason())
    original_conffile = CONFFILE.read_text()
    port = free_port()
    try:
        with NamespacedSystemd.boot() as systemd:
            # Not configured yet: the service is skipped by its condition, not failed.
            systemd.systemctl("start", "sched-supervisor.service", check=True)
            shown = systemd.show(
                "sched-supervisor.service", "ActiveState", "Result", "ConditionResult"
            )
            assert shown == {
                "ActiveState": "inactive",
                "Result": "success",
                "ConditionResult": "no",
            }
            journal = systemd.journalctl("-u", "sched-supervisor.service", "-o", "cat").stdout
            assert "no application configured" in journal

            # Configured the way an administrator does it: the conffile, then a restart.
            CONFFILE.write_text(configured(original_conffile, port))
            systemd.systemctl("restart", "sched-supervisor.service", check=True)
            systemd.systemctl("start", "supervisor.service", check=True)  # supervisord, too

            record = systemd.wait_until(
                lambda: succeeded_run(STATE_DIR, runner=systemd),
                60,
                interval=0.2,
                message="a succeeded run recorded by sched-supervisor.service",
            )
            assert record["scheduler_id"] == "my.test.scheduler"
            # As root, the commands find the service's state directory by default.
            listed = systemd.run([str(COMMAND), "list", "--json"], env=CLEAN_ENV, check=True)
            ids = {entry["id"] for entry in json.loads(listed.stdout)}
            assert ids == {"my.test.scheduler", "my.test.failure"}

            main_pid = systemd.show("sched-supervisor.service", "MainPID")["MainPID"]
            owner = systemd.run(["ps", "-o", "user=", "-p", main_pid], check=True)
            assert owner.stdout.strip() == PACKAGE
            assert (STATE_DIR / "state.db").stat().st_uid == pwd.getpwnam(PACKAGE).pw_uid

            # The Admin Center answers on loopback (its login page).
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
                assert page.status == 200

            # Both services run side by side.
            assert systemd.show("supervisor.service", "ActiveState")["ActiveState"] == "active"
            systemd.wait_until(
                lambda: systemd.run(["supervisorctl", "version"]).returncode == 0,
                30,
                interval=0.2,
                message="supervisorctl reaching supervisord",
            )
            active = systemd.show("sched-supervisor.service", "ActiveState")["ActiveState"]
            assert active == "active"

            # A graceful stop: the manager ends on SIGTERM, and systemd counts it a success.
            systemd.systemctl("stop", "sched-supervisor.service", "supervisor.service", check=True)
            shown = systemd.show("sched-supervisor.service", "ActiveState", "Result")
            assert shown == {"ActiveState": "inactive", "Result": "success"}
    finally:
        CONFFILE.write_text(original_conffile)


def configured(conffile_text: str, port: int) -> str:
    """The conffile with the shipped examples as the app and the Admin Center on ``port``."""
    text = (
        conffile_text.replace("\nSUPERVISOR_APP=\n", "\nSUPERVISOR_APP=examples.jobs:cfg\n")
        .replace("\nSUPERVISOR_APP_PATH=\n", f"\nSUPERVISOR_APP_PATH={DEMO_PATH}\n")
        .replace("\nSUPERVISOR_ADMIN=127.0.0.1:8080\n", f"\nSUPERVISOR_ADMIN=127.0.0.1:{port}\n")
    )
    assert text.count(DEMO_PATH) == 2 and f":{port}" in text
    return text


@pytest.mark.deb
@pytest.mark.systemd
def test_units_installed_by_the_packaged_command_run_as_the_service_user_apart_from_it(
    package: Path,
) -> None:
    """``sudo supervisor install-units`` with no state directory keeps its manifest and
    store in /var/lib/sched-supervisor-units: the service's /var/lib/sched-supervisor
    stays the service user's, and both modes work side by side (issue: the package's
    service found a root-owned state directory after install-units)."""
    skip_or_fail("systemd", unavailable_reason())
    assert not foreign_content(UNITS_STATE_DIR)  # skip_reason checked it
    env = {**CLEAN_ENV, "SUPERVISOR_APP_PATH": DEMO_PATH}
    service_user = pwd.getpwnam(PACKAGE)
    original_conffile = CONFFILE.read_text()
    try:
        with NamespacedSystemd.boot() as systemd:
            command = [str(COMMAND), "install-units", "--app", "examples.jobs:cfg", "--runtime"]
            existed = UNITS_STATE_DIR.exists()
            installed_units = systemd.run(command, env=env, cwd=systemd.shared_dir)
            if not existed and UNITS_STATE_DIR.exists():
                mark_as_ours(UNITS_STATE_DIR)
            assert installed_units.returncode == 0, installed_units.stderr
            assert (UNITS_STATE_DIR / "systemd-units.json").is_file()
            assert not (STATE_DIR / "systemd-units.json").exists()
            units_dir = UNITS_STATE_DIR.stat()
            assert (units_dir.st_uid, stat.S_IMODE(units_dir.st_mode)) == (0, 0o700)

            # The packaged command's units run as the service user, sandboxed.
            unit = "sched-demo-my.test.scheduler.service"
            assert systemd.show(unit, "User")["User"] == PACKAGE
            systemd.systemctl("start", unit)
            journal = systemd.journalctl("-u", unit, "-o", "cat").stdout
            assert systemd.show(unit, "Result")["Result"] == "success", journal
            assert "Hello from scheduler" in journal
            entries = systemd.journalctl("-u", unit, "-o", "json", "SCHEDULER_ID=my.test.scheduler")
            uids = {json.loads(line)["_UID"] for line in entries.stdout.splitlines()}
            assert uids == {str(service_user.pw_uid)}
            record = systemd.wait_until(
                lambda: succeeded_run(UNITS_STATE_DIR, runner=systemd),
                30,
                interval=0.2,
                message="a succeeded run read back from journald",
            )
            assert record["scheduler_id"] == "my.test.scheduler"

            # The service, configured, refuses a state directory that holds an install
            # manifest (from before systemd mode had its own): it stays root's.
            CONFFILE.write_text(configured(original_conffile, free_port()))
            old_manifest = STATE_DIR / "systemd-units.json"
            old_manifest.write_text("{}\n")
            try:
                systemd.systemctl("restart", "sched-supervisor.service", check=True)
                shown = systemd.show("sched-supervisor.service", "ActiveState", "ConditionResult")
                assert shown == {"ActiveState": "inactive", "ConditionResult": "no"}
                assert old_manifest.stat().st_uid == 0
            finally:
                old_manifest.unlink()
            # Without it, the service starts on its own directory beside the units.
            systemd.systemctl("restart", "sched-supervisor.service", check=True)
            systemd.wait_until(
                lambda: succeeded_run(STATE_DIR, runner=systemd),
                60,
                interval=0.2,
                message="a succeeded run recorded by sched-supervisor.service",
            )
            state = STATE_DIR.stat()
            assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (service_user.pw_uid, 0o700)
            assert (STATE_DIR / "state.db").stat().st_uid == service_user.pw_uid
            # As root, the commands find the manager; SUPERVISOR_BACKEND=systemd the units.
            status = [str(COMMAND), "status", "my.test.scheduler", "--json"]
            manager_status = json.loads(systemd.run(status, env=CLEAN_ENV, check=True).stdout)
            assert "units" not in manager_status
            on_systemd = {**env, "SUPERVISOR_BACKEND": "systemd"}
            units_status = json.loads(systemd.run(status, env=on_systemd, check=True).stdout)
            assert units_status["units"]["kind"] == "runtime"
            systemd.systemctl("stop", "sched-supervisor.service", check=True)

            uninstall = [str(COMMAND), "uninstall-units"]
            systemd.run(uninstall, env=env, cwd=systemd.shared_dir, check=True)
            assert not (UNITS_STATE_DIR / "systemd-units.json").exists()
    finally:
        CONFFILE.write_text(original_conffile)
        if (UNITS_STATE_DIR / MARKER).exists():
            shutil.rmtree(UNITS_STATE_DIR)


@pytest.mark.deb
def test_remove_keeps_the_state_and_purge_deletes_it(package: Path) -> None:
    STATE_DIR.mkdir(exist_ok=True)
    marker = STATE_DIR / "kept-by-remove"
    marker.write_text("state\n")
    files = [Path(f) for f in run(["dpkg", "-L", PACKAGE]).stdout.splitlines()]
    shipped = [f for f in files if f.is_file() and not f.is_symlink()]
    assert COMMAND in shipped and UNIT in shipped

    apt_get("remove", PACKAGE)
    assert dpkg_status(PACKAGE) == "rc"
    assert not [f for f in shipped if f.exists() and f != CONFFILE]
    assert not PRIVATE_DIR.exists(), "py3clean removes the bytecode, dpkg the rest"
    assert CONFFILE.exists()
    assert marker.read_text() == "state\n"
    pwd.getpwnam(PACKAGE)  # the system user stays (Debian's custom)

    assert not foreign_content(STATE_DIR) and not foreign_content(CONFFILE.parent)
    (CONFFILE.parent / MARKER).unlink()  # dpkg removes /etc/sched-supervisor only when empty
    apt_get("purge", PACKAGE)
    assert dpkg_status(PACKAGE) in ("", "un", "pn")
    assert not STATE_DIR.exists()
    assert not CONFFILE.parent.exists()
    assert not Path("/etc/systemd/system/multi-user.target.wants/sched-supervisor.service").exists()

    # Debian's supervisor is untouched.
    assert run(["supervisord", "--version"]).returncode == 0
