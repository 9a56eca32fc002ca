"""Persistence of settings overrides, runs, logs, audit trail, users and internal state.

``protocols`` holds one Protocol per aggregate (and ``Store``, all of them) with the
errors each method raises; ``sqlite`` is the embedded store (one module per aggregate),
``postgres`` the store several hosts can share (needs psycopg), ``memory`` a complete
in-memory one; ``budget`` (log caps and markers) and ``codec`` (encodings) are shared so
every store answers alike. May import ``core``.

``is_postgres_url`` tells a PostgreSQL location from others without importing psycopg.
"""

from supervisor.core.locations import POSTGRES_URL_SCHEMES, is_postgres_url

__all__ = ["POSTGRES_URL_SCHEMES", "is_postgres_url"]
