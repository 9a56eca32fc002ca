"""Leaving out threading's and logging's lock-resetting fork hooks: what a forked child
can still do, which hooks stay, and when nothing is left out. Each in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the hooks are left out on CPython 3.11 only"
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_child_logs_from_new_threads_and_other_fork_hooks_still_run() -> None:
    result = run_python(
        """
        import logging, os, random, sys, threading
        from supervisor.runs import atfork
        logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO)
        hooks = []
        os.register_at_fork(after_in_child=lambda: hooks.append("child"))
        print("dropped", atfork.drop_lock_hooks(), atfork.drop_lock_hooks(), flush=True)
        logging.info("parent logs")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            # Another thread logging (logging's module lock, a handler's lock) and joined.
            worker = threading.Thread(target=lambda: logging.getLogger("w").info("thread logs"))
            worker.start()
            worker.join(10)
            ok = not worker.is_alive() and hooks == ["child"]
            ok = ok and threading.main_thread() is threading.current_thread()
            os.write(w, repr(random.random()).encode())
            print("child", ok, flush=True)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("reseeded", float(os.read(r, 100)) != random.random())
        logging.info("parent logs again")
        print("status", status)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "dropped True False",
        "parent logs",
        "thread logs",
        "child True",
        "reseeded True",  # random's hook stayed: the child has its own sequence
        "parent logs again",
        "status 0",
    ]


def test_with_another_thread_alive_nothing_is_left_out() -> None:
    result = run_python(
        """
        import threading
        from supervisor.runs import atfork
        stop = threading.Event()
        worker = threading.Thread(target=stop.wait)
        worker.start()
        print(atfork.drop_lock_hooks())
        stop.set()
        worker.join()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
