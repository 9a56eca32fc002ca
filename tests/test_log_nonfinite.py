"""A record whose fields hold NaN or Infinity (as a raw wire line may carry them) is
stored as valid JSON and never breaks later searches of the SQLite log table."""

from __future__ import annotations

import json
from pathlib import Path

from supervisor.core.records import LogQuery, LogRecord
from supervisor.runs import wire
from supervisor.store.codec import decode_fields, encode_fields
from supervisor.store.sqlite import SqliteStore, state_db_path
from tests.store_values import make_run, record

RAW_LINE = (
    b'{"v": 1, "type": "log", "time": 1700000000.0, "level": 20, "message": "odd",'
    b' "fields": {"ratio": NaN, "top": Infinity, "low": -Infinity, "deep": [NaN], "k": 1}}'
)


def test_encoded_fields_are_strict_json() -> None:
    text = encode_fields({"ratio": float("nan"), "deep": {"x": [float("inf")]}, "k": 1.5})
    decoded = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError))
    assert decoded == {"ratio": "nan", "deep": {"x": ["inf"]}, "k": 1.5}
    assert decode_fields(text) == decoded


def test_a_raw_wire_line_with_nan_does_not_break_later_searches(tmp_path: Path) -> None:
    message = wire.decode(RAW_LINE, run_id="a")
    assert isinstance(message, LogRecord)
    with SqliteStore.open(state_db_path(tmp_path)) as store:
        store.insert_run(make_run("a"))
        store.append_logs([record("a", "before", fields={"host": "erp-1"})])
        store.append_logs([message])
        store.append_logs([record("a", "after", fields={"host": "erp-1"})])
        by_text = store.logs(LogQuery(scheduler_id=None, text="erp"))
        by_field = store.logs(LogQuery(scheduler_id=None, fields=(("host", "erp-1"),)))
        odd = store.logs(LogQuery(scheduler_id=None, fields=(("k", "1"),)))
    assert [r.message for _, r in by_text] == ["before", "after"]
    assert [r.message for _, r in by_field] == ["before", "after"]
    assert [r.message for _, r in odd] == ["odd"]
    assert odd[0][1].fields["ratio"] == "nan"
