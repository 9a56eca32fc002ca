"""The Prometheus collector: what a scrape reads, parsed by prometheus_client's own parser."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.core.definitions import Kind, Settings
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, State
from supervisor.metrics.collector import MetricsPage
from supervisor.store.memory import MemoryStore
from supervisor.store.protocols import LostLogs, Store
from supervisor.store.sqlite import SqliteStore, state_db_path
from tests.fake_sources import T0, FakeSource
from tests.store_values import finish, make_run, record


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
    assert first[key("log_records_dropped_total", scheduler=sid)] == 0

    source.end_run(Outcome.FAILED, T0, seconds=2.0)
    source.end_run(
        Outcome.CRASHED, T0 + timedelta(minutes=1), seconds=40.0, truncated=True, dropped=1234
    )
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
    assert second[key("log_records_dropped_total", scheduler=sid)] == 1234
    assert second[key("failures_in_a_row", scheduler=sid)] == 2
    assert (
        second[key("next_planned_timestamp_seconds", scheduler=sid)]
        == (T0 + timedelta(minutes=61)).timestamp()
    )
    # A scrape without new runs counts nothing twice.
    third = scrape(page)
    assert third[key("runs_total", scheduler=sid, outcome="failed")] == 1
    assert third[key("log_records_dropped_total", scheduler=sid)] == 1234


class StoreSource:
    """A backend's two reads over a real store: one paused scheduler per id given."""

    def __init__(self, store: Store, scheduler_ids: list[str]) -> None:
        self.store = store
        self.scheduler_ids = scheduler_ids

    def statuses(self) -> list[SchedulerStatus]:
        statuses = []
        for sid in self.scheduler_ids:
            last = self.store.last_finished_run(sid)
            statuses.append(
                SchedulerStatus(
                    id=sid,
                    name=sid,
                    description="",
                    kind=Kind.MANUAL,
                    state=State.PAUSED,
                    settings=Settings(),
                    defaults=Settings(),
                    last_started_at=None if last is None else last.started_at,
                    last_completed_at=None if last is None else last.ended_at,
                )
            )
        return statuses

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        return self.store.runs(scheduler_id, limit=limit)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_dropped_and_truncated_log_records_are_counted_per_scheduler_from_the_store(
    tmp_path: Path, kind: str
) -> None:
    # Before: only runs with a truncated log were counted, never how many records went.
    store: Store = (
        SqliteStore.open(state_db_path(tmp_path), max_log_bytes_per_run=1000)
        if kind == "sqlite"
        else MemoryStore(max_log_bytes_per_run=1000)
    )
    try:
        page = MetricsPage(StoreSource(store, ["a.job", "b.job"]))
        assert scrape(page)[key("log_records_dropped_total", scheduler="a.job")] == 0
        store.insert_run(make_run("over-cap", "a.job"))
        store.append_logs([record("over-cap", "m" * 100) for _ in range(15)])  # 10 fit
        finish(store, "over-cap", at=T0 + timedelta(seconds=1))
        store.insert_run(make_run("lost", "b.job"))
        store.append_logs([record("lost", "kept")])
        store.add_lost_logs(
            LostLogs(
                run_id="lost",
                records=40,
                bytes=4000,
                first_time=T0,
                last_time=T0,
                reason="database or disk is full",
            )
        )
        finish(store, "lost", at=T0 + timedelta(seconds=2))
        store.insert_run(make_run("clean", "b.job", started_at=T0 + timedelta(seconds=3)))
        store.append_logs([record("clean", "all kept")])
        finish(store, "clean", at=T0 + timedelta(seconds=4))
        samples = scrape(page)
        assert samples[key("log_records_dropped_total", scheduler="a.job")] == 5
        assert samples[key("runs_log_truncated_total", scheduler="a.job")] == 1
        assert samples[key("log_records_dropped_total", scheduler="b.job")] == 40
        assert samples[key("runs_log_truncated_total", scheduler="b.job")] == 1
        assert samples[key("runs_total", scheduler="b.job", outcome="succeeded")] == 2
    finally:
        store.close()
