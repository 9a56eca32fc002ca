"""The control socket: how the CLI reaches a running manager (the server half; the
client is ``supervisor.cli.client``).

A Unix stream socket ``control.sock`` in the state directory, usable only by the
manager's owner (mode 0600 and a peer-credential check). One JSON request line in, one
JSON answer line out; the answers use the ``--json`` shapes of ``serialize``.
May import ``usecases``, ``serialize``, ``durations``, ``user``, ``records`` and ``errors``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from supervisor.core.access import Subject, os_user_name, su
from supervisor.core.errors import DefinitionError, SupervisorError
from supervisor.core.records import Level, LogQuery
from supervisor.core.settings import SettingsChange
from supervisor.usecases import reads, serialize
from supervisor.usecases.schedulers import UseCases

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 1 << 20
PROTOCOL_VERSION = 1
# sockaddr_un holds 108 bytes; longer paths are reached through /proc/self/fd.
MAX_SOCKET_PATH = 100
# A client has this long to send its request line (the CLI sends it at once).
REQUEST_TIMEOUT_SECONDS = 10.0
ANSWER_TIMEOUT_SECONDS = 30.0
LISTEN_BACKLOG = 128
MAX_PENDING_CONNECTIONS = 256
WORKER_THREADS = 8
_SWEEP_SECONDS = 0.5
_ACCEPTS_PER_WAKE = 64
_READ_CHUNK = 65536
MAX_LIMIT = 100_000


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """A path to ``path`` that fits in a socket address."""
    if len(str(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


class Arguments:
    """A request's arguments, read with their types checked (``DefinitionError`` otherwise)."""

    def __init__(self, raw: object) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise DefinitionError("args", "must be an object")
        self._raw: dict[str, Any] = raw

    def text(self, name: str) -> str:
        value = self._raw.get(name)
        if not isinstance(value, str) or not value:
            raise DefinitionError(name, "must be a non-empty string")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self._raw.get(name) is None else self.text(name)

    def number(self, name: str, *, default: int, high: int) -> int:
        value = self._raw.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
            raise DefinitionError(name, f"must be a whole number from 1 to {high}")
        return value

    def cursor(self, name: str) -> int | None:
        value = self._raw.get(name)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise DefinitionError(name, "must be a cursor from an earlier answer")
        return value

    def flag(self, name: str) -> bool:
        value = self._raw.get(name, False)
        if not isinstance(value, bool):
            raise DefinitionError(name, "must be true or false")
        return value

    def pairs(self, name: str) -> tuple[tuple[str, str], ...]:
        value = self._raw.get(name) or []
        if not isinstance(value, list) or not all(
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(part, str) for part in pair)
            and pair[0]
            for pair in value
        ):
            raise DefinitionError(name, "must be a list of [name, value] pairs of text")
        return tuple((pair[0], pair[1]) for pair in value)

    def time(self, name: str) -> datetime | None:
        value = self._raw.get(name)
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.utcoffset() is None:
            raise DefinitionError(name, "must be an ISO 8601 time with its UTC offset")
        return moment

    def mapping(self, name: str) -> dict[str, Any]:
        value = self._raw.get(name) or {}
        if not isinstance(value, dict):
            raise DefinitionError(name, "must be an object")
        return value


def _level(value: str | None) -> Level | None:
    if value is None:
        return None
    try:
        return Level.parse(value)
    except ValueError as error:
        raise DefinitionError("level", str(error)) from None


def _until(text: str) -> datetime:
    """The end of a pause as the client sends it: ISO 8601 with an offset."""
    try:
        until = datetime.fromisoformat(text)
    except ValueError:
        raise DefinitionError("until", f"must be an ISO 8601 time, not {text!r}") from None
    if until.tzinfo is None:
        raise DefinitionError("until", "must carry its offset")
    return until


