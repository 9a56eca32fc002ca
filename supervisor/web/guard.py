"""The one guard every Admin Center request passes before its handler.

In order: read the request (bounded query and form, the client address, taking
``X-Forwarded-*`` only from configured proxies), resolve the session (or the trusted
proxy's user header, by its exact name only; its logins and refusals are audited once
per user and client address an hour), end a session whose account changed since it was
made (``auth.session_subject``: removed, disabled, a new password, on any host sharing
the store; audited as ``session ended`` once, by the request that ended it, however many
of that session arrive at once; and the browser is sent to the login page,
which says why), limit a session that logged in with a temporary
password to the password page, require a login and the route's permission, check the
CSRF token of every POST, and turn errors into replies: ``Refused`` with its status,
``SupervisorError`` through its type's ``http_status`` (a refused POST flashes its reason
and goes back to the page it came from).

May import ``access``, ``errors``, ``supervisor.web.*`` below the handlers, bottle and the
stdlib.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

import bottle

from supervisor.core.access import Permission
from supervisor.core.errors import PermissionDenied, SupervisorError
from supervisor.web.auth import Ended, proxy_subject, refusal_reason, session_subject
from supervisor.web.config import (
    COOKIE_NAME,
    CSRF_FIELD,
    HEADER_NAMES_KEY,
    METRICS,
    PUBLIC,
    Access,
)
from supervisor.web.replies import Refused, cookie, redirect, safe_next, text_reply
from supervisor.web.sessions import Flash, Session
from supervisor.web.site import Request, Site

Handler = Callable[..., Any]

# Where a session limited to changing its password may go.
PASSWORD_PAGE = "/account/password"  # noqa: S105 - a path
_LIMITED_PATHS = frozenset({PASSWORD_PAGE, "/logout", "/login"})
LOGIN_PAGE = "/login"
# An ended session's reason in the audit trail when this server ended it (``end_user``).
CHANGED_HERE = "ended by a change of the user"
SESSION_ENDED = "Your session ended because your account changed"


class Guard:
    def __init__(self, site: Site) -> None:
        self.site = site

    def wrap(self, method: str, access: Access, handler: Handler) -> Callable[..., Any]:
        """The Bottle callback for ``handler``: the guard first, then the handler."""

        def callback(**args: str) -> Any:
            return self.handle(method, access, handler, args)

        callback.__name__ = getattr(handler, "__name__", "handler")
        return callback

    def handle(self, method: str, access: Access, handler: Handler, args: dict[str, str]) -> Any:
        environ = bottle.request.environ
        request: Request | None = None
        changing = False  # a user's POST the guard let through to its handler
        try:
            request = self._request(environ, method)
            ended = self._identify(request)
            reply = self._admit(request, access, ended=ended)
            if reply is None:
                changing = method == "POST" and request.subject is not None
                try:
                    reply = handler(self.site, request, **args)
                except BaseException:
                    if changing:  # it may have changed something before it failed
                        self.site.note_change()
                    raise
        except Refused as refused:
            reply = self.site.refusal(request, refused.status, refused.reason)
        except SupervisorError as error:
            if request is None:
                raise
            reply = self._failure(request, error)
        else:
            # Cached readings are stale after a change; an anonymous, refused or failed
            # POST changed nothing (a flood of them must not defeat the page cache).
            if changing and int(getattr(reply, "status_code", 500)) < 400:
                self.site.note_change()
        return self._finish(request, reply)

    # -- reading the request -----------------------------------------------------------

    def _request(self, environ: Mapping[str, Any], method: str) -> Request:
        config = self.site.config
        remote = str(environ.get("REMOTE_ADDR", ""))
        address, scheme = remote, str(environ.get("wsgi.url_scheme", "http"))
        if remote in config.forwarded_from:
            forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")[-1].strip()
            address = forwarded[:64] or remote
            proto = str(environ.get("HTTP_X_FORWARDED_PROTO", scheme)).strip().lower()
            scheme = proto if proto in ("http", "https") else scheme
        secure = config.secure_cookies if config.secure_cookies is not None else scheme == "https"
        raw_query = str(environ.get("QUERY_STRING", ""))
        if len(raw_query) > config.max_query_bytes:
            raise Refused(414, "the address is too long")
        request = Request(
            environ=environ,
            path=str(environ.get("PATH_INFO", "/")),
            method=method,
            address=address,
            secure=secure,
            query=dict(parse_qsl(raw_query, keep_blank_values=True)),
            form={},
        )
        if method == "POST":
            request.form = self._read_form(environ)
        return request

    def _read_form(self, environ: Mapping[str, Any]) -> dict[str, str]:
        text = str(environ.get("CONTENT_LENGTH") or "0").strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise Refused(400, "bad Content-Length")
        length = int(text)
        if length > self.site.config.max_body_bytes:
            raise Refused(413, "the form is too large")
        kind = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        if length and kind != "application/x-www-form-urlencoded":
            raise Refused(415, "forms must be sent as application/x-www-form-urlencoded")
        body = bottle.request.body.read(length) if length else b""
        decoded = body.decode("utf-8", errors="replace")
        return dict(parse_qsl(decoded, keep_blank_values=True, max_num_fields=100))

    # -- who is asking ------------------------------------------------------------------

    def _identify(self, request: Request) -> Ended | None:
        """Set the request's session and subject; the ``Ended`` of a session refused
        because its account changed (the request then goes on without a login, in a new
        anonymous session carrying the notice to the login page)."""
        site = self.site
        session = site.sessions.get(cookie(request.environ, COOKIE_NAME))
        subject = None
        ended: Ended | None = None
        if session is not None and session.user is not None:
            found = session_subject(site.users, session.user, stamp=session.stamp)
            if session.ended and not isinstance(found, Ended):
                found = Ended(CHANGED_HERE, "Your account was changed since you logged in.")
            if isinstance(found, Ended):
                # Several requests of one session may find it ended at once (a page and
                # its event streams): the one that ends it writes the audit entry.
                if site.sessions.end(session):
                    site.accounts.session_ended(
                        session.user, address=request.address, reason=found.reason
                    )
                ended, session, request.clear_cookie = found, None, True
            else:
                subject = found
        proxied = self._proxy_user(request)
        if proxied and (session is None or session.user != proxied or not session.via_proxy):
            if session is not None:
                site.sessions.end(session)
            request.session = self._proxy_login(request, proxied)
            if request.session is None:  # no such user (or disabled): anonymous
                request.clear_cookie = request.environ.get("HTTP_COOKIE") is not None
                return ended
            return None  # the proxy logged them in again
        if ended is not None:
            request.set_token, request.session = site.sessions.create(None)
            site.sessions.flash(
                request.session,
                Flash(kind="info", title=SESSION_ENDED, text=ended.notice + " Log in again."),
            )
            return ended
        request.subject = subject
        request.session = session
        return None

    def _proxy_login(self, request: Request, name: str) -> Session | None:
        """A new session for the user the proxy's header names, its login audited first
        (once per user and address an hour; a trail that cannot be written fails the
        request: no session); None (audited as refused as often) for a name that is no
        enabled user."""
        site = self.site
        header = site.config.proxy_user_header or ""
        found = proxy_subject(site.users, name)
        if found is None:
            reason = refusal_reason(site.users, name)
            site.accounts.proxy_login_refused(
                name, address=request.address, header=header, reason=reason
            )
            return None
        subject, stamp = found
        site.accounts.proxy_login(subject.name, address=request.address, header=header)
        request.set_token, session = site.sessions.create(subject.name, stamp=stamp, via_proxy=True)
        request.subject = subject
        return session

    def _proxy_user(self, request: Request) -> str | None:
        """The user named by the trusted proxy's header, by its exact name only."""
        config = self.site.config
        header = config.proxy_user_header
        environ = request.environ
        if not header or str(environ.get("REMOTE_ADDR", "")) not in config.trusted_proxies:
            return None
        names = environ.get(HEADER_NAMES_KEY)
        if not isinstance(names, list | tuple):
            return None  # a server that does not tell header names apart: trust none
        wanted = header.lower()
        folded = wanted.replace("-", "_")
        exact = 0
        for name in names:
            lowered = str(name).lower()
            if lowered == wanted:
                exact += 1
            elif lowered.replace("-", "_") == folded:
                raise Refused(400, f"refused: the request carries a look-alike of {header}")
        if exact > 1:
            raise Refused(400, f"refused: the request carries {header} more than once")
        if exact == 0:
            return None
        value = str(environ.get("HTTP_" + folded.upper(), "")).strip()
        return value if value and value.isascii() and value.isprintable() else None

    # -- may it pass --------------------------------------------------------------------

    def _admit(self, request: Request, access: Access, *, ended: Ended | None = None) -> Any:
        """None to let the handler run; a reply that ends the request otherwise.
        ``ended``: the request's session was just ended (``_identify``)."""
        if access == PUBLIC:
            if request.method == "POST":
                self._check_csrf(request)
            return None
        if access == METRICS:
            if self._bearer_ok(request):
                return None
            access = Permission.LIST
        subject = request.subject
        if subject is None:
            return self._login_required(request, ended=ended)
        session = request.session
        limited = session is not None and session.must_change_password
        if limited and request.path not in _LIMITED_PATHS:
            if request.method == "GET" and not request.wants_text:
                return redirect(PASSWORD_PAGE)
            raise Refused(403, "change your one-time password first")
        if request.method == "POST":
            self._check_csrf(request)
        if isinstance(access, Permission) and not subject.can(access):
            raise PermissionDenied(subject.name, access.value)
        return None

    def _bearer_ok(self, request: Request) -> bool:
        token = self.site.config.metrics_token
        sent = str(request.environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, value = sent.partition(" ")
        return (
            token is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode("utf-8", "replace"), token.encode())
        )

    def _check_csrf(self, request: Request) -> None:
        sent = request.form.get(CSRF_FIELD, "")
        session = request.session
        if (
            session is None
            or not sent
            or not hmac.compare_digest(
                sent.encode("utf-8", errors="replace"), session.csrf.encode()
            )
        ):
            raise Refused(
                403,
                "the form's security token is missing or belongs to another "
                "session; reload the page and try again",
            )

    def _login_required(self, request: Request, *, ended: Ended | None = None) -> Any:
        if ended is not None:
            # Told why on the login page (the flash of the new anonymous session); a
            # refused POST did nothing and goes back to the page it came from after it.
            if request.wants_text:
                return text_reply(f"{SESSION_ENDED}: {ended.notice} Log in again.", 401)
            target = back(request) if request.method == "POST" else _local_path(request)
            return redirect(LOGIN_PAGE + "?next=" + quote(target, safe="/"))
        if request.method == "POST":
            return self.site.refusal(request, 403, "log in first")
        if request.wants_text:
            return text_reply("log in first", 401)
        return redirect(LOGIN_PAGE + "?next=" + quote(_local_path(request), safe="/"))

    # -- errors and the end --------------------------------------------------------------

    def _failure(self, request: Request, error: SupervisorError) -> Any:
        status = error.http_status
        if isinstance(error, PermissionDenied):
            return self.site.refusal(request, status, "you are not allowed to do that")
        if status == 404 or request.method != "POST" or request.session is None:
            return self.site.refusal(request, status, str(error))
        self.site.flash(request, "error", "Refused", str(error))
        return redirect(back(request))

    def _finish(self, request: Request | None, reply: Any) -> Any:
        if request is not None:
            if request.set_token is not None:
                reply.add_header("Set-Cookie", self._cookie_value(request, request.set_token))
            elif request.clear_cookie:
                reply.add_header("Set-Cookie", self._cookie_value(request, "", expire=True))
        if "Cache-Control" not in reply.headers:
            reply.set_header("Cache-Control", "no-store")
        return reply

    def _cookie_value(self, request: Request, token: str, *, expire: bool = False) -> str:
        parts = [f"{COOKIE_NAME}={token}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if request.secure:
            parts.append("Secure")
        if expire:
            parts.append("Max-Age=0")
        return "; ".join(parts)


def _local_path(request: Request) -> str:
    query = str(request.environ.get("QUERY_STRING", ""))
    return request.path + ("?" + query if query else "")


def back(request: Request, default: str = "/") -> str:
    """Where a POST goes back to: its form's ``back`` field if it is on this site."""
    target = request.form.get("back")
    return safe_next(target) if target else default
