"""``supervisor run --store postgresql://…``: a real manager process keeps its runs and logs
in PostgreSQL (on a throwaway cluster), the state directory only its lock and socket; the
CLI reads them through the manager; a store it cannot use stops it with the reason."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from supervisor.core.errors import DefinitionError
from tests.commands import supervisor
from tests.manager_process import ROOT, cli
from tests.postgres import PostgresCluster, free_port, pg_cluster, pg_dsn, skip_reason
from tests.waiting import wait_for

__all__ = ["pg_cluster", "pg_dsn"]

if skip_reason() is None:
    import psycopg

APP = "tests.apps.manager_jobs:cfg"


def url(cluster: PostgresCluster, database: str) -> str:
    return f"postgresql://sst@127.0.0.1:{cluster.port}/{database}?connect_timeout=3"


@contextmanager
def manager_on(state: Path, store: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        supervisor(
            "run",
            "--app",
            APP,
            "--state-dir",
            str(state),
            "--no-admin",
            "--grace",
            "500ms",
            "--store",
            store,
        ),
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
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


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
    ended = "SELECT count(*) FROM sst_runs WHERE scheduler_id = 'm.repeat' AND ended_at IS NOT NULL"

    def count() -> int:
        value = rows(dsn, ended)[0][0]
        assert isinstance(value, int)
        return value

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
        assert isinstance(on_sqlite.store, SqliteStore)
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
