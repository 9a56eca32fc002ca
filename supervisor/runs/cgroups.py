"""A cgroup per run, where the OS lets us have one: every process of a run, found and killed.

A run's process joins its own cgroup at its very start (``join_self``), so everything it
starts afterwards is in that cgroup too, whatever it does: ``setsid``, a cleared
environment (which removes the marker ``procs`` sweeps by) or a double fork cannot get a
process out. Killing the run then means killing the cgroup.

Where the cgroups live. ``detect`` looks at the caller's own cgroup (``/proc/self/cgroup``,
mount points from ``/proc/self/mountinfo``) and takes the first that works of:

- **cgroup v2**: the caller's own cgroup, if the caller may write to it (root, or a
  delegated subtree such as a systemd unit with ``Delegate=yes``). Under v2 only leaf
  cgroups may hold processes once controllers are enabled ("no internal processes"), and
  the caller itself stays where it is, so runs go into a subtree beside it:
  ``<own cgroup>/sched-supervisor-runs/<owner>/<run id>``, where the two inner levels hold
  no processes. Controllers already delegated to the caller's cgroup (``memory``,
  ``pids``) are switched on for the subtree, so ``memory.events`` tells OOM kills apart.
- **cgroup v1**: the same layout in a writable ``freezer`` hierarchy (then ``pids``):
  v1 hierarchies are independent, so joining one leaves the process's memory or cpu
  cgroups as they were.

``<owner>`` names the process that called ``detect`` (pid namespace, pid and start time),
so two managers sharing a cgroup never touch each other's runs, and ``leftovers`` finds
the run cgroups of owners that are gone (killed with -9, say) for a sweep at start.

Killing: ``cgroup.kill`` (v2, Linux 5.14+) where present; else freeze (v2
``cgroup.freeze``, v1 ``freezer.state``), SIGKILL every process listed, thaw; else
SIGKILL every listed process until none is left; always within a deadline.

Cost: ``create``, an empty ``kill`` and ``remove`` take well under a millisecond each;
moving a process (``join_self``) waits for an RCU grace period when no other move
happened just before (about 10 ms here under load, 0.03 ms back to back) unless cgroup2
is mounted with ``favordynmods``, and moves serialize on the kernel's migration lock.
Under cgroup v2 the fork server avoids moves: it forks each run straight into its
cgroup (``clone``: ``clone3(CLONE_INTO_CGROUP)``) where the kernel allows; elsewhere the
run's own process (or a spare forked ahead, see ``forklauncher``) joins.

Use, in the manager (the process that lives as long as its runs)::

    root = detect()                      # None: keep the marker sweep alone
    for left in root.leftovers():        # at start: runs of a manager killed with -9
        left.kill(); left.remove()
    cgroup = root.create(run_id)         # per run; Job(cgroup=str(cgroup.path))
    ...                                  # the run's process joins it first thing
    cgroup.kill()                        # once its main process has ended
    oom = cgroup.oom_killed()            # before remove(): was SIGKILL the OOM killer?
    cgroup.remove()
    root.close()                         # at shutdown

May import the stdlib only.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

V2: Final = "cgroup v2"
V1: Final = "cgroup v1"
SUBTREE: Final = "sched-supervisor-runs"
# v1 hierarchies worth using, best first (a freezer lets a kill stop a fork race).
V1_CONTROLLERS: Final = ("freezer", "pids")
# Controllers switched on for the runs' subtree when the caller's cgroup has them.
V2_CONTROLLERS: Final = ("memory", "pids")
KILL_SECONDS: Final = 5.0
_PIDFD_BATCH: Final = 256
_OWNER = re.compile(r"(\d+)-(\d+)-(\d+)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


@dataclass(frozen=True, slots=True)
class RunCgroup:
    """One run's cgroup. Every method is safe to call once the cgroup is gone."""

    path: Path
    version: int  # 2 or 1

    def join(self, pid: int) -> None:
        """Move process ``pid`` (with all its threads) in; raises ``OSError`` (e.g.
        ``ESRCH`` when there is no such process, ``EACCES`` without permission)."""
        _write(f"{self.path}/cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """Every process in this cgroup and in cgroups below it (sorted)."""
        if self.version == 2 and not self._populated():
            return []  # (one read instead of a walk: what every run's end asks)
        found: set[int] = set()
        for directory in self._tree():
            found.update(_read_pids(directory / "cgroup.procs"))
        return sorted(found)

    def kill(self, *, timeout: float = KILL_SECONDS) -> None:
        """SIGKILL every process in it, and wait (up to ``timeout`` seconds) until none is
        left. Never raises: what survived the deadline is in ``pids()``."""
        deadline = time.monotonic() + timeout
        if not self.path.is_dir():
            return
        kill_file = self.path / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
                if self._wait_empty(deadline):
                    return
        freezer = self._freezer()
        frozen = freezer is not None and self._freeze(freezer, deadline)
        try:
            self._signal_all(deadline, once=frozen)
        finally:
            if freezer is not None:  # also when freezing did not finish in time
                self._thaw(freezer)
        self._signal_all(deadline, once=False)

    def oom_killed(self) -> bool:
        """True if the kernel's OOM killer ended a process in it (cgroup v2 with the memory
        controller on); False otherwise, including when that cannot be known."""
        if self.version != 2:
            return False
        try:
            text = _read_small(f"{self.path}/memory.events").decode()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return value.strip().isdigit() and int(value) > 0
        return False

    def remove(self) -> None:
        """rmdir it (and any cgroups a run made below it). A no-op if it is gone; raises
        ``OSError`` (``EBUSY``) while a process is still in it."""
        try:
            os.rmdir(self.path)  # (what nearly every run's end finds: no cgroup below)
        except FileNotFoundError:
            pass
        except OSError:
            for directory in reversed(list(self._tree())):
                with contextlib.suppress(FileNotFoundError):
                    directory.rmdir()
        # The owner's level goes too once its last run is removed, if its owner is gone.
        # (Strings, not Paths: this is the end of every run.)
        owner = os.path.dirname(self.path)
        name = os.path.basename(owner)
        if name == _own_owner_name():
            return
        if _OWNER.fullmatch(name) and not _owner_alive(name):
            with contextlib.suppress(OSError):
                os.rmdir(owner)

    # -- helpers --------------------------------------------------------------------

    def _populated(self) -> bool:
        """v2: does ``cgroup.events`` say a process is in it or below? (True if unknown.)"""
        try:
            return b"populated 0" not in _read_small(f"{self.path}/cgroup.events")
        except OSError:
            return True

    def _tree(self) -> Iterator[Path]:
        """This cgroup, then the cgroups below it (parents before children)."""
        if not self.path.is_dir():
            return
        yield self.path
        for top, dirs, _ in os.walk(self.path):
            for name in sorted(dirs):
                yield Path(top) / name

    def _wait_empty(self, deadline: float) -> bool:
        """Wait until no process is left (v2: woken by ``cgroup.events`` changes)."""
        try:
            fd = os.open(self.path / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return _wait(lambda: not self.pids(), deadline)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            while True:
                if b"populated 0" in os.pread(fd, 4096, 0):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                poller.poll(max(1, math.ceil(min(left, 0.5) * 1000)))
        except OSError:
            return not self.pids()
        finally:
            os.close(fd)

    def _freezer(self) -> Path | None:
        """The file that freezes this cgroup, if it has one."""
        name = "cgroup.freeze" if self.version == 2 else "freezer.state"
        path = self.path / name
        return path if path.exists() else None

    def _freeze(self, freezer: Path, deadline: float) -> bool:
        """Freeze the cgroup; True once it is frozen (before the deadline)."""
        try:
            if self.version == 2:
                _write(freezer, "1")
                return _wait(lambda: "frozen 1" in _read(self.path / "cgroup.events"), deadline)
            _write(freezer, "FROZEN")
            return _wait(lambda: _read(freezer) == "FROZEN", deadline)
        except OSError:
            return False

    def _thaw(self, freezer: Path) -> None:
        with contextlib.suppress(OSError):
            _write(freezer, "0" if self.version == 2 else "THAWED")

    def _signal_all(self, deadline: float, *, once: bool) -> None:
        """SIGKILL each listed process (once, or until none is left or the deadline).

        pidfds are opened first and the list is read again before signalling, so a pid
        that was recycled meanwhile (its process ended, another took the number) is
        never signalled.
        """
        while True:
            pids = self.pids()
            if not pids:
                return
            for start in range(0, len(pids), _PIDFD_BATCH):
                pidfds: dict[int, int] = {}
                try:
                    for pid in pids[start : start + _PIDFD_BATCH]:
                        with contextlib.suppress(OSError):
                            pidfds[pid] = os.pidfd_open(pid)
                    still = set(self.pids())
                    for pid, pidfd in pidfds.items():
                        if pid in still:
                            with contextlib.suppress(OSError):
                                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                finally:
                    for pidfd in pidfds.values():
                        os.close(pidfd)
            if once or time.monotonic() >= deadline:
                return
            _wait(lambda: not self.pids(), min(deadline, time.monotonic() + 0.05))


@dataclass(frozen=True, slots=True)
class CgroupRoot:
    """Where this process's runs get their cgroups: ``<subtree>/<owner>/<run id>``."""

    kind: str  # V2 or V1
    subtree: Path  # <own cgroup>/sched-supervisor-runs
    owner: str  # this process: "<pid namespace>-<pid>-<start time>"

    @property
    def version(self) -> int:
        return 2 if self.kind == V2 else 1

    def create(self, run_id: str) -> RunCgroup:
        """A new (or the existing) empty cgroup for ``run_id``; raises ``ValueError`` for a
        run id that is not a plain name, ``OSError`` if the directory cannot be made."""
        if not _NAME.fullmatch(run_id) or len(run_id) > 200:
            raise ValueError(f"run id {run_id!r} cannot name a cgroup")
        # Strings, not Paths, and no look at the owner's level first: it is there for all
        # runs but the first (or one after it was removed), which find it missing.
        owner = f"{self.subtree}/{self.owner}"
        try:
            _mkdir(f"{owner}/{run_id}")
        except FileNotFoundError:
            _mkdir(owner)
            if self.version == 2:
                _enable_controllers(owner)
            _mkdir(f"{owner}/{run_id}")
        return RunCgroup(self.subtree.joinpath(self.owner, run_id), self.version)

    def leftovers(self) -> list[RunCgroup]:
        """The run cgroups of owners that are gone (for a sweep at start: ``kill`` then
        ``remove`` each). Owners in another pid namespace are never counted as gone.
        Empty owner levels of gone owners are removed on the way."""
        found: list[RunCgroup] = []
        for owner in _subdirs(self.subtree):
            if owner.name == self.owner or not _OWNER.fullmatch(owner.name):
                continue
            if _owner_alive(owner.name):
                continue
            runs = _subdirs(owner)
            found.extend(RunCgroup(path, self.version) for path in runs)
            if not runs:
                with contextlib.suppress(OSError):
                    owner.rmdir()
        return found

    def close(self) -> None:
        """Remove this owner's level if no run cgroup is left in it (at shutdown)."""
        with contextlib.suppress(OSError):
            (self.subtree / self.owner).rmdir()


