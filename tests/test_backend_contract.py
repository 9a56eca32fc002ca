"""One Backend conformance suite, run over every implementation.

- ``manager``: the manager with real child processes and a real SQLite file in a tmp dir;
- ``systemd``: the systemd backend under a real systemd booted in a private namespace
  (the units installed by ``supervisor install-units``; the backend runs inside the
  namespace, in a small server process this module talks to over a pipe, since it must
  see the namespace's ``/etc/systemd/system`` and journal);
- ``fake``: the web tests' ``FakeBackend``, so the Admin Center tests rest on a double
  that keeps the same contract.

Each harness runs the schedulers of ``tests/apps/contract_jobs.py`` and can hold a run of
``c.manual`` (it keeps going until released). Settings are changed through the use cases
(the only way a backend is handed settings: already checked by ``core.settings``).
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pytest

from supervisor.core.access import su
from supervisor.core.app import load_app
from supervisor.core.clock import FakeClock
from supervisor.core.errors import (
    ActionFailed,
    AlreadyRunning,
    DefinitionError,
    StoreError,
    SupervisorError,
    UnknownAction,
    UnknownRun,
    UnknownScheduler,
)
from supervisor.core.records import AuditEntry, Level, LogQuery, Outcome, RunRecord, State, Trigger
from supervisor.core.registry import registry_of
from supervisor.core.settings import EffectiveSettings
from supervisor.usecases.backend import Backend
from supervisor.usecases.schedulers import UseCases
from tests.apps.contract_jobs import RUN_MESSAGE
from tests.test_web_fakes import START, FakeBackend, MemoryAudit
from tests.waiting import wait_for

APP = "tests.apps.contract_jobs:cfg"
IDS = ["c.manual", "c.repeat", "c.cron"]
REPO = Path(__file__).resolve().parent.parent
NAMESPACE_HOLD_FILE = "/run/sched-contract-hold"  # the app's default, in the namespace
RUN_TIMEOUT = 30.0


class Harness(Protocol):
    """A backend running the contract app, and what a test needs around it."""

    backend: Backend
    use_cases: UseCases

    def hold(self) -> None:
        """Runs of ``c.manual`` started from now on keep going until ``release``."""

    def release(self) -> None: ...

    def started(self, run_id: str) -> None:
        """Wait until the run has logged its first record."""

    def ended(self, scheduler_id: str, run_id: str) -> RunRecord:
        """Wait until a run of a scheduler that ends by itself (``c.repeat``) has ended."""

    def store_full(self) -> AbstractContextManager[None]:
        """While open, the backend's store refuses to write settings, as a full disk does
        (skips for a backend without a store)."""
        ...


class FullStore:
    """A store whose settings writes fail as on a full disk; the rest is the real one."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def set_overrides(self, scheduler_id: str, overrides: Any) -> None:
        raise StoreError("database or disk is full")

    def delete_overrides(self, scheduler_id: str) -> bool:
        raise StoreError("database or disk is full")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# -- the manager -------------------------------------------------------------------------


class RealRuns:
    """The part of a harness over a backend that really runs the contract app: a file
    holds ``c.manual``'s runs, and a run's first record and its end are waited for."""

    hold_file: Path
    backend: Backend

    def hold(self) -> None:
        self.hold_file.write_text("hold")

    def release(self) -> None:
        self.hold_file.unlink(missing_ok=True)

    def started(self, run_id: str) -> None:
        wait_for(
            lambda: self.backend.logs(LogQuery(scheduler_id="c.manual", run_id=run_id)),
            timeout=RUN_TIMEOUT,
            what=f"run {run_id} to log",
        )

    def ended(self, scheduler_id: str, run_id: str) -> RunRecord:
        return finished(self, run_id)


class ManagerHarness(RealRuns):
    def __init__(self, state_dir: Path, hold_file: Path) -> None:
        from supervisor.service.manager_mode import RunOptions, Service

        self.hold_file = hold_file
        options = RunOptions(app_spec=APP, state_dir=state_dir, admin=None, grace_seconds=0.5)
        self.service = Service(options, log=io.StringIO())
        self.service.start()
        assert self.service.manager is not None and self.service.use_cases is not None
        self.backend: Backend = self.service.manager
        self.use_cases = self.service.use_cases

    @contextmanager
    def store_full(self) -> Iterator[None]:
        manager: Any = self.backend
        real = manager._store  # the manager's own handle; the audit keeps the real one
        manager._store = FullStore(real)
        try:
            yield
        finally:
            manager._store = real

    def close(self) -> None:
        self.release()
        self.service.close()


