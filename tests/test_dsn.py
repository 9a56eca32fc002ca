"""``store.dsn`` and the descriptions built on it: a connection string's password never
reaches a message, also one with an unencoded ``@`` (which libpq takes for the host), in a
query, or in a key=value string."""

from __future__ import annotations

import pytest

from supervisor.store.dsn import passwords, redacted
from supervisor.store.postgres.opening import describe

CASES = [  # (dsn, without its password, the secret part of it)
    ("postgresql://u:p@ss9word@127.0.0.1:1/db", "postgresql://u@127.0.0.1:1/db", "ss9word"),
    ("postgres://u:a@b@c@h/db?x=@y", "postgres://u@h/db?x=@y", "a@b@c"),
    ("postgresql://u:p%zzsecret@host/db", "postgresql://u@host/db", "zzsecret"),
    ("postgresql://u:s3cret@h", "postgresql://u@h", "s3cret"),
    ("postgresql://h/db?password=s3cret&x=1", "postgresql://h/db?password=***&x=1", "s3cret"),
    ("host=h user=u password=s3cret dbname=d", "host=h user=u password=*** dbname=d", "s3cret"),
    ("host=h password='a\\' s3cret' dbname=d", "host=h password=*** dbname=d", "s3cret"),
]


@pytest.mark.parametrize(("dsn", "clean", "secret"), CASES)
def test_the_password_is_taken_out(dsn: str, clean: str, secret: str) -> None:
    assert redacted(dsn) == clean
    assert any(secret in found for found in passwords(dsn))
    assert secret not in describe(dsn)


def test_a_url_with_an_at_sign_in_its_password_is_described_by_its_host() -> None:
    assert describe("postgresql://u:p@ss9word@127.0.0.1:1/db") == (
        "PostgreSQL database u@127.0.0.1:1/db"
    )
    assert describe("postgresql://u:p%zzsecret@host/db") == "PostgreSQL database u@host/db"


def test_strings_without_passwords_stay() -> None:
    for dsn in ("postgresql://u@h/db", "postgresql://h", "host=h dbname=d"):
        assert redacted(dsn) == dsn
        assert passwords(dsn) == []
