"""Threads that start runs on one fork server at once take turns reading its socket: a
read wakes only the thread it concerns (its answer, or a spare), the reader hands the
reading over to one waiting thread when it leaves, and no thread waits out its timeout.

The server here is the other end of a socket pair, answering when the test says so."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from supervisor.runs import forkclient
from supervisor.runs.forkclient import ServerHandle, Spare
from supervisor.runs.forkmessages import (
    Prepared,
    PrepareRequest,
    Spawned,
    SpawnRequest,
    decode,
    encode,
    receive,
)
from supervisor.runs.job import Job
from tests.waiting import wait_for

THREADS = 4


@dataclass
class FakePopen:
    """What the handle reads of its server's process: its pid."""

    pid: int


class RecordedSleeper(forkclient._Sleeper):
    made: ClassVar[list[RecordedSleeper]] = []

    def __init__(self, req: int | None, woken: threading.Condition) -> None:
        super().__init__(req, woken)
        RecordedSleeper.made.append(self)


@pytest.fixture
def sleepers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordedSleeper]]:
    RecordedSleeper.made = []
    monkeypatch.setattr(forkclient, "_Sleeper", RecordedSleeper)
    yield RecordedSleeper.made


@pytest.fixture
def pair() -> Iterator[tuple[ServerHandle, socket.socket]]:
    ours, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handle = ServerHandle(FakePopen(pid=os.getpid()), ours)  # type: ignore[arg-type]
    yield handle, server
    ours.close()
    server.close()


def fds(count: int) -> list[int]:
    return [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]


def test_each_spawn_answer_wakes_only_its_own_thread(
    pair: tuple[ServerHandle, socket.socket], sleepers: list[RecordedSleeper]
) -> None:
    handle, server = pair
    got: dict[int, tuple[int, float, int]] = {}
    lock = threading.Lock()

    def spawn(index: int) -> None:
        job = Job(scheduler_id=f"s{index}", run_id=uuid.uuid4().hex[:16], trigger="manual")
        sent = fds(1)
        try:
            answer = handle.request_spawn(job, sent)
        finally:
            for fd in sent:
                os.close(fd)
        with lock:
            got[index] = answer

    threads = {
        f"s{i}": threading.Thread(target=spawn, args=(i,), daemon=True) for i in range(THREADS)
    }
    for thread in threads.values():
        thread.start()
    requests: dict[int, str] = {}  # request number -> scheduler
    for _ in range(THREADS):
        packet, passed = receive(server, 4)
        for fd in passed:
            os.close(fd)
        request = decode(packet)
        assert isinstance(request, SpawnRequest)
        requests[request.req] = request.job.scheduler_id
    # Answered last request first, one at a time: one thread reads for everyone and files
    # each answer for its own thread; the others sleep until a read concerns them.
    for left, number in enumerate(sorted(requests, reverse=True)):
        wait_for(
            lambda left=left: len(handle._sleepers) == THREADS - left - 1,
            what="the threads without an answer but the reader to sleep",
        )
        pidfd = fds(1)
        socket.send_fds(
            server, [encode(Spawned(req=number, pid=1000 + number, create_time=0.0))], pidfd
        )
        os.close(pidfd[0])
        threads[requests[number]].join(30)
    for answer in got.values():
        os.close(answer[2])
    by_scheduler = {f"s{index}": answer[0] for index, answer in got.items()}
    assert by_scheduler == {scheduler: 1000 + n for n, scheduler in requests.items()}
    # Each sleeping thread slept once and was woken (for its answer), none timed out; a
    # wake for every read would have sent each back to sleep for each other answer.
    assert len(sleepers) == THREADS - 1
    assert all(sleeper.notified for sleeper in sleepers)


def test_each_spare_wakes_one_waiting_thread_and_the_reader_hands_over(
    pair: tuple[ServerHandle, socket.socket], sleepers: list[RecordedSleeper]
) -> None:
    handle, server = pair
    for _ in range(THREADS):
        handle.prepare(None)
    for _ in range(THREADS):
        request = decode(receive(server, 0)[0])
        assert isinstance(request, PrepareRequest)
    taken: list[Spare | None] = []
    lock = threading.Lock()

    def take() -> None:
        spare = handle.take_spare()
        with lock:
            taken.append(spare)

    threads = [threading.Thread(target=take, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(handle._sleepers) == THREADS - 1, what="the others to sleep")
    for number in range(THREADS):
        message = Prepared(cgroup=None, pid=2000 + number, create_time=0.0, placed=False)
        passed = fds(3)
        socket.send_fds(server, [encode(message)], passed)
        for fd in passed:
            os.close(fd)
    for thread in threads:
        thread.join(30)
    assert sorted(spare.pid for spare in taken if spare is not None) == [
        2000 + n for n in range(THREADS)
    ]
    for spare in taken:
        assert spare is not None
        for fd in (spare.pidfd, spare.status_r, spare.sock):
            os.close(fd)
    # The reader takes the spare it read and, leaving, wakes one thread to read in its
    # place: each sleeping thread slept once, woken, none timed out (nor woken for a
    # spare another took, which would send it back to sleep).
    assert len(sleepers) == THREADS - 1
    assert all(sleeper.notified for sleeper in sleepers)


def test_spares_filed_in_a_row_wake_one_waiting_thread_each(
    pair: tuple[ServerHandle, socket.socket],
) -> None:
    """Two spares filed before the first woken thread runs (a reader goes on reading
    under the lock) are for two threads: both to the first, the second would sleep on
    with a spare ready."""
    handle, _ = pair
    with handle._lock:
        first, second = (
            forkclient._Sleeper(None, threading.Condition(handle._lock)) for _ in range(2)
        )
        handle._sleepers[:] = [first, second]
        handle._wake_locked(None, spare=True)
        handle._wake_locked(None, spare=True)
        handle._sleepers.clear()
    assert first.notified and second.notified


def test_dropping_the_spares_wakes_the_threads_waiting_for_one(
    pair: tuple[ServerHandle, socket.socket],
) -> None:
    handle, server = pair
    handle.prepare(None)
    assert isinstance(decode(receive(server, 0)[0]), PrepareRequest)
    answered: list[tuple[int, float, int]] = []

    def spawn() -> None:
        job = Job(scheduler_id="reader", run_id=uuid.uuid4().hex[:16], trigger="manual")
        sent = fds(1)
        try:
            answered.append(handle.request_spawn(job, sent))
        finally:
            os.close(sent[0])

    reader = threading.Thread(target=spawn, daemon=True)
    reader.start()
    packet, passed = receive(server, 4)
    for fd in passed:
        os.close(fd)
    request = decode(packet)
    assert isinstance(request, SpawnRequest)
    wait_for(lambda: handle._reading, what="the spawning thread to read")
    taken: list[Spare | None] = []
    taker = threading.Thread(target=lambda: taken.append(handle.take_spare()), daemon=True)
    taker.start()
    wait_for(lambda: len(handle._sleepers) == 1, what="the taker to sleep")
    assert handle.drop_spares() == []
    # Woken at once with none, not left until its timeout (10 s).
    wait_for(lambda: taken == [None], timeout=5, what="the taker to give up")
    pidfd = fds(1)
    socket.send_fds(server, [encode(Spawned(req=request.req, pid=43, create_time=0.0))], pidfd)
    os.close(pidfd[0])
    reader.join(30)
    assert [answer[0] for answer in answered] == [43]
    os.close(answered[0][2])
