"""A real systemd for tests: systemd booted as PID 1 of private Linux namespaces.

``NamespacedSystemd.boot()`` runs ``unshare --pid --fork --mount-proc --uts --ipc --mount
--propagation private`` with a shell that prepares the namespace and then execs
``/lib/systemd/systemd --system`` with ``container=other``. Commands reach it through
``nsenter`` (``run``, ``systemctl``, ``journalctl``); there is no D-Bus inside, so units
are started by writing them (``write_unit``) and reloading. ``stop()`` kills its PID 1,
which ends every process of the namespace, and removes what the boot left on the host.
``reboot()`` (``power_off()``, ``power_on()``) kills PID 1 and boots again on the same
``/etc/systemd/system`` and shared directory: everything in memory is lost.

What the boot shell does, and why (each point was seen to matter on Debian 12):

- Private tmpfs on ``/tmp``, ``/var/tmp`` and ``/run``: ``systemd-tmpfiles`` empties
  ``/tmp`` at boot and removes ``/var/tmp/systemd-private-*`` (other namespaces' private
  tmp dirs), and a killed systemd leaves its ``PrivateTmp=`` dirs behind.
- Private ``/etc/systemd/system`` (a bind of ``etc_units_dir``, which the host can read
  and write), ``/var/lib/systemd`` (``Persistent=true`` timer stamps) and
  ``/var/log/journal``: the tests never touch the host's units, stamps or journal.
- Its own cgroup, and a pure cgroup-v2 view of ``/sys/fs/cgroup``: systemd takes its
  cgroup as its root, so several namespaces never share ``system.slice``, and on a
  hybrid host it neither mounts v1 controllers nor remounts the host's ``/sys/fs/cgroup``
  tmpfs read-only (which the plain recipe does).
- Runtime masks for boot services that change the host's kernel or files (sysctl,
  modules, binfmt, remount of ``/``, sysusers, utmp, tmpfiles, device nodes, udev's
  coldplug of the host's devices), and for anything else packages hook into the boot
  targets, except journald; a drop-in so journald's socket does not create ``/dev/log``
  on the shared ``/dev``.

Paths to share between the host and the namespace: ``shared_dir`` (same path on both
sides). It lives under ``/var/lib``, not ``/tmp`` or ``/var/tmp``: a unit with
``PrivateTmp=yes`` sees its own empty ``/var/tmp``, so a ``WorkingDirectory=`` or
``ReadWritePaths=`` there fails with status 226/NAMESPACE. Any host path other than the
private ones above is visible inside; ``inside(path)`` gives the host path of a file in
the namespace's private mounts (through ``/proc/PID/root``).

The ``systemd_namespace`` pytest fixture skips only where ``unshare`` is not permitted
or systemd is not installed (and fails there where CI requires ``systemd``:
tests/required.py). Imports pytest, psutil, ``tests.commands``, ``tests.required`` and the
standard library.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from tests.commands import command as command_argv
from tests.required import skip_or_fail

T = TypeVar("T")

SYSTEMD = Path("/lib/systemd/systemd")
DEFAULT_BASE_DIR = Path("/var/lib/sched-supervisor-tests")
TARGET = "sched-test.target"
UNSHARE_FLAGS = (
    "--pid",
    "--fork",
    "--mount-proc",
    "--uts",
    "--ipc",
    "--mount",
    "--propagation",
    "private",
)
# Boot units that would change the host (kernel settings, /dev, /etc, /var/log, the root
# mount) or that make no sense in a namespace. Masked in /run, so only for this boot.
MASKED_UNITS = (
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "systemd-remount-fs.service",
    "systemd-fsck-root.service",
    "systemd-sysusers.service",
    "systemd-update-utmp.service",
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-random-seed.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-repart.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-pcrphase.service",
    "systemd-pstore.service",
    "systemd-hwdb-update.service",
    "systemd-journal-catalog-update.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
)
# Besides those, every unit that packages hook into these targets is masked, except
# journald's: a package installed later (udev came with chromium here) must not get to
# run its boot service against the host's /dev and /sys.
HOOKED_TARGETS = ("sysinit.target", "sockets.target", "local-fs.target", "swap.target")
UNIT_DIRS = (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))
KEPT_UNITS = (
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
    "systemd-journald-audit.socket",
    "systemd-journal-flush.service",
)
TARGET_UNIT = """\
[Unit]
Description=Minimal target for tests (sysinit only)
Requires=sysinit.target
After=sysinit.target
AllowIsolate=yes
"""
NO_DEV_LOG_DROPIN = """\
[Socket]
Symlinks=
"""
# $1 root dir, $2 cgroup dir to join, $3 cgroup2 mount to show at /sys/fs/cgroup or "".
BOOT_SCRIPT = f"""\
set -eu
root=$1
echo $$ > "$2/cgroup.procs"
if [ -n "$3" ]; then mount --bind "$3" /sys/fs/cgroup; fi
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /var/lib/systemd
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi
mount --bind "$root/etc-systemd-system" /etc/systemd/system
mkdir -p /run/systemd/system
cp -a "$root/boot-units/." /run/systemd/system/
exec env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --unit={TARGET}
"""
REQUIRED_PROGRAMS = ("unshare", "nsenter", "systemctl", "journalctl", "mount")


class NamespaceBootError(RuntimeError):
    """The namespaced systemd did not come up; the message carries its console output."""


def unavailable_reason() -> str | None:
    """Why a namespaced systemd cannot run here, or None when it can."""
    if not SYSTEMD.exists():
        return f"systemd is not installed ({SYSTEMD} is missing)"
    missing = [name for name in REQUIRED_PROGRAMS if shutil.which(name) is None]
    if missing:
        return f"programs needed for a namespaced systemd are missing: {', '.join(missing)}"
    try:
        probe = subprocess.run(
            ["unshare", *UNSHARE_FLAGS, "true"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare is not permitted here: {error}"
    if probe.returncode != 0:
        return f"unshare is not permitted here: {probe.stderr.strip() or probe.returncode}"
    return None


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError after."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} not reached within {timeout:g} s")
        time.sleep(interval)


def _units_to_mask() -> set[str]:
    """``MASKED_UNITS`` and whatever the installed packages hook into the boot targets."""
    hooked = {
        link.name
        for directory in UNIT_DIRS
        for target in HOOKED_TARGETS
        for kind in ("wants", "requires")
        for link in (directory / f"{target}.{kind}").glob("*")
    }
    return (set(MASKED_UNITS) | hooked) - set(KEPT_UNITS) - {TARGET}


def _cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (pure v2 or hybrid), if anywhere."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    points = {Path(fields[1]) for fields in mounts if len(fields) > 2 and fields[2] == "cgroup2"}
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if candidate in points:
            return candidate
    return None


def _own_cgroup2() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return "/"


def _remove_cgroup(path: Path) -> bool:
    """rmdir ``path`` and its children (empty cgroups); False while some are busy."""
    if not path.exists():
        return True
    children = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for directory in [*children, path]:
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


def _start(root: Path, cgroup: Path, cgroup_mount: Path) -> subprocess.Popen[bytes]:
    """Start the boot shell of the namespace kept in ``root``, in the new ``cgroup``."""
    show_cgroup = "" if cgroup_mount == Path("/sys/fs/cgroup") else str(cgroup_mount)
    cgroup.mkdir()
    try:
        with (root / "console.log").open("ab") as console:
            return subprocess.Popen(
                [
                    *("unshare", *UNSHARE_FLAGS, "sh", "-c", BOOT_SCRIPT, "sh"),
                    *(str(root), str(cgroup), show_cgroup),
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except BaseException:
        _remove_cgroup(cgroup)
        raise


class NamespacedSystemd:
    """One systemd booted as PID 1 of private namespaces; see the module docstring."""

    def __init__(
        self, *, name: str, root: Path, process: subprocess.Popen[bytes], cgroup: Path
    ) -> None:
        self.name = name
        self.root = root
        self._process = process
        self.cgroup = cgroup
        self.pid = 0  # host PID of the namespace's PID 1 (systemd)
        self.pid_namespace = ""  # e.g. "pid:[4026532301]"
        self.failed_at_boot: list[str] = []
        self._stopped = False

    # -- life cycle -----------------------------------------------------------------

    @classmethod
    def boot(cls, *, base_dir: Path = DEFAULT_BASE_DIR, timeout: float = 60.0) -> NamespacedSystemd:
        """Boot a new namespaced systemd and wait until its boot has finished."""
        cgroup_mount = _cgroup2_mount()
        if cgroup_mount is None:
            raise NamespaceBootError("no cgroup v2 hierarchy is mounted (needed by systemd)")
        name = f"sched-ns-{os.getpid()}-{secrets.token_hex(4)}"
        root = base_dir / name
        (root / "etc-systemd-system").mkdir(parents=True)
        (root / "shared").mkdir()
        units = root / "boot-units"
        units.mkdir()
        (units / TARGET).write_text(TARGET_UNIT)
        for unit in sorted(_units_to_mask()):
            (units / unit).symlink_to("/dev/null")
        dropin = units / "systemd-journald-dev-log.socket.d"
        dropin.mkdir()
        (dropin / "no-dev-log.conf").write_text(NO_DEV_LOG_DROPIN)
        cgroup = cgroup_mount / _own_cgroup2().lstrip("/") / name
        try:
            process = _start(root, cgroup, cgroup_mount)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        instance = cls(name=name, root=root, process=process, cgroup=cgroup)
        try:
            instance._wait_for_boot(timeout)
        except BaseException:
            instance.stop()
            raise
        return instance

    def power_off(self) -> None:
        """Cut the power: kill PID 1 (every process of the namespace ends at once) and
        lose what lives in memory (``/run`` with the transient units and the runtime
        units, ``/tmp``, ``/var/lib/systemd`` with the timer stamps, the journal). The
        namespace's ``/etc/systemd/system`` and ``shared_dir`` are kept for ``power_on``."""
        if self._stopped or not self.pid:
            raise RuntimeError("the namespaced systemd is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._process.wait(timeout=30)
        wait_until(
            lambda: _remove_cgroup(self.cgroup), 30, message=f"removal of cgroup {self.cgroup}"
        )
        self.pid = 0
        self.pid_namespace = ""

    def power_on(self, *, timeout: float = 60.0) -> None:
        """Boot again after ``power_off`` (a new PID 1 on the kept unit files and shared
        directory), wait until the boot has finished, then start ``timers.target`` as a
        real boot does (``basic.target`` wants it; the test target is sysinit only): the
        enabled timers start, each ``Persistent=true`` one catching up by its stamp."""
        if self._stopped or self.pid:
            raise RuntimeError("power_on needs a namespace that power_off has stopped")
        cgroup_mount = _cgroup2_mount()
        if cgroup_mount is None:
            raise NamespaceBootError("no cgroup v2 hierarchy is mounted (needed by systemd)")
        self._process = _start(self.root, self.cgroup, cgroup_mount)
        self._wait_for_boot(timeout)
        self.systemctl("start", "timers.target", check=True)

    def reboot(self, *, timeout: float = 60.0) -> None:
        """``power_off`` then ``power_on``: a reboot as far as a namespace has one (the
        kernel, its clock and the host's mounts go on)."""
        self.power_off()
        self.power_on(timeout=timeout)

    def _wait_for_boot(self, timeout: float) -> None:
        def child() -> int | None:
            self._check_alive()
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self._process.pid).children()
                if children:
                    return children[0].pid
            return None

        self.pid = wait_until(child, timeout, message="the namespace's PID 1")
        self.pid_namespace = os.readlink(f"/proc/{self.pid}/ns/pid")

        def booted() -> str | None:
            self._check_alive()
            state = self.systemctl("is-system-running").stdout.strip()
            return state if state in ("running", "degraded") else None

        try:
            state = wait_until(booted, timeout, message="systemd boot")
        except TimeoutError as error:
            raise NamespaceBootError(f"{error}\n{self.console_output()}") from None
        if state == "degraded":
            failed = self.systemctl("list-units", "--failed", "--plain", "--no-legend")
            self.failed_at_boot = [line.split()[0] for line in failed.stdout.splitlines() if line]

    def _check_alive(self) -> None:
        if self._process.poll() is not None:
            raise NamespaceBootError(
                f"the namespace exited with status {self._process.returncode}:\n"
                + self.console_output()
            )

    def console_output(self) -> str:
        """What the boot shell and systemd wrote to their console so far."""
        try:
            return (self.root / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the namespace's PID 1 (and so every process in it); remove its traces."""
        if self._stopped:
            return
        self._stopped = True
        if self.pid and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self._process.poll() is None and not self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=30)
        wait_until(
            lambda: _remove_cgroup(self.cgroup), 30, message=f"removal of cgroup {self.cgroup}"
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def processes(self) -> list[int]:
        """Host PIDs of the processes in this systemd's PID namespace (none once stopped)."""
        if not self.pid_namespace:
            return []
        pids: list[int] = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "pid") == self.pid_namespace:
                        pids.append(int(entry.name))
        return sorted(pids)

    # -- paths ----------------------------------------------------------------------

    @property
    def shared_dir(self) -> Path:
        """A directory with the same path on the host and in the namespace (not a tmp dir)."""
        return self.root / "shared"

    @property
    def etc_units_dir(self) -> Path:
        """The host path of the namespace's private ``/etc/systemd/system``."""
        return self.root / "etc-systemd-system"

    def inside(self, path: str | os.PathLike[str]) -> Path:
        """The host path of ``path`` as the namespace sees it (e.g. under its ``/run``)."""
        absolute = Path(path)
        if not absolute.is_absolute():
            raise ValueError(f"expected an absolute path, got {path}")
        return Path(f"/proc/{self.pid}/root") / absolute.relative_to("/")

    # -- commands -------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace (as root) and return what it did."""
        if not self.pid or self._stopped:
            raise RuntimeError("the namespaced systemd is not running")
        # Default signal dispositions (tests.commands): never a test run's ignored SIGHUP.
        command = command_argv(
            ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "--", *argv]
        )
        return subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            cwd=cwd,
            timeout=timeout,
            check=check,
        )

    def systemctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def journalctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run(["journalctl", "--no-pager", *args], check=check)

    def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 10.0,
        *,
        interval: float = 0.02,
        message: str = "condition",
    ) -> T:
        """Poll ``predicate`` with a deadline; fail early if the namespace has died."""

        def checked() -> T | None:
            self._check_alive()
            return predicate()

        return wait_until(checked, timeout, interval=interval, message=message)

    def write_unit(self, name: str, text: str, *, runtime: bool = False) -> Path:
        """Write a unit into ``/etc/systemd/system`` (or ``/run/...`` with ``runtime``).

        Call ``daemon_reload()`` afterwards. Returns the host path written.
        """
        directory = self.inside("/run/systemd/system") if runtime else self.etc_units_dir
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload", check=True)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` of ``properties`` (unix timestamps) as a dict.

        A property listed on several lines (``TimersMonotonic``) has them joined by newlines.
        """
        result = self.systemctl(
            "show", "--timestamp=unix", *(f"--property={p}" for p in properties), unit, check=True
        )
        shown: dict[str, str] = {}
        for line in result.stdout.splitlines():
            key, equals, value = line.partition("=")
            if equals:
                shown[key] = f"{shown[key]}\n{value}" if key in shown else value
        return shown

    def __enter__(self) -> NamespacedSystemd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def systemd_namespace() -> Iterator[NamespacedSystemd]:
    """A freshly booted namespaced systemd, killed after the test.

    Skips only where ``unshare`` is not permitted or systemd is not installed (fails
    there instead where ``systemd`` is required: tests/required.py).
    """
    skip_or_fail("systemd", unavailable_reason())
    with NamespacedSystemd.boot() as instance:
        yield instance
