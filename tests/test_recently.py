"""``usecases.recently``: a key is due again once its window passed, and the memory holds
at most ``max_keys`` keys whatever comes (the oldest forgotten first)."""

from __future__ import annotations

from supervisor.usecases.recently import Recently
from tests.test_web_auth import Tick


def test_a_key_is_due_once_per_window() -> None:
    tick = Tick()
    noted = Recently(window=3600, monotonic=tick)
    assert noted.due("a")
    noted.note("a")
    assert not noted.due("a") and noted.due("b")
    tick.now += 3599
    assert not noted.due("a")
    tick.now += 1
    assert noted.due("a")


def test_the_memory_is_bounded() -> None:
    noted = Recently(window=3600, monotonic=Tick(), max_keys=3)
    for key in range(10_000):
        noted.note(key)
    assert [noted.due(key) for key in (9_996, 9_997, 9_998, 9_999)] == [True, False, False, False]
    assert len(noted) == 3
