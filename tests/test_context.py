"""The runner's view: cancellation over a pipe, sleeping, and the structured logger."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from supervisor.core.records import Level, LogRecord, Source
from supervisor.runs.context import (
    UNREPRESENTABLE,
    Cancelled,
    CancelPipe,
    Context,
    RunError,
    StructuredLogger,
    json_safe,
    logger_from,
    make_record,
    safe_repr,
    safe_str,
    type_name,
)
from supervisor.runs.wire import encode_log


class ListSink:
    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    def write(self, record: LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def make_context(cancel_fd: int | None, sink: ListSink | None = None) -> Context:
    return Context(
        scheduler_id="s.one",
        run_id="r1",
        trigger="manual",
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        sink=sink or ListSink(),
        cancel_fd=cancel_fd,
    )


def test_attributes() -> None:
    ctx = make_context(None)
    assert (ctx.scheduler_id, ctx.run_id, ctx.trigger) == ("s.one", "r1", "manual")
    assert ctx.deadline == datetime(2030, 1, 1, tzinfo=UTC)


def test_not_cancelled_until_the_manager_says_why(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    ctx = make_context(read_fd)
    assert ctx.err() is None
    assert not ctx.cancelled
    os.write(write_fd, b"timeout\n")
    error = ctx.err()
    assert isinstance(error, Cancelled)
    assert error.reason == "timeout"
    assert "timed out" in str(error)
    assert ctx.cancelled
    assert ctx.err() is error  # stays cancelled, same error


@pytest.mark.parametrize(
    ("reason", "text"),
    [("stop", "stopped"), ("shutdown", "shutting down"), ("whatever", "whatever")],
)
def test_reasons(pipe: tuple[int, int], reason: str, text: str) -> None:
    read_fd, write_fd = pipe
    ctx = make_context(read_fd)
    os.write(write_fd, reason.encode() + b"\n")
    error = ctx.err()
    assert isinstance(error, Cancelled)
    assert error.reason == reason
    assert text in str(error)


def test_end_of_file_means_the_manager_went_away(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    ctx = make_context(read_fd)
    os.close(write_fd)
    error = ctx.err()
    assert isinstance(error, Cancelled)
    assert error.reason == "gone"


def test_sleep_runs_the_full_time_when_not_cancelled(pipe: tuple[int, int]) -> None:
    ctx = make_context(pipe[0])
    started = time.monotonic()
    assert ctx.sleep(0.05) is True
    assert time.monotonic() - started >= 0.05


def test_sleep_wakes_early_on_cancel(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    ctx = make_context(read_fd)
    timer = threading.Timer(0.05, lambda: os.write(write_fd, b"stop\n"))
    timer.start()
    started = time.monotonic()
    try:
        assert ctx.sleep(30) is False
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    assert isinstance(ctx.err(), Cancelled)
    assert ctx.sleep(30) is False  # already cancelled: returns at once


def test_sleep_zero_and_negative(pipe: tuple[int, int]) -> None:
    ctx = make_context(pipe[0])
    assert ctx.sleep(0) is True
    assert ctx.sleep(-1) is True


def test_without_a_cancel_channel_nothing_cancels() -> None:
    ctx = make_context(None)
    assert ctx.err() is None
    assert ctx.sleep(0.01) is True


def test_cancel_pipe_for_in_process_runs() -> None:
    channel = CancelPipe()
    try:
        ctx = make_context(channel.read_fd)
        assert ctx.err() is None
        channel.cancel("shutdown")
        error = ctx.err()
        assert isinstance(error, Cancelled) and error.reason == "shutdown"
    finally:
        channel.close()


def test_err_is_cheap_in_a_loop(pipe: tuple[int, int]) -> None:
    ctx = make_context(pipe[0])
    started = time.monotonic()
    for _ in range(20_000):
        assert ctx.err() is None
    assert time.monotonic() - started < 2.0


def test_many_threads_see_one_cancellation(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    ctx = make_context(read_fd)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(ctx.sleep(30))) for _ in range(4)]
    for thread in threads:
        thread.start()
    os.write(write_fd, b"stop\n")
    for thread in threads:
        thread.join(10)
    assert results == [False] * 4


def test_run_error_is_an_exception() -> None:
    with pytest.raises(RunError, match="nope"):
        raise RunError("nope")


def test_logger_records_level_time_message_fields() -> None:
    sink = ListSink()
    ctx = make_context(None, sink)
    log = logger_from(ctx)
    before = datetime.now(UTC)
    log.debug("d")
    log.info("hello", value=3, who="world")
    log.warning("w")
    log.error("e")
    log.critical("c", msg="a field may be called msg")
    assert [r.level for r in sink.records] == [
        Level.DEBUG,
        Level.INFO,
        Level.WARNING,
        Level.ERROR,
        Level.CRITICAL,
    ]
    hello = sink.records[1]
    assert hello.message == "hello"
    assert dict(hello.fields) == {"value": 3, "who": "world"}
    assert hello.run_id == "r1"
    assert hello.source is Source.LOGGER
    assert hello.time.tzinfo is not None and hello.time >= before
    assert sink.records[4].fields["msg"] == "a field may be called msg"


def test_logger_exception_adds_the_traceback() -> None:
    sink = ListSink()
    log = logger_from(make_context(None, sink))
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("it broke", step=2)
    (record,) = sink.records
    assert record.level is Level.ERROR
    assert record.fields["step"] == 2
    assert "ValueError: bad value" in record.fields["traceback"]


def test_fields_are_made_json_safe() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert json_safe({"a": [1, 2.5, None, True], 3: Thing()}) == {
        "a": [1, 2.5, None, True],
        "3": "<thing>",
    }
    assert json_safe((1, "x")) == [1, "x"]
    assert json_safe(math.nan) == "nan"
    assert json_safe(math.inf) == "inf"
    assert json_safe({1, 2}) in ("{1, 2}", "{2, 1}")
    assert "unrepresentable" in json_safe(Broken())
    assert len(json_safe("x" * 100_000)) < 70_000
    deep: list[object] = []
    cursor = deep
    for _ in range(50):
        cursor.append([])
        cursor = cursor[0]  # type: ignore[assignment]
    safe = json_safe(deep)  # deep nesting ends in a marked text, not a crash
    for _ in range(8):
        (safe,) = safe
    assert safe.startswith(f"{UNREPRESENTABLE} list: nested over 8 deep")


class _BadClass:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("no class")


class _BrokenMapping(dict[str, int]):
    def items(self) -> Any:
        raise RuntimeError("no items")

    def __repr__(self) -> str:
        return "<broken mapping>"


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("no")


class _LoudInt(int):
    def __repr__(self) -> str:
        raise RuntimeError("never called: the value is used as an int")


def test_regression_a_huge_int_is_marked_instead_of_breaking_the_record() -> None:
    safe = json_safe({"n": 10**5000, "ok": 10**4000})
    assert safe["n"] == f"{UNREPRESENTABLE} int: {(10**5000).bit_length()} bits, too long to show>"
    assert safe["ok"] == 10**4000
    encode_log(make_record("r1", Level.INFO, "big", {"n": 10**5000}))  # must not raise


def test_recursive_and_shared_structures_are_bounded() -> None:
    loop: list[object] = []
    loop.append(loop)
    assert json_safe(loop) == [f"{UNREPRESENTABLE} list: it contains itself>"]
    mapping: dict[str, object] = {}
    mapping["me"] = mapping
    assert json_safe(mapping) == {"me": f"{UNREPRESENTABLE} dict: it contains itself>"}
    shared: list[object] = []
    for _ in range(8):
        shared = [shared] * 40  # 40**8 paths
    # Before, this walked all 40**8 paths (it never ended); now a budget bounds it.
    line = encode_log(make_record("r1", Level.INFO, "wide", {"v": shared}))
    assert len(line) < 1024 * 1024 and b"the rest cut" in line
    texts = json_safe(["y" * 60_000] * 40)
    assert sum(len(t) for t in texts) < 600 * 1024
    assert texts[-1].startswith(UNREPRESENTABLE)


def test_objects_that_break_on_inspection_are_marked() -> None:
    assert json_safe(_BadClass()).startswith(UNREPRESENTABLE)
    assert json_safe(_BrokenMapping(a=1)) == "<broken mapping>"
    assert json_safe({_Unprintable(): 1, 2: 3}) == {
        f"{UNREPRESENTABLE} key of type _Unprintable>": 1,
        "2": 3,
    }
    assert json_safe(_LoudInt(5)) == 5 and type(json_safe(_LoudInt(5))) is int


def test_a_message_whose_str_raises_is_marked() -> None:
    record = make_record("r1", Level.INFO, _Unprintable())
    assert record.message == f"{UNREPRESENTABLE} message: str() of a _Unprintable raised>"


def test_regression_logging_never_raises_into_the_runner() -> None:
    class FailingSink:
        def __init__(self) -> None:
            self.calls = 0
            self.records: list[LogRecord] = []

        def write(self, record: LogRecord) -> None:
            self.calls += 1
            if self.calls == 1:
                raise OSError("the sink broke")
            self.records.append(record)

    sink = FailingSink()
    log = StructuredLogger(sink, "r1")
    log.info("lost", n=1)
    (replacement,) = sink.records
    assert replacement.message == f"{UNREPRESENTABLE} record: writing it raised OSError>"
    log.info("big", n=10**5000, loop=[[[]]])
    assert sink.records[-1].message == "big"


class _RaisesBase:
    """A value whose every text form raises something that is not an Exception."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __str__(self) -> str:
        raise self.error

    def __repr__(self) -> str:
        raise self.error


class _LoudMeta(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise KeyboardInterrupt


class _LoudName(metaclass=_LoudMeta):
    pass


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(4), GeneratorExit()])
def test_regression_a_value_raising_a_base_exception_never_escapes_logging(
    error: BaseException,
) -> None:
    """Before: ``log.info(obj)`` with a ``__str__`` raising SystemExit(4) ended the run."""
    value = _RaisesBase(error)
    assert safe_str(value) is None
    assert safe_repr(value).startswith(UNREPRESENTABLE)
    assert str(json_safe({"v": value})["v"]).startswith(UNREPRESENTABLE)
    record = make_record("r1", Level.INFO, value, {"field": value})
    assert record.message.startswith(UNREPRESENTABLE)


def test_regression_type_name_never_calls_a_metaclass_name_property() -> None:
    assert type_name(_LoudName()) == "_LoudName"
    assert "_LoudName" in str(json_safe(_LoudName()))


def test_a_record_without_fields_has_none_on_the_wire() -> None:
    record = make_record("r1", Level.INFO, "tick")
    assert dict(record.fields) == {}
    assert '"fields":{}' in encode_log(record).decode().replace(" ", "")
