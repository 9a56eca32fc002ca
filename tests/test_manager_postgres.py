"""``supervisor run --store postgresql://…``: a real manager process keeps its runs and logs
in PostgreSQL (on a throwaway cluster), the state directory only its lock and socket; the
CLI reads them through the manager; a store it cannot use stops it with the reason."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from supervisor.core.errors import DefinitionError
from tests.commands import supervisor
from tests.manager_process import ROOT, LoggedManager, cli
from tests.postgres import PostgresCluster, free_port, pg_cluster, pg_dsn, skip_reason
from tests.waiting import end_process, wait_for

__all__ = ["pg_cluster", "pg_dsn"]

if skip_reason() is None:
    import psycopg

APP = "tests.apps.manager_jobs:cfg"


def url(cluster: PostgresCluster, database: str) -> str:
    return f"postgresql://sst@127.0.0.1:{cluster.port}/{database}?connect_timeout=3"


def run_command(state: Path, store: str) -> list[str]:
    """``supervisor run`` of the test app on ``store``, its state in ``state``."""
    return supervisor(
        "run", "--app", APP, "--state-dir", str(state), "--no-admin", "--grace", "500ms",
        "--store", store,
    )  # fmt: skip


@contextmanager
def manager_on(state: Path, store: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        run_command(state, store),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: (state / "control.sock").exists() or process.poll() is not None,
            timeout=30,
            what="the manager",
        )
        assert process.poll() is None, process.communicate()[1].decode(errors="replace")
        yield process
    finally:
        end_process(process)


def ended_runs(dsn: str) -> int:
    """How many runs of ``m.repeat`` the store holds ended."""
    found = rows(
        dsn,
        "SELECT count(*) FROM sst_runs WHERE scheduler_id = 'm.repeat' AND ended_at IS NOT NULL",
    )[0][0]
    assert isinstance(found, int)
    return found


def rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def test_a_manager_runs_its_schedulers_on_a_postgresql_store(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    database = "e2e" + os.urandom(3).hex()
    dsn = pg_cluster.create_database(database)
    state = tmp_path / "state"
    with manager_on(state, url(pg_cluster, database)) as process:

        def repeated() -> list[tuple[object, ...]]:
            found = rows(
                dsn,
                "SELECT outcome FROM sst_runs WHERE scheduler_id = 'm.repeat'"
                " AND ended_at IS NOT NULL",
            )
            return found if len(found) >= 3 else []

        assert {r[0] for r in wait_for(repeated, timeout=30, what="three ended runs")} == {
            "succeeded"
        }
        logged = wait_for(
            lambda: rows(
                dsn,
                "SELECT l.message, l.fields, l.source FROM sst_logs AS l"
                " JOIN sst_runs AS r ON r.seq = l.run_seq WHERE r.scheduler_id = 'm.oneshot'"
                " ORDER BY l.id",
            ),
            timeout=30,
            what="the one-shot's log",
        )
        assert ("hello", '{"n":1,"who":"world"}', "logger") in logged
        # The CLI asks the manager, which reads the database.
        listed = cli(state, "runs", "m.repeat")
        newest = rows(
            dsn,
            "SELECT run_id FROM sst_runs WHERE scheduler_id = 'm.repeat'"
            " AND ended_at IS NOT NULL ORDER BY started_at DESC LIMIT 1",
        )[0][0]
        assert str(newest) in listed
        assert sorted(p.name for p in state.iterdir()) == ["control.sock", "manager.lock"]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr.decode(errors="replace")
    assert f"store database sst@127.0.0.1:{pg_cluster.port}/{database}" in stderr.decode()
    assert rows(dsn, "SELECT count(*) FROM sst_runs WHERE ended_at IS NULL") == [(0,)]
    assert rows(dsn, "SELECT value FROM sst_meta WHERE key = 'app_name'") == [("manager-tests",)]


def test_a_store_it_cannot_use_stops_the_manager_with_the_reason(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    port = free_port()
    for store, code, words in (
        (f"postgresql://sst@127.0.0.1:{port}/x?connect_timeout=3", 7, "cannot reach the server"),
        (url(pg_cluster, "missing"), 7, "database 'missing' does not exist"),
        ("mysql://somewhere/db", 2, "expected a postgresql://"),
    ):
        done = subprocess.run(
            supervisor(
                "run",
                "--app",
                APP,
                "--state-dir",
                str(tmp_path / "s"),
                "--no-admin",
                "--store",
                store,
            ),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == code, done.stderr
        assert words in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("other_app", ["tests.apps.contract_jobs:cfg"])
def test_a_database_of_another_app_is_refused(
    pg_cluster: PostgresCluster, tmp_path: Path, other_app: str
) -> None:
    database = "other" + os.urandom(3).hex()
    pg_cluster.create_database(database)
    with manager_on(tmp_path / "a", url(pg_cluster, database)):
        pass
    done = subprocess.run(
        supervisor(
            "run",
            "--app",
            other_app,
            "--state-dir",
            str(tmp_path / "b"),
            "--no-admin",
            "--store",
            url(pg_cluster, database),
        ),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert f"/{database} belongs to app 'manager-tests'" in done.stderr
    assert "use --replace-app to take it over, or another --store" in done.stderr


def test_runs_go_on_after_postgresql_restarts_under_the_manager(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    database = "restart" + os.urandom(3).hex()
    dsn = pg_cluster.create_database(database)

    def count() -> int:
        return ended_runs(dsn)

    with manager_on(tmp_path / "state", url(pg_cluster, database)) as process:
        wait_for(lambda: count() >= 2, timeout=30, what="runs before the restart")
        pg_cluster.restart()  # every connection of the manager is cut
        before = count()
        wait_for(lambda: count() >= before + 3, timeout=30, what="runs after the restart")
        # The manager lock went with its session; the manager takes it back.
        held = (
            "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND a.application_name LIKE 'sched-supervisor manager %'"
        )
        wait_for(lambda: rows(dsn, held) == [(1,)], timeout=30, what="the lock taken back")
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr.decode(errors="replace")
        assert stderr.decode().count("took the manager lock again") == 1
    # Every run the manager started has its end (none left open by the outage).
    assert rows(dsn, "SELECT count(*) FROM sst_runs WHERE ended_at IS NULL") == [(0,)]


def test_run_options_choose_the_store(pg_dsn: str, tmp_path: Path) -> None:
    from supervisor.service.manager_mode import RunOptions, Service
    from supervisor.service.storewatch import WatchedStore
    from supervisor.store.postgres import PostgresStore
    from supervisor.store.sqlite import SqliteStore

    log = io.StringIO()
    on_postgres = Service(
        RunOptions(app_spec=APP, state_dir=tmp_path / "pg", admin=None, store=pg_dsn_url(pg_dsn)),
        log=log,
    )
    try:
        on_postgres.start()
        assert isinstance(on_postgres.store, PostgresStore)
        assert not (tmp_path / "pg" / "state.db").exists()
    finally:
        on_postgres.close()
    assert "store database sst@127.0.0.1" in log.getvalue()
    on_sqlite = Service(
        RunOptions(app_spec=APP, state_dir=tmp_path / "lite", admin=None), log=io.StringIO()
    )
    try:
        on_sqlite.start()
        # A SQLite store is watched for write failures (service.storewatch).
        assert isinstance(on_sqlite.store, WatchedStore)
        assert isinstance(on_sqlite.store.wrapped, SqliteStore)
    finally:
        on_sqlite.close()
    refused = Service(
        RunOptions(app_spec=APP, state_dir=tmp_path / "x", admin=None, store="host=db1"),
        log=io.StringIO(),
    )
    try:
        with pytest.raises(DefinitionError, match="expected a postgresql://") as caught:
            refused.start()
    finally:
        refused.close()
    assert caught.value.field == "--store"


def pg_dsn_url(dsn: str) -> str:
    """The key=value DSN of tests/postgres.py as the postgresql:// URL --store takes."""
    params = dict(part.split("=", 1) for part in dsn.split())
    return f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"


