"""Output capture without processes: lines, over-long lines, the records pipe, batches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from supervisor.core.records import Level, LogRecord, Outcome, Source
from supervisor.runs.capture import (
    BATCH_RECORDS,
    MAX_OUTPUT_LINE,
    Capture,
    OutputReader,
    RecordsReader,
)
from supervisor.runs.wire import MAX_LINE_BYTES, RunResult, encode_exec, encode_result

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_lines_are_split_across_reads_and_the_rest_is_kept() -> None:
    reader = OutputReader("r", Source.STDOUT, Level.INFO)
    out: list[LogRecord] = []
    reader.feed(b"one\ntw", NOW, out)
    reader.feed(b"o\n\xff three", NOW, out)
    reader.close(NOW, out)
    assert [r.message for r in out] == ["one", "two", "\ufffd three"]
    assert {(r.source, r.level, r.run_id) for r in out} == {(Source.STDOUT, Level.INFO, "r")}


def test_an_over_long_line_becomes_partial_records_of_bounded_size() -> None:
    reader = OutputReader("r", Source.STDERR, Level.WARNING, tail=2)
    out: list[LogRecord] = []
    reader.feed(b"x" * (MAX_OUTPUT_LINE * 2 + 5), NOW, out)  # no newline yet
    assert [len(r.message) for r in out] == [MAX_OUTPUT_LINE, MAX_OUTPUT_LINE]
    assert all(r.fields == {"partial": True} for r in out)
    reader.feed(b"\nlast\n", NOW, out)
    assert [r.message for r in out[2:]] == ["xxxxx", "last"]
    assert list(reader.tail or ()) == ["xxxxx", "last"]


def test_the_records_pipe_gives_records_the_result_and_the_exec_notice() -> None:
    reader = RecordsReader("r")
    out: list[LogRecord] = []
    data = encode_exec(["sleep", "1"]) + encode_result(RunResult(outcome=Outcome.SUCCEEDED))
    data += encode_result(RunResult(outcome=Outcome.FAILED, error="second"))
    reader.feed(data[:7], NOW, out)
    reader.feed(data[7:] + b"garbage\n", NOW, out)
    assert reader.exec is not None and reader.exec.argv == ("sleep", "1")
    assert reader.result == RunResult(outcome=Outcome.SUCCEEDED)  # the first one counts
    assert [r.level for r in out] == [Level.ERROR]  # the garbage, said so


def test_an_over_long_record_is_dropped_and_said_so() -> None:
    reader = RecordsReader("r")
    out: list[LogRecord] = []
    reader.feed(b"{" + b"x" * MAX_LINE_BYTES, NOW, out)
    reader.feed(b"still the same line\n" + encode_exec(["a"]), NOW, out)
    assert [r.message for r in out] == [
        "unreadable record from the run: record longer than 1 MiB dropped"
    ]
    assert reader.exec is not None


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made = [os.pipe() for _ in range(3)]
    yield made
    for r, w in made:
        for fd in (r, w):
            with contextlib.suppress(OSError):
                os.close(fd)


def test_capture_batches_up_to_the_limit_and_finishes(pipes: list[tuple[int, int]]) -> None:
    batches: list[Sequence[LogRecord]] = []
    (rec_r, _rec_w), (out_r, out_w), (err_r, err_w) = pipes
    capture = Capture("r", records_fd=rec_r, stdout_fd=out_r, stderr_fd=err_r, sink=batches.append)
    os.write(out_w, b"line\n" * (BATCH_RECORDS + 10))
    while capture.read(out_r, now=0.0, stamp=NOW) and capture.pending:
        capture.deliver_if_due(0.0)
        if sum(map(len, batches)) >= BATCH_RECORDS:
            break
    capture.deliver()
    os.write(err_w, b"no newline")
    assert capture.read(err_r, now=1.0, stamp=NOW)
    os.close(err_w)
    assert not capture.read(err_r, now=1.0, stamp=NOW)  # end-of-file
    assert capture.stderr_tail == ("no newline",)
    capture.finish()  # stdout and records still open: said so
    assert all(len(b) <= BATCH_RECORDS for b in batches)
    records = [r for b in batches for r in b]
    assert sum(r.message == "line" for r in records) == BATCH_RECORDS + 10
    assert records[-1].message.startswith("output still held open")


def test_a_hang_up_seen_by_poll_ends_the_stream_like_a_read_at_end_of_file(
    pipes: list[tuple[int, int]],
) -> None:
    batches: list[Sequence[LogRecord]] = []
    (rec_r, rec_w), (out_r, out_w), (err_r, err_w) = pipes
    capture = Capture("r", records_fd=rec_r, stdout_fd=out_r, stderr_fd=err_r, sink=batches.append)
    os.write(out_w, b"done\nno newline")
    for fd in (rec_w, out_w, err_w):
        os.close(fd)
    assert capture.read(out_r, now=0.0, stamp=NOW)  # the data first: POLLIN with the hang-up
    for fd in (rec_r, out_r, err_r):
        capture.hung_up(fd, now=0.0, stamp=NOW)
    assert capture.open_fds == []
    capture.finish()
    records = [r for b in batches for r in b]
    assert [r.message for r in records] == ["done", "no newline"]  # no "held open" warning
