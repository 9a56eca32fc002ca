"""A store that fails and works by turns (a real ``state.db`` on a small file system that
is filled and freed again): one probe that goes through between failures ends nothing, the
outage ends once the writes have held, and a store that keeps flapping is told as one long
outage (then, relapsing soon after an end, as outages that need longer to end), not as a
stream of starts and ends. The settling is measured on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.core.clock import FakeClock
from supervisor.core.errors import StoreError
from supervisor.core.storeproblems import StoreProblem
from supervisor.service.storewatch import StoreProbe, WatchedStore, as_store
from supervisor.store.sqlite import SqliteStore, state_db_path
from supervisor.usecases.health import FLAP_WINDOW_SECONDS, SETTLE_SECONDS, StoreHealth
from tests.fullfs import SmallFilesystem, small_filesystem

__all__ = ["small_filesystem"]

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


class Told:
    """The outages as the manager's once-a-second look sees them: starts and ends."""

    def __init__(self, health: StoreHealth) -> None:
        self._health = health
        self._since: datetime | None = None
        self.starts = 0
        self.ends = 0

    def look(self) -> bool:
        """Whether an outage goes on now (counting a start or an end since the last look)."""
        outage = self._health.outage()
        since = None if outage is None else outage.since
        if since != self._since:
            if self._since is not None:
                self.ends += 1
            if since is not None:
                self.starts += 1
        self._since = since
        return outage is not None


def test_a_flapping_store_is_one_outage_until_its_writes_hold(
    small_filesystem: SmallFilesystem, tmp_path: Path
) -> None:
    clock = FakeClock(start=NOW)
    health = StoreHealth(monotonic=clock.monotonic)
    told = Told(health)
    path = state_db_path(small_filesystem.root / "state")
    with SqliteStore.open(path) as raw:
        store = as_store(WatchedStore(raw, health, clock, path=path))
        probe = StoreProbe(store, health, clock)  # its thread not started: probed by hand
        written = 0

        def real_write_fails() -> None:
            nonlocal written
            written += 1
            with pytest.raises(StoreError, match="full"):
                store.set_meta(f"k{written}", "x" * 20_000)

        for _ in range(10):  # full, free for a probe, full again: once a second
            small_filesystem.fill()
            real_write_fails()
            assert told.look()
            small_filesystem.free()
            assert probe.probe()  # it went through, and ends nothing
            assert told.look()
            clock.advance(1.0)
        assert (told.starts, told.ends) == (1, 0)
        outage = health.outage()
        assert outage is not None and outage.problem is StoreProblem.DISK_FULL
        assert outage.since == NOW  # the first failure's time: one outage all along
        # The space stays: the next probe far enough after the first ends it.
        assert probe.probe() and told.look()
        clock.advance(SETTLE_SECONDS)
        assert probe.probe()
        assert not told.look() and (told.starts, told.ends) == (1, 1)
        assert not probe.probe()  # no outage: nothing to probe

        # Full again right after the end: a flap, whose end needs twice as long.
        small_filesystem.fill()
        real_write_fails()
        assert told.look() and health.settle_seconds == 2 * SETTLE_SECONDS
        small_filesystem.free()
        assert probe.probe()
        clock.advance(SETTLE_SECONDS)
        assert probe.probe() and told.look()  # held 1.5 s: not yet
        clock.advance(SETTLE_SECONDS)
        assert probe.probe() and not told.look()
        assert (told.starts, told.ends) == (2, 2)

        # Long after the last end, an outage is no flap: it settles as the first did.
        clock.advance(FLAP_WINDOW_SECONDS)
        small_filesystem.fill()
        real_write_fails()
        assert told.look() and health.settle_seconds == SETTLE_SECONDS
        small_filesystem.free()
        assert probe.probe()
        clock.advance(SETTLE_SECONDS)
        assert probe.probe() and not told.look()
        assert (told.starts, told.ends) == (3, 3)
