"""A newer CLI reading logs from an older running manager, which answers the ``search``
op with "unknown operation": plain reads of one scheduler fall back to the ``logs`` op;
searches it cannot do say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisor.cli.client import ControlClient, error_from_answer
from supervisor.core.errors import ManagerUnavailable
from supervisor.core.records import Level, LogQuery
from supervisor.usecases import serialize
from supervisor.usecases.reads import SEARCH_PAGE_LIMIT
from tests.store_values import record


class _OldManager(ControlClient):
    """The answers of a manager from before the ``search`` op (its ops as they were)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.ops: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, **args: Any) -> Any:
        self.ops.append((op, args))
        if op == "logs":
            return [
                serialize.log_json(record("a", "old one", level=Level.WARNING), cursor=7),
                serialize.log_json(record("a", "old two", level=Level.ERROR), cursor=9),
            ]
        raise error_from_answer(f"unknown operation {op!r}", 2)


def test_plain_reads_fall_back_to_the_logs_op(tmp_path: Path) -> None:
    old = _OldManager(tmp_path)
    query = LogQuery(scheduler_id="m.a", min_level=Level.WARNING, after=3, limit=50)
    hits = old.search_logs(query)
    assert [(h.cursor, h.record.message, h.scheduler_id) for h in hits] == [
        (7, "old one", "m.a"),
        (9, "old two", "m.a"),
    ]
    assert [op for op, _ in old.ops] == ["search", "logs"]
    assert old.ops[1][1] == {
        "id": "m.a",
        "run_id": None,
        "limit": 50,
        "level": "warning",
        "after": 3,
    }


@pytest.mark.parametrize(
    "query",
    [LogQuery(scheduler_id=None), LogQuery(scheduler_id="m.a", text="needle")],
)
def test_a_search_the_old_manager_cannot_do_says_so(tmp_path: Path, query: LogQuery) -> None:
    with pytest.raises(ManagerUnavailable, match="older than this command"):
        _OldManager(tmp_path).search_logs(query)


class _PagingManager(ControlClient):
    """A manager's ``search`` over cursors 1..total, refusing more than a page at once."""

    def __init__(self, state_dir: Path, total: int) -> None:
        super().__init__(state_dir)
        self.total = total
        self.limits: list[int] = []

    def call(self, op: str, **args: Any) -> Any:
        assert op == "search"
        limit = args["limit"]
        if limit > SEARCH_PAGE_LIMIT:
            raise error_from_answer(f"limit: must be a whole number from 1 to {limit}", 2)
        self.limits.append(limit)
        low, high = (args["after"] or 0) + 1, (args["before"] or self.total + 1) - 1
        cursors = list(range(low, high + 1))
        cursors = cursors[:limit] if args["after"] is not None else cursors[-limit:]
        line = record("a", "x")
        records = [{**serialize.log_json(line, cursor=c), "scheduler_id": "m.a"} for c in cursors]
        return {"records": records, "runs": {}, "scanned_to": self.total}


@pytest.mark.parametrize("after", [None, 10])
def test_a_big_count_is_read_a_page_at_a_time(tmp_path: Path, after: int | None) -> None:
    manager = _PagingManager(tmp_path, total=12_000)
    hits = manager.search_logs(LogQuery(scheduler_id=None, text="x", limit=11_000, after=after))
    cursors = [hit.cursor for hit in hits]
    expected = list(range(11, 11_011)) if after is not None else list(range(1001, 12_001))
    assert cursors == expected
    assert all(limit <= SEARCH_PAGE_LIMIT for limit in manager.limits)
    assert len(manager.limits) == 3
