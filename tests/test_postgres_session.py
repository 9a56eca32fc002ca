"""``store.postgres.session``: the settings of a store connection are applied after
connecting (the URL's ``-c`` settings and ours), the client deadline of a call follows the
effective ``statement_timeout`` (or the URL's ``call_timeout``), and a bad value is
refused naming the parameter, never the password. Pure parsing first, then on a
throwaway cluster (tests/postgres.py)."""

from __future__ import annotations

import secrets
import threading
import time
from urllib.parse import quote

import pytest

from supervisor.core.errors import StoreError
from supervisor.service.stores import open_postgres_store
from supervisor.store.postgres.session import (
    session_for,
    split_options,
    time_ms,
    without_call_timeout,
)
from tests.postgres import PostgresCluster, pg_cluster, skip_reason
from tests.store_values import make_run, record

__all__ = ["pg_cluster"]

if skip_reason() is None:
    import psycopg

    from supervisor.store.postgres import PostgresStore

DESCRIBED = "PostgreSQL database ada@db/app"
DEFAULTS = [
    ("statement_timeout", "4s"),
    ("lock_timeout", "2s"),
    ("idle_in_transaction_session_timeout", "10s"),
]


def test_without_settings_the_defaults_give_a_5_s_deadline() -> None:
    found = session_for("postgresql://ada@db/app", description=DESCRIBED, environ={})
    assert list(found.settings) == DEFAULTS
    assert (found.statement_seconds, found.call_seconds, found.search_seconds) == (4, 5, 60)
    assert "options=''" in found.conninfo  # nothing in the startup packet a pooler refuses


def test_a_longer_statement_timeout_in_the_url_lengthens_the_deadline() -> None:
    options = quote("-c statement_timeout=30000 -csearch_path=sched --lock-timeout=3s")
    found = session_for(
        f"postgresql://ada@db/app?options={options}", description=DESCRIBED, environ={}
    )
    assert found.settings == (
        ("statement_timeout", "30000"),
        ("search_path", "sched"),
        ("lock_timeout", "3s"),
        ("idle_in_transaction_session_timeout", "10s"),
    )
    assert (found.statement_seconds, found.call_seconds) == (30, 31)
    assert found.search_seconds == 60
    hours = session_for(
        "host=db options='-c statement_timeout=2min'", description=DESCRIBED, environ={}
    )
    assert (hours.call_seconds, hours.search_seconds) == (121, 121)  # a search: at least a call


def test_pgoptions_counts_when_the_string_has_no_options() -> None:
    environ = {"PGOPTIONS": "-c statement_timeout=20s"}
    found = session_for("postgresql://ada@db/app", description=DESCRIBED, environ=environ)
    assert found.call_seconds == 21
    given = session_for(
        "postgresql://ada@db/app?options=-cwork_mem%3D8MB", description=DESCRIBED, environ=environ
    )
    assert given.call_seconds == 5  # libpq ignores PGOPTIONS then, and so do we


def test_call_timeout_sets_the_deadline_and_never_reaches_libpq() -> None:
    found = session_for(
        "postgresql://ada@db/app?sslmode=disable&call_timeout=2m&connect_timeout=3",
        description=DESCRIBED,
        environ={},
    )
    assert found.call_seconds == 120
    assert "call_timeout" not in found.conninfo
    assert "sslmode=disable" in found.conninfo and "connect_timeout=3" in found.conninfo
    none = session_for(
        "postgresql://ada@db/app?options=-cstatement_timeout%3D0", description=DESCRIBED, environ={}
    )
    assert (none.statement_seconds, none.call_seconds, none.search_seconds) == (None, None, None)
    kept = session_for(
        "host=db call_timeout=90s options='-c statement_timeout=0'",
        description=DESCRIBED,
        environ={},
    )
    assert kept.call_seconds == 90


