"""``Configurator(store=…)``: the app names its PostgreSQL store in code; ``--store``
(``RunOptions.store``) wins over it; a location that is no PostgreSQL URL is refused at
once, naming ``store`` and never echoing the value (it may carry a password)."""

from __future__ import annotations

import io
import secrets
import sys
from pathlib import Path

import pytest

from supervisor import Configurator
from supervisor.core.errors import DefinitionError
from supervisor.service.manager_mode import APP_NAME_META, RunOptions, Service
from tests.postgres import PostgresCluster, pg_cluster

__all__ = ["pg_cluster"]


@pytest.mark.parametrize(
    "location",
    ["sqlite:///var/lib/x.db", "/var/lib/state.db", "mysql://u:s3cret@h/db", " ", "a\x00b"],
)
def test_a_store_that_is_no_postgresql_url_is_refused_without_echoing_it(location: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        Configurator("app", store=location)
    assert raised.value.field == "store"
    assert "s3cret" not in str(raised.value)


def test_without_a_store_the_app_keeps_sqlite() -> None:
    assert Configurator("app").store is None


def url(cluster: PostgresCluster, database: str) -> str:
    return f"postgresql://sst@127.0.0.1:{cluster.port}/{database}?connect_timeout=3"


def app_on(store: str, name: str, directory: Path) -> str:
    """An app module (in ``directory``, put on ``sys.path``) naming ``store``; its spec."""
    module = f"app_store_{secrets.token_hex(4)}"
    (directory / f"{module}.py").write_text(
        "from supervisor import Configurator, cfgscheduler\n"
        f"cfg = Configurator({name!r}, store={store!r})\n"
        "cfgscheduler.enable(cfg)\n"
    )
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return f"{module}:cfg"


def has_runs(dsn: str) -> bool:
    """Whether the database at ``dsn`` holds the store's runs table."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_tables WHERE tablename = 'sst_runs'").fetchall()
    return bool(found)


def started(app_spec: str, state: Path, store: str | None = None) -> Service:
    service = Service(
        RunOptions(app_spec=app_spec, state_dir=state, admin=None, store=store),
        log=io.StringIO(),
    )
    service.start()
    return service


def test_the_apps_store_is_where_the_manager_keeps_its_state(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    database = f"t{secrets.token_hex(6)}"
    pg_cluster.create_database(database)
    service = started(app_on(url(pg_cluster, database), "in-code", tmp_path), tmp_path / "state")
    try:
        assert service.store is not None
        assert service.store.get_meta(APP_NAME_META) == "in-code"
    finally:
        service.close()
    assert not (tmp_path / "state" / "state.db").exists()  # nothing went to SQLite
    assert has_runs(pg_cluster.dsn(database))


def test_the_store_option_wins_over_the_apps(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    named, chosen = f"t{secrets.token_hex(6)}", f"t{secrets.token_hex(6)}"
    pg_cluster.create_database(named)
    pg_cluster.create_database(chosen)
    app = app_on(url(pg_cluster, named), "overridden", tmp_path)
    service = started(app, tmp_path / "state", store=url(pg_cluster, chosen))
    service.close()
    assert not has_runs(pg_cluster.dsn(named))
    assert has_runs(pg_cluster.dsn(chosen))
