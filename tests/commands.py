"""The commands tests start: this interpreter, this checkout, default signal dispositions.

A test run started under ``nohup`` (or by a CI runner that ignores SIGHUP) would hand its
ignored SIGHUP to every program it starts: an ignored disposition survives ``exec``, and
``subprocess`` restores only SIGPIPE and SIGXFSZ. So every argv built here starts with
``env --default-signal`` (coreutils 8.31 and later; Debian 12 has 9.1), which sets every
signal back to its default before it execs the program, as a login shell would have it.
The process keeps its PID (``env`` execs). Imports the standard library only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIGNALS = ("/usr/bin/env", "--default-signal")


def command(argv: Sequence[str]) -> list[str]:
    """``argv`` started with every signal at its default disposition."""
    return [*DEFAULT_SIGNALS, *argv]


def python(*args: str) -> list[str]:
    """The argv that runs the interpreter running the tests with ``ARGS``."""
    return command([sys.executable, *args])


def supervisor(*args: str) -> list[str]:
    """The argv that runs ``supervisor ARGS`` with the interpreter running the tests."""
    return python("-m", "supervisor", *args)