@pytest.mark.parametrize(
    ("dsn", "rest", "value"),
    [
        ("postgresql://ada@db/app?call_timeout=5s", "postgresql://ada@db/app", "5s"),
        ("postgresql://ada@db/app?a=1&call_timeout=5s#f", "postgresql://ada@db/app?a=1#f", "5s"),
        ("postgresql://ada@db/app?call_timeout=1&call_timeout=2", "postgresql://ada@db/app", "2"),
        ("postgresql://ada@db/app?a=1", "postgresql://ada@db/app?a=1", None),
        # Inside the user information it is part of a password, not a parameter.
        ("postgresql://ada:call_timeout=1@db/", "postgresql://ada:call_timeout=1@db/", None),
        ("host=db call_timeout = '3 s' port=5", "host=db  port=5", "3 s"),
        ("password='a call_timeout=1s' x=1", "password='a call_timeout=1s' x=1", None),
    ],
)  # fmt: skip
def test_call_timeout_is_found_where_libpq_would_read_a_parameter(
    dsn: str, rest: str, value: str | None
) -> None:
    assert without_call_timeout(dsn) == (rest, value)


def test_options_are_read_as_postgresql_reads_them() -> None:
    settings, others = split_options(r"-c search_path=a\ b --Work-Mem=4MB -B 16 -cx.y=1 -cx.y=2")
    assert settings == [("search_path", "a b"), ("work_mem", "4MB"), ("x.y", "2")]
    assert others == ["-B", "16"]
    with pytest.raises(ValueError, match="expected name=value"):
        split_options("-c statement_timeout")
    with pytest.raises(ValueError, match="without name=value"):
        split_options("-c")


@pytest.mark.parametrize(
    ("value", "ms"),
    [("4000", 4000), ("4s", 4000), ("1.5 s", 1500), ("2min", 120_000), ("1h", 3_600_000),
     ("500us", 0), ("0", 0), (" 7 ", 7)],
)  # fmt: skip
def test_time_settings_in_postgresql_units(value: str, ms: int) -> None:
    assert time_ms(value, name="statement_timeout") == ms


@pytest.mark.parametrize("value", ["abc", "4 sec", "4S", "-1", "3000000000", "", "'4s'"])
def test_a_bad_time_setting_names_the_parameter(value: str) -> None:
    with pytest.raises(ValueError, match=r"^lock_timeout .* is invalid"):
        time_ms(value, name="lock_timeout")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("options=-cstatement_timeout%3Dforever", "statement_timeout 'forever'"),
        ("options=-clock_timeout%3D-5", "lock_timeout '-5'"),
        ("call_timeout=soon", "call_timeout: invalid duration 'soon'"),
        ("call_timeout=0", "call_timeout must be longer than 0"),
        ("options=-cstatement_timeout", "expected name=value"),
    ],
)
def test_a_bad_value_in_the_url_is_refused_naming_it_and_never_the_password(
    query: str, named: str
) -> None:
    url = f"postgresql://ada:hunter2secret@127.0.0.1:1/app?{query}"
    with pytest.raises(StoreError) as caught:
        open_postgres_store(url)  # refused before any connection is tried
    message = str(caught.value)
    assert message.startswith("cannot use PostgreSQL database ada@127.0.0.1:1/app: ")
    assert named in message
    assert "hunter2secret" not in message


# -- on a real server ----------------------------------------------------------------------


def database_url(cluster: PostgresCluster, query: str = "") -> str:
    name = f"s{secrets.token_hex(4)}"
    cluster.create_database(name)
    return f"postgresql://sst@127.0.0.1:{cluster.port}/{name}?connect_timeout=3{query}"


def test_the_settings_hold_on_the_stores_connections(pg_cluster: PostgresCluster) -> None:
    options = quote("-c statement_timeout=7s -c application_name=custom")
    with PostgresStore.open(database_url(pg_cluster, f"&options={options}")) as store:
        store.insert_run(make_run("r1"))
        statement = (
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
            " current_setting('idle_in_transaction_session_timeout'),"
            " current_setting('application_name')"
        )
        guard = store.exclusive()  # its session keeps its own name: the lock's holder
        guard.acquire()
        try:
            with store._db.read() as conn:  # a connection of the pool
                assert conn.execute(statement).fetchone() == ("7s", "2s", "10s", "custom")
            assert guard.check() is None
        finally:
            guard.close()


