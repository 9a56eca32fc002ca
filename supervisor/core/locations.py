"""Store locations: telling a PostgreSQL URL from anything else, without importing psycopg.

Here in ``core`` because both the app object (``Configurator(store=…)``) and the stores
check locations. May import the stdlib only.
"""

from __future__ import annotations

from typing import Final

POSTGRES_URL_SCHEMES: Final = ("postgresql://", "postgres://")


def is_postgres_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL store (``postgresql://…``/``postgres://…``)."""
    return location.lower().startswith(POSTGRES_URL_SCHEMES)
