"""The fork server's messages: every one survives encode/decode; garbage is refused."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.runs.forkmessages import (
    ClaimRequest,
    ExitRequest,
    LoadFailed,
    Message,
    ModuleFile,
    Prepared,
    PrepareFailed,
    PrepareRequest,
    ProtocolError,
    Ready,
    SignalRequest,
    Spawned,
    SpawnFailed,
    SpawnRequest,
    decode,
    encode,
    module_file,
    spare_job,
)
from supervisor.runs.job import Job

JOB = Job(
    scheduler_id="a.b",
    run_id="r1",
    trigger="cron",
    deadline=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    action_id="act",
    cgroup="/sys/fs/cgroup/x/r1",
)
MESSAGES: list[Message] = [
    SpawnRequest(req=3, job=JOB),
    SpawnRequest(req=4, job=Job(scheduler_id="a", run_id="r2", trigger="manual")),
    SignalRequest(pid=123, signal=15),
    ExitRequest(),
    PrepareRequest(cgroup="/sys/fs/cgroup/x/spare-1"),
    PrepareRequest(cgroup=None),
    ClaimRequest(pid=456, run_id="r1"),
    Prepared(cgroup="/sys/fs/cgroup/x/spare-1", pid=456, create_time=1234.5, placed=True),
    Prepared(cgroup=None, pid=457, create_time=1234.5, placed=False),
    PrepareFailed(cgroup="/sys/fs/cgroup/x/spare-1", error="fork failed: EAGAIN"),
    Spawned(req=3, pid=456, create_time=1234.5),
    SpawnFailed(req=3, error="fork failed: EAGAIN"),
    Ready(
        pid=9,
        package="/x/supervisor",
        load_started=17.25,
        modules=(ModuleFile(path="/a.py", mtime_ns=1, size=2, inode=3, sha256="ab"),),
    ),
    LoadFailed(error="--app 'x:cfg': cannot import module"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


# Not a message at all, or a spawn request that is malformed: refused by both readers.
GARBAGE = [
    b"",
    b"not json",
    b"[]",
    b'{"op": "nope"}',
    b'{"op": "spawn", "req": 1}',
    b'{"op": "spawn", "req": "1", "job": {"scheduler_id": "a", "run_id": "r", "trigger": "m"}}',
    b'{"op": "spawn", "req": 1, "job": {"scheduler_id": "a", "run_id": "bad id", "trigger": "m"}}',
]


@pytest.mark.parametrize(
    "packet",
    [
        *GARBAGE,
        b'{"op": "signal", "pid": true, "signal": 9}',
        b'{"op": "prepare", "cgroup": 5}',
        b'{"op": "claim", "pid": 1}',
        b'{"op": "prepared", "cgroup": null, "pid": "2", "create_time": 1, "placed": true}',
        b'{"op": "spawned", "req": 1, "pid": 2, "create_time": "x"}',
        b'{"op": "ready", "pid": 1, "package": "p", "load_started": 1, "modules": [[1, 2]]}',
    ],
)
def test_garbage_is_a_protocol_error(packet: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(packet)


SPAWNS = [m for m in MESSAGES if isinstance(m, SpawnRequest)]


@pytest.mark.parametrize("message", SPAWNS, ids=lambda m: m.job.run_id)
def test_a_spare_reads_the_job_decode_gives(message: SpawnRequest) -> None:
    assert spare_job(encode(message), joined=None) == message.job
    assert spare_job(encode(message), joined="/sys/fs/cgroup/elsewhere") == message.job


def test_a_spare_in_its_jobs_cgroup_gets_the_job_without_it() -> None:
    packet = encode(SpawnRequest(req=0, job=JOB))
    assert spare_job(packet, joined=JOB.cgroup) == replace(JOB, cgroup=None)


@pytest.mark.parametrize(
    "packet",
    [
        *GARBAGE,
        b'{"op": "spawn", "req": 1, "job": ["a"]}',
        b'{"op":"spawn","req":1,"job":{"scheduler_id":"a","run_id":"r","trigger":"m"}} x',
        b'\xff{"op": "spawn"}',
        encode(SignalRequest(pid=1, signal=9)),
        encode(ClaimRequest(pid=1, run_id="r1")),
    ],
)
def test_a_spare_refuses_anything_but_one_spawn_request(packet: bytes) -> None:
    with pytest.raises(ProtocolError):
        spare_job(packet, joined=None)


def test_module_file_hashes_the_content(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("A = 1\n")
    first = module_file(str(path))
    path.write_text("A = 2\n")
    second = module_file(str(path))
    assert first.size == second.size and first.sha256 != second.sha256
    assert module_file(str(tmp_path / "gone.py")).size == -1


def test_module_file_digest_is_the_files_sha256(tmp_path: Path) -> None:
    # (Computed without hashlib in the fork server: it must be the same digest the
    # manager compares.)
    path = tmp_path / "m.py"
    content = b"A = 1\n" * 1000
    path.write_bytes(content)
    assert module_file(str(path)).sha256 == hashlib.sha256(content).hexdigest()


def test_the_fork_servers_messages_load_no_openssl() -> None:
    code = "import sys, supervisor.runs.forkmessages; print('_hashlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
