"""``service.stores``: a --store location that is no PostgreSQL URL is refused, and the
passwords a URL holds are found (as written and percent-decoded) and taken out of
messages, also short ones where libpq quotes what it could not parse."""

from __future__ import annotations

import pytest

from supervisor.core.errors import DefinitionError
from supervisor.service.stores import open_postgres_store
from supervisor.store.dsn import passwords as url_passwords
from supervisor.store.dsn import without_password


def test_the_passwords_of_a_url_as_written_and_decoded() -> None:
    assert url_passwords("postgresql://ada@db/app") == []
    assert url_passwords("postgresql://ada:@db/app") == []
    assert url_passwords("postgresql://ada:s%40cret@db/app") == ["s%40cret", "s@cret"]
    assert url_passwords("postgres://db/app?sslmode=require&password=pw%21x") == ["pw%21x", "pw!x"]


def test_a_message_loses_the_url_and_its_password() -> None:
    url = "postgresql://ada:hunter22@db/app?x=1"
    assert without_password(f"cannot parse {url!r}", url) == "cannot parse '***'"
    assert (
        without_password('invalid percent-encoded token: "hunter22%zz"', url)
        == 'invalid percent-encoded token: "***%zz"'
    )
    assert without_password("cannot reach the server", url) == "cannot reach the server"


def test_a_short_password_is_taken_only_out_of_quoted_parts() -> None:
    url = "postgresql://ada:ab@db/app"
    message = 'cannot use a database: invalid token: "ab%zz"'
    assert without_password(message, url) == 'cannot use a database: invalid token: "***"'


@pytest.mark.parametrize("location", ["mysql://db/app", "host=db dbname=app", "state.db", ""])
def test_only_postgresql_urls_are_stores(location: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        open_postgres_store(location)
    assert caught.value.field == "--store"
