"""Waiting on conditions with deadlines (never fixed sleeps)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def end_process(process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> bytes:
    """SIGTERM ``process`` if it still runs and reap it within ``timeout`` seconds, killing
    it past that (a test's cleanup never leaves it behind); its stderr where piped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=timeout)
        return stderr or b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
