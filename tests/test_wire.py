"""The records pipe format: round trips, and garbage that must never crash the reader."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.core.records import Level, LogRecord, Outcome, Source
from supervisor.runs.wire import (
    MAX_LINE_BYTES,
    SUCCEEDED,
    ExecNotice,
    RunResult,
    decode,
    encode_exec,
    encode_log,
    encode_result,
)


def record(**changes: object) -> LogRecord:
    values: dict[str, object] = {
        "time": datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "level": Level.WARNING,
        "message": "héllo ✓",
        "fields": {"n": 1, "f": 2.5, "nested": {"a": [1, None, "x"]}, "ok": True},
        "run_id": "r1",
        "source": Source.LOGGER,
    }
    values.update(changes)
    return LogRecord(**values)  # type: ignore[arg-type]


def test_log_round_trip() -> None:
    original = record()
    line = encode_log(original)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["v"] == 1
    decoded = decode(line, run_id="r1")
    assert decoded == original


def test_time_keeps_microseconds() -> None:
    decoded = decode(encode_log(record()), run_id="r1")
    assert isinstance(decoded, LogRecord)
    assert decoded.time.microsecond == 123456


def test_run_id_comes_from_the_reader() -> None:
    decoded = decode(encode_log(record(run_id="other")), run_id="mine")
    assert isinstance(decoded, LogRecord) and decoded.run_id == "mine"


def test_newlines_in_messages_stay_on_one_line() -> None:
    line = encode_log(record(message="one\ntwo\r\nthree"))
    assert line.count(b"\n") == 1
    decoded = decode(line, run_id="r1")
    assert isinstance(decoded, LogRecord) and decoded.message == "one\ntwo\r\nthree"


def test_lone_surrogates_do_not_break_encoding() -> None:
    decoded = decode(encode_log(record(message="bad \udcff byte")), run_id="r1")
    assert isinstance(decoded, LogRecord) and decoded.message.startswith("bad ")


def test_custom_levels_map_down() -> None:
    line = json.dumps({"v": 1, "type": "log", "time": 0, "level": 25, "message": "m"})
    decoded = decode(line.encode(), run_id="r1")
    assert isinstance(decoded, LogRecord) and decoded.level is Level.INFO


def test_result_round_trip() -> None:
    for result in (
        RunResult(outcome=Outcome.SUCCEEDED, value="42"),
        RunResult(outcome=Outcome.FAILED, error="ValueError: x", traceback="Traceback ...\n"),
        RunResult(outcome=Outcome.FAILED, error="sys.exit(3) was called", exit_code=3),
    ):
        assert decode(encode_result(result), run_id="r1") == result


def test_the_succeeded_line_made_once_is_the_one_the_encoder_makes() -> None:
    fresh = RunResult(outcome=Outcome.SUCCEEDED)
    assert fresh == SUCCEEDED and SUCCEEDED is not fresh
    assert encode_result(SUCCEEDED) == encode_result(fresh)
    assert json.loads(encode_result(SUCCEEDED)) == {
        "v": 1,
        "type": "result",
        "outcome": "succeeded",
        "error": None,
        "traceback": None,
        "value": None,
        "exit_code": None,
    }
    assert decode(encode_result(SUCCEEDED), run_id="r1") == SUCCEEDED


def test_a_result_knows_the_status_its_process_exits_with() -> None:
    assert RunResult(outcome=Outcome.SUCCEEDED).status == 0
    assert RunResult(outcome=Outcome.FAILED).status == 1
    assert RunResult(outcome=Outcome.FAILED, exit_code=3).status == 3
    for outcome, code in ((Outcome.SUCCEEDED, 3), (Outcome.FAILED, 0), (Outcome.FAILED, 256)):
        with pytest.raises(ValueError, match="exit_code"):
            RunResult(outcome=outcome, exit_code=code)


def test_a_result_with_a_garbled_exit_code_is_reported_not_trusted() -> None:
    line = encode_result(RunResult(outcome=Outcome.FAILED)).replace(
        b'"exit_code":null', b'"exit_code":"3"'
    )
    decoded = decode(line, run_id="r1")
    assert isinstance(decoded, LogRecord) and decoded.level is Level.ERROR


def test_regression_a_record_that_cannot_be_encoded_still_makes_a_line() -> None:
    # A value json_safe would have replaced, put into a record directly: no exception.
    line = encode_log(record(fields={"n": 10**5000, "ok": 1}))
    decoded = decode(line, run_id="r1")
    assert isinstance(decoded, LogRecord) and decoded.message == "héllo ✓"
    assert decoded.fields == {"unencodable": "<unrepresentable fields: ValueError>"}


def test_exec_round_trip() -> None:
    assert decode(encode_exec(["sh", "-c", "echo hi"]), run_id="r1") == ExecNotice(
        argv=("sh", "-c", "echo hi")
    )


def test_over_long_records_are_cut_below_the_line_cap() -> None:
    line = encode_log(record(fields={"blob": "x" * (2 * MAX_LINE_BYTES)}))
    assert len(line) < MAX_LINE_BYTES
    decoded = decode(line, run_id="r1")
    assert isinstance(decoded, LogRecord) and decoded.fields["truncated"] is True
    result = encode_result(RunResult(outcome=Outcome.FAILED, error="e" * (2 * MAX_LINE_BYTES)))
    assert len(result) < MAX_LINE_BYTES
    assert isinstance(decode(result, run_id="r1"), RunResult)


def assert_problem(line: bytes, text: str) -> None:
    decoded = decode(line, run_id="r1")
    assert isinstance(decoded, LogRecord)
    assert decoded.level is Level.ERROR
    assert decoded.message.startswith("unreadable record from the run")
    assert text in decoded.message
    assert decoded.run_id == "r1"


def test_garbage_becomes_an_error_record() -> None:
    assert_problem(b"hello world", "not a JSON line")
    assert_problem(b"\xff\xfe\x00", "not a JSON line")
    assert_problem(b"[1, 2]", "not a JSON object")
    assert_problem(b'{"v": 2, "type": "log"}', "unsupported format version 2")
    assert_problem(b'{"type": "log"}', "unsupported format version None")
    assert_problem(b'{"v": 1, "type": "beep"}', "unknown record type 'beep'")
    assert_problem(b'{"v": 1, "type": "result", "outcome": "crashed"}', "malformed result")
    assert_problem(b'{"v": 1, "type": "result"}', "malformed result")
    assert_problem(b'{"v": 1, "type": "exec", "argv": "sh"}', "malformed exec")
    assert_problem(b"[" * 100_000, "not a JSON line")


def test_a_sloppy_log_record_is_still_shown() -> None:
    decoded = decode(b'{"v": 1, "type": "log", "message": 5, "level": "x"}', run_id="r1")
    assert isinstance(decoded, LogRecord)
    assert decoded.message == "5" and decoded.level is Level.INFO


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decode_never_raises_on_bytes(data: bytes) -> None:
    decode(data, run_id="r1")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["v", "type", "time", "level", "message", "fields", "outcome", "argv"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=5),
            st.lists(st.integers(), max_size=2),
            st.sampled_from([1, "log", "result", "exec", "succeeded"]),
        ),
    )
)
def test_decode_never_raises_on_json_objects(obj: dict[str, object]) -> None:
    decode(json.dumps(obj).encode(), run_id="r1")
