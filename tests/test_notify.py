"""Notifications: the policy (pure), webhook and email delivery against local receivers,
retries, and the watcher over a fake source and over a real manager."""

from __future__ import annotations

import email
import hmac
import io
import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from supervisor.core.access import su
from supervisor.core.clock import FakeClock
from supervisor.core.errors import DefinitionError
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus
from supervisor.notify.dispatch import Delivered, Dispatcher, RetryPolicy
from supervisor.notify.events import Notification, NotificationKind
from supervisor.notify.policy import Health, after_run, overdue
from supervisor.notify.targets import SIGNATURE_HEADER, TIMESTAMP_HEADER, Email, Webhook, signature
from supervisor.notify.watcher import Routing, Watcher
from supervisor.service.manager_mode import RunOptions, Service
from tests.fake_sources import T0, FakeSource
from tests.notify_sinks import smtp_sink, webhook_receiver
from tests.waiting import wait_for

FAST = RetryPolicy(attempts=3, first_wait_seconds=0.01, max_wait_seconds=0.02)


def note(kind: NotificationKind = NotificationKind.FAILURE) -> Notification:
    return Notification(
        kind=kind,
        app="demo",
        host="web1",
        scheduler_id="nightly.export",
        scheduler_name="Nightly export",
        at=T0,
        run_id="r1",
        outcome="failed",
        error="Traceback ...\nRuntimeError: disk full",
        failures_in_a_row=1,
    )


# -- policy --------------------------------------------------------------------------------

S, F, C, T, X, INT = (
    Outcome.SUCCEEDED,
    Outcome.FAILED,
    Outcome.CRASHED,
    Outcome.TIMED_OUT,
    Outcome.CANCELLED,
    Outcome.INTERRUPTED,
)
FAIL, RECOVER = NotificationKind.FAILURE, NotificationKind.RECOVERY


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([S, S, S], [None, None, None]),
        ([F], [FAIL]),
        ([F, F, C, T], [FAIL, None, None, None]),  # once per streak, not per failed run
        ([F, S], [FAIL, RECOVER]),
        ([F, S, S, T], [FAIL, RECOVER, None, FAIL]),
        ([S, X, INT, S], [None, None, None, None]),  # a stop or a dead manager says nothing
        ([F, X, S], [FAIL, None, RECOVER]),
    ],
)
def test_failure_is_told_once_per_streak_and_recovery_once(
    outcomes: list[Outcome], expected: list[NotificationKind | None]
) -> None:
    health, told = Health(), []
    for outcome in outcomes:
        health, kind = after_run(health, outcome)
        told.append(kind)
    assert told == expected


def test_streak_counts_failures_in_a_row() -> None:
    health = Health()
    for outcome in (F, C, X, T):
        health, _ = after_run(health, outcome)
    assert health.failures_in_a_row == 3


def test_a_missed_start_is_told_once_per_plan() -> None:
    grace = timedelta(minutes=5)
    planned = T0
    health, missed = overdue(Health(), planned_at=planned, running=False, grace=grace, now=T0)
    assert not missed
    health, missed = overdue(health, planned_at=planned, running=False, grace=grace, now=T0 + grace)
    assert missed
    health, missed = overdue(
        health, planned_at=planned, running=False, grace=grace, now=T0 + 2 * grace
    )
    assert not missed
    _, missed = overdue(health, planned_at=planned, running=True, grace=grace, now=T0 + grace)
    assert not missed
    _, missed = overdue(
        health, planned_at=T0 + grace, running=False, grace=grace, now=T0 + 3 * grace
    )
    assert missed


# -- targets ---------------------------------------------------------------------------------


def test_webhook_posts_signed_json() -> None:
    with webhook_receiver() as receiver:
        Webhook(url=receiver.url, secret=b"s3cret").send(note())
    [request] = receiver.requests
    body = json.loads(request.body)
    assert body["kind"] == "failure"
    assert body["scheduler_id"] == "nightly.export"
    assert body["error"].endswith("RuntimeError: disk full")
    assert body["at"] == "2026-12-03T02:00:00+00:00"
    expected = signature(b"s3cret", request.headers[TIMESTAMP_HEADER], request.body)
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert request.headers[TIMESTAMP_HEADER] == str(int(T0.timestamp()))


def test_webhook_without_secret_sends_no_signature() -> None:
    with webhook_receiver() as receiver:
        Webhook(url=receiver.url).send(note())
    assert SIGNATURE_HEADER not in receiver.requests[0].headers


@pytest.mark.parametrize("url", ["ftp://x/y", "file:///etc/passwd", "not a url", "http://"])
def test_webhook_refuses_non_http_urls(url: str) -> None:
    with pytest.raises(DefinitionError, match="notify webhook"):
        Webhook(url=url)


def test_email_is_delivered_to_an_smtp_server() -> None:
    with smtp_sink() as sink:
        Email(
            host=sink.host, port=sink.port, sender="sup@example.org", recipients=["ops@example.org"]
        ).send(note())
    [(sender, recipients, data)] = sink.messages
    assert sender == "sup@example.org"
    assert recipients == ["ops@example.org"]
    message = email.message_from_bytes(data)
    assert message["Subject"] == "[demo@web1] Nightly export (nightly.export) failed"
    assert "RuntimeError: disk full" in message.get_payload()