# -- the web tests' fake -----------------------------------------------------------------


class FakeHarness:
    """The fake does not run code: this harness plays the part of ``c.manual``'s runner."""

    def __init__(self) -> None:
        registry = registry_of(load_app(APP))
        self.fake = FakeBackend(registry, FakeClock(START))
        self.backend: Backend = self.fake
        self.use_cases = UseCases(registry, backend=self.fake, audit=MemoryAudit())
        self.holding = False

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        current = self.fake.slots["c.manual"].current
        if current is not None:
            self.fake.log("c.manual", "released", run_id=current.run_id)
            self.fake.finish("c.manual", Outcome.SUCCEEDED)

    def started(self, run_id: str) -> None:
        if not self.fake.logs(LogQuery(scheduler_id="c.manual", run_id=run_id)):
            self.fake.log("c.manual", RUN_MESSAGE, run_id=run_id, n=7, trigger="manual")

    def ended(self, scheduler_id: str, run_id: str) -> RunRecord:
        current = self.fake.slots[scheduler_id].current
        if current is not None and current.run_id == run_id:
            self.fake.clock.advance(1.0)
            self.fake.finish(scheduler_id, Outcome.SUCCEEDED)
        return finished(self, run_id)

    def store_full(self) -> AbstractContextManager[None]:
        pytest.skip("the fake keeps its settings in memory: there is no store to fail")

    def close(self) -> None:
        return None


# -- systemd -----------------------------------------------------------------------------


def serve_backend(state_dir: str) -> None:
    """Inside the namespace: answer Backend calls read from stdin (see ``RemoteBackend``)."""
    from supervisor.service.systemd_mode import open_systemd_mode

    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the answer pipe
    mode = open_systemd_mode(Path(state_dir))
    try:
        while (request := _read(requests)) is not None:
            method, args, kwargs = request
            if method == "update_settings":
                scheduler_id, (effective, defaults, overrides) = args
                settings = EffectiveSettings(
                    effective=effective, defaults=defaults, overrides=overrides
                )
                args = (scheduler_id, settings)
            target: Any = mode.backend
            if method in ("store.full", "store.mend"):
                backend: Any = mode.backend
                backend._store = FullStore(mode.store) if method == "store.full" else mode.store
                _write(answers, ("ok", None))
                continue
            if method.startswith("audit."):  # the trail the systemd mode's use cases write
                target, method = mode.store, method.removeprefix("audit.")
            try:
                answer: tuple[Any, ...] = ("ok", getattr(target, method)(*args, **kwargs))
            except SupervisorError as error:
                answer = ("error", type(error).__module__, type(error).__qualname__, str(error))
                answer += (dict(vars(error)),)
            _write(answers, answer)
    finally:
        mode.close()


def _write(pipe: BinaryIO, value: object) -> None:
    data = pickle.dumps(value)
    pipe.write(len(data).to_bytes(8, "big") + data)
    pipe.flush()


def _read(pipe: BinaryIO) -> Any:
    header = pipe.read(8)
    if len(header) < 8:
        return None
    return pickle.loads(pipe.read(int.from_bytes(header, "big")))


