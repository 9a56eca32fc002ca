"""Linux process plumbing for runs: prctl, the run marker, finding, killing and reaping.

- ``PR_SET_PDEATHSIG`` ties a process's life to its parent *thread*;
  ``PR_SET_CHILD_SUBREAPER`` makes orphaned descendants (even ones that called
  ``setsid``) reparent to us instead of init, so they can be found and reaped.
- Every process of a run carries ``SUPERVISOR_RUN_ID=<run id>`` in its environment (the
  *marker*), visible in ``/proc/PID/environ``. A process forked without ``exec`` shows
  the environment block its ancestor was exec'd with, so the fork server is started with
  a placeholder that ``mark_this_process`` overwrites in place in each run's process.
- Processes are signalled through pidfds opened *before* the check that they are the
  right ones, so a recycled pid is never signalled by mistake.
- Reaping is process-wide (``waitpid`` sees every thread's children), so the set of
  children the launchers wait for themselves is process-wide too: ``reap_orphans``
  leaves those alone.

May import ``errors`` and the stdlib (plus psutil, inside the functions that need it: the
fork server and its runs do not load it).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

MARKER_ENV = "SUPERVISOR_RUN_ID"
# The placeholder value the fork server is started with; a run id must be shorter.
MARKER_PLACEHOLDER = "_" * 160
_MARKER_KEY = MARKER_ENV.encode() + b"="

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: object) -> None:
    zero = ctypes.c_ulong(0)
    result = _libc().prctl(ctypes.c_int(option), arg, zero, zero, zero)
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}): {os.strerror(errno)}")


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent thread exits."""
    _prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum))


def become_subreaper() -> None:
    """Make orphaned descendants of this process reparent to it (then reap them)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1))


def is_subreaper() -> bool:
    value = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value))
    return value.value != 0


def create_time(pid: int) -> float:
    """The start time of ``pid`` in epoch seconds, computed as psutil does (boot time plus
    the start time in clock ticks); raises ``ProcessLookupError`` if there is no such pid."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    try:
        stat = os.read(fd, 4096)  # (one read: the file is generated whole)
    finally:
        os.close(fd)
    ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22: starttime
    return ticks / _clock_ticks() + _boot_time()


@functools.cache
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


@functools.cache
def _boot_time() -> float:
    # The ``btime`` line of /proc/stat, as ``psutil.boot_time()`` reads it on Linux (the
    # fork server calls this per run and does not import psutil).
    with open("/proc/stat", "rb") as handle:
        for line in handle:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime line in /proc/stat")


# -- the marker -------------------------------------------------------------------------


def read_marker(pid: int) -> str | None:
    """The run id in ``pid``'s environment block, or None (no marker, gone, not ours)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            block = handle.read()
    except OSError:
        return None
    if block.startswith(_MARKER_KEY):
        start = len(_MARKER_KEY)
    else:
        found = block.find(b"\0" + _MARKER_KEY)
        if found < 0:
            return None
        start = found + 1 + len(_MARKER_KEY)
    end = block.find(b"\0", start)
    value = block[start : end if end >= 0 else len(block)]
    return value.decode("utf-8", "replace") or None


@dataclass(frozen=True, slots=True)
class MarkerSlot:
    """Where this process's marker value lives in memory (inherited by forked children)."""

    address: int
    room: int
    # The C library's environment entry for the marker points into the slot (nothing
    # called ``setenv`` for it): overwriting the slot is then what ``getenv`` and the
    # programs a run execs see, and ``os.environ`` needs only its own copy updated.
    c_environ: bool = False
    # Those ``room`` bytes, writable: made once where the slot is found, so that a forked
    # run writes its marker without a foreign function call (``ctypes.memmove`` cost a
    # run some 25 page copies, its first call in the process resolving symbols).
    memory: memoryview = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        view = memoryview((ctypes.c_char * self.room).from_address(self.address)).cast("B")
        object.__setattr__(self, "memory", view)