def test_email_validates_its_settings() -> None:
    with pytest.raises(DefinitionError, match="recipient"):
        Email(host="localhost", sender="a@b", recipients=["nobody"])
    with pytest.raises(DefinitionError, match="port"):
        Email(host="localhost", port=0, sender="a@b", recipients=["c@d"])


# -- dispatch ----------------------------------------------------------------------------


def collect() -> tuple[list[Delivered], Dispatcher, io.StringIO]:
    results: list[Delivered] = []
    err = io.StringIO()
    return results, Dispatcher(retry=FAST, err=err, on_result=results.append), err


def test_dispatcher_retries_server_errors_with_back_off() -> None:
    results, dispatcher, err = collect()
    with webhook_receiver(answers=[500, 503]) as receiver:
        dispatcher.submit(note(), (Webhook(url=receiver.url),))
        wait_for(lambda: results, what="a delivery result")
        dispatcher.close()
    assert [r.error for r in results] == [None]
    assert results[0].attempts == 3
    assert len(receiver.requests) == 3
    assert err.getvalue() == ""


def test_dispatcher_does_not_retry_a_refusal_and_reports_it_once() -> None:
    results, dispatcher, err = collect()
    with webhook_receiver(answers=[403]) as receiver:
        dispatcher.submit(note(), (Webhook(url=receiver.url),))
        wait_for(lambda: results, what="a delivery result")
        dispatcher.close()
    assert len(receiver.requests) == 1
    assert results[0].error is not None and "answered 403" in results[0].error
    assert err.getvalue().count("could not notify") == 1


def test_dispatcher_gives_up_on_an_unreachable_receiver_after_its_attempts() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results, dispatcher, err = collect()
    dispatcher.submit(note(), (Webhook(url=f"http://127.0.0.1:{port}/", timeout_seconds=2),))
    wait_for(lambda: results, what="a delivery result")
    dispatcher.close()
    assert results[0].attempts == 3
    assert dispatcher.failed == 1
    assert "after 3 attempt(s)" in err.getvalue()


# -- watcher -------------------------------------------------------------------------------


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.got: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.got.append(notification)


@pytest.fixture
def watched() -> Iterator[tuple[FakeSource, Recorder, Watcher, FakeClock, io.StringIO]]:
    source, recorder, clock, err = FakeSource(), Recorder(), FakeClock(T0), io.StringIO()
    dispatcher = Dispatcher(retry=FAST, err=err)
    watcher = Watcher(
        source,
        Routing(default=(recorder,)),
        dispatcher,
        app="demo",
        clock=clock,
        err=err,
        host="web1",
        journal=True,
    )
    yield source, recorder, watcher, clock, err
    dispatcher.close()


def test_watcher_tells_failure_then_recovery_and_logs_each_failed_run(
    watched: tuple[FakeSource, Recorder, Watcher, FakeClock, io.StringIO],
) -> None:
    source, recorder, watcher, clock, err = watched
    source.end_run(F, T0 - timedelta(hours=5))  # history: not told
    source.status = replace(source.status, next_planned_at=T0 + timedelta(minutes=1))
    watcher.tick()
    for outcome in (F, F, S):
        clock.advance(60)
        source.end_run(outcome, clock.now())
        watcher.tick()
    wait_for(lambda: len(recorder.got) >= 1, what="a notification")
    # The old failure was learnt as history: the streak goes on, told once.
    assert [n.kind for n in recorder.got] == [RECOVER]
    assert err.getvalue().count("<3>supervisor: nightly.export run") == 2
    assert "failed (3 in a row): ValueError: bad row 7" in err.getvalue()


def test_watcher_tells_a_new_failure_with_its_error(
    watched: tuple[FakeSource, Recorder, Watcher, FakeClock, io.StringIO],
) -> None:
    source, recorder, watcher, clock, _err = watched
    watcher.tick()
    source.end_run(C, clock.now())
    watcher.tick()
    wait_for(lambda: recorder.got, what="a notification")
    [told] = recorder.got
    assert told.kind is FAIL
    assert told.outcome == "crashed"
    assert told.error is not None and told.error.endswith("ValueError: bad row 7")
    assert told.failures_in_a_row == 1


def test_watcher_is_a_dead_mans_switch(
    watched: tuple[FakeSource, Recorder, Watcher, FakeClock, io.StringIO],
) -> None:
    _source, recorder, watcher, clock, _err = watched
    watcher.tick()
    clock.jump_wall(3600 + 5 * 60)  # the planned start plus the grace went by: nothing ran
    watcher.tick()
    watcher.tick()
    wait_for(lambda: recorder.got, what="a notification")
    [told] = recorder.got
    assert told.kind is NotificationKind.MISSED
    assert told.expected_at == T0 + timedelta(hours=1)
    assert "did not run when expected" in told.subject


