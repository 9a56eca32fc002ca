"""Opening the PostgreSQL store a ``--store URL`` names, for ``supervisor run`` and the
commands that work on the store without a manager (``supervisor users``).

A location that is no ``postgresql://`` URL, or a missing psycopg, is a
``DefinitionError("--store")``; a store that cannot be used is the store's one-line
``StoreError``, with any password the URL holds taken out of it first (libpq quotes
the part of a connection string it cannot parse, which may be the password).
May import ``core.errors``, ``store`` and the stdlib (psycopg through ``store.postgres``,
imported where used).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote

from supervisor.core.errors import DefinitionError, StoreError
from supervisor.store import is_postgres_url

if TYPE_CHECKING:
    from supervisor.store.postgres import PostgresStore

HIDDEN: Final = "***"
# libpq's URI: the user information ends at the first '@' or '/' after the scheme.
_USERINFO: Final = re.compile(r"://([^@/]*)@")
_PASSWORD_PARAMETER: Final = re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE)
_QUOTED: Final = re.compile(r'"[^"]*"')
# A shorter password is too common a string to take out wherever it appears: only the
# quoted parts of a message (where libpq echoes what it could not parse) lose it.
_MIN_ANYWHERE: Final = 4


def open_postgres_store(
    location: str,
    *,
    max_runs_per_scheduler: int = 100,
    max_log_bytes_per_run: int = 1 << 20,
) -> PostgresStore:
    """The PostgreSQL store at ``location``, its tables created in an empty database.

    Raises ``DefinitionError("--store")`` for a location that is no PostgreSQL URL or
    when psycopg is missing, ``StoreError`` (without the URL's password) for a store that
    cannot be used, ``ValueError`` for a limit below 1.
    """
    if not is_postgres_url(location):
        raise DefinitionError(
            "--store",
            "expected a postgresql://USER@HOST[:PORT]/DATABASE URL (without --store, the"
            " store is SQLite in the state directory)",
        )
    try:
        from supervisor.store.postgres import PostgresStore
    except ImportError as error:
        raise DefinitionError(
            "--store",
            f"a PostgreSQL store needs psycopg 3 ({error}): pip install"
            " 'sched-supervisor[postgresql]' or apt install python3-psycopg",
        ) from None
    try:
        return PostgresStore.open(
            location,
            max_runs_per_scheduler=max_runs_per_scheduler,
            max_log_bytes_per_run=max_log_bytes_per_run,
        )
    except StoreError as error:
        cleaned = without_password(str(error), location)
        if cleaned == str(error):
            raise
        raise StoreError(cleaned) from None


def url_passwords(location: str) -> list[str]:
    """The password(s) a connection URL holds, as written and percent-decoded."""
    found: list[str] = []
    userinfo = _USERINFO.search(location)
    if userinfo is not None:
        _, colon, password = userinfo.group(1).partition(":")
        if colon:
            found.append(password)
    found += _PASSWORD_PARAMETER.findall(location)
    spelled = {text for raw in found for text in (raw, unquote(raw)) if text}
    return sorted(spelled, key=len, reverse=True)


def without_password(message: str, location: str) -> str:
    """``message`` with the URL ``location`` and each password it holds replaced by
    ``***``."""
    cleaned = message.replace(location, HIDDEN) if location else message
    for password in url_passwords(location):
        if len(password) >= _MIN_ANYWHERE:
            cleaned = cleaned.replace(password, HIDDEN)
        else:
            cleaned = _QUOTED.sub(_hiding(password), cleaned)
    return cleaned


def _hiding(password: str) -> Callable[[re.Match[str]], str]:
    """A replacement for ``re.sub`` that hides a quoted part holding ``password``."""

    def replace(quoted: re.Match[str]) -> str:
        return f'"{HIDDEN}"' if password in quoted.group() else quoted.group()

    return replace
