"""The Prometheus collector: what a scrape reads, parsed by prometheus_client's own parser."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from supervisor.core.records import Outcome
from supervisor.metrics.collector import MetricsPage
from tests.fake_sources import T0, FakeSource


def scrape(page: MetricsPage) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(page.render().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (f"sched_supervisor_{name}", tuple(sorted(labels.items())))


def test_counters_count_runs_since_start_and_gauges_show_history() -> None:
    source = FakeSource()
    source.end_run(Outcome.SUCCEEDED, T0 - timedelta(hours=2))  # history before the start
    page = MetricsPage(source)
    first = scrape(page)
    sid = "nightly.export"
    assert first[key("runs_total", scheduler=sid, outcome="succeeded")] == 0
    assert (
        first[key("last_success_timestamp_seconds", scheduler=sid)]
        == (T0 - timedelta(hours=2)).timestamp()
    )
    assert first[key("state", scheduler=sid, state="paused")] == 1
    assert first[key("state", scheduler=sid, state="running")] == 0

    source.end_run(Outcome.FAILED, T0, seconds=2.0)
    source.end_run(Outcome.CRASHED, T0 + timedelta(minutes=1), seconds=40.0, truncated=True)
    second = scrape(page)
    assert second[key("runs_total", scheduler=sid, outcome="failed")] == 1
    assert second[key("runs_total", scheduler=sid, outcome="crashed")] == 1
    assert second[key("runs_total", scheduler=sid, outcome="succeeded")] == 0
    assert second[key("run_duration_seconds_count", scheduler=sid)] == 2
    assert second[key("run_duration_seconds_sum", scheduler=sid)] == 42.0
    assert second[key("run_duration_seconds_bucket", scheduler=sid, le="5.0")] == 1
    assert second[key("run_duration_seconds_bucket", scheduler=sid, le="60.0")] == 2
    assert second[key("run_duration_seconds_bucket", scheduler=sid, le="+Inf")] == 2
    assert second[key("runs_log_truncated_total", scheduler=sid)] == 1
    assert second[key("failures_in_a_row", scheduler=sid)] == 2
    assert (
        second[key("next_planned_timestamp_seconds", scheduler=sid)]
        == (T0 + timedelta(minutes=61)).timestamp()
    )
    # A scrape without new runs counts nothing twice.
    assert scrape(page)[key("runs_total", scheduler=sid, outcome="failed")] == 1
