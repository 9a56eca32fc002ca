"""``DirectoryWatch``: a change in a watched directory is seen by the next look, at once."""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.runs.filewatch import DirectoryWatch


def test_the_first_look_says_maybe_then_only_changes_do(tmp_path: Path) -> None:
    module = tmp_path / "app.py"
    module.write_text("A = 1\n")
    watch = DirectoryWatch([str(tmp_path)])
    try:
        assert watch.active
        assert watch.maybe_changed()  # what happened before the watch is not known
        assert not watch.maybe_changed()
        module.write_text("A = 2\n")
        assert watch.maybe_changed()  # seen by the very next look
        assert not watch.maybe_changed()
    finally:
        watch.close()


def test_a_file_replaced_by_a_rename_and_a_touch_are_seen(tmp_path: Path) -> None:
    module = tmp_path / "app.py"
    module.write_text("A = 1\n")
    watch = DirectoryWatch([str(tmp_path)])
    try:
        watch.maybe_changed()
        fresh = tmp_path / "app.py.new"
        fresh.write_text("A = 3\n")
        watch.maybe_changed()
        os.replace(fresh, module)
        assert watch.maybe_changed()
        os.utime(module, (0, 0))
        assert watch.maybe_changed()
        assert not watch.maybe_changed()
    finally:
        watch.close()


def test_a_directory_that_cannot_be_watched_always_says_maybe(tmp_path: Path) -> None:
    watch = DirectoryWatch([str(tmp_path / "missing")])
    assert not watch.active
    assert watch.maybe_changed()
    assert watch.maybe_changed()
    watch.close()


def test_a_closed_watch_says_maybe(tmp_path: Path) -> None:
    watch = DirectoryWatch([str(tmp_path)])
    watch.maybe_changed()
    watch.close()
    assert watch.maybe_changed()
