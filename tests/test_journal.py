"""The native journal protocol writer and the journalctl JSON reader.

A fake journald (a datagram socket in tmp_path) checks the bytes on the wire, including
the binary-safe form and memfd passing; a real journald in a namespaced systemd checks
that what is sent is what ``journalctl -o json --all`` gives back.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import socket
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.core.records import Level, LogRecord, Source
from supervisor.systemd.journal import (
    JournalSink,
    JournalSocket,
    JsonLinesSink,
    encode_entry,
    journal_field_name,
    journalctl_matches,
    level_from_priority,
    parse_json_lines,
    record_entry,
    record_fields,
    structured_fields,
    to_log_record,
)
from tests.systemd_ns import NamespacedSystemd, systemd_namespace

__all__ = ["systemd_namespace"]


def parse_native(data: bytes) -> dict[str, bytes]:
    """What journald makes of one native-protocol entry (the test's own reading of it)."""
    fields: dict[str, bytes] = {}
    position = 0
    while position < len(data):
        newline = data.index(b"\n", position)
        line = data[position:newline]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value
            position = newline + 1
        else:
            (length,) = struct.unpack("<Q", data[newline + 1 : newline + 9])
            start = newline + 9
            fields[line.decode()] = data[start : start + length]
            assert data[start + length : start + length + 1] == b"\n"
            position = start + length + 1
    return fields


def as_journalctl_entry(fields: dict[str, bytes]) -> dict[str, str]:
    return {key: value.decode() for key, value in fields.items()}


def make_record(**fields: object) -> LogRecord:
    return LogRecord(
        time=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        level=Level.WARNING,
        message="hello\nworld",
        fields=fields,
        run_id="run-1",
        source=Source.LOGGER,
    )


# -- encoding ------------------------------------------------------------------------------


def test_plain_values_are_key_equals_value_lines() -> None:
    assert encode_entry([("MESSAGE", "hi"), ("PRIORITY", "6")]) == b"MESSAGE=hi\nPRIORITY=6\n"


def test_values_with_newlines_use_the_binary_safe_form() -> None:
    data = encode_entry([("MESSAGE", "a\nb"), ("X", b"\x00\xff")])
    assert data == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n" + b"X=\x00\xff\n"
    assert parse_native(data) == {"MESSAGE": b"a\nb", "X": b"\x00\xff"}


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("value", "F_VALUE"),
        ("who.am-i", "F_WHO_AM_I"),
        ("2fast", "F_2FAST"),
        ("_private", "F__PRIVATE"),
        ("grüße", "F_GRÜSSE".replace("Ü", "_")),
        ("x" * 100, "F_" + "X" * 62),
    ],
)
def test_field_names_are_valid_journal_names(key: str, name: str) -> None:
    assert journal_field_name(key) == name
    assert len(name) <= 64


def test_clashing_field_names_get_a_suffix_and_read_back_exactly() -> None:
    fields = {"a-b": 1, "a_b": "two", "A.B": [3]}
    encoded = structured_fields(fields)
    names = [name for name, _ in encoded]
    assert names[:3] == ["F_A_B", "F_A_B_2", "F_A_B_3"]
    entry = {name: value if isinstance(value, str) else value.decode() for name, value in encoded}
    assert record_fields(entry) == fields


def test_a_record_round_trips_through_the_wire_form() -> None:
    record = make_record(n=42, who="world", ok=True, nested={"a": [1, 2]}, none=None, text="1")
    entry = parse_native(encode_entry(record_entry(record, scheduler_id="my.job")))
    assert entry["SCHEDULER_ID"] == b"my.job"
    assert entry["RUN_ID"] == b"run-1"
    assert entry["PRIORITY"] == b"4"
    assert entry["MESSAGE"] == b"hello\nworld"
    assert entry["SUPERVISOR_SOURCE"] == b"logger"
    assert entry["F_N"] == b"42"
    assert entry["F_WHO"] == b"world"
    assert entry["F_TEXT"] == b"1"
    back = to_log_record(as_journalctl_entry(entry))
    assert back == record


def test_priorities_map_both_ways() -> None:
    for level in Level:
        entry = record_entry(
            LogRecord(
                time=datetime.now(UTC), level=level, message="m", run_id="r", source=Source.STDOUT
            ),
            scheduler_id="s",
        )
        priority = int(dict(entry)["PRIORITY"])
        assert level_from_priority(priority) is level
    assert level_from_priority(5) is Level.INFO
    assert level_from_priority(0) is Level.CRITICAL


# -- reading journalctl output -------------------------------------------------------------


def test_parse_json_lines_decodes_byte_arrays_and_repeated_fields() -> None:
    lines = [
        json.dumps({"MESSAGE": list(b"caf\xc3\xa9 \x01"), "A": ["first", "second"], "N": None}),
        "",
        "not json",
        json.dumps({"MESSAGE": "plain", "__REALTIME_TIMESTAMP": "5"}),
    ]
    entries = parse_json_lines("\n".join(lines))
    assert entries == [
        {"MESSAGE": "café \x01", "A": "first"},
        {"MESSAGE": "plain", "__REALTIME_TIMESTAMP": "5"},
    ]