def marker_slot() -> MarkerSlot | None:
    """Find the marker placeholder in this process's original environment block.

    The block is what ``/proc/PID/environ`` shows; a forked child has it at the same
    address, so the fork server finds it once and each run overwrites it in place.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            stat = handle.read()
        with open("/proc/self/environ", "rb") as handle:
            block = handle.read()
    except OSError:
        return None
    env_start = int(stat[stat.rindex(b")") + 2 :].split()[47])  # field 50: env_start
    if block.startswith(_MARKER_KEY):
        start = len(_MARKER_KEY)
    else:
        found = block.find(b"\0" + _MARKER_KEY)
        if found < 0:
            return None
        start = found + 1 + len(_MARKER_KEY)
    end = block.find(b"\0", start)
    end = len(block) if end < 0 else end
    if env_start == 0 or end - start < 2:
        return None
    address = env_start + start
    return MarkerSlot(address, end - start, c_environ=_getenv_address(MARKER_ENV) == address)


def _getenv_address(name: str) -> int | None:
    """Where the C library's ``getenv(name)`` points (None: not set)."""
    getenv = _libc()["getenv"]  # (its own function object: the types set stay here)
    getenv.restype = ctypes.c_void_p
    getenv.argtypes = (ctypes.c_char_p,)
    address = getenv(os.fsencode(name))
    return int(address) if address else None


def _python_environ() -> dict[bytes, bytes] | None:
    """``os.environ``'s own mapping of encoded names to encoded values, where it is the
    plain dict CPython keeps (None elsewhere: then only ``os.environ[...] =`` is used)."""
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict) or sys.getfilesystemencoding().lower() not in _UTF8:
        return None
    return data


_UTF8: Final = frozenset({"utf-8", "utf8"})
_ENVIRON_DATA: Final = _python_environ()
_ENVIRON_KEY: Final = os.fsencode(MARKER_ENV)


def mark_this_process(run_id: str, slot: MarkerSlot | None) -> bool:
    """Carry ``run_id`` as the marker: for programs we exec, and in ``/proc/self/environ``
    when ``slot`` (from ``marker_slot`` in this process or a forked ancestor) is given."""
    value = run_id.encode()
    if slot is None or len(value) + 1 > slot.room:
        os.environ[MARKER_ENV] = run_id
        return False
    # The rest of the old value becomes a nameless entry, which environment parsers skip.
    slot.memory[:] = value + b"\0" + b"_" * (slot.room - len(value) - 1)
    if slot.c_environ and _ENVIRON_DATA is not None and run_id.isascii():
        # The C environment shows the slot already: only Python's copy is updated, not
        # through ``os.environ[...] =``, whose encoding and ``putenv`` (a new C string,
        # the environment array rewritten) cost a run some 30 page copies.
        _ENVIRON_DATA[_ENVIRON_KEY] = value
    else:
        os.environ[MARKER_ENV] = run_id
    return True


# -- finding processes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStat:
    state: str
    ppid: int
    pgid: int
    sid: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    parts = stat[stat.rindex(b")") + 2 :].split()
    return ProcStat(parts[0].decode(), int(parts[1]), int(parts[2]), int(parts[3]))


