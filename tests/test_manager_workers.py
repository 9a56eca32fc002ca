"""The manager's reused watcher threads (``manager.workers``), with real threads."""

from __future__ import annotations

import threading

from supervisor.manager.workers import Workers
from tests.waiting import wait_for


def test_jobs_one_after_another_reuse_one_thread() -> None:
    workers = Workers("test-worker")
    seen: list[int] = []
    for _ in range(20):
        done = threading.Event()

        def job(done: threading.Event = done) -> None:
            seen.append(threading.get_ident())
            done.set()

        workers.run(job)
        assert done.wait(10)
        assert workers.wait_idle(10)
        # The thread went back to waiting: the next job is handed to it.
        wait_for(lambda: workers.threads == 1, what="one thread")
    assert len(seen) == 20 and len(set(seen)) == 1


def test_jobs_at_the_same_time_each_get_a_thread_and_wait_idle_waits_for_all() -> None:
    workers = Workers("test-worker")
    release = threading.Event()
    started = threading.Semaphore(0)

    def job() -> None:
        started.release()
        release.wait(10)

    for _ in range(5):
        workers.run(job)
    for _ in range(5):
        assert started.acquire(timeout=10)  # all five run at once: none waits for another
    assert workers.threads == 5
    assert not workers.wait_idle(0.1)
    release.set()
    assert workers.wait_idle(10)


def test_an_idle_thread_exits_and_a_failing_job_does_not_stop_its_thread() -> None:
    workers = Workers("test-worker", idle_seconds=0.05)
    ran = threading.Event()

    def failing() -> None:
        raise ValueError("the job's own failure")

    hook = threading.excepthook
    threading.excepthook = lambda args: None  # the failure is the job's, reported by Python
    try:
        workers.run(failing)
        wait_for(lambda: workers.threads == 0, timeout=10, what="the idle thread to exit")
        workers.run(ran.set)  # a new thread is started for it
        assert ran.wait(10)
        assert workers.wait_idle(10)
    finally:
        threading.excepthook = hook