def test_plain_output_and_systemd_messages_become_records() -> None:
    stdout = to_log_record(
        {
            "MESSAGE": "printed",
            "PRIORITY": "6",
            "_TRANSPORT": "stdout",
            "_SYSTEMD_INVOCATION_ID": "inv1",
            "SCHEDULER_ID": "s",
            "__REALTIME_TIMESTAMP": "1000000",
        }
    )
    assert stdout is not None
    assert (stdout.source, stdout.level, stdout.run_id) == (Source.STDOUT, Level.INFO, "inv1")
    assert stdout.time == datetime.fromtimestamp(1, UTC)
    stderr = to_log_record(
        {"MESSAGE": "oops", "PRIORITY": "4", "_TRANSPORT": "stdout", "RUN_ID": "r"}
    )
    assert stderr is not None and stderr.source is Source.STDERR
    from_systemd = to_log_record(
        {
            "MESSAGE": "x.service: Failed with result 'timeout'.",
            "PRIORITY": "4",
            "UNIT": "x.service",
            "_PID": "1",
            "INVOCATION_ID": "inv2",
        }
    )
    assert from_systemd is not None
    assert from_systemd.run_id == "inv2"
    assert from_systemd.fields == {"origin": "systemd"}
    assert to_log_record({"SUPERVISOR_EVENT": "run_end", "MESSAGE": "x"}) is None


def test_matches_or_our_records_with_systemds_messages() -> None:
    assert journalctl_matches(scheduler_id="a", service="a.service") == [
        "SCHEDULER_ID=a",
        "+",
        "UNIT=a.service",
        "_PID=1",
    ]
    assert "RUN_ID=r" in journalctl_matches(scheduler_id="a", service="a.service", run_id="r")


# -- the socket ----------------------------------------------------------------------------


@pytest.fixture
def fake_journald(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "journal.socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield server, path
    server.close()


def test_an_entry_is_one_datagram(fake_journald: tuple[socket.socket, str]) -> None:
    server, path = fake_journald
    assert JournalSocket.available(path)
    journal = JournalSocket(path)
    journal.send([("MESSAGE", "one\ntwo"), ("SCHEDULER_ID", "s")])
    data = server.recv(1 << 20)
    assert parse_native(data) == {"MESSAGE": b"one\ntwo", "SCHEDULER_ID": b"s"}
    journal.close()


def test_a_large_entry_travels_in_a_sealed_memfd(fake_journald: tuple[socket.socket, str]) -> None:
    server, path = fake_journald
    journal = JournalSocket(path, max_datagram=1024)
    big = "x" * 100_000
    journal.send([("MESSAGE", "big"), ("F_BLOB", big)])
    fds = array.array("i")
    data, ancillary, _flags, _address = server.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
    assert data == b""
    ((level, kind, payload),) = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(payload[: fds.itemsize])
    fd = fds[0]
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
        content = os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)
    assert parse_native(content) == {"MESSAGE": b"big", "F_BLOB": big.encode()}
    journal.close()


def test_no_journald_means_not_available(tmp_path: Path) -> None:
    assert not JournalSocket.available(str(tmp_path / "nothing-here"))


def test_the_sink_falls_back_to_json_lines_when_journald_is_gone(tmp_path: Path) -> None:
    fallback = tmp_path / "fallback.txt"
    with fallback.open("w") as stream:
        sink = JournalSink("s", JournalSocket(str(tmp_path / "gone")), fallback=stream)
        sink.write(make_record(n=1))
        sink.close()
    line = json.loads(fallback.read_text())
    assert line["message"] == "hello\nworld"
    assert line["fields"] == {"n": 1}
    assert line["scheduler_id"] == "s"


def test_json_lines_sink_writes_the_logs_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        JsonLinesSink("s", stream).write(make_record(who="me"))
    line = json.loads(out.read_text())
    assert line == {
        "time": "2026-01-02T03:04:05.678901+00:00",
        "level": "warning",
        "message": "hello\nworld",
        "fields": {"who": "me"},
        "run_id": "run-1",
        "source": "logger",
        "scheduler_id": "s",
    }


# -- a real journald ------------------------------------------------------------------------


@pytest.mark.systemd
def test_real_journald_keeps_every_field(systemd_namespace: NamespacedSystemd) -> None:
    ns = systemd_namespace
    socket_path = str(ns.inside("/run/systemd/journal/socket"))
    journal = JournalSocket(socket_path, max_datagram=64 * 1024)
    sink = JournalSink("real.test", journal)
    small = make_record(n=7, who="wörld", note="line one\nline two", blob="\x01binary")
    sink.write(small)
    big = make_record(**{f"blob{i}": str(i) * 60_000 for i in range(5)})  # ~300 kB: memfd
    sink.write(big)
    journal.close()

    def found() -> list[dict[str, str]]:
        out = ns.journalctl("-o", "json", "--all", "SCHEDULER_ID=real.test").stdout
        entries = parse_json_lines(out)
        return entries if len(entries) == 2 else []

    first, second = ns.wait_until(found, 10, message="both entries in the journal")
    assert first["F_N"] == "7"
    assert first["PRIORITY"] == "4"
    assert first["RUN_ID"] == "run-1"
    assert to_log_record(first) == small
    assert to_log_record(second) == big
    assert len(second["F_BLOB4"]) == 60_000  # over 4 KiB: only there with --all
    by_field = ns.journalctl("-o", "json", "SCHEDULER_ID=real.test", "F_WHO=wörld").stdout
    assert len(parse_json_lines(by_field)) == 1
