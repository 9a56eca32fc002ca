"""A Prometheus collector over any backend's reads (manager or systemd).

Counters and the duration histogram count the runs that ended since this process started
(Prometheus expects counters to reset with the process); gauges come from the current
status and the stored history. Everything is computed at scrape time: no thread.

A run's log losses are counted when it ends, from its run record: ``log_records_dropped``
(records the store did not keep: those over the per-run cap and those lost before they
reached it, e.g. on a full disk) and ``runs_log_truncated`` (runs that lost any).
The systemd mode's journald keeps no such counts: there they stay 0.

May import ``core``, ``notify.feed`` and prometheus_client (whose API is the same in
Debian 12's 0.16 and current releases for what is used here).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from supervisor.core.records import Outcome, RunRecord, State
from supervisor.notify.feed import Look, RunFeed, RunSource

DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, float("inf"))
PREFIX = "sched_supervisor"


@dataclass(slots=True)
class _Tally:
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    duration_sum: float = 0.0
    duration_count: int = 0
    truncated: int = 0
    dropped_records: int = 0
    last_success: float | None = None
    failures_in_a_row: int = 0


class SchedulerCollector:
    """Collects the metrics of every scheduler of one backend."""

    def __init__(self, source: RunSource) -> None:
        self._feed = RunFeed(source)
        self._tallies: dict[str, _Tally] = defaultdict(_Tally)
        self._lock = threading.Lock()  # scrapes may come in parallel

    def _count(self, tally: _Tally, run: RunRecord, *, new: bool) -> None:
        assert run.outcome is not None
        if run.outcome is Outcome.SUCCEEDED:
            ended = run.ended_at or run.started_at
            tally.last_success = max(tally.last_success or 0.0, ended.timestamp())
            tally.failures_in_a_row = 0
        elif run.outcome in (Outcome.FAILED, Outcome.CRASHED, Outcome.TIMED_OUT):
            tally.failures_in_a_row += 1
        if not new:
            return
        tally.outcomes[run.outcome.value] += 1
        if run.log_truncated:
            tally.truncated += 1
        tally.dropped_records += run.dropped_log_records
        if run.ended_at is not None:
            seconds = max(0.0, (run.ended_at - run.started_at).total_seconds())
            tally.duration_sum += seconds
            tally.duration_count += 1
            for index, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    tally.buckets[index] += 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            looks = self._feed.look()
            for look in looks:
                tally = self._tallies[look.status.id]
                for run in look.history:
                    self._count(tally, run, new=False)
                for run in look.ended:
                    self._count(tally, run, new=True)
            yield from self._families(looks)

    def _families(self, looks: list[Look]) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            f"{PREFIX}_runs", "Runs ended since start, by outcome", labels=["scheduler", "outcome"]
        )
        durations = HistogramMetricFamily(
            f"{PREFIX}_run_duration_seconds",
            "Duration of runs ended since start",
            labels=["scheduler"],
        )
        truncated = CounterMetricFamily(
            f"{PREFIX}_runs_log_truncated",
            "Runs ended since start whose log is incomplete (records dropped at the cap or lost)",
            labels=["scheduler"],
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_log_records_dropped",
            "Log records of runs ended since start that were not kept (over the per-run cap, "
            "or lost before they could be stored)",
            labels=["scheduler"],
        )
        last_success = GaugeMetricFamily(
            f"{PREFIX}_last_success_timestamp_seconds",
            "End of the last successful run (Unix time)",
            labels=["scheduler"],
        )
        next_planned = GaugeMetricFamily(
            f"{PREFIX}_next_planned_timestamp_seconds",
            "Next planned start (Unix time)",
            labels=["scheduler"],
        )
        state = GaugeMetricFamily(
            f"{PREFIX}_state", "1 for the scheduler's current state", labels=["scheduler", "state"]
        )
        failing = GaugeMetricFamily(
            f"{PREFIX}_failures_in_a_row",
            "Failed, crashed or timed-out runs since the last success",
            labels=["scheduler"],
        )
        for look in looks:
            status = look.status
            sid = status.id
            tally = self._tallies[sid]
            for outcome in Outcome:
                runs.add_metric([sid, outcome.value], tally.outcomes.get(outcome.value, 0))
            # Each bucket already counts every run at or below its bound (cumulative).
            buckets = [
                (_bound(bound), float(count))
                for bound, count in zip(DURATION_BUCKETS, tally.buckets, strict=True)
            ]
            durations.add_metric([sid], buckets, tally.duration_sum)
            truncated.add_metric([sid], tally.truncated)
            dropped.add_metric([sid], tally.dropped_records)
            if tally.last_success is not None:
                last_success.add_metric([sid], tally.last_success)
            if status.next_planned_at is not None:
                next_planned.add_metric([sid], status.next_planned_at.timestamp())
            for each in State:
                state.add_metric([sid, each.value], 1.0 if status.state is each else 0.0)
            failing.add_metric([sid], tally.failures_in_a_row)
        yield from (
            runs,
            durations,
            truncated,
            dropped,
            last_success,
            next_planned,
            state,
            failing,
        )


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


class MetricsPage:
    """The text a scrape gets, and its content type."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, source: RunSource) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(SchedulerCollector(source))

    def render(self) -> bytes:
        return generate_latest(self._registry)