def join_self(path: str) -> None:
    """Move the calling process into the cgroup at ``path`` (a run's process calls this
    first of all); raises ``OSError`` if it cannot."""
    _write(f"{path}/cgroup.procs", str(os.getpid()))


def detect(*, subtree: str = SUBTREE) -> CgroupRoot | None:
    """The cgroup hierarchy this process's runs can use (v2 first, then v1), or None."""
    return detect_v2(subtree=subtree) or detect_v1(subtree=subtree)


def detect_v2(*, subtree: str = SUBTREE) -> CgroupRoot | None:
    """The runs' subtree in this process's cgroup v2 cgroup, or None where it cannot be."""
    for entry in _own_cgroups():
        if entry.hierarchy == "0" and entry.controllers == "":
            for mount in _mounts():
                if mount.fstype == "cgroup2":
                    base = _below(mount, entry.path)
                    if base is not None and _usable(base, v2=True):
                        return _root(V2, base, subtree)
    return None


def detect_v1(
    *, subtree: str = SUBTREE, controllers: Sequence[str] = V1_CONTROLLERS
) -> CgroupRoot | None:
    """The runs' subtree in this process's cgroup of the first writable v1 hierarchy of
    ``controllers``, or None."""
    own = _own_cgroups()
    for controller in controllers:
        for entry in own:
            if controller not in entry.controllers.split(","):
                continue
            for mount in _mounts():
                if mount.fstype == "cgroup" and controller in mount.options:
                    base = _below(mount, entry.path)
                    if base is not None and _usable(base, v2=False):
                        return _root(V1, base, subtree)
    return None


