"""The messages between the manager and its fork server, typed and shared by both sides.

One message per ``SOCK_SEQPACKET`` packet, a JSON object with an ``op``; file
descriptors travel beside it as SCM_RIGHTS.

Manager → server:

- ``SpawnRequest``: fork ``job``; fds ``[records_w, stdout_w, stderr_w, cancel_r,
  status_w]``. Answered by ``Spawned`` (fd: a pidfd of the run's main process) or
  ``SpawnFailed``, carrying the same ``req`` number.
- ``SignalRequest``: ``killpg`` the run's group if that run has not been reaped yet (so a
  recycled pid is never signalled). No answer.
- ``PrepareRequest``: fork a spare process (in the cgroup ``cgroup``, if not None) that
  waits for a job from the manager. Answered by ``Prepared`` (fds: a pidfd of the spare,
  the read end of its status pipe, and a socket to the spare) or ``PrepareFailed``, both
  naming the same ``cgroup``. The manager then starts a run without asking the server:
  it sends ``ClaimRequest`` here, then a ``SpawnRequest`` (``req`` 0; fds ``[records_w,
  stdout_w, stderr_w, cancel_r]``) on the spare's socket, and the spare becomes the run.
- ``ClaimRequest``: the spare ``pid`` is becoming run ``run_id`` (for the marker sweep at
  its end and for ``SignalRequest``). No answer; sent before the job reaches the spare.
- ``ExitRequest`` (or end-of-file): kill every run still in flight, then exit.

Server → manager, once at start: ``Ready`` (the app's module files, to notice changes; and
``placement``: "" when runs are forked into their cgroup with ``clone3``, else why not)
or ``LoadFailed``.

``encode`` gives the packet, ``receive`` reads one; ``decode`` raises ``ProtocolError``
for anything else than one of these messages. May import ``job`` and the stdlib only.
"""

from __future__ import annotations

import _socket
import array
import importlib
import json
import json.decoder
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from supervisor.runs.job import Job

MAX_PACKET: Final = 1 << 20
RUN_FDS: Final = 5  # records_w, stdout_w, stderr_w, cancel_r, status_w
SPARE_RUN_FDS: Final = 4  # a spare's job: the same but status_w (the server holds it)
PREPARED_FDS: Final = 3  # the spare's pidfd, the status pipe's read end, its socket
_FD_SIZE: Final = array.array("i").itemsize
# ``receive``'s flags as plain ints: ``|`` of two ``socket.MsgFlag`` members runs the
# ``enum`` module's Python code, some 30 page copies in a forked spare.
_WAIT: Final = int(socket.MSG_CMSG_CLOEXEC)
_NO_WAIT: Final = int(socket.MSG_CMSG_CLOEXEC) | int(socket.MSG_DONTWAIT)
# The JSON scanner ``json.loads`` ends in, called straight by ``spare_job``.
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]


class ProtocolError(ValueError):
    """A packet that is not one of the fork server's messages."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleFile:
    """One of the app's module files as the fork server imported it."""

    path: str
    mtime_ns: int
    size: int
    inode: int
    sha256: str  # hex digest of the content


@dataclass(frozen=True, slots=True, kw_only=True)
class SpawnRequest:
    req: int
    job: Job


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRequest:
    pid: int
    signal: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareRequest:
    cgroup: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest:
    pid: int
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitRequest:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Spawned:
    req: int
    pid: int
    create_time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SpawnFailed:
    req: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    cgroup: str | None
    pid: int
    create_time: float
    # Forked into ``cgroup`` by ``clone3`` (else it joins it itself, or has none).
    placed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareFailed:
    cgroup: str | None
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    pid: int
    package: str  # the directory of the ``supervisor`` package the server imported
    modules: tuple[ModuleFile, ...]
    load_started: float  # wall clock (epoch seconds) just before the app was imported
    # Why runs cannot be forked into their cgroup ("" if they can: ``clone``).
    placement: str = "clone3 not tried"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadFailed:
    error: str


Request = SpawnRequest | SignalRequest | PrepareRequest | ClaimRequest | ExitRequest
Reply = Spawned | SpawnFailed | Prepared | PrepareFailed
Announcement = Ready | LoadFailed
Message = Request | Reply | Announcement


def encode(message: Message) -> bytes:
    """The packet for ``message``."""
    obj: dict[str, Any]
    match message:
        case SpawnRequest(req=req, job=job):
            obj = {"op": "spawn", "req": req, "job": job.to_json()}
        case SignalRequest(pid=pid, signal=signum):
            obj = {"op": "signal", "pid": pid, "signal": signum}
        case PrepareRequest(cgroup=cgroup):
            obj = {"op": "prepare", "cgroup": cgroup}
        case ClaimRequest(pid=pid, run_id=run_id):
            obj = {"op": "claim", "pid": pid, "run_id": run_id}
        case Prepared(cgroup=cgroup, pid=pid, create_time=create_time, placed=placed):
            obj = {
                "op": "prepared",
                "cgroup": cgroup,
                "pid": pid,
                "create_time": create_time,
                "placed": placed,
            }
        case PrepareFailed(cgroup=cgroup, error=error):
            obj = {"op": "prepare_failed", "cgroup": cgroup, "error": error}
        case ExitRequest():
            obj = {"op": "exit"}
        case Spawned(req=req, pid=pid, create_time=create_time):
            obj = {"op": "spawned", "req": req, "pid": pid, "create_time": create_time}
        case SpawnFailed(req=req, error=error):
            obj = {"op": "spawn_failed", "req": req, "error": error}
        case Ready(
            pid=pid,
            package=package,
            modules=modules,
            load_started=load_started,
            placement=placement,
        ):
            obj = {
                "op": "ready",
                "pid": pid,
                "package": package,
                "load_started": load_started,
                "placement": placement,
                "modules": [[m.path, m.mtime_ns, m.size, m.inode, m.sha256] for m in modules],
            }
        case LoadFailed(error=error):
            obj = {"op": "load_failed", "error": error}
    return json.dumps(obj, separators=(",", ":")).encode()