def test_a_second_manager_on_the_same_store_is_refused(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    database = "two" + os.urandom(3).hex()
    pg_cluster.create_database(database)
    with manager_on(tmp_path / "a", url(pg_cluster, database)):
        done = subprocess.run(
            supervisor(
                "run",
                "--app",
                APP,
                "--state-dir",
                str(tmp_path / "b"),
                "--no-admin",
                "--store",
                url(pg_cluster, database),
            ),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 7, done.stderr
    assert f"/{database} is in use by another manager" in done.stderr
    assert not (tmp_path / "b" / "control.sock").exists()


def test_a_postgresql_store_without_psycopg_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from supervisor.service.manager_mode import RunOptions, open_store

    for name in [n for n in sys.modules if n == "psycopg" or n.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [n for n in sys.modules if n.startswith("supervisor.store.postgres")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg: ImportError
    options = RunOptions(app_spec=APP, state_dir=tmp_path, store="postgresql://db1/app")
    with pytest.raises(DefinitionError, match="needs psycopg 3") as caught:
        open_store(options, tmp_path)
    assert caught.value.field == "--store"
    assert "sched-supervisor[postgresql]" in str(caught.value)
    assert "python3-psycopg" in str(caught.value)


# -- faults: a lock taken by another manager, a black-holed connection ----------------------


def started_on(state: Path, store: str, log: Path) -> LoggedManager:
    """``supervisor run --store STORE`` on ``state``, its stderr in ``log``."""
    return LoggedManager(run_command(state, store), state, log)


def lock_sessions(dsn: str) -> list[tuple[object, ...]]:
    """(server pid, application name) of the sessions holding a manager lock."""
    return rows(
        dsn,
        "SELECT a.pid, a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a"
        " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
        " AND a.application_name LIKE 'sched-supervisor manager %'",
    )


# Every row written to the store's tables from now on, with the session's name.
WRITES_DDL = """
CREATE TABLE test_writes (application text, tbl text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION test_note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO test_writes (application, tbl)
  VALUES (current_setting('application_name'), TG_TABLE_NAME);
  RETURN NULL;
END $$;
"""
WRITTEN_TABLES = ("sst_runs", "sst_logs", "sst_meta", "sst_decisions", "sst_audit", "sst_overrides")


def note_writes(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(WRITES_DDL)
        for table in WRITTEN_TABLES:
            conn.execute(
                f"CREATE TRIGGER {table}_noted AFTER INSERT OR UPDATE OR DELETE ON {table}"  # type: ignore[arg-type]
                " FOR EACH ROW EXECUTE FUNCTION test_note_write()"
            )


def test_a_manager_whose_lock_another_manager_took_stops_and_stores_nothing_more(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    database = "lost" + os.urandom(3).hex()
    dsn = pg_cluster.create_database(database)
    first = started_on(tmp_path / "a", url(pg_cluster, database), tmp_path / "a.log")
    second: LoggedManager | None = None
    try:
        wait_for(lambda: ended_runs(dsn) >= 2, timeout=30, what="runs of the first")
        ((lock_pid, _),) = lock_sessions(dsn)
        note_writes(dsn)
        # Stopped, the first cannot take its lock back before the second takes it.
        first.process.send_signal(signal.SIGSTOP)
        try:
            rows(dsn, f"SELECT pg_terminate_backend({lock_pid})")
            wait_for(lambda: lock_sessions(dsn) == [], timeout=10, what="the lock released")
            kept = rows(dsn, "SELECT run_id, ended_at, outcome FROM sst_runs ORDER BY seq")
            logs = rows(dsn, "SELECT id FROM sst_logs ORDER BY id")
            second = started_on(tmp_path / "b", url(pg_cluster, database), tmp_path / "b.log")
            ((_, other_session),) = lock_sessions(dsn)
            # The second marked the first's runs in progress as interrupted: as it left them.
            marked = {r[0]: r for r in rows(dsn, "SELECT run_id, ended_at, outcome FROM sst_runs")}
        finally:
            first.process.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
        assert first.process.wait(timeout=20) == 7, first.log()
        print(f"the first manager stopped {time.monotonic() - resumed:.1f} s after it resumed")
        message = first.log()
        assert f"sst@127.0.0.1:{pg_cluster.port}/{database}" in message
        assert str(other_session) in message  # the session that holds the lock now
        assert "Traceback" not in message
        # Nothing written by the first since it lost the lock (its sessions carry its pid).
        written = rows(
            dsn,
            f"SELECT application, tbl FROM test_writes WHERE application ~ ':{first.process.pid}$'",
        )
        assert written == []
        # Nothing it stored is lost: every run and log record is still there, as it was
        # (or as the second marked it).
        now = {r[0]: r for r in rows(dsn, "SELECT run_id, ended_at, outcome FROM sst_runs")}
        assert all(now[run[0]] == marked[run[0]] for run in kept)
        assert all(run[1] is not None or marked[run[0]][2] == "interrupted" for run in kept)
        assert set(logs) <= set(rows(dsn, "SELECT id FROM sst_logs"))
        assert second.process.poll() is None  # the second goes on
        before = ended_runs(dsn)
        wait_for(lambda: ended_runs(dsn) > before, timeout=10, what="the second's runs")
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_black_holed_store_connection_fails_in_seconds_and_the_manager_goes_on(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    from tests.tcp_proxy import FaultyProxy

    database = "hole" + os.urandom(3).hex()
    dsn = pg_cluster.create_database(database)

    def count() -> int:
        return ended_runs(dsn)

    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        via = f"postgresql://sst@127.0.0.1:{proxy.port}/{database}?connect_timeout=3"
        manager = started_on(tmp_path / "state", via, tmp_path / "manager.log")
        try:
            wait_for(lambda: count() >= 2, timeout=30, what="runs before the black hole")
            proxy.blackhole()  # every open connection of the manager, and each new one
            started = time.monotonic()
            named = f"PostgreSQL database sst@127.0.0.1:{proxy.port}/{database}: no answer"
            wait_for(lambda: named in manager.log(), timeout=15, what="a write that failed")
            print(f"a write failed {time.monotonic() - started:.1f} s after the black hole")
            proxy.heal()
            before = count()
            wait_for(lambda: count() >= before + 2, timeout=30, what="runs after the black hole")
            assert manager.process.poll() is None
            manager.process.send_signal(signal.SIGTERM)
            assert manager.process.wait(timeout=30) == 0, manager.log()
            assert "Traceback" not in manager.log()
        finally:
            manager.close()