# -- reading the system -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Membership:
    hierarchy: str
    controllers: str
    path: str


@dataclass(frozen=True, slots=True)
class _Mount:
    root: str
    point: Path
    fstype: str
    options: frozenset[str]


def _own_cgroups() -> list[_Membership]:
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found.append(_Membership(*parts))
    return found


def _mounts() -> list[_Mount]:
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(after[2].split(","))
        found.append(_Mount(_unescape(fields[3]), Path(_unescape(fields[4])), after[0], options))
    return found


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _below(mount: _Mount, cgroup_path: str) -> Path | None:
    """Where ``cgroup_path`` (as /proc/self/cgroup names it) is under ``mount``."""
    root = mount.root.rstrip("/")
    if cgroup_path != root and not cgroup_path.startswith(root + "/"):
        return None  # our cgroup is not visible through this mount
    path = mount.point / cgroup_path[len(root) :].lstrip("/")
    return path if (path / "cgroup.procs").exists() else None


def _usable(base: Path, *, v2: bool) -> bool:
    """May we make cgroups below ``base`` and move processes from it into them?"""
    if not (os.access(base, os.W_OK) and os.access(base / "cgroup.procs", os.W_OK)):
        return False
    if v2:
        with contextlib.suppress(OSError):
            if _read(base / "cgroup.type") == "threaded":
                return False  # below a threaded cgroup only threads can move
    return True


