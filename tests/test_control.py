"""The control socket: every request, however malformed, gets exactly one clear answer; the
typed client reads every answer back into values and typed errors without losing a field."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.cli import views
from supervisor.cli.client import ControlClient, error_from_answer
from supervisor.core.errors import (
    ActionFailed,
    AlreadyRunning,
    AppLoadError,
    BackendError,
    DefinitionError,
    ManagerUnavailable,
    PermissionDenied,
    StoreError,
    SupervisorError,
    UnknownAction,
    UnknownRun,
    UnknownScheduler,
)
from supervisor.core.records import LogQuery, State
from supervisor.core.settings import SettingsChange
from supervisor.service.control import SOCKET_NAME
from supervisor.service.manager_mode import Service
from tests.test_manager import make_service
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    state = tmp_path_factory.mktemp("control") / "state"
    running = make_service(state)
    yield running
    running.close()


def raw_request(state_dir: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        connection.connect(str(state_dir / SOCKET_NAME))
        connection.sendall(payload)
        answer = connection.makefile("rb").readline()
    decoded = json.loads(answer)
    assert isinstance(decoded, dict)
    return decoded


@pytest.mark.parametrize(
    ("request_", "mentions"),
    [
        ({"op": "settings", "args": {"id": "m.waiting", "changes": [1]}}, "changes"),
        ({"op": "settings", "args": {"id": "m.waiting", "changes": "abc"}}, "changes"),
        (
            {"op": "settings", "args": {"id": "m.waiting", "changes": {"pause_time": 1e300}}},
            "pause_time",
        ),
        ({"op": "runs", "args": {"id": "m.repeat", "limit": 10**30}}, "limit"),
        ({"op": "logs", "args": {"id": "m.repeat", "limit": "abc"}}, "limit"),
        ({"op": "logs", "args": {"id": "m.repeat", "run_id": [1]}}, "run_id"),
        ({"op": "logs", "args": {"id": "m.repeat", "after": "x"}}, "after"),
        ({"op": "status", "args": {"id": 5}}, "id"),
        ({"op": "status", "args": []}, "args"),
        ({"op": "execute"}, "id"),
        ({"op": "launch-missiles"}, "unknown operation"),
        ({"nope": 1}, "malformed request"),
    ],
)
def test_malformed_arguments_are_named(
    service: Service, request_: dict[str, Any], mentions: str
) -> None:
    answer = raw_request(service.state_dir, json.dumps(request_).encode() + b"\n")
    assert answer["ok"] is False
    assert answer["exit_code"] == 2
    assert mentions in answer["error"]


def test_garbage_lines_get_an_answer(service: Service) -> None:
    for payload in (b"[" * 100_000 + b"\n", b"\xff\xfe not json\n", b"\n", b"null\n"):
        answer = raw_request(service.state_dir, payload)
        assert answer == {"ok": False, "error": "malformed request", "exit_code": 2}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    op=st.sampled_from(["status", "runs", "logs", "settings", "start", "execute", "action"]),
    args=st.dictionaries(
        st.sampled_from(
            ["id", "limit", "run_id", "after", "before", "level", "changes", "reset", "action"]
        ),
        json_values,
        max_size=5,
    ),
)
def test_junk_arguments_never_go_unanswered(
    service: Service, op: str, args: dict[str, Any]
) -> None:
    if op in ("start", "execute", "settings", "action") and isinstance(args.get("id"), str):
        args["id"] = "no.such.scheduler"  # never change the real ones
    answer = raw_request(service.state_dir, json.dumps({"op": op, "args": args}).encode() + b"\n")
    assert set(answer) in ({"ok", "result"}, {"ok", "error", "exit_code"})
    if not answer["ok"]:
        assert answer["exit_code"] in (2, 3)
        assert not answer["error"].startswith("internal error")


def test_errors_of_the_use_cases_keep_their_exit_codes(service: Service) -> None:
    client = ControlClient(service.state_dir)
    with pytest.raises(UnknownScheduler) as caught:
        client.status("nope")
    assert caught.value.exit_code == 3
    assert caught.value.scheduler_id == "nope"


def test_a_vanished_manager_is_a_clear_error(tmp_path: Path) -> None:
    # A socket that accepts and then closes without answering, like a manager that died.
    path = tmp_path / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        client = ControlClient(tmp_path, timeout=5)

        def accept_and_close() -> None:
            connection, _ = listener.accept()
            connection.close()

        closer = threading.Thread(target=accept_and_close)
        closer.start()
        with pytest.raises(ManagerUnavailable, match=r"gave no answer|lost the connection"):
            client.statuses()
        closer.join()


# -- the typed client ----------------------------------------------------------------------


def test_the_typed_values_print_exactly_what_the_manager_sent(service: Service) -> None:
    # --json prints the client's values: they must carry every field the socket gave.
    client = ControlClient(service.state_dir)
    wait_for(
        lambda: client.status("m.oneshot").state is State.STOPPED,
        timeout=30,
        what="the start-up run",
    )
    run_id = client.execute("m.oneshot")
    wait_for(
        lambda: client.runs("m.oneshot", limit=1)[0].outcome is not None,
        timeout=30,
        what="the run to end",
    )
    # Two reads: a repeating scheduler may start or end a run between them.
    wait_for(
        lambda: client.call("list") == [views.status_json(s) for s in client.statuses()],
        timeout=10,
        what="the raw and the typed list to agree",
    )
    for scheduler_id in ("m.cron", "m.oneshot", "m.fail"):
        assert client.call("status", id=scheduler_id) == views.status_json(
            client.status(scheduler_id)
        )
    assert client.call("runs", id="m.oneshot", limit=5) == [
        views.run_json(r) for r in client.runs("m.oneshot", limit=5)
    ]
    raw_logs = client.call("logs", id="m.oneshot", run_id=run_id, limit=50)
    typed_logs = client.logs(LogQuery(scheduler_id="m.oneshot", run_id=run_id, limit=50))
    assert len(raw_logs) >= 2 and len(raw_logs) == len(typed_logs)
    for raw, (cursor, record) in zip(raw_logs, typed_logs, strict=True):
        assert raw == {**views.log_json(record), "cursor": cursor}
    after = client.logs(
        LogQuery(scheduler_id="m.oneshot", run_id=run_id, after=typed_logs[0][0], limit=50)
    )
    assert [c for c, _ in after] == [c for c, _ in typed_logs[1:]]
    changed = client.update_settings("m.waiting", SettingsChange(pause_time=timedelta(seconds=90)))
    assert changed.effective.pause_time == timedelta(seconds=90)
    assert dict(changed.overrides) == {"pause_time": timedelta(seconds=90)}
    assert client.call("settings", id="m.waiting") == views.settings_view_json(
        client.find_settings("m.waiting")
    )
    assert client.reset_settings("m.waiting").overrides == {}
    assert client.info().pid == os.getpid()


@pytest.mark.parametrize(
    ("error", "fields"),
    [
        (DefinitionError("pause_time", "must not be negative"), {"field": "pause_time"}),
        (UnknownScheduler("a.b"), {"scheduler_id": "a.b"}),
        (UnknownRun("no run with id 'r1'"), {}),
        (UnknownAction("scheduler 'a' has no action 'x'"), {}),
        (AlreadyRunning("a.b", "r-7"), {"scheduler_id": "a.b", "run_id": "r-7"}),
        (PermissionDenied("olga", "stop"), {"subject": "olga", "permission": "stop"}),
        (AppLoadError("cannot import module 'x'"), {}),
        (StoreError("disk full"), {}),
        (ManagerUnavailable("gone"), {}),
        (BackendError("systemctl failed"), {}),
        (ActionFailed("RuntimeError: down"), {}),
    ],
)
def test_each_answer_error_comes_back_as_its_type(
    error: SupervisorError, fields: dict[str, str]
) -> None:
    again = error_from_answer(str(error), error.exit_code)
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert again.exit_code == error.exit_code
    for name, value in fields.items():
        assert getattr(again, name) == value


def test_an_answer_error_that_fits_no_type_keeps_its_message_and_code() -> None:
    again = error_from_answer("permission denied", 5)  # the socket's peer check
    assert (str(again), again.exit_code) == ("permission denied", 5)
    assert error_from_answer("malformed request", 2).exit_code == 2
    assert error_from_answer("something new", 42).exit_code == 42


def test_the_client_speaks_the_servers_protocol_constants() -> None:
    from supervisor.cli import client
    from supervisor.service import control

    assert client.PROTOCOL_VERSION == control.PROTOCOL_VERSION
    assert client.MAX_SOCKET_PATH == control.MAX_SOCKET_PATH
    assert client.SOCKET_NAME == control.SOCKET_NAME