class Dispatcher:
    """Turns one request into one use-case call and its JSON answer."""

    def __init__(self, use_cases: UseCases, info: Mapping[str, Any]) -> None:
        self._use_cases = use_cases
        self._info = dict(info)
        self._ops: dict[str, Callable[[Subject, Arguments], Any]] = {
            "ping": lambda s, a: self._info,
            "list": self._list,
            "status": self._status,
            "start": lambda s, a: use_cases.start(s, a.text("id")),
            "stop": lambda s, a: use_cases.stop(s, a.text("id"), reason=a.optional_text("reason")),
            "pause": lambda s, a: use_cases.pause(
                s, a.text("id"), until=_until(a.text("until")), reason=a.optional_text("reason")
            ),
            "resume": lambda s, a: use_cases.resume(s, a.text("id")),
            "disable": lambda s, a: use_cases.disable(
                s, a.text("id"), reason=a.optional_text("reason")
            ),
            "enable": lambda s, a: use_cases.enable(s, a.text("id")),
            "execute": lambda s, a: {"run_id": use_cases.execute(s, a.text("id"))},
            "runs": lambda s, a: [
                serialize.run_json(r)
                for r in use_cases.runs(
                    s, a.text("id"), limit=a.number("limit", default=50, high=MAX_LIMIT)
                )
            ],
            "logs": self._logs,
            "search": self._search,
            "settings": self._settings,
            "action": lambda s, a: {
                "result": use_cases.run_action(s, a.text("id"), a.text("action"))
            },
        }

    def _list(self, subject: Subject, _args: Arguments) -> Any:
        """Every status, each with the store's outage while there is one (``store``)."""
        statuses = self._use_cases.list(subject)
        trouble = self._use_cases.store_health(subject)
        return [serialize.with_store(serialize.status_json(s), trouble) for s in statuses]

    def _status(self, subject: Subject, args: Arguments) -> Any:
        status = self._use_cases.status(subject, args.text("id"))
        trouble = self._use_cases.store_health(subject)
        return serialize.with_store(serialize.status_json(status), trouble)

    def _logs(self, subject: Subject, args: Arguments) -> Any:
        query = LogQuery(
            scheduler_id=args.text("id"),
            run_id=args.optional_text("run_id"),
            min_level=_level(args.optional_text("level")),
            after=args.cursor("after"),
            before=args.cursor("before"),
            limit=args.number("limit", default=200, high=MAX_LIMIT),
        )
        records = self._use_cases.logs(subject, query)
        return [serialize.log_json(record, cursor=cursor) for cursor, record in records]

    def _search(self, subject: Subject, args: Arguments) -> Any:
        query = LogQuery(
            scheduler_id=args.optional_text("id"),
            run_id=args.optional_text("run_id"),
            min_level=_level(args.optional_text("level")),
            after=args.cursor("after"),
            before=args.cursor("before"),
            limit=args.number("limit", default=200, high=reads.SEARCH_PAGE_LIMIT),
            text=args.optional_text("text"),
            fields=args.pairs("fields"),
            since=args.time("since"),
            until=args.time("until"),
        )
        return reads.hits_json(reads.search_logs(self._use_cases, subject, query))

    def _settings(self, subject: Subject, args: Arguments) -> Any:
        scheduler_id = args.text("id")
        changes = args.mapping("changes")
        if args.flag("reset"):
            view = self._use_cases.reset_settings(subject, scheduler_id)
        elif changes:
            converted = SettingsChange.from_json(changes)
            view = self._use_cases.update_settings(subject, scheduler_id, converted)
        else:
            view = self._use_cases.find_settings(subject, scheduler_id)
        return serialize.settings_view_json(view)

    def handle(self, subject: Subject, request: object) -> dict[str, Any]:
        """Exactly one answer for any request, however malformed."""
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "malformed request", "exit_code": 2}
        op = self._ops.get(request["op"])
        if op is None:
            return {"ok": False, "error": f"unknown operation {request['op']!r}", "exit_code": 2}
        try:
            return {"ok": True, "result": op(subject, Arguments(request.get("args")))}
        except SupervisorError as error:
            return {"ok": False, "error": str(error), "exit_code": error.exit_code}
        except Exception as error:  # a bug of ours: answer, and leave a trace for the operator
            traceback.print_exc(file=sys.stderr)
            return {
                "ok": False,
                "error": f"internal error: {type(error).__name__}: {error}",
                "exit_code": 1,
            }


