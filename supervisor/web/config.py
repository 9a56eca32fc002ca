"""How the Admin Center behaves (``AdminConfig``) and the names its modules share.

May import ``access``, ``passwords``, ``supervisor.web.events`` and the stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from supervisor.core.access import Permission
from supervisor.core.passwords import CURRENT_COST, ScryptCost
from supervisor.web.events import StreamLimits

COOKIE_NAME: Final = "supervisor_session"
# The server puts the client's socket here so streams see a closed connection at once.
CONNECTION_KEY: Final = "supervisor.connection"
# The server lists here the names of request headers it dropped for holding an underscore
# (WSGI folds ``X_Remote_User`` and ``X-Remote-User`` into one key).
UNDERSCORE_HEADERS_KEY: Final = "supervisor.underscore_headers"
# The server lists here every request header name as sent, in order.
HEADER_NAMES_KEY: Final = "supervisor.header_names"
CSRF_FIELD: Final = "csrf"

PUBLIC: Final = "public"
LOGGED_IN: Final = "logged-in"
# /metrics: a scraper's bearer token (``--metrics-token-file``), else a session with LIST.
METRICS: Final = "metrics"
Access = Permission | str


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    """How the Admin Center behaves; the defaults suit a loopback-only deployment.

    ``proxy_user_header``: trust this request header (e.g. ``X-Remote-User``) as the
    logged-in user's name, but only on requests from ``trusted_proxies`` and only for users
    that exist in the user directory (their role still comes from there). Off when None.
    Only the exact name counts: a request that also carries a variant with underscores
    (``X_Remote_User``) is refused.
    ``forwarded_from``: the addresses of reverse proxies whose ``X-Forwarded-For`` /
    ``X-Forwarded-Proto`` give the client's address (for the login throttle) and scheme;
    empty (the default) trusts no forwarded header at all.
    ``secure_cookies``: force the cookie's Secure flag on or off; None sets it when the
    request came over HTTPS.
    ``password_cost``: the scrypt cost of new hashes; logins rehash cheaper ones.
    ``bootstrap_file``: where the bootstrap admin's one-time password was left (deleted
    once it is changed).
    ``metrics_token``: a bearer token that lets a Prometheus scraper read ``/metrics``
    without a session; without one, ``/metrics`` needs a logged-in user with LIST.
    """

    app_name: str = ""
    session_idle_seconds: float = 3600.0
    session_lifetime_seconds: float = 12 * 3600.0
    proxy_user_header: str | None = None
    trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    forwarded_from: frozenset[str] = frozenset()
    secure_cookies: bool | None = None
    streams: StreamLimits = field(default_factory=StreamLimits)
    max_body_bytes: int = 64 * 1024
    max_query_bytes: int = 4096
    password_cost: ScryptCost = CURRENT_COST
    bootstrap_file: Path | None = None
    metrics_token: str | None = field(default=None, repr=False)
