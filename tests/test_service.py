"""Starting the manager: a bad address or a busy state directory fails before any run."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from supervisor.core.errors import DefinitionError, StoreError
from supervisor.service.manager_mode import RunOptions, Service
from supervisor.store.sqlite import SqliteStore
from supervisor.web.server import start_admin

APP = "tests.apps.manager_jobs:cfg"


def test_an_admin_port_in_use_fails_the_start_before_any_run(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        service = Service(
            RunOptions(app_spec=APP, state_dir=tmp_path, admin=("127.0.0.1", port)),
            log=io.StringIO(),
            admin_factory=start_admin,
        )
        with pytest.raises(DefinitionError) as caught:
            service.start()
        service.close()
    assert caught.value.field == "--admin"
    assert f"127.0.0.1:{port}" in str(caught.value)
    with SqliteStore.open(tmp_path / "state.db") as store:
        assert store.runs("m.oneshot") == []
        assert store.runs("m.repeat") == []


def test_one_manager_per_state_directory(tmp_path: Path) -> None:
    first = Service(RunOptions(app_spec=APP, state_dir=tmp_path, admin=None), log=io.StringIO())
    first.start()
    try:
        second = Service(
            RunOptions(app_spec=APP, state_dir=tmp_path, admin=None), log=io.StringIO()
        )
        with pytest.raises(StoreError, match=r"another manager \(pid \d+\) is already running"):
            second.start()
        second.close()
    finally:
        first.close()