def _root(kind: str, base: Path, subtree: str) -> CgroupRoot | None:
    if not _NAME.fullmatch(subtree):
        raise ValueError(f"subtree {subtree!r} must be a plain name")
    top = base / subtree
    try:
        top.mkdir(exist_ok=True)
    except OSError:
        return None  # read-only, not delegated after all, out of cgroups, ...
    if not os.access(top / "cgroup.procs", os.W_OK):
        return None
    if kind == V2:
        _enable_controllers(top)
    return CgroupRoot(kind=kind, subtree=top, owner=_owner_name())


def _enable_controllers(path: str | Path) -> None:
    """Switch on for ``path``'s children the wanted controllers ``path`` has (``path``
    holds no processes, so v2's "no internal processes" rule allows it)."""
    try:
        available = set(_read(f"{path}/cgroup.controllers").split())
    except OSError:
        return
    for name in V2_CONTROLLERS:
        if name in available:
            with contextlib.suppress(OSError):
                _write(f"{path}/cgroup.subtree_control", f"+{name}")


def _owner_name(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{_pid_namespace()}-{pid}-{_start_ticks(pid)}"


_OWN: dict[int, str] = {}


def _own_owner_name() -> str:
    """This process's owner name (computed once per process: a fork computes its own)."""
    pid = os.getpid()
    if pid not in _OWN:
        try:
            _OWN[pid] = _owner_name(pid)
        except OSError:
            return ""
    return _OWN[pid]


def _owner_alive(name: str) -> bool:
    """Is the owner still running? (True when it cannot be told: another pid namespace.)"""
    match = _OWNER.fullmatch(name)
    if match is None:
        return True
    namespace, pid, ticks = (int(group) for group in match.groups())
    if namespace != _pid_namespace():
        return True
    try:
        return _start_ticks(pid) == ticks
    except OSError:
        return False


def _pid_namespace() -> int:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return 0
    digits = re.sub(r"\D", "", link)
    return int(digits) if digits else 0


def _start_ticks(pid: int) -> int:
    """When ``pid`` started (clock ticks since boot); raises ``OSError`` if it is gone."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(entry for entry in path.iterdir() if entry.is_dir())
    except OSError:
        return []


def _read(path: str | Path) -> str:
    with open(path) as handle:
        return handle.read().strip()


def _read_small(path: str) -> bytes:
    """The whole of a small cgroup file (``cgroup.events``, ``memory.events``: one read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _mkdir(path: str) -> None:
    """mkdir ``path``; an existing directory is fine (as ``Path.mkdir(exist_ok=True)``,
    which looks whatever the error: the OS may report another one before EEXIST)."""
    try:
        os.mkdir(path)
    except OSError:
        if not os.path.isdir(path):
            raise


def _write(path: str | Path, text: str) -> None:
    # One write(2) of the whole value: cgroup files act on each write call.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read_pids(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [int(line) for line in text.split() if line.isdigit()]


def _wait(done: Callable[[], bool], deadline: float) -> bool:
    """Poll ``done()`` (5 ms, doubling to 50 ms) until true or the deadline; its result."""
    delay = 0.005
    while True:
        if done():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)
