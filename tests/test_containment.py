"""``runs.containment``: what status says is in force stays true when a run's cgroup
cannot be made (the run then falls back to its process group and marker)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from supervisor.runs.containment import PROCESS_GROUP, Containment
from tests.test_cgroups import Made, made  # noqa: F401 - the fixture


class FlakyRoot:
    """A cgroup root whose ``create`` fails while ``broken`` is set."""

    kind = "cgroup v2"

    def __init__(self) -> None:
        self.broken = True
        self.made: list[str] = []

    def create(self, run_id: str) -> Any:
        if self.broken:
            raise OSError(28, "No space left on device")
        self.made.append(run_id)
        return Path("/sys/fs/cgroup") / run_id

    def leftovers(self) -> list[Any]:
        return []


def test_without_cgroups_the_process_group_is_named() -> None:
    assert Containment(None).kind == PROCESS_GROUP
    assert Containment(None).create("r1") is None


def test_regression_a_run_without_its_cgroup_is_counted_and_reported_once_a_streak() -> None:
    """Before: a failed cgroup creation fell back silently while status said cgroup v2."""
    root, reports = FlakyRoot(), []
    containment = Containment(cast(Any, root), report=reports.append)
    assert containment.kind == "cgroup v2"
    assert containment.create("r1") is None
    assert containment.create("r2") is None
    assert containment.kind == f"cgroup v2 (2 run(s) without: {PROCESS_GROUP})"
    assert len(reports) == 1 and "r1" in reports[0] and "No space left" in reports[0]
    root.broken = False
    assert containment.create("r3") == Path("/sys/fs/cgroup/r3")
    assert reports[1:] == ["run cgroups can be made again"]
    assert containment.uncontained == 2


def test_release_removes_an_empty_cgroup_and_ends_what_is_left_in_another(
    made: Made,  # noqa: F811 - the fixture imported above
) -> None:
    root = made.root()
    empty, busy = made.create(root), made.create(root)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        busy.join(sleeper.pid)
        containment = Containment(root)
        containment.release(empty)
        containment.release(busy)
        containment.close()  # waits for the remover
        assert not empty.path.exists()
        assert not busy.path.exists()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()