def _peer_uid(connection: socket.socket) -> int:
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ControlServer:
    """Serves the dispatcher on ``state_dir/control.sock``.

    One thread multiplexes every connection (an idle or slow client costs a file
    descriptor, not a thread): it checks the peer's credentials on accept, collects the
    request line within ``REQUEST_TIMEOUT_SECONDS`` and ``MAX_REQUEST_BYTES``, and hands
    complete requests to a few worker threads. At most ``MAX_PENDING_CONNECTIONS`` wait
    for their request line; beyond that the oldest is dropped, so a flood of connections
    from the owner cannot keep other clients out.
    """

    def __init__(self, state_dir: Path, dispatcher: Dispatcher) -> None:
        self.path = state_dir / SOCKET_NAME
        self._dispatcher = dispatcher
        self._owner = os.getuid()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = -1, -1

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with _short_path(self.path) as address:
                listener.bind(address)
        except BaseException:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._workers = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="control")
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        pending: dict[socket.socket, _Pending] = {}
        try:
            while not self._stopping.is_set():
                try:
                    for key, _events in selector.select(timeout=_SWEEP_SECONDS):
                        if key.fileobj is self._listener:
                            self._accept(selector, pending)
                        elif isinstance(key.fileobj, socket.socket):
                            self._receive(selector, pending, key.fileobj)
                    self._expire(selector, pending)
                except Exception:  # a bug of ours must not end the control socket
                    traceback.print_exc(file=sys.stderr)
        finally:
            for connection in list(pending):
                _drop(selector, pending, connection)
            selector.close()

    def _accept(
        self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Pending]
    ) -> None:
        assert self._listener is not None
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                connection, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and friends: make room, never stop serving
                if pending:
                    _drop(selector, pending, min(pending, key=lambda c: pending[c].deadline))
                    continue
                _report(f"control socket: accept failed: {error}")
                return
            uid = _peer_uid(connection)
            if uid not in (self._owner, 0):
                _answer_and_close(
                    connection, {"ok": False, "error": "permission denied", "exit_code": 5}
                )
                continue
            if len(pending) >= MAX_PENDING_CONNECTIONS:
                _drop(selector, pending, min(pending, key=lambda c: pending[c].deadline))
            connection.setblocking(False)
            pending[connection] = _Pending(
                uid=uid, deadline=time.monotonic() + REQUEST_TIMEOUT_SECONDS
            )
            selector.register(connection, selectors.EVENT_READ, None)

    def _receive(
        self,
        selector: selectors.BaseSelector,
        pending: dict[socket.socket, _Pending],
        connection: socket.socket,
    ) -> None:
        state = pending.get(connection)
        if state is None:  # dropped earlier in this round
            return
        try:
            chunk = connection.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            _drop(selector, pending, connection)
            return
        state.data += chunk
        line, newline, _rest = bytes(state.data).partition(b"\n")
        if not newline and len(state.data) <= MAX_REQUEST_BYTES:
            return
        selector.unregister(connection)
        del pending[connection]
        if not newline or len(line) > MAX_REQUEST_BYTES:
            answer = {
                "ok": False,
                "error": f"request too large (over {MAX_REQUEST_BYTES} bytes)",
                "exit_code": 2,
            }
            self._submit(_answer_and_close, connection, answer)
            return
        self._submit(self._handle, connection, state.uid, line)

    def _submit(self, function: Callable[..., None], *args: Any) -> None:
        assert self._workers is not None
        try:
            self._workers.submit(function, *args)
        except RuntimeError:  # shutting down
            args[0].close()

    def _handle(self, connection: socket.socket, uid: int, line: bytes) -> None:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            request = None
        answer = self._dispatcher.handle(su(os_user_name(uid)), request)
        _answer_and_close(connection, answer)

    def _expire(
        self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Pending]
    ) -> None:
        now = time.monotonic()
        for connection in [c for c, p in pending.items() if p.deadline <= now]:
            _drop(selector, pending, connection)

    def close(self) -> None:
        if self._listener is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
        self._listener.close()
        self._listener = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass(slots=True)
class _Pending:
    """A connection whose request line is still coming."""

    uid: int
    deadline: float
    data: bytearray = field(default_factory=bytearray)


def _drop(
    selector: selectors.BaseSelector,
    pending: dict[socket.socket, _Pending],
    connection: socket.socket,
) -> None:
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(connection)
    pending.pop(connection, None)
    connection.close()


def _answer_and_close(connection: socket.socket, answer: Mapping[str, Any]) -> None:
    try:
        connection.setblocking(True)
        connection.settimeout(ANSWER_TIMEOUT_SECONDS)
        connection.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass  # the client may be gone
    finally:
        connection.close()


def _report(message: str) -> None:
    print(f"supervisor: {message}", file=sys.stderr, flush=True)
