"""What both launchers need to create processes: one long-lived thread, and the boot code.

Process creation happens on one long-lived thread per launcher, because
PR_SET_PDEATHSIG fires when the *thread* that created a process exits.

May import the stdlib only.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Spawner:
    """The one long-lived thread that creates a launcher's processes."""

    def __init__(self, name: str) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread; its exception is raised here."""
        return self._executor.submit(fn).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def boot_code(module: str, function: str = "main") -> str:
    """``python -c`` code that imports this same ``supervisor`` package and runs ``main``,
    with default signal dispositions (an ignored SIGHUP the manager inherited, say, is
    not passed on; see ``procs.reset_signal_dispositions``)."""
    parent = str(Path(__file__).resolve().parents[2])
    return (
        f"import sys; p = {parent!r}; p in sys.path or sys.path.insert(0, p); "
        "from supervisor.runs.procs import reset_signal_dispositions; "
        "reset_signal_dispositions(); "
        f"from supervisor.{module} import {function}; {function}(sys.argv[1:])"
    )


def path_args(paths: Sequence[str]) -> list[str]:
    return [arg for path in paths for arg in ("--path", str(path))]
