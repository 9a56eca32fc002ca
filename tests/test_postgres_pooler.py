"""The PostgreSQL store through a real PgBouncer (session pooling) in front of a throwaway
cluster: PgBouncer refuses a startup ``options`` parameter ("unsupported startup
parameter: options") unless it ignores it, and then it drops the settings. The store
sets them after connecting, so both configurations keep the server's timeouts and the
URL's own settings, and the manager lock works through the pooler. Skipped where
PgBouncer is not installed (``apt-get install pgbouncer``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from supervisor.core.errors import StoreError
from tests.pgbouncer import Bouncer, throwaway_pgbouncer
from tests.pgbouncer import skip_reason as pgbouncer_missing
from tests.postgres import PostgresCluster, pg_cluster, skip_reason
from tests.required import skip_or_fail
from tests.store_values import make_run, record

__all__ = ["pg_cluster"]

if skip_reason() is None:
    import psycopg

    from supervisor.store.postgres import PostgresStore

SETTINGS = (
    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
    " current_setting('idle_in_transaction_session_timeout'), current_setting('search_path')"
)


@pytest.fixture(scope="module", params=["", "options"], ids=["refusing", "ignoring"])
def bouncer(request: pytest.FixtureRequest, pg_cluster: PostgresCluster) -> Iterator[Bouncer]:
    """PgBouncer in session mode, refusing ``options`` (its default) or ignoring it."""
    skip_or_fail("pgbouncer", pgbouncer_missing())
    with throwaway_pgbouncer(pg_cluster, ignore_startup_parameters=request.param) as started:
        yield started


def new_database(cluster: PostgresCluster) -> str:
    name = f"b{secrets.token_hex(4)}"
    cluster.create_database(name)
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sched")
    return name


def test_what_pgbouncer_does_with_startup_options(
    bouncer: Bouncer, pg_cluster: PostgresCluster
) -> None:
    """The premise: a plain client's options are refused, or silently dropped."""
    name = new_database(pg_cluster)
    url = bouncer.url(name, "&options=-cstatement_timeout%3D7s")
    if "ignore_startup_parameters = options" in (bouncer.root / "pgbouncer.ini").read_text():
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
    else:
        with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
            psycopg.connect(url)


def test_the_store_works_through_pgbouncer_with_its_settings(
    bouncer: Bouncer, pg_cluster: PostgresCluster
) -> None:
    name = new_database(pg_cluster)
    options = quote("-c statement_timeout=7s -c search_path=sched")
    with PostgresStore.open(bouncer.url(name, f"&options={options}")) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1")])
        assert store.count_logs("r1") == 1
        with store._db.read() as conn:
            assert conn.execute(SETTINGS).fetchone() == ("7s", "2s", "10s", "sched")
        assert store._db.session.call_seconds == 8
        guard = store.exclusive()
        guard.acquire()
        try:
            assert guard.check() is None
            with (
                PostgresStore.open(bouncer.url(name, f"&options={options}")) as second,
                pytest.raises(StoreError, match="in use by another manager"),
            ):
                second.exclusive().acquire()
        finally:
            guard.close()
    with psycopg.connect(pg_cluster.dsn(name)) as conn:  # the tables are where it said
        found = conn.execute("SELECT to_regclass('sched.sst_runs') IS NOT NULL").fetchone()
        assert found == (True,)


def test_the_defaults_hold_through_pgbouncer(bouncer: Bouncer, pg_cluster: PostgresCluster) -> None:
    name = new_database(pg_cluster)
    with PostgresStore.open(bouncer.url(name)) as store, store._db.read() as conn:
        assert conn.execute(SETTINGS).fetchone() == ("4s", "2s", "10s", '"$user", public')


def test_an_option_that_cannot_be_set_later_is_explained(
    bouncer: Bouncer, pg_cluster: PostgresCluster
) -> None:
    """A switch other than -c stays in the startup packet: a refusing pooler's error says
    what to do."""
    if "ignore_startup_parameters = options" in (bouncer.root / "pgbouncer.ini").read_text():
        pytest.skip("a pooler that ignores options lets any switch through")
    name = new_database(pg_cluster)
    with pytest.raises(StoreError) as caught:
        PostgresStore.open(bouncer.url(name, "&options=-B%2016"))
    message = str(caught.value)
    assert "refuses a startup parameter" in message
    assert "leave only -c settings in options" in message


def test_a_startup_only_setting_through_pgbouncer_is_refused_naming_it(
    bouncer: Bouncer, pg_cluster: PostgresCluster
) -> None:
    """``log_connections`` is taken only in a session's startup packet, which PgBouncer
    refuses (or, ignoring options, drops): opening says so, naming the setting, instead
    of failing on "cannot be set after connection start" or going on without it."""
    name = new_database(pg_cluster)
    options = quote("-c statement_timeout=7s -c log_connections=on")
    with pytest.raises(StoreError) as caught:
        PostgresStore.open(bouncer.url(name, f"&options={options}"))
    message = str(caught.value)
    assert "options sets log_connections" in message
    assert "takes only when a session starts" in message
    if "ignore_startup_parameters = options" in (bouncer.root / "pgbouncer.ini").read_text():
        assert "it did not arrive: something in between drops startup options" in message
    else:
        assert "refuses startup options as a pooler such as PgBouncer does" in message
    assert "cannot be set after connection start" not in message
