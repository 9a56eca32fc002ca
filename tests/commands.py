"""The ``supervisor`` command as tests start it: this interpreter, this checkout."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def supervisor(*args: str) -> list[str]:
    """The argv that runs ``supervisor ARGS`` with the interpreter running the tests."""
    return [sys.executable, "-m", "supervisor", *args]
