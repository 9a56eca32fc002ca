"""Spawns from several threads at once on one fork-server launcher (no lock held for the
server's round trip): every run starts, is told apart, and ends well; a dead server is
replaced once, not once per waiting thread; ``reap_orphans`` is not shut out for long.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from supervisor.core.records import Outcome
from supervisor.runs import procs
from supervisor.runs.containment import Containment
from supervisor.runs.forklauncher import ForkServerLauncher
from supervisor.runs.job import Job
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.misbehave:cfg"
THREADS = 8


def job(scheduler_id: str = "ok") -> Job:
    return Job(scheduler_id=scheduler_id, run_id=uuid.uuid4().hex[:16], trigger="manual")


def spawn_and_watch(launcher: ForkServerLauncher) -> tuple[int, Outcome, str]:
    records: list[str] = []
    spawned = launcher.spawn(job())
    exit_ = spawned.supervise(
        sink=lambda batch: records.extend(r.message for r in batch),
        timeout=60,
        cancel=threading.Event(),
    )
    return spawned.pid, exit_.outcome, ",".join(records)


def test_runs_spawned_from_many_threads_at_once_all_start_and_succeed() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT))
    launcher.start()
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(lambda _: spawn_and_watch(launcher), range(THREADS * 4)))
        assert [outcome for _, outcome, _ in results] == [Outcome.SUCCEEDED] * len(results)
        assert all("hello" in messages for _, _, messages in results)
        assert launcher.restarts == 0
    finally:
        launcher.close()


def test_a_dead_server_is_replaced_once_for_all_the_threads_spawning_then() -> None:
    launcher = ForkServerLauncher(APP, cwd=str(ROOT))
    launcher.start()
    try:
        old = launcher.server_pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{old}/stat").exists() or _zombie(old), what="death")
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(lambda _: spawn_and_watch(launcher), range(THREADS)))
        assert [outcome for _, outcome, _ in results] == [Outcome.SUCCEEDED] * THREADS
        assert launcher.restarts == 1
        assert launcher.server_pid not in (None, old)
    finally:
        launcher.close()


def test_creators_do_not_wait_for_each_other_and_reaping_gives_up_a_round() -> None:
    entered = threading.Event()
    release = threading.Event()

    def creating() -> None:
        with procs.owning_children():
            entered.set()
            release.wait(60)

    def other_creator() -> None:
        with procs.owning_children() as own:
            own(-1)
        procs.disown_child(-1)

    creator = threading.Thread(target=creating)
    creator.start()
    try:
        assert entered.wait(10)
        # Both return while the first creation is still in flight (``release`` unset).
        for target in (other_creator, procs.reap_orphans):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            wait_for(lambda t=thread: not t.is_alive(), timeout=10, what=target.__name__)
        assert creator.is_alive()
    finally:
        release.set()
        creator.join(10)


def test_the_sweep_at_a_runs_end_finds_its_orphan_while_other_runs_go_on() -> None:
    """Without cgroups the server's marker sweep is what ends a run's leftovers; it
    does not look below the other runs' processes, and must still find them."""
    launcher = ForkServerLauncher(APP, cwd=str(ROOT), containment=Containment(None))
    launcher.start()
    others = [launcher.spawn(job("cooperative")) for _ in range(3)]
    try:
        records: list[tuple[str, dict[str, object]]] = []
        exit_ = launcher.spawn(job("grandchild")).supervise(
            sink=lambda batch: records.extend((r.message, dict(r.fields)) for r in batch),
            timeout=60,
            cancel=threading.Event(),
        )
        assert exit_.outcome is Outcome.SUCCEEDED
        fields = next(f for message, f in records if message == "grandchild")
        orphan = int(str(fields["pid"]))
        wait_for(lambda: _zombie(orphan), what="the run's orphan to be killed")
        assert all(_alive(other.pid) for other in others)
    finally:
        for other in others:
            cancel = threading.Event()
            cancel.set()
            other.supervise(sink=lambda batch: None, timeout=60, cancel=cancel)
        launcher.close()


def _alive(pid: int) -> bool:
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].startswith(b"Z")
