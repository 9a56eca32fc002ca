"""The Admin Center as a Bottle application: ``create_app(use_cases, users=...) -> Bottle``.

Every route is registered with its access (public, any logged-in user, or one
``Permission``) and runs through one guard that resolves the session, checks the CSRF
token of every POST, checks the permission, and turns ``SupervisorError``s into HTTP
statuses. Pages are rendered by our own autoescaping Jinja2 environment; every response
carries a Content-Security-Policy without inline script. State changes are POSTs that
redirect (so every page works without JS); a small script adds live updates through
server-sent events.

May import ``usecases``, ``user``, ``records``, ``definitions``, ``serialize``,
``nextruns``, ``clock``, ``errors``, ``supervisor.web.*``, bottle, jinja2 and the stdlib.
"""

from __future__ import annotations

import hmac
import json
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

import bottle
from markupsafe import Markup

from supervisor.core.access import Permission, Subject
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.definitions import Kind
from supervisor.core.errors import (
    DefinitionError,
    PermissionDenied,
    SupervisorError,
    UnknownAction,
    UnknownRun,
    UnknownScheduler,
)
from supervisor.core.nextruns import upcoming_for_cron
from supervisor.core.records import Level, LogQuery, LogRecord, SchedulerStatus
from supervisor.core.settings import read_form as read_settings_form
from supervisor.store.protocols import UserDirectory
from supervisor.usecases.schedulers import SettingsView, UseCases
from supervisor.usecases.serialize import status_json
from supervisor.web import events, present
from supervisor.web.auth import check_password, subject_for
from supervisor.web.render import Asset, load_assets, make_environment, render, scheduler_url
from supervisor.web.sessions import Flash, LoginThrottle, Session, SessionStore

COOKIE_NAME: Final = "supervisor_session"
# The server may put the client's socket here so streams see a closed connection at once.
CONNECTION_KEY: Final = "supervisor.connection"
CSRF_FIELD: Final = "csrf"
LOG_PAGE: Final = 200
RECENT_LOGS: Final = 60
RUN_HISTORY: Final = 50
AUDIT_PAGE: Final = 50
PREVIEW_COUNT: Final = 5

PUBLIC: Final = "public"
LOGGED_IN: Final = "logged-in"
Access = Permission | str

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


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    """How the Admin Center behaves; the defaults suit a loopback-only deployment.

    ``proxy_user_header``: trust this request header (e.g. ``X-Remote-User``) as the
    logged-in user's name, but only on requests from ``trusted_proxies`` and only for users
    that exist in the user directory (their role still comes from there). Off when None.
    ``behind_proxy``: take the client address and scheme from ``X-Forwarded-For`` /
    ``X-Forwarded-Proto`` of requests from ``trusted_proxies``.
    ``secure_cookies``: force the cookie's Secure flag on or off; None sets it when the
    request came over HTTPS.
    """

    app_name: str = ""
    session_idle_seconds: float = 3600.0
    session_lifetime_seconds: float = 12 * 3600.0
    proxy_user_header: str | None = None
    behind_proxy: bool = False
    trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    secure_cookies: bool | None = None
    streams: events.StreamLimits = field(default_factory=events.StreamLimits)
    max_body_bytes: int = 64 * 1024


@dataclass(slots=True, kw_only=True)
class _Request:
    """What the guard found out about one request, handed to the handler."""

    environ: Mapping[str, Any]
    path: str
    method: str
    address: str
    secure: bool
    query: dict[str, str]
    form: dict[str, str]
    session: Session | None = None
    subject: Subject | None = None
    set_token: str | None = None  # a new session token to send as cookie
    clear_cookie: bool = False


