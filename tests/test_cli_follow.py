"""``logs -f`` with a filter continues after every record its last search examined,
not after its last match: a follow that matches nothing does not re-read the table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import pytest

from supervisor.cli import main
from supervisor.core.records import Level, LogQuery, LogRecord, Source
from supervisor.usecases.reads import LogHit, LogHits


class _Stop(Exception):
    pass


class _Control:
    """Answers searches from a script; records each query's ``after``."""

    def __init__(self, answers: list[LogHits]) -> None:
        self.answers = answers
        self.afters: list[int | None] = []

    def search_logs(self, query: LogQuery) -> LogHits:
        self.afters.append(query.after)
        if not self.answers:
            raise _Stop
        return self.answers.pop(0)


def _hit(cursor: int) -> LogHit:
    record = LogRecord(
        time=datetime(2026, 1, 1, tzinfo=UTC),
        level=Level.INFO,
        message=f"match {cursor}",
        fields={},
        run_id="",
        source=Source.LOGGER,
    )
    return LogHit(cursor=cursor, record=record, scheduler_id="m.a", run=None)


def test_follow_continues_after_the_scanned_cursor(capsys: pytest.CaptureFixture[str]) -> None:
    control = _Control(
        [
            LogHits([], scanned_to=200_000),
            LogHits([], scanned_to=200_500),
            LogHits([_hit(200_700)], scanned_to=201_000),
            LogHits([]),  # an older manager tells no scanned_to: the last cursor stays
        ]
    )
    query = LogQuery(scheduler_id=None, text="rare", limit=10)
    follow: Any = main._print_logs
    with click.Context(main.main), pytest.raises(_Stop):
        follow(control, query, count=10, follow=True, as_json=False)
    assert control.afters == [None, 200_000, 200_500, 201_000, 201_000]
    assert "match 200700" in capsys.readouterr().out