class RemoteBackend:
    """A ``Backend`` whose calls run in ``serve_backend`` inside the namespace."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        _write(self._process.stdin, (method, args, kwargs))
        answer = _read(self._process.stdout)
        if answer is None:
            raise AssertionError(f"the backend server died (exit {self._process.wait()})")
        if answer[0] == "ok":
            return answer[1]
        _, module, name, message, attributes = answer
        cls = getattr(sys.modules[module], name)
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        error.__dict__.update(attributes)
        raise error

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        if method == "update_settings":
            return lambda sid, s, **kwargs: self._call(
                method, sid, (s.effective, s.defaults, dict(s.overrides)), **kwargs
            )
        return lambda *args, **kwargs: self._call(method, *args, **kwargs)

    def close(self) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        self._process.wait(timeout=30)
        self._process.stdout.close()


class RemoteAudit:
    """The audit trail of the store inside the namespace, where the systemd backend reads
    who pressed Execute Now (``triggered_by``) back from."""

    def __init__(self, remote: RemoteBackend) -> None:
        self._remote = remote

    def add_audit(self, entry: AuditEntry) -> None:
        self._remote._call("audit.add_audit", entry)

    def audit(
        self,
        *,
        scheduler_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
        **filters: Any,
    ) -> list[tuple[int, AuditEntry]]:
        found: list[tuple[int, AuditEntry]] = self._remote._call(
            "audit.audit", scheduler_id=scheduler_id, limit=limit, before=before, **filters
        )
        return found


@dataclass
class SystemdWorld:
    ns: Any
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.ns.run(
            [sys.executable, "-m", "supervisor", *args], env=self.env, cwd=REPO, timeout=120
        )
        assert done.returncode == 0, f"supervisor {' '.join(args)}: {done.stderr}"
        return done


class SystemdHarness(RealRuns):
    def __init__(self, world: SystemdWorld) -> None:
        self.world = world
        ns = world.ns
        command = [
            *("nsenter", "-t", str(ns.pid), "-m", "-p", "-u", "-i", "--", sys.executable, "-c"),
            "import sys; from tests.test_backend_contract import serve_backend; "
            "serve_backend(sys.argv[1])",
            str(world.state_dir),
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=world.env, cwd=REPO
        )
        self.remote = RemoteBackend(process)
        self.backend: Backend = self.remote  # type: ignore[assignment]
        self.use_cases = UseCases(
            registry_of(load_app(APP)), backend=self.backend, audit=RemoteAudit(self.remote)
        )
        self.hold_file = ns.inside(NAMESPACE_HOLD_FILE)

    @contextmanager
    def store_full(self) -> Iterator[None]:
        self.remote._call("store.full")
        try:
            yield
        finally:
            self.remote._call("store.mend")

    def close(self) -> None:
        """Leave the shared install as the next test expects it."""
        self.release()
        for scheduler_id in IDS:
            self.use_cases.reset_settings(su(), scheduler_id)
            self.backend.start(scheduler_id, actor="contract")
        wait_for(
            lambda: self.backend.status("c.manual").state is not State.RUNNING,
            timeout=RUN_TIMEOUT,
            what="the held run to end",
        )
        self.remote.close()


@pytest.fixture(scope="module")
def systemd_world() -> Iterator[SystemdWorld]:
    from tests.required import skip_or_fail
    from tests.systemd_ns import NamespacedSystemd, unavailable_reason

    if str(REPO).startswith(("/tmp/", "/var/tmp/")):
        pytest.skip("the checkout is under a tmp dir, which the units cannot see")
    skip_or_fail("systemd", unavailable_reason())
    with NamespacedSystemd.boot() as ns:
        state_dir = ns.shared_dir / "state"
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(REPO),
            "SUPERVISOR_STATE_DIR": str(state_dir),
            "LANG": "C.UTF-8",
        }
        world = SystemdWorld(ns=ns, state_dir=state_dir, env=env)
        world.cli("install-units", "--app", APP)
        yield world


@pytest.fixture(
    params=[
        "manager",
        pytest.param("systemd", marks=pytest.mark.systemd),
        "fake",
    ]
)
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    made: ManagerHarness | SystemdHarness | FakeHarness
    if request.param == "manager":
        hold_file = tmp_path / "hold"
        monkeypatch.setenv("CONTRACT_HOLD_FILE", str(hold_file))
        made = ManagerHarness(tmp_path / "state", hold_file)
    elif request.param == "systemd":
        made = SystemdHarness(request.getfixturevalue("systemd_world"))
    else:
        made = FakeHarness()
    try:
        yield made
    finally:
        made.close()


def held_run(harness: Harness) -> str:
    """A run of ``c.manual`` in progress (held), once it has logged; started by ``ann``
    through the use cases, as every caller does (the systemd mode reads who from the
    audit trail they write)."""
    harness.hold()
    run_id = harness.use_cases.execute(su("ann"), "c.manual")
    harness.started(run_id)
    return run_id


def finished(harness: Harness, run_id: str) -> RunRecord:
    return wait_for(
        lambda: (run := harness.backend.run(run_id)).outcome is not None and run,
        timeout=RUN_TIMEOUT,
        what=f"run {run_id} to end",
    )


# -- the contract ----------------------------------------------------------------------


def test_list_gives_every_scheduler_in_definition_order(harness: Harness) -> None:
    statuses = harness.backend.statuses()
    assert [s.id for s in statuses] == IDS
    by_id = {s.id: s for s in statuses}
    assert by_id["c.manual"].name == "Held manual job"
    assert by_id["c.cron"].kind.value == "cron"
    assert by_id["c.manual"].actions == (("ping", "Ping"), ("boom", "Boom"))
    assert {s.state for s in statuses} == {State.PAUSED}


def test_status_shows_the_effective_settings_and_refuses_unknown_ids(harness: Harness) -> None:
    status = harness.backend.status("c.cron")
    assert status.state is State.PAUSED
    assert status.settings.cron == "0 3 * * *" and status.settings.timezone == "Europe/Berlin"
    assert status.current_run_id is None
    with pytest.raises(UnknownScheduler):
        harness.backend.status("c.nope")
    for call in (harness.backend.start, harness.backend.stop, harness.backend.execute):
        with pytest.raises(UnknownScheduler):
            call("c.nope", actor="ann")


def test_execute_is_refused_while_a_run_is_in_progress_naming_the_run(harness: Harness) -> None:
    run_id = held_run(harness)
    status = wait_for(
        lambda: (s := harness.backend.status("c.manual")).state is State.RUNNING and s,
        timeout=RUN_TIMEOUT,
        what="c.manual to be running",
    )
    assert status.current_run_id == run_id
    with pytest.raises(AlreadyRunning, match=run_id):
        harness.backend.execute("c.manual", actor="bob")
    harness.release()
    run = finished(harness, run_id)
    assert run.outcome is Outcome.SUCCEEDED
    assert run.trigger is Trigger.MANUAL and run.scheduler_id == "c.manual"
    wait_for(
        lambda: harness.backend.status("c.manual").state is State.PAUSED,
        timeout=RUN_TIMEOUT,
        what="c.manual to wait again",
    )


def test_stop_cancels_the_run_and_start_brings_the_scheduler_back(harness: Harness) -> None:
    run_id = held_run(harness)
    harness.backend.stop("c.manual", actor="ann")
    assert finished(harness, run_id).outcome is Outcome.CANCELLED
    wait_for(
        lambda: harness.backend.status("c.manual").state is State.STOPPED,
        timeout=RUN_TIMEOUT,
        what="c.manual to be stopped",
    )
    harness.backend.start("c.manual", actor="ann")
    assert harness.backend.status("c.manual").state is State.PAUSED
    harness.backend.stop("c.repeat", actor="ann")
    assert harness.backend.status("c.repeat").state is State.STOPPED
    harness.backend.start("c.repeat", actor="ann")
    assert harness.backend.status("c.repeat").state is State.PAUSED


def test_a_stop_keeps_who_and_why_until_started(harness: Harness) -> None:
    harness.backend.stop("c.repeat", actor="ann", reason="ERP maintenance")
    status = harness.backend.status("c.repeat")
    assert status.state is State.STOPPED and status.decision is not None
    assert (status.decision.actor, status.decision.reason) == ("ann", "ERP maintenance")
    harness.backend.start("c.repeat", actor="bob")
    assert harness.backend.status("c.repeat").decision is None


def test_runs_are_newest_first_and_found_by_id(harness: Harness) -> None:
    first = held_run(harness)
    harness.release()
    finished(harness, first)
    wait_for(
        lambda: harness.backend.status("c.manual").state is not State.RUNNING,
        timeout=RUN_TIMEOUT,
        what="c.manual to wait again",
    )
    second = held_run(harness)
    harness.release()
    finished(harness, second)
    runs = harness.backend.runs("c.manual")
    assert [r.run_id for r in runs[:2]] == [second, first]
    assert harness.backend.runs("c.manual", limit=1)[0].run_id == second
    # the overview's strips read many schedulers at once and see the same runs
    recent = harness.backend.recent_runs(["c.manual", "c.repeat"], limit=20)
    assert [r.run_id for r in recent["c.manual"][:2]] == [second, first]
    assert recent["c.manual"][0] == runs[0]
    assert recent.get("c.repeat", []) == []
    # Regression: this accepted None, so a backend that lost who pressed Execute Now passed.
    assert harness.backend.run(first).triggered_by == "ann"
    assert harness.backend.run(first).trigger is Trigger.MANUAL
    assert harness.backend.runs("c.repeat") == []
    with pytest.raises(UnknownRun):
        harness.backend.run("no-such-run")


def test_logs_carry_the_fields_and_page_by_cursor(harness: Harness) -> None:
    run_id = held_run(harness)
    harness.release()
    finished(harness, run_id)
    records = wait_for(
        lambda: (
            (found := harness.backend.logs(LogQuery(scheduler_id="c.manual", run_id=run_id)))
            and len(found) >= 2
            and found
        ),
        timeout=RUN_TIMEOUT,
        what="both records of the run",
    )
    messages = [r.message for _, r in records]
    assert RUN_MESSAGE in messages and "released" in messages
    first = next(r for _, r in records if r.message == RUN_MESSAGE)
    assert first.fields["n"] == 7 and first.run_id == run_id
    assert first.level is Level.INFO
    cursors = [c for c, _ in records]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    newest = harness.backend.logs(LogQuery(scheduler_id="c.manual", run_id=run_id, limit=1))
    assert [c for c, _ in newest] == cursors[-1:]
    older = harness.backend.logs(
        LogQuery(scheduler_id="c.manual", run_id=run_id, before=cursors[-1], limit=1)
    )
    assert [c for c, _ in older] == cursors[-2:-1]
    after = harness.backend.logs(
        LogQuery(scheduler_id="c.manual", run_id=run_id, after=cursors[0], limit=1)
    )
    assert [c for c, _ in after] == cursors[1:2]
    assert (
        harness.backend.logs(
            LogQuery(scheduler_id="c.manual", run_id=run_id, min_level=Level.ERROR)
        )
        == []
    )


def test_logs_search_every_scheduler_by_text_field_and_time(harness: Harness) -> None:
    run_id = held_run(harness)
    harness.release()
    finished(harness, run_id)
    every = LogQuery(scheduler_id=None, text="CONTRACT RUN", fields=(("n", "7"),))
    found = wait_for(
        lambda: [r for _, r in harness.backend.logs(every) if r.run_id == run_id],
        timeout=RUN_TIMEOUT,
        what="the run's record found across schedulers",
    )
    assert [r.message for r in found] == [RUN_MESSAGE]
    assert harness.backend.logs(LogQuery(scheduler_id=None, fields=(("n", "8"),))) == []
    later = found[0].time + timedelta(seconds=1)
    assert [r for _, r in harness.backend.logs(LogQuery(scheduler_id=None, until=later))]
    assert not [
        r
        for _, r in harness.backend.logs(LogQuery(scheduler_id=None, since=later, text="contract"))
        if r.run_id == run_id
    ]
    by_run = harness.backend.logs(LogQuery(scheduler_id=None, run_id=run_id, text="released"))
    assert [r.message for _, r in by_run] == ["released"]


def test_settings_update_apply_at_once_and_reset_deletes_them(harness: Harness) -> None:
    view = harness.use_cases.update_settings(
        su(), "c.repeat", {"pause_time": timedelta(minutes=90), "timeout": timedelta(minutes=5)}
    )
    expected = {"pause_time": timedelta(minutes=90), "timeout": timedelta(minutes=5)}
    assert dict(view.overrides) == expected
    assert harness.backend.overrides("c.repeat") == expected
    status = harness.backend.status("c.repeat")
    assert status.settings.pause_time == timedelta(minutes=90)
    assert status.settings.timeout == timedelta(minutes=5)
    harness.use_cases.update_settings(su(), "c.repeat", {"disabled": True})
    assert harness.backend.status("c.repeat").state is State.DISABLED
    harness.use_cases.reset_settings(su(), "c.repeat")
    assert harness.backend.overrides("c.repeat") == {}
    status = harness.backend.status("c.repeat")
    assert status.state is State.PAUSED
    assert status.settings == status.defaults


def test_a_pause_change_re_plans_a_waiting_schedule_at_once(harness: Harness) -> None:
    # Regression: "settings apply at once" was claimed but next_planned_at never looked
    # at; removing the manager's re-plan on a settings change passed the suite.
    run_id = harness.use_cases.execute(su("ann"), "c.repeat")
    ended = harness.ended("c.repeat", run_id).ended_at
    assert ended is not None
    waiting = wait_for(
        lambda: (
            (status := harness.backend.status("c.repeat")).state is State.PAUSED
            and status.next_planned_at is not None
            and status
        ),
        timeout=RUN_TIMEOUT,
        what="c.repeat to wait for its next run",
    )
    before = waiting.next_planned_at
    assert before is not None
    assert before - ended > timedelta(minutes=50)  # an hour's pause (or start delay) ahead
    harness.use_cases.update_settings(su(), "c.repeat", {"pause_time": timedelta(minutes=10)})
    after = harness.backend.status("c.repeat").next_planned_at
    assert after is not None
    # Planned from the end of the run with the new pause (systemd: the timer's next elapse).
    assert abs((after - ended) - timedelta(minutes=10)) < timedelta(seconds=30)
    assert before - after > timedelta(minutes=39)


def test_settings_a_full_store_cannot_keep_change_nothing(harness: Harness) -> None:
    # Regression (systemd): the drop-ins were applied, systemd reloaded and the timers
    # stopped before the overrides were stored; a store failure then left the timers
    # stopped while the store (and so the settings shown) said nothing had changed.
    harness.use_cases.update_settings(su(), "c.repeat", {"timeout": timedelta(minutes=5)})
    before = harness.backend.status("c.repeat")
    assert before.state is State.PAUSED and before.next_planned_at is not None
    with harness.store_full():
        with pytest.raises(StoreError, match="disk is full"):
            harness.use_cases.update_settings(su(), "c.repeat", {"disabled": True})
        with pytest.raises(StoreError, match="disk is full"):
            harness.use_cases.reset_settings(su(), "c.repeat")
    assert harness.backend.overrides("c.repeat") == {"timeout": timedelta(minutes=5)}
    after = harness.backend.status("c.repeat")
    assert after.state is State.PAUSED
    assert after.settings == before.settings
    assert after.next_planned_at is not None
    assert abs(after.next_planned_at - before.next_planned_at) < timedelta(seconds=2)
    # The units follow the next change that is stored.
    harness.use_cases.update_settings(su(), "c.repeat", {"disabled": True})
    assert harness.backend.status("c.repeat").state is State.DISABLED


@pytest.mark.parametrize(
    ("scheduler_id", "change", "field"),
    [
        ("c.repeat", {"cron": "0 3 * * *"}, "cron"),
        ("c.repeat", {"pause_time": timedelta(0)}, "pause_time"),
        ("c.cron", {"cron": "61 * * * *"}, "cron"),
        ("c.cron", {"timezone": "Mars/Olympus", "timeout": timedelta(minutes=1)}, "timezone"),
        ("c.manual", {"colour": "red"}, "colour"),
    ],
)
def test_invalid_settings_name_the_field_and_change_nothing(
    harness: Harness, scheduler_id: str, change: dict[str, Any], field: str
) -> None:
    before = harness.backend.status(scheduler_id).settings
    with pytest.raises(DefinitionError) as caught:
        harness.use_cases.update_settings(su(), scheduler_id, change)
    assert caught.value.field == field
    assert harness.backend.overrides(scheduler_id) == {}
    assert harness.backend.status(scheduler_id).settings == before


def test_actions_answer_fail_with_their_error_and_unknown_ones_are_refused(
    harness: Harness,
) -> None:
    assert harness.backend.run_action("c.manual", "ping", actor="ann") == "pong"
    with pytest.raises(ActionFailed, match="no luck today"):
        harness.backend.run_action("c.manual", "boom", actor="ann")
    with pytest.raises(UnknownAction):
        harness.backend.run_action("c.manual", "nope", actor="ann")
