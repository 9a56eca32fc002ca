"""The Admin Center as a Bottle application: ``create_app(use_cases, users=...) -> Bottle``.

This module only assembles: the shared ``Site``, the ``Guard`` every request passes
(session, proxy header, CSRF, permission, errors mapped through ``http_status``), and the
route table, each route with its access (public, any logged-in user, or one
``Permission``) and its handler from the handler modules (``account``, ``overview``,
``scheduler_page``, ``actions``, ``logs``, ``audit``, ``users``, ``streams``). Pages are
rendered by our own autoescaping Jinja2 environment; every response carries a
Content-Security-Policy without inline script and no ``Server`` banner.

May import ``usecases``, ``access``, ``clock``, ``supervisor.web.*``, bottle and the stdlib.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import bottle

from supervisor.core.access import Permission
from supervisor.core.clock import Clock, SystemClock
from supervisor.metrics.collector import MetricsPage
from supervisor.usecases.accounts import Accounts
from supervisor.usecases.accounts import AccountStore as AccountDirectory
from supervisor.usecases.reads import UseCaseReads, reader
from supervisor.usecases.schedulers import UseCases
from supervisor.web import (
    account,
    actions,
    audit,
    events,
    logs,
    metrics,
    overview,
    scheduler_page,
    streams,
)
from supervisor.web import users as user_pages
from supervisor.web.config import (
    CONNECTION_KEY,
    COOKIE_NAME,
    CSRF_FIELD,
    LOGGED_IN,
    METRICS,
    PUBLIC,
    Access,
    AdminConfig,
)
from supervisor.web.guard import PASSWORD_PAGE, Guard, Handler
from supervisor.web.render import load_assets, make_environment
from supervisor.web.sessions import LoginThrottle, SessionStore
from supervisor.web.site import Site

__all__ = [
    "CONNECTION_KEY",
    "COOKIE_NAME",
    "CSRF_FIELD",
    "LOGGED_IN",
    "PUBLIC",
    "AdminConfig",
    "create_app",
]

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none';"
    " object-src 'none'"
)
SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)
_NO_BANNER: Final = frozenset({"server", "x-powered-by"})


class AdminBottle(bottle.Bottle):  # type: ignore[misc]
    """A Bottle app that adds the security headers to every response, errors included,
    and drops any ``Server`` banner."""

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(n, v) for n, v in headers if n.lower() not in _NO_BANNER]
            present_names = {name.lower() for name, _ in kept}
            extra = [(n, v) for n, v in SECURITY_HEADERS if n.lower() not in present_names]
            return start_response(status, [*kept, *extra], exc_info)

        return super().wsgi(environ, start)


def create_app(
    use_cases: UseCases,
    *,
    users: AccountDirectory,
    accounts: Accounts | None = None,
    config: AdminConfig | None = None,
    clock: Clock | None = None,
    sessions: SessionStore | None = None,
    throttle: LoginThrottle | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bottle.Bottle:
    """The Admin Center over ``use_cases``, with logins from ``users``.

    ``accounts`` checks and changes passwords and writes logins to the audit trail
    (default: the account use cases over ``users``). ``stop``, once set,
    ends every open event stream (the server sets it when closing). ``sleep`` spends the
    delay after a failed login (tests pass a no-op).
    """
    config = config or AdminConfig()
    clock = clock or SystemClock()
    stop = stop or threading.Event()
    if accounts is None:
        accounts = Accounts(
            users,
            clock=clock,
            cost=config.password_cost,
            bootstrap_file=config.bootstrap_file,
        )
    if sessions is None:
        sessions = SessionStore(
            idle_seconds=config.session_idle_seconds,
            lifetime_seconds=config.session_lifetime_seconds,
        )
    assets = load_assets()
    site = Site(
        use_cases=use_cases,
        users=users,
        accounts=accounts,
        config=config,
        clock=clock,
        sessions=sessions,
        throttle=throttle if throttle is not None else LoginThrottle(),
        stop=stop,
        sleep=sleep,
        assets=assets,
        env=make_environment(assets),
        slots=events.StreamSlots(config.streams),
        hub=events.StatusHub(use_cases, poll_seconds=config.streams.status_poll_seconds, stop=stop),
        metrics=MetricsPage(UseCaseReads(use_cases, reader("metrics"))),
    )
    app = AdminBottle(catchall=True)
    app.config["supervisor.admin"] = True
    guard = Guard(site)
    for method, rule, access, handler in routes(site):
        app.route(rule, method=method, callback=guard.wrap(method, access, handler), access=access)
    app.error(404)(_page_error(404, "Not Found", "There is no such page."))
    app.error(405)(_page_error(405, "Method Not Allowed", "That is not allowed here."))
    app.error(500)(_page_error(500, "Server Error", "Something went wrong."))
    return app


def routes(site: Site) -> list[tuple[str, str, Access, Handler]]:
    """Every route: (method, rule, who may use it, handler)."""
    cards = functools.partial(overview.overview, cards=overview.CardCache(site))
    functools.update_wrapper(cards, overview.overview)
    return [
        ("GET", "/static/<name>", PUBLIC, overview.static),
        ("GET", "/login", PUBLIC, account.login_form),
        ("POST", "/login", PUBLIC, account.login),
        ("POST", "/logout", LOGGED_IN, account.logout),
        ("GET", PASSWORD_PAGE, LOGGED_IN, account.password_form),
        ("POST", PASSWORD_PAGE, LOGGED_IN, account.change_password),
        ("GET", "/", Permission.LIST, cards),
        ("GET", "/audit", Permission.VIEW_AUDIT, audit.audit),
        ("GET", user_pages.USERS_PAGE, Permission.VIEW_USERS, user_pages.users),
        ("POST", "/users/add", Permission.MANAGE_USERS, user_pages.add),
        ("POST", "/users/role", Permission.MANAGE_USERS, user_pages.set_role),
        ("POST", "/users/disable", Permission.MANAGE_USERS, user_pages.disable),
        ("POST", "/users/enable", Permission.MANAGE_USERS, user_pages.enable),
        ("POST", "/users/remove", Permission.MANAGE_USERS, user_pages.remove),
        ("POST", "/users/password", Permission.RESET_PASSWORDS, user_pages.reset_password),
        ("GET", "/logs", Permission.VIEW_LOGS, logs.search),
        ("GET", "/schedulers/<sid>", Permission.STATUS, scheduler_page.scheduler),
        ("GET", "/schedulers/<sid>/history", Permission.STATUS, scheduler_page.history),
        ("GET", "/schedulers/<sid>/logs", Permission.VIEW_LOGS, logs.logs),
        ("GET", "/schedulers/<sid>/preview", Permission.FIND_SETTINGS, scheduler_page.preview),
        ("POST", "/schedulers/<sid>/start", Permission.START, actions.start),
        ("POST", "/schedulers/<sid>/stop", Permission.STOP, actions.stop),
        ("POST", "/schedulers/<sid>/pause", Permission.STOP, actions.pause),
        ("POST", "/schedulers/<sid>/disable", Permission.UPDATE_SETTINGS, actions.disable),
        ("POST", "/schedulers/<sid>/enable", Permission.UPDATE_SETTINGS, actions.enable),
        ("POST", "/schedulers/<sid>/execute", Permission.EXECUTE, actions.execute),
        ("POST", "/schedulers/<sid>/actions/<action>", Permission.RUN_ACTION, actions.action),
        (
            "POST",
            "/schedulers/<sid>/settings",
            Permission.UPDATE_SETTINGS,
            scheduler_page.save_settings,
        ),
        (
            "POST",
            "/schedulers/<sid>/settings/reset",
            Permission.RESET_SETTINGS,
            scheduler_page.reset_settings,
        ),
        ("GET", "/events/status", Permission.LIST, streams.status_events),
        ("GET", "/metrics", METRICS, metrics.metrics),
        ("GET", "/events/schedulers/<sid>/logs", Permission.VIEW_LOGS, streams.log_events),
    ]


def _page_error(status: int, title: str, text: str) -> Callable[[Any], str]:
    def handler(_error: Any) -> str:
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{status} {title}</title><link rel=stylesheet href=/static/admin.css>"
            f"</head><body class=bare><main class=narrow><h1>{status} {title}</h1>"
            f"<p>{text}</p><p><a href=/>Back to the Admin Center</a></p></main></body></html>"
        )

    return handler