def test_regression_a_startup_only_setting_goes_in_the_startup_packet(
    pg_cluster: PostgresCluster,
) -> None:
    """Regression: ``-c log_connections=on`` (which PostgreSQL takes only when a session
    starts) in the URL's options failed every connection ("cannot be set after
    connection start") once the settings were applied with set_config after connecting.
    Such a setting goes in the startup packet, as libpq sends it, on every connection
    of the store; the others are still set after connecting."""
    options = quote(r"-c log_connections=on -c statement_timeout=7s -c jit_debugging_support=on")
    with PostgresStore.open(database_url(pg_cluster, f"&options={options}")) as store:
        store.insert_run(make_run("r1"))
        statement = (
            "SELECT name, setting, source FROM pg_settings WHERE name IN"
            " ('log_connections', 'jit_debugging_support', 'statement_timeout') ORDER BY name"
        )
        guard = store.exclusive()  # a connection of its own
        guard.acquire()
        try:
            with store._db.read() as first, store._db.read() as second:
                for conn in (first, second):
                    assert conn.execute(statement).fetchall() == [
                        ("jit_debugging_support", "on", "client"),
                        ("log_connections", "on", "client"),
                        ("statement_timeout", "7000", "session"),
                    ]
            assert guard.check() is None
        finally:
            guard.close()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("shared_buffers=64MB", "shared_buffers, which PostgreSQL takes only when the server"),
        ("wal_level=minimal", "wal_level, which PostgreSQL takes only when the server starts"),
        ("max_connections=5", "pg_settings context 'postmaster'"),
        ("log_checkpoints=on", "only for the whole server (postgresql.conf or ALTER SYSTEM"),
        ("nosuch_setting=1", 'unrecognized configuration parameter "nosuch_setting"'),
    ],
)
def test_a_setting_no_session_can_set_is_refused_naming_it(
    pg_cluster: PostgresCluster, setting: str, expected: str
) -> None:
    options = quote(f"-c statement_timeout=7s -c {setting}")
    with pytest.raises(StoreError) as caught:
        PostgresStore.open(database_url(pg_cluster, f"&options={options}"))
    message = str(caught.value)
    assert message.startswith("cannot use PostgreSQL database ")
    assert expected in message and "\n" not in message


def hold_row_lock(dsn: str, *, seconds: float, locked: threading.Event) -> threading.Thread:
    """A writer that holds the log cursor's row lock for ``seconds`` (busy, not idle in
    its transaction), then lets go."""

    def hold() -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT value FROM sst_counters WHERE name = 'log_id' FOR UPDATE")
            locked.set()
            conn.execute("SELECT pg_sleep(%s)", (seconds,))

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_regression_a_longer_statement_timeout_is_not_cut_at_5_s(
    pg_cluster: PostgresCluster,
) -> None:
    """A store whose URL allows 30 s statements (and lock waits of 10 s) waits 5.5 s for a
    row lock; the client deadline was a fixed 5 s and cut the call first."""
    options = quote("-c statement_timeout=30000 -c lock_timeout=10s")
    url = database_url(pg_cluster, f"&options={options}")
    with PostgresStore.open(url) as store:
        store.insert_run(make_run("r1"))
        locked = threading.Event()
        holder = hold_row_lock(url, seconds=5.5, locked=locked)
        assert locked.wait(10)
        started = time.monotonic()
        store.append_logs([record("r1")])  # waits for the lock, then goes through
        took = time.monotonic() - started
        holder.join(10)
        print(f"a write waited {took:.2f} s for a row lock")
        assert took > 5
        assert store.count_logs("r1") == 1