@functools.cache
def _children_files() -> bool:
    return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (of every thread of it)."""
    if not _children_files():
        import psutil  # (only where the kernel has no ``children`` files)

        try:
            return [p.pid for p in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                found.extend(int(p) for p in handle.read().split())
        except OSError:
            continue
    return found


def descendants(roots: Iterable[int], *, skip: Collection[int] = ()) -> list[int]:
    """Every process below ``roots`` (not the roots themselves), except the processes in
    ``skip`` and everything below them."""
    seen: set[int] = set()
    queue = list(roots)
    found: list[int] = []
    while queue:
        for child in children(queue.pop()):
            if child not in seen and child not in skip:
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def marked(
    run_id: str, *, roots: Sequence[int] | None = None, skip: Collection[int] = ()
) -> list[int]:
    """Processes carrying ``run_id``'s marker: below ``roots`` (not looking below the
    processes in ``skip``), or anywhere if None."""
    candidates = _all_pids() if roots is None else descendants(roots, skip=skip)
    me = os.getpid()
    return [pid for pid in candidates if pid != me and read_marker(pid) == run_id]


def sweep(
    run_id: str,
    *,
    roots: Sequence[int] | None = None,
    wait: float = 2.0,
    skip: Collection[int] = (),
) -> int:
    """SIGKILL every process carrying ``run_id``'s marker; return how many were killed.

    Looks below ``roots`` (cheap: a subreaper's subtree) or at every process (None).
    ``skip``: processes below ``roots`` whose subtrees cannot hold the run's processes
    (the main processes of a subreaper's other runs: an orphan is handed to the nearest
    subreaper *above* it, never into another run's tree), not looked at.
    Waits up to ``wait`` seconds for them to die, and looks again for what their death
    may have uncovered.
    """
    killed = 0
    for _ in range(5):
        pidfds: list[int] = []
        for pid in marked(run_id, roots=roots, skip=skip):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            # Opened first, checked second: the pidfd is the process we checked, or dead.
            if read_marker(pid) != run_id:
                os.close(pidfd)
                continue
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                os.close(pidfd)
                continue
            killed += 1
            pidfds.append(pidfd)
        if not pidfds:
            break
        _wait_pidfds(pidfds, wait)
    return killed


def _wait_pidfds(pidfds: list[int], wait: float) -> None:
    poller = select.poll()
    for pidfd in pidfds:
        poller.register(pidfd, select.POLLIN)
    pending = set(pidfds)
    deadline = time.monotonic() + wait
    try:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _ in poller.poll(remaining * 1000):
                pending.discard(fd)
                poller.unregister(fd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


def kill_leftovers(pid: int, pgid: int, create_time: float, *, run_id: str) -> int:
    """Kill what a dead manager left of a run; return how many processes were signalled.

    The process group is killed only if its leader is still the process that was started
    (same start time, within the drift of the boot time, and carrying the run's marker);
    every process carrying the run's marker is killed wherever it is.
    """
    import psutil  # (the manager's clean-up: kept out of the fork server and its runs)

    killed = 0
    with contextlib.suppress(psutil.Error, OSError):
        leader = psutil.Process(pid)
        if (
            abs(leader.create_time() - create_time) < 2.0
            and read_marker(pid) == run_id
            and os.getpgid(pid) == pgid
        ):
            os.killpg(pgid, signal.SIGKILL)
            killed += 1
    return killed + sweep(run_id, roots=None)


# -- reaping ----------------------------------------------------------------------------


class _OwnedChildren:
    """Children whose exit status a launcher collects itself (process-wide, like waitpid),
    and how many creations of such children are in progress (``reap_orphans`` waits for
    none to be; creations do not wait for each other)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.pids: set[int] = set()
        self.creating = 0

    def add(self, pid: int) -> None:
        with self.lock:
            self.pids.add(pid)


_OWNED = _OwnedChildren()
# How long ``reap_orphans`` waits for a moment when no child is being created.
REAP_WAIT_SECONDS: Final = 1.0


@contextlib.contextmanager
def owning_children() -> Iterator[Callable[[int], None]]:
    """Hold this while creating children that you will wait for; call the yielded
    function with each new pid. ``reap_orphans`` waits meanwhile, so it can never take
    the status of a child that exited before it was registered. Threads creating
    children do not wait for each other."""
    with _OWNED.lock:
        _OWNED.creating += 1
    try:
        yield _OWNED.add
    finally:
        with _OWNED.lock:
            _OWNED.creating -= 1
            if _OWNED.creating == 0:
                _OWNED.idle.notify_all()


def disown_child(pid: int) -> None:
    """The child's status has been collected: forget it."""
    with _OWNED.lock:
        _OWNED.pids.discard(pid)


def reap_orphans() -> list[tuple[int, int]]:
    """Reap exited orphans that reparented to this subreaper; return (pid, status) pairs.

    Only zombies in a session other than ours are reaped (every run calls ``setsid``, so
    its leftovers are never in the manager's session), and never a child a launcher
    waits for, so statuses that ``subprocess`` or the launchers need are never taken.
    """
    reaped: list[tuple[int, int]] = []
    my_sid = os.getsid(0)
    with _OWNED.lock:
        if not _OWNED.idle.wait_for(lambda: _OWNED.creating == 0, REAP_WAIT_SECONDS):
            return reaped  # children are being created all the time: next round
        for pid in children(os.getpid()):
            if pid in _OWNED.pids:
                continue
            stat = proc_stat(pid)
            if stat is None or stat.state != "Z" or stat.sid == my_sid:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                reaped.append((done, status))
    return reaped


def status_of(info: os.waitid_result) -> int:
    """The raw wait status (as ``waitpid`` gives it) of a ``waitid`` result."""
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    if info.si_code == os.CLD_DUMPED:
        return (info.si_status & 0x7F) | 0x80
    return info.si_status & 0x7F  # CLD_KILLED


# Python's own start-up dispositions: SIGINT raises KeyboardInterrupt, SIGPIPE and
# SIGXFSZ are ignored (writes then fail with an error instead of killing the process).
_PYTHON_IGNORES = frozenset(
    s for s in (getattr(signal, "SIGPIPE", None), getattr(signal, "SIGXFSZ", None)) if s
)


# (signal number, what it should be: a handler, or ``SIG_DFL``/``SIG_IGN`` as plain ints)
SignalReset = tuple[int, Callable[[int, FrameType | None], Any] | int]

# ``signal.signal`` turns the handler it replaces into a ``Handlers`` member, which for a
# Python function is an enum lookup that fails, raising and formatting a ValueError: in a
# forked run, resetting two signals that way cost some 80 page copies and 0.25 ms. The C
# function returns the old handler as it is (and takes SIG_DFL/SIG_IGN as plain ints).
_signal_module = importlib.import_module("_signal")
_set_handler: Callable[[int, Any], object] = _signal_module.signal
_PLAIN_HANDLERS: Final[dict[int, int]] = {
    int(signal.SIG_DFL): _signal_module.SIG_DFL,
    int(signal.SIG_IGN): _signal_module.SIG_IGN,
}


def reset_signal_dispositions(plan: Sequence[SignalReset] | None = None) -> None:
    """Give this process the signal handling of a freshly started Python program.

    Every signal goes back to its default action (also one that was ignored when the
    manager was started, e.g. SIGHUP under ``nohup``), except SIGINT (KeyboardInterrupt)
    and SIGPIPE/SIGXFSZ (ignored, as Python does; ``exec_command`` resets those for
    programs). The signal mask is cleared. ``plan``: what ``signal_resets`` found in
    this process or a forked ancestor whose dispositions have not changed since (a
    forked child then sets only those).
    """
    for signum, wanted in signal_resets() if plan is None else plan:
        try:
            _set_handler(signum, _plain_handler(wanted))
        except (OSError, ValueError, RuntimeError):
            continue
    set_signal_mask(signal.SIG_SETMASK, ())


def _plain_handler(
    handler: Callable[[int, FrameType | None], Any] | int,
) -> Callable[[int, FrameType | None], Any] | int:
    """``handler``, with SIG_DFL and SIG_IGN (members or ints) as ``_signal``'s own."""
    if isinstance(handler, int):
        return _PLAIN_HANDLERS.get(int(handler), handler)
    return handler


# ``signal.pthread_sigmask`` turns the previous mask into enum members, one by one: the
# fork server, which blocks some fifty signals, changes its mask twice per fork.
_sigmask: Callable[[int, Iterable[int]], object] = getattr(
    _signal_module, "pthread_sigmask", signal.pthread_sigmask
)


def set_signal_mask(how: int, signals: Iterable[int]) -> None:
    """``pthread_sigmask`` (raises ``OSError``) without building the previous mask."""
    _sigmask(how, signals)


def signal_resets() -> list[SignalReset]:
    """The signals whose disposition differs from a fresh Python program's, each with
    the one it should have (see ``reset_signal_dispositions``)."""
    plan: list[SignalReset] = []
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        wanted: Callable[[int, FrameType | None], Any] | signal.Handlers
        if signum == signal.SIGINT:
            wanted = signal.default_int_handler
        elif signum in _PYTHON_IGNORES:
            wanted = signal.SIG_IGN
        else:
            wanted = signal.SIG_DFL
        try:
            if signal.getsignal(signum) is not wanted:
                plan.append((signum, _plain_handler(wanted)))
        except (OSError, ValueError, RuntimeError):
            continue
    return plan
