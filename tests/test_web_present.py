"""The pure presentation helpers: durations for people, the chart, the settings form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from supervisor.core.records import Outcome, RunRecord, Trigger
from supervisor.web import present

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 ms"),
        (0.25, "250 ms"),
        (1.234, "1.23 s"),
        (12.34, "12.3 s"),
        (65, "1m05s"),
        (3599.6, "1h00m"),
        (3600 * 2 + 600, "2h10m"),
        (-3, "0 ms"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert present.human_duration(timedelta(seconds=seconds)) == text


def test_human_duration_of_nothing_is_empty() -> None:
    assert present.human_duration(None) == ""


def run(index: int, seconds: float | None, outcome: Outcome | None) -> RunRecord:
    started = T0 + timedelta(minutes=index)
    return RunRecord(
        run_id=f"run-{index}",
        scheduler_id="s",
        trigger=Trigger.SCHEDULE,
        triggered_by=None,
        started_at=started,
        ended_at=None if seconds is None else started + timedelta(seconds=seconds),
        outcome=outcome,
    )


def test_the_chart_puts_the_newest_run_at_the_right_edge() -> None:
    runs = [run(2, None, None), run(1, 4, Outcome.FAILED), run(0, 2, Outcome.SUCCEEDED)]
    chart = present.duration_chart(runs, T0 + timedelta(minutes=2, seconds=1))
    assert [b.run_id for b in chart.bars] == ["run-0", "run-1", "run-2"]
    assert [b.css for b in chart.bars] == [
        "outcome-succeeded",
        "outcome-failed",
        "outcome-running",
    ]
    last = chart.bars[-1]
    assert last.x + last.width + present.CHART_GAP / 2 == pytest.approx(chart.width)
    tallest = max(chart.bars, key=lambda b: b.height)
    assert tallest.run_id == "run-1" and tallest.y >= 0
    assert all(b.y + b.height == pytest.approx(chart.height) for b in chart.bars)
    assert chart.longest == "4.00 s"
    assert dict(chart.outcomes) == {
        "outcome-succeeded": "Succeeded",
        "outcome-failed": "Failed",
        "outcome-running": "Running",
    }


def test_the_chart_keeps_at_most_its_slots_and_tiny_runs_visible() -> None:
    runs = [run(i, 0.0 if i else 100.0, Outcome.SUCCEEDED) for i in range(80)]
    chart = present.duration_chart(runs, T0, slots=50)
    assert len(chart.bars) == 50
    assert min(b.height for b in chart.bars) >= 2.0
    assert present.duration_chart([], T0).bars == ()


def test_fields_and_audit_values_read_well() -> None:
    assert present.field_value("text") == "text"
    assert present.field_value({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'
    assert present.audit_value("pause_time", 90.0) == "1m30s"
    assert present.audit_value("timeout", None) == "none"
    assert present.audit_value("disabled", True) == "yes"
    assert present.audit_value("cron", "0 3 * * *") == "0 3 * * *"
