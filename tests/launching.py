"""Shared by the tests that run schedulers through the real launchers (``test_launcher``,
``test_child``, ``test_cgroups``): the ``launcher`` fixture over both launchers, and a
sink that keeps what a run sent. The schedulers are in ``tests/apps/misbehave.py``.

``tests/conftest.py`` makes the fixture available; a module may still define its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from supervisor.core.records import LogRecord, Source
from supervisor.runs.launcher import ForkServerLauncher, FreshInterpreterLauncher, Launcher

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.misbehave:cfg"

# An app whose one runner logs the version it was written with: tests rewrite it to see
# which load of the app a run came from.
VERSIONED_APP = """
from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("reload")
VERSION = "{version}"


def hello(ctx):
    scheduler.logger_from(ctx).info("version", version=VERSION)


cfgscheduler.enable(cfg).use_cases.configure(
    user.su(),
    scheduler.Options(id="hello", name="Hello", kind=scheduler.Kind.MANUAL, runner=hello),
)
"""


@pytest.fixture(scope="module", params=["fork", "fresh"])
def launcher(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    """A started launcher of ``APP`` (the fork server, then a fresh interpreter per run)."""
    made: Launcher
    if request.param == "fork":
        made = ForkServerLauncher(APP, cwd=str(ROOT))
    else:
        made = FreshInterpreterLauncher(APP, cwd=str(ROOT))
    made.start()
    yield made
    made.close()


class Collector:
    """A sink that keeps every batch (sinks are called from the supervising thread)."""

    def __init__(self) -> None:
        self.batches: list[Sequence[LogRecord]] = []
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[LogRecord]) -> None:
        with self.lock:
            self.batches.append(list(batch))

    @property
    def records(self) -> list[LogRecord]:
        with self.lock:
            return [record for batch in self.batches for record in batch]

    def messages(self, source: Source | None = None) -> list[str]:
        return [r.message for r in self.records if source is None or r.source is source]

    def logger(self) -> list[LogRecord]:
        return [r for r in self.records if r.source is Source.LOGGER]

    def find(self, message: str) -> LogRecord:
        """The first record with ``message``; fails naming what there was otherwise."""
        records = self.records
        found = [r for r in records if r.message == message]
        assert found, f"no record {message!r} in {[r.message for r in records]}"
        return found[0]