class _Refused(Exception):
    """Ends a request early with a status (and a short reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AdminBottle(bottle.Bottle):  # type: ignore[misc]
    """A Bottle app that adds the security headers to every response, errors included."""

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present_names = {name.lower() for name, _ in headers}
            extra = [(n, v) for n, v in SECURITY_HEADERS if n.lower() not in present_names]
            return start_response(status, [*headers, *extra], exc_info)

        return super().wsgi(environ, start)


def create_app(
    use_cases: UseCases,
    *,
    users: UserDirectory,
    config: AdminConfig | None = None,
    clock: Clock | None = None,
    sessions: SessionStore | None = None,
    throttle: LoginThrottle | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bottle.Bottle:
    """The Admin Center over ``use_cases``, with logins from ``users``.

    ``stop``, once set, ends every open event stream (the server sets it when closing).
    ``sleep`` spends the delay after a failed login (tests pass a no-op).
    """
    admin = _Admin(
        use_cases,
        users=users,
        config=config or AdminConfig(),
        clock=clock or SystemClock(),
        sessions=sessions,
        throttle=throttle,
        stop=stop or threading.Event(),
        sleep=sleep,
    )
    return admin.app


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


class _Admin:
    def __init__(
        self,
        use_cases: UseCases,
        *,
        users: UserDirectory,
        config: AdminConfig,
        clock: Clock,
        sessions: SessionStore | None,
        throttle: LoginThrottle | None,
        stop: threading.Event,
        sleep: Callable[[float], None],
    ) -> None:
        self.use_cases = use_cases
        self.users = users
        self.config = config
        self.clock = clock
        if sessions is None:
            sessions = SessionStore(
                idle_seconds=config.session_idle_seconds,
                lifetime_seconds=config.session_lifetime_seconds,
            )
        self.sessions = sessions
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self.stop = stop
        self.sleep = sleep
        self.assets: dict[str, Asset] = load_assets()
        self.env = make_environment(self.assets)
        limits = config.streams
        self.limits = limits
        self.slots = events.StreamSlots(limits.max_streams)
        self.hub = events.StatusHub(use_cases, poll_seconds=limits.status_poll_seconds, stop=stop)
        self._cards: dict[str, tuple[SchedulerStatus, Markup]] = {}
        self._icons = f"/static/icons.svg?v={self.assets['icons.svg'].version}"
        self.app = AdminBottle(catchall=True)
        self.app.config["supervisor.admin"] = True
        self._routes()

    # -- routing ------------------------------------------------------------------------

    def _routes(self) -> None:
        r = self._add
        r("GET", "/static/<name>", PUBLIC, self.static)
        r("GET", "/login", PUBLIC, self.login_form)
        r("POST", "/login", PUBLIC, self.login)
        r("POST", "/logout", LOGGED_IN, self.logout)
        r("GET", "/", Permission.LIST, self.overview)
        r("GET", "/audit", Permission.VIEW_AUDIT, self.audit)
        r("GET", "/schedulers/<sid>", Permission.STATUS, self.scheduler)
        r("GET", "/schedulers/<sid>/history", Permission.STATUS, self.history)
        r("GET", "/schedulers/<sid>/logs", Permission.VIEW_LOGS, self.logs)
        r("GET", "/schedulers/<sid>/preview", Permission.FIND_SETTINGS, self.preview)
        r("POST", "/schedulers/<sid>/start", Permission.START, self.start)
        r("POST", "/schedulers/<sid>/stop", Permission.STOP, self.stop_scheduler)
        r("POST", "/schedulers/<sid>/execute", Permission.EXECUTE, self.execute)
        r("POST", "/schedulers/<sid>/actions/<action>", Permission.RUN_ACTION, self.action)
        r("POST", "/schedulers/<sid>/settings", Permission.UPDATE_SETTINGS, self.save_settings)
        r(
            "POST",
            "/schedulers/<sid>/settings/reset",
            Permission.RESET_SETTINGS,
            self.reset_settings,
        )
        r("GET", "/events/status", Permission.LIST, self.status_events)
        r("GET", "/events/schedulers/<sid>/logs", Permission.VIEW_LOGS, self.log_events)
        self.app.error(404)(_page_error(404, "Not Found", "There is no such page."))
        self.app.error(405)(_page_error(405, "Method Not Allowed", "That is not allowed here."))
        self.app.error(500)(_page_error(500, "Server Error", "Something went wrong."))

    def _add(self, method: str, rule: str, access: Access, handler: Callable[..., Any]) -> None:
        def callback(**args: str) -> Any:
            return self._guard(method, access, handler, args)

        callback.__name__ = getattr(handler, "__name__", "handler")
        self.app.route(rule, method=method, callback=callback, access=access)

    # -- the guard ----------------------------------------------------------------------

    def _guard(
        self, method: str, access: Access, handler: Callable[..., Any], args: dict[str, str]
    ) -> Any:
        environ = bottle.request.environ
        request: _Request | None = None
        try:
            request = self._request(environ, method)
            self._identify(request)
            if access != PUBLIC and request.subject is None:
                reply = self._login_required(request)
            else:
                if method == "POST":
                    self._check_csrf(request)
                subject = request.subject
                if isinstance(access, Permission) and subject and not subject.can(access):
                    raise PermissionDenied(subject.name, access.value)
                reply = handler(request, **args)
        except _Refused as refused:
            reply = self._refusal(request, refused.status, refused.reason)
        except SupervisorError as error:
            if request is None:
                raise
            reply = self._failure(request, error)
        return self._finish(request, reply)

    def _request(self, environ: Mapping[str, Any], method: str) -> _Request:
        remote = str(environ.get("REMOTE_ADDR", ""))
        address, scheme = remote, str(environ.get("wsgi.url_scheme", "http"))
        trusted = remote in self.config.trusted_proxies
        if self.config.behind_proxy and trusted:
            forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")[-1].strip()
            address = forwarded or remote
            scheme = str(environ.get("HTTP_X_FORWARDED_PROTO", scheme)).strip().lower()
        secure = (
            self.config.secure_cookies
            if self.config.secure_cookies is not None
            else scheme == "https"
        )
        query = dict(parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True))
        request = _Request(
            environ=environ,
            path=str(environ.get("PATH_INFO", "/")),
            method=method,
            address=address,
            secure=secure,
            query=query,
            form={},
        )
        if method == "POST":
            request.form = self._read_form(environ)
        return request

    def _read_form(self, environ: Mapping[str, Any]) -> dict[str, str]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _Refused(400, "bad Content-Length") from None
        if length > self.config.max_body_bytes:
            raise _Refused(413, "the form is too large")
        kind = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        if length and kind != "application/x-www-form-urlencoded":
            raise _Refused(415, "forms must be sent as application/x-www-form-urlencoded")
        body = bottle.request.body.read(length) if length else b""
        text = body.decode("utf-8", errors="replace")
        return dict(parse_qsl(text, keep_blank_values=True))

    def _identify(self, request: _Request) -> None:
        token = _cookie(request.environ, COOKIE_NAME)
        session = self.sessions.get(token)
        header = self.config.proxy_user_header
        if header and str(request.environ.get("REMOTE_ADDR", "")) in self.config.trusted_proxies:
            key = "HTTP_" + header.upper().replace("-", "_")
            proxied = str(request.environ.get(key, "")).strip()
            if proxied and (session is None or session.user != proxied):
                if session is not None:
                    self.sessions.end(session)
                request.set_token, session = self.sessions.create(proxied, via_proxy=True)
        if session is not None and session.user is not None:
            subject = subject_for(self.users, session.user)
            if subject is None:  # removed since, or its role is gone
                self.sessions.end(session)
                session, request.clear_cookie = None, True
            request.subject = subject
        request.session = session

    def _check_csrf(self, request: _Request) -> None:
        sent = request.form.get(CSRF_FIELD, "")
        session = request.session
        if session is None or not sent or not hmac.compare_digest(sent, session.csrf):
            raise _Refused(
                403,
                "the form's security token is missing or belongs to another "
                "session; reload the page and try again",
            )

    def _login_required(self, request: _Request) -> Any:
        if request.method == "POST":
            return self._refusal(request, 403, "log in first")
        if request.path.startswith("/events/") or request.path.endswith("/preview"):
            return _reply("log in first\n", 401, content_type="text/plain; charset=utf-8")
        return _redirect("/login?next=" + quote(_local_path(request), safe="/"))

    def _refusal(self, request: _Request | None, status: int, reason: str) -> Any:
        if request is not None and (
            request.path.startswith("/events/") or request.path.endswith("/preview")
        ):
            return _reply(reason + "\n", status, content_type="text/plain; charset=utf-8")
        body = render(
            self.env,
            "error.html",
            {**self._common(request), "status": status, "reason": reason},
        )
        return _reply(body, status)

    def _failure(self, request: _Request, error: SupervisorError) -> Any:
        if isinstance(error, PermissionDenied):
            return self._refusal(request, 403, "you are not allowed to do that")
        if isinstance(error, UnknownScheduler | UnknownRun | UnknownAction):
            return self._refusal(request, 404, str(error))
        if request.method == "POST" and request.session is not None:
            self.sessions.flash(
                request.session, Flash(kind="error", title="Refused", text=str(error))
            )
            return _redirect(_back(request))
        return self._refusal(request, error.http_status, str(error))

    def _finish(self, request: _Request | None, reply: Any) -> Any:
        if request is not None:
            if request.set_token is not None:
                reply.add_header("Set-Cookie", self._cookie_value(request, request.set_token))
            elif request.clear_cookie:
                reply.add_header("Set-Cookie", self._cookie_value(request, "", expire=True))
        if "Cache-Control" not in reply.headers:
            reply.set_header("Cache-Control", "no-store")
        return reply

    def _cookie_value(self, request: _Request, token: str, *, expire: bool = False) -> str:
        parts = [f"{COOKIE_NAME}={token}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if request.secure:
            parts.append("Secure")
        if expire:
            parts.append("Max-Age=0")
        return "; ".join(parts)

    def _common(self, request: _Request | None) -> dict[str, Any]:
        subject = request.subject if request is not None else None
        session = request.session if request is not None else None
        flashes = self.sessions.pop_flashes(session) if session is not None else []
        return {
            "app_name": self.config.app_name,
            "subject": subject,
            "can": (lambda p: subject is not None and subject.can(Permission(p))),
            "csrf": session.csrf if session is not None else "",
            "csrf_field": CSRF_FIELD,
            "flashes": flashes,
            "path": request.path if request is not None else "/",
            "logout": session is not None and not session.via_proxy,
        }

    def _page(self, request: _Request, template: str, status: int = 200, **values: Any) -> Any:
        body = render(self.env, template, {**self._common(request), **values})
        return _reply(body, status)

    def _flash(self, request: _Request, kind: str, title: str, text: str = "") -> None:
        if request.session is not None:
            self.sessions.flash(request.session, Flash(kind=kind, title=title, text=text))

    def _subject(self, request: _Request) -> Subject:
        assert request.subject is not None  # the guard let only logged-in requests through
        return request.subject

    # -- public -------------------------------------------------------------------------

    def static(self, _request: _Request, name: str) -> Any:
        asset = self.assets.get(name)
        if asset is None:
            raise _Refused(404, "no such file")
        reply = _reply(asset.body, 200, content_type=asset.content_type)
        reply.set_header("Cache-Control", "public, max-age=31536000, immutable")
        return reply

    def login_form(self, request: _Request) -> Any:
        if request.subject is not None:
            return _redirect(_safe_next(request.query.get("next")))
        if request.session is None:
            request.set_token, request.session = self.sessions.create(None)
        return self._page(
            request, "login.html", next=_safe_next(request.query.get("next")), name="", error=""
        )

    def login(self, request: _Request) -> Any:
        name = request.form.get("name", "").strip()
        password = request.form.get("password", "")
        target = _safe_next(request.form.get("next"))
        wait = self.throttle.wait_needed(name, request.address)
        if wait > 0:
            error = f"Too many failed attempts. Try again in {int(wait) + 1} s."
            return self._page(
                request, "login.html", status=429, next=target, name=name, error=error
            )
        record = check_password(self.users, name, password) if name and password else None
        if record is None:
            self.throttle.failed(name, request.address)
            self.sleep(self.throttle.failure_delay)
            return self._page(
                request,
                "login.html",
                status=401,
                next=target,
                name=name,
                error="Wrong user name or password.",
            )
        self.throttle.succeeded(name, request.address)
        if request.session is not None:
            self.sessions.end(request.session)
        request.set_token, request.session = self.sessions.create(record.name)
        return _redirect(target)

    def logout(self, request: _Request) -> Any:
        if request.session is not None:
            self.sessions.end(request.session)
        request.session, request.clear_cookie = None, True
        return _redirect("/login")

    # -- pages --------------------------------------------------------------------------

    def overview(self, request: _Request) -> Any:
        statuses = self.use_cases.list(self._subject(request))
        counts = Counter(s.state for s in statuses)
        cards = [self._card(status) for status in statuses]
        return self._page(request, "overview.html", statuses=statuses, counts=counts, cards=cards)

    def _card(self, status: SchedulerStatus) -> Markup:
        """A card's HTML, rendered again only when the scheduler's status changed."""
        cached = self._cards.get(status.id)
        if cached is not None and cached[0] == status:
            return cached[1]
        html = Markup(  # noqa: S704 - the output of an autoescaping template
            render(
                self.env,
                "card.html",
                {"s": status, "href": scheduler_url(status.id), "icons": self._icons},
            )
        )
        self._cards[status.id] = (status, html)
        return html

    def scheduler(
        self,
        request: _Request,
        sid: str,
        *,
        form_texts: Mapping[str, str] | None = None,
        form_errors: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> Any:
        subject = self._subject(request)
        status = self.use_cases.status(subject, sid)
        options = self.use_cases.registry.get(sid)
        now = self.clock.now()
        view: SettingsView | None = None
        texts: dict[str, str] = {}
        defaults_text: dict[str, str] = {}
        preview: dict[str, Any] | None = None
        if subject.can(Permission.FIND_SETTINGS):
            view = self.use_cases.find_settings(subject, sid)
            texts = {
                name: ("on" if view.effective.disabled else "")
                if name == "disabled"
                else present.setting_text(name, view.effective)
                for name in present.FORM_FIELDS[options.kind]
            }
            defaults_text = {
                name: present.setting_text(name, view.defaults)
                for name in present.FORM_FIELDS[options.kind]
            }
            if options.kind is Kind.CRON:
                preview = self._preview(view.effective.cron or "", view.effective.timezone)
        if form_texts is not None:
            texts.update(form_texts)
        runs = self.use_cases.runs(subject, sid, limit=RUN_HISTORY)
        logs: list[tuple[int, LogRecord]] = []
        if subject.can(Permission.VIEW_LOGS):
            logs = self.use_cases.logs(subject, LogQuery(scheduler_id=sid, limit=RECENT_LOGS))
        return self._page(
            request,
            "scheduler.html",
            status=status_code,
            s=status,
            sid=status.id,
            view=view,
            fields=present.FORM_FIELDS[options.kind],
            texts=texts,
            defaults_text=defaults_text,
            errors=form_errors or {},
            preview=preview,
            runs=runs,
            chart=present.duration_chart(runs, now),
            now=now,
            logs=logs,
            tail_after=logs[-1][0] if logs else 0,
            status_json=status_json(status),
        )

    def history(self, request: _Request, sid: str) -> Any:
        subject = self._subject(request)
        runs = self.use_cases.runs(subject, sid, limit=RUN_HISTORY)
        now = self.clock.now()
        body = render(
            self.env,
            "history.html",
            {
                "sid": sid,
                "runs": runs,
                "chart": present.duration_chart(runs, now),
                "now": now,
                "can": lambda p: subject.can(Permission(p)),
            },
        )
        return _reply(body, 200)

    def logs(self, request: _Request, sid: str) -> Any:
        subject = self._subject(request)
        status = self.use_cases.status(subject, sid)
        level = _level(request.query.get("level"))
        run_id = request.query.get("run") or None
        before = _cursor(request.query.get("before"))
        after = _cursor(request.query.get("after"))

        def fetch(*, before: int | None = None, after: int | None = None, limit: int) -> Any:
            return self.use_cases.logs(
                subject,
                LogQuery(
                    scheduler_id=sid,
                    run_id=run_id,
                    min_level=level,
                    before=before,
                    after=after,
                    limit=limit,
                ),
            )

        page = fetch(before=before, after=after, limit=LOG_PAGE)
        has_older = bool(page) and bool(fetch(before=page[0][0], limit=1))
        has_newer = bool(page) and bool(fetch(after=page[-1][0], limit=1))
        if not page and after is not None:
            has_older = True
        runs = self.use_cases.runs(subject, sid, limit=RUN_HISTORY)
        return self._page(
            request,
            "logs.html",
            s=status,
            records=page,
            level=level,
            run_id=run_id,
            runs=runs,
            has_older=has_older,
            has_newer=has_newer,
            live=not has_newer and before is None,
            tail_after=page[-1][0] if page else (after or 0),
            level_name="" if level is None else level.name.lower(),
        )

    def audit(self, request: _Request) -> Any:
        subject = self._subject(request)
        scheduler_id = request.query.get("scheduler") or None
        before = _cursor(request.query.get("before"))
        entries = self.use_cases.audit(
            subject, scheduler_id=scheduler_id, limit=AUDIT_PAGE + 1, before=before
        )
        more = len(entries) > AUDIT_PAGE
        entries = entries[:AUDIT_PAGE]
        rows = []
        for cursor, entry in entries:
            keys = sorted(set(entry.before or {}) | set(entry.after or {}))
            changes = [
                (
                    key,
                    present.audit_value(key, (entry.before or {}).get(key)),
                    present.audit_value(key, (entry.after or {}).get(key)),
                    (entry.before or {}).get(key) != (entry.after or {}).get(key),
                )
                for key in keys
            ]
            rows.append((cursor, entry, changes))
        return self._page(
            request,
            "audit.html",
            rows=rows,
            scheduler_id=scheduler_id or "",
            older=entries[-1][0] if more and entries else None,
        )

    def preview(self, request: _Request, sid: str) -> Any:
        self.use_cases.find_settings(self._subject(request), sid)
        cron = request.query.get("cron", "")
        timezone = request.query.get("timezone", "") or "UTC"
        return _json(self._preview(cron, timezone))

    def _preview(self, cron: str, timezone: str) -> dict[str, Any]:
        try:
            times = upcoming_for_cron(cron, timezone, start=self.clock.now(), count=PREVIEW_COUNT)
        except DefinitionError as error:
            return {"times": [], "error": {"field": error.field, "message": error.problem}}
        zone = ZoneInfo(timezone)
        return {
            "times": [{"iso": t.isoformat(), "text": _zoned(t, zone)} for t in times],
            "error": None,
            "timezone": timezone,
        }

    # -- controls -----------------------------------------------------------------------

    def start(self, request: _Request, sid: str) -> Any:
        self.use_cases.start(self._subject(request), sid)
        self._flash(request, "ok", "Started", "It plans runs again.")
        return _redirect(_back(request, sid))

    def stop_scheduler(self, request: _Request, sid: str) -> Any:
        self.use_cases.stop(self._subject(request), sid)
        self._flash(request, "ok", "Stopped", "The current run, if any, was asked to stop.")
        return _redirect(_back(request, sid))

    def execute(self, request: _Request, sid: str) -> Any:
        run_id = self.use_cases.execute(self._subject(request), sid)
        self._flash(request, "ok", "Run started", f"Run {run_id} is in progress.")
        return _redirect(_back(request, sid))

    def action(self, request: _Request, sid: str, action: str) -> Any:
        subject = self._subject(request)
        options = self.use_cases.registry.get(sid)
        defined = options.action(action)
        if defined is None:
            raise UnknownAction(f"scheduler {sid!r} has no action {action!r}")
        try:
            result = self.use_cases.run_action(subject, sid, action)
        except PermissionDenied:
            raise
        except SupervisorError as error:
            self._flash(request, "error", f"{defined.title} failed", str(error))
        else:
            self._flash(request, "ok", defined.title, result)
        return _redirect(_back(request, sid))

    def save_settings(self, request: _Request, sid: str) -> Any:
        subject = self._subject(request)
        options = self.use_cases.registry.get(sid)
        form = read_settings_form(options.kind, request.form)
        errors = dict(form.errors)
        if not errors:
            try:
                self.use_cases.update_settings(subject, sid, form.change)
            except DefinitionError as error:  # named by its setting name
                errors[error.field if error.field in form.texts else "general"] = error.problem
        if errors:
            return self.scheduler(
                request, sid, form_texts=form.texts, form_errors=errors, status_code=400
            )
        self._flash(request, "ok", "Settings saved", "They apply at once.")
        return _redirect(scheduler_url(sid) + "#settings")

    def reset_settings(self, request: _Request, sid: str) -> Any:
        self.use_cases.reset_settings(self._subject(request), sid)
        self._flash(request, "ok", "Settings reset", "The defaults from the code apply again.")
        return _redirect(scheduler_url(sid) + "#settings")

    # -- event streams ------------------------------------------------------------------

    def _open_stream(self, request: _Request) -> Callable[[], None]:
        session = request.session
        assert session is not None
        if not self.slots.acquire():
            raise _Refused(503, "too many live streams are open; try again later")
        if not self.sessions.open_stream(session, limit=self.limits.max_per_session):
            self.slots.release()
            raise _Refused(429, "this session has too many live streams open")
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self.sessions.close_stream(session)
                self.slots.release()

        return release

    def _alive(self, request: _Request) -> Callable[[], bool]:
        session = request.session
        assert session is not None and session.user is not None
        user = session.user
        checked = [time.monotonic()]
        connection = request.environ.get(CONNECTION_KEY)

        def alive() -> bool:
            if not self.sessions.alive(session):
                return False
            if connection is not None and _peer_gone(connection):
                return False
            now = time.monotonic()
            if now - checked[0] > 10:  # the user may have been removed meanwhile
                checked[0] = now
                return subject_for(self.users, user) is not None
            return True

        return alive

    def status_events(self, request: _Request) -> Any:
        only = request.query.get("id") or None
        if only is not None:
            self.use_cases.status(self._subject(request), only)
        release = self._open_stream(request)
        stream = events.status_stream(
            self.hub,
            only=only,
            limits=self.limits,
            alive=self._alive(request),
            stop=self.stop,
            release=release,
        )
        return _event_stream(stream, release)

    def log_events(self, request: _Request, sid: str) -> Any:
        subject = self._subject(request)
        self.use_cases.status(subject, sid)
        after = _cursor(request.environ.get("HTTP_LAST_EVENT_ID") or None)
        if after is None:
            after = _cursor(request.query.get("after"))
        release = self._open_stream(request)
        stream = events.log_stream(
            self.use_cases,
            subject,
            sid,
            after=after,
            run_id=request.query.get("run") or None,
            min_level=_level(request.query.get("level")),
            limits=self.limits,
            alive=self._alive(request),
            stop=self.stop,
            release=release,
        )
        return _event_stream(stream, release)


# -- small helpers ------------------------------------------------------------------------


def _reply(body: str | bytes, status: int, *, content_type: str | None = None) -> Any:
    reply = bottle.HTTPResponse(body=body, status=status)
    reply.set_header("Content-Type", content_type or "text/html; charset=utf-8")
    return reply


def _json(data: Any, status: int = 200) -> Any:
    return _reply(json.dumps(data), status, content_type="application/json")


def _redirect(location: str) -> Any:
    reply = bottle.HTTPResponse(body="", status=303)
    reply.set_header("Location", location)
    return reply


def _event_stream(stream: Iterator[str], release: Callable[[], None]) -> Any:
    def guarded() -> Iterator[str]:
        try:
            yield from stream
        finally:
            stream_close = getattr(stream, "close", None)
            if stream_close is not None:
                stream_close()
            release()

    reply = bottle.HTTPResponse(body=guarded(), status=200)
    reply.set_header("Content-Type", "text/event-stream; charset=utf-8")
    reply.set_header("Cache-Control", "no-store")
    reply.set_header("X-Accel-Buffering", "no")
    return reply


def _peer_gone(connection: socket.socket) -> bool:
    """Whether the client closed its end (a readable socket that reads as end-of-file)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _cookie(environ: Mapping[str, Any], name: str) -> str | None:
    header = str(environ.get("HTTP_COOKIE", ""))
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def _local_path(request: _Request) -> str:
    query = str(request.environ.get("QUERY_STRING", ""))
    return request.path + ("?" + query if query else "")


def _safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site; ``/`` otherwise (no open redirects)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        return "/"
    return target


def _back(request: _Request, sid: str | None = None) -> str:
    default = scheduler_url(sid) if sid is not None else "/"
    back = request.form.get("back")
    return _safe_next(back) if back else default


def _cursor(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise _Refused(400, "a cursor must be a whole number")
    return int(text)


def _level(text: str | None) -> Level | None:
    if not text:
        return None
    try:
        return Level.parse(text)
    except ValueError:
        raise _Refused(400, f"unknown log level {text!r}") from None


def _zoned(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return local.strftime("%a %Y-%m-%d %H:%M:%S %Z (UTC%z)")
