"""The control socket's server against a hostile local client: another user, malformed
and huge requests, and a thousand idle connections, with a real manager behind it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.service.control import MAX_REQUEST_BYTES, SOCKET_NAME
from tests.os_users import as_user, throwaway_user
from tests.test_manager import make_service

# An interpreter the throwaway user may run (this one may live in root's home).
DEBIAN_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("control-server") / "state"
    running = make_service(directory)
    try:
        yield directory
    finally:
        running.close()


def connect(state: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(str(state / SOCKET_NAME))  # blocking: waits while the backlog is full
    connection.settimeout(30)
    return connection


def ask(state: Path, payload: bytes) -> dict[str, Any]:
    with connect(state) as connection:
        connection.sendall(payload)
        answer = connection.makefile("rb").readline()
    decoded = json.loads(answer)
    assert isinstance(decoded, dict)
    return decoded


def ping(state: Path) -> dict[str, Any]:
    return ask(state, b'{"v": 1, "op": "list"}\n')


def test_malformed_json_gets_one_answer_and_the_manager_goes_on(state: Path) -> None:
    for payload in (b"{not json\n", b"\xff\xfe\n", b"[" * 100_000 + b"\n", b"\n"):
        answer = ask(state, payload)
        assert answer == {"ok": False, "error": "malformed request", "exit_code": 2}
    assert ping(state)["ok"] is True


def test_a_100_mb_message_is_cut_off_and_the_manager_goes_on(state: Path) -> None:
    sent = 0
    answer = b""
    with connect(state) as connection:
        chunk = b"x" * (1 << 20)
        try:
            while sent < 100 * (1 << 20):
                connection.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = connection.makefile("rb").readline()
    assert sent < 100 * (1 << 20), "the server read on past its limit"
    decoded = json.loads(answer)
    assert decoded["ok"] is False
    assert f"request too large (over {MAX_REQUEST_BYTES} bytes)" == decoded["error"]
    assert ping(state)["ok"] is True


def test_a_thousand_idle_connections_do_not_keep_a_client_out(state: Path) -> None:
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):
            idle.append(connect(state))
        for connection in idle[::2]:
            # Half a request, never finished; the oldest idle ones are dropped by now.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.sendall(b'{"op": "li')
        started = time.monotonic()
        answer = ping(state)
        latency = time.monotonic() - started
        print(f"answer during 1,000 idle connections: {latency * 1000:.1f} ms")
        assert answer["ok"] is True
        assert latency < 5.0
    finally:
        for connection in idle:
            connection.close()
    assert ping(state)["ok"] is True


def test_another_os_user_is_refused_by_peer_credentials(state: Path) -> None:
    """Even with the socket file opened up to everyone, only the owner and root may talk."""
    with throwaway_user() as other:
        directory = os.open(state, os.O_PATH | os.O_DIRECTORY)
        old_dir_mode = os.stat(state).st_mode & 0o7777
        old_sock_mode = os.stat(state / SOCKET_NAME).st_mode & 0o7777
        os.chmod(state, 0o711)
        os.chmod(state / SOCKET_NAME, 0o666)
        try:
            script = (
                "import json, socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.connect(sys.argv[1])\n"
                "try:\n"
                '    s.sendall(b\'{"v": 1, "op": "list"}\\n\')\n'
                "except BrokenPipeError:\n"
                "    pass  # refused before the request was read: the answer is there\n"
                "print(s.makefile('rb').readline().decode())\n"
            )
            result = subprocess.run(
                [DEBIAN_PYTHON, "-I", "-c", script, f"/proc/self/fd/{directory}/{SOCKET_NAME}"],
                pass_fds=(directory,),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                **as_user(other),  # type: ignore[arg-type]
            )
        finally:
            os.chmod(state, old_dir_mode)
            os.chmod(state / SOCKET_NAME, old_sock_mode)
            os.close(directory)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "ok": False,
            "error": "permission denied",
            "exit_code": 5,
        }
    assert ping(state)["ok"] is True


def test_parallel_clients_each_get_their_answer(state: Path) -> None:
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client() -> None:
        answer = ping(state)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=client) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 50
    assert all(answer["ok"] for answer in answers)