def test_per_scheduler_targets_replace_the_default() -> None:
    a, b = Recorder(), Recorder()
    routing = Routing(default=(a,), per_scheduler={"quiet": (), "loud": (a, b)})
    assert routing.targets("other") == (a,)
    assert routing.targets("quiet") == ()
    assert routing.targets("loud") == (a, b)


class UseCasesSource:
    """The watcher's reads through the use cases, as the composition root wires it."""

    def __init__(self, service: Service) -> None:
        assert service.use_cases is not None, "the service is started"
        self._use_cases = service.use_cases

    def statuses(self) -> list[SchedulerStatus]:
        return self._use_cases.list(su())

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        return self._use_cases.runs(su(), scheduler_id, limit=limit)


def test_a_real_failing_run_reaches_a_webhook(tmp_path: pytest.TempPathFactory) -> None:
    service = Service(
        RunOptions(
            app_spec="tests.apps.manager_jobs:cfg",
            state_dir=tmp_path / "state",  # type: ignore[operator]
            admin=None,
            grace_seconds=0.5,
        ),
        log=io.StringIO(),
    )
    service.start()
    err = io.StringIO()
    dispatcher = Dispatcher(retry=FAST, err=err)
    try:
        with webhook_receiver() as receiver:
            watcher = Watcher(
                UseCasesSource(service),
                Routing(per_scheduler={"m.fail": (Webhook(url=receiver.url, secret=b"k"),)}),
                dispatcher,
                app="manager-tests",
                err=err,
                journal=False,
            )
            watcher.tick()
            assert service.use_cases is not None
            run_id = service.use_cases.execute(su(), "m.fail")

            def told() -> bool:
                watcher.tick()
                return bool(receiver.requests)

            wait_for(told, timeout=30, what="the webhook to hear of the failed run")
            body = json.loads(receiver.requests[0].body)
    finally:
        dispatcher.close()
        service.close()
    assert body["kind"] == "failure"
    assert body["run_id"] == run_id
    assert body["scheduler_id"] == "m.fail"
    assert body["outcome"] == "failed"
    assert f"supervisor: m.fail run {run_id} failed (1 in a row)" in err.getvalue()


# -- configuration -------------------------------------------------------------------------


def test_enable_is_idempotent_and_routes_per_scheduler() -> None:
    from supervisor import Configurator, notify

    cfg = Configurator("demo")
    hook = notify.Webhook(url="http://127.0.0.1:9/")
    assert notify.enable(cfg) is notify.enable(cfg)
    notify.enable(cfg).add(hook).route("quiet.job")
    routing = notify.enable(cfg).routing()
    assert routing.targets("any.job") == (hook,)
    assert routing.targets("quiet.job") == ()


def test_command_line_targets_name_the_bad_option(tmp_path: pytest.TempPathFactory) -> None:
    from supervisor.notify.config import targets_from_options

    with pytest.raises(DefinitionError, match="--smtp"):
        targets_from_options(
            webhooks=[], webhook_secret_file=None, emails=["a@b"], smtp="host:x", sender=None
        )
    with pytest.raises(DefinitionError, match="--notify-webhook-secret-file"):
        targets_from_options(
            webhooks=["http://h/"],
            webhook_secret_file="/nonexistent/secret",
            emails=[],
            smtp=None,
            sender=None,
        )
    [webhook, mail] = targets_from_options(
        webhooks=["http://127.0.0.1:9/h"],
        webhook_secret_file=None,
        emails=["ops@example.org"],
        smtp="mail.example.org:2525",
        sender=None,
    )
    assert webhook.name == "webhook http://127.0.0.1:9"
    assert mail.name == "email via mail.example.org:2525"


# -- the product, end to end ---------------------------------------------------------------


def test_supervisor_run_tells_a_webhook_and_logs_one_line_per_failed_run(
    tmp_path: pytest.TempPathFactory,
) -> None:
    import os
    import signal
    import subprocess

    from tests.commands import ROOT, supervisor

    state = tmp_path / "state"  # type: ignore[operator]
    with webhook_receiver() as receiver:
        process = subprocess.Popen(
            supervisor(
                *("run", "--app", "tests.apps.manager_jobs:cfg", "--state-dir", str(state)),
                *("--no-admin", "--grace", "500ms", "--notify-webhook", receiver.url),
            ),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: (state / "control.sock").exists(), timeout=30, what="the manager")
            executed = subprocess.run(
                supervisor("execute", "m.fail", "--state-dir", str(state), "--json"),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            run_id = json.loads(executed.stdout)["run_id"]
            wait_for(
                lambda: any(
                    json.loads(r.body)["scheduler_id"] == "m.fail" for r in receiver.requests
                ),
                timeout=30,
                what="the webhook to hear of the failure",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=60)
    told = [json.loads(r.body) for r in receiver.requests]
    failure = next(t for t in told if t["scheduler_id"] == "m.fail")
    assert failure["kind"] == "failure" and failure["run_id"] == run_id
    assert err.count(f"supervisor: m.fail run {run_id} failed (1 in a row)") == 1