def decode(packet: bytes) -> Message:
    """The message in ``packet``; raises ``ProtocolError`` if there is none."""
    try:
        obj = json.loads(packet)
        if not isinstance(obj, dict):
            raise TypeError("not an object")
        return _decode(obj)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        if isinstance(error, ProtocolError):
            raise
        raise ProtocolError(f"malformed fork-server message: {error!r}") from error


def _decode(obj: dict[str, Any]) -> Message:
    op = obj.get("op")
    if op == "spawn":
        return SpawnRequest(req=_int(obj["req"]), job=Job.from_json(obj["job"]))
    if op == "signal":
        return SignalRequest(pid=_int(obj["pid"]), signal=_int(obj["signal"]))
    if op == "prepare":
        return PrepareRequest(cgroup=_optional_text(obj["cgroup"]))
    if op == "claim":
        return ClaimRequest(pid=_int(obj["pid"]), run_id=_text(obj["run_id"]))
    if op == "prepared":
        return Prepared(
            cgroup=_optional_text(obj["cgroup"]),
            pid=_int(obj["pid"]),
            create_time=float(obj["create_time"]),
            placed=bool(obj["placed"]),
        )
    if op == "prepare_failed":
        return PrepareFailed(cgroup=_optional_text(obj["cgroup"]), error=str(obj["error"]))
    if op == "exit":
        return ExitRequest()
    if op == "spawned":
        return Spawned(
            req=_int(obj["req"]), pid=_int(obj["pid"]), create_time=float(obj["create_time"])
        )
    if op == "spawn_failed":
        return SpawnFailed(req=_int(obj["req"]), error=str(obj["error"]))
    if op == "ready":
        return Ready(
            pid=_int(obj["pid"]),
            package=str(obj["package"]),
            load_started=float(obj["load_started"]),
            placement=_text(obj.get("placement", "clone3 not tried")),
            modules=tuple(
                ModuleFile(
                    path=str(path),
                    mtime_ns=_int(mtime),
                    size=_int(size),
                    inode=_int(inode),
                    sha256=str(digest),
                )
                for path, mtime, size, inode, digest in obj["modules"]
            ),
        )
    if op == "load_failed":
        return LoadFailed(error=str(obj["error"]))
    raise ProtocolError(f"unknown fork-server message {op!r}")


def spare_job(packet: bytes, *, joined: str | None) -> Job:
    """The job of a ``SpawnRequest`` packet sent to a spare, as ``decode`` gives it, but
    with ``cgroup`` None if it is ``joined`` (the cgroup the spare is in already: another
    move costs time). Raises ``ProtocolError`` as ``decode`` does.

    A forked spare calls this, and every object it touches is a page copied: the packet
    goes straight to the JSON scanner (the encoding is known, there is no whitespace to
    skip), and the ``Job`` is built once, never copied with ``replace``."""
    try:
        text = packet.decode()
        obj, end = _SCAN(text, 0)
        if end != len(text) or type(obj) is not dict or obj.get("op") != "spawn":
            raise ProtocolError(f"not one spawn request: {text[:200]!r}")
        _int(obj["req"])
        fields = obj["job"]
        if joined is not None and type(fields) is dict and fields.get("cgroup") == joined:
            fields["cgroup"] = None
        return Job.from_json(fields)
    except StopIteration as error:  # the scanner found no value
        raise ProtocolError(f"malformed fork-server message: at {error.value}") from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        if isinstance(error, ProtocolError):
            raise
        raise ProtocolError(f"malformed fork-server message: {error!r}") from error


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def receive(sock: _socket.socket, max_fds: int, *, wait: bool = True) -> tuple[bytes, list[int]]:
    """One packet and the fds that came with it, close-on-exec (b"" at end-of-file).
    Without ``wait``, raises ``BlockingIOError`` if none is there (``socket.recv_fds``
    drops its flags); ``OSError`` as the socket fails."""
    flags = _WAIT if wait else _NO_WAIT
    data, ancillary, _, _ = sock.recvmsg(MAX_PACKET, socket.CMSG_LEN(max_fds * _FD_SIZE), flags)
    # (A memoryview, not an ``array``: a forked spare reads its job with this, and every
    # object it touches is a page copied.)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += memoryview(payload)[: len(payload) - len(payload) % _FD_SIZE].cast("i").tolist()
    return data, fds


def module_file(path: str) -> ModuleFile:
    """How ``path`` is now (a file that cannot be read has size -1 and no digest)."""
    try:
        st = os.stat(path)
        with open(path, "rb") as handle:
            digest = _sha256_hex(handle.read())
    except OSError:
        return ModuleFile(path=path, mtime_ns=-1, size=-1, inode=-1, sha256="")
    return ModuleFile(
        path=path, mtime_ns=st.st_mtime_ns, size=st.st_size, inode=st.st_ino, sha256=digest
    )


def _sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, from CPython's own implementation where there is
    one (``_sha256`` on 3.11, ``_sha2`` later): ``hashlib`` loads OpenSSL's libcrypto,
    whose relocated data every fork of the fork server would copy."""
    for name in ("_sha2", "_sha256"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        digest: str = module.sha256(data).hexdigest()
        return digest
    import hashlib

    return hashlib.sha256(data).hexdigest()
