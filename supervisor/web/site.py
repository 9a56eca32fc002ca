"""What every Admin Center handler works with: the request as the guard resolved it, and
the ``Site`` (use cases, accounts, sessions, templates, configuration) with the page,
refusal and flash helpers.

May import ``usecases``, ``access``, ``clock``, ``records``, ``supervisor.web.*`` (below
the handlers), bottle, jinja2 and the stdlib.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2

from supervisor.core.access import Permission, Subject
from supervisor.core.clock import Clock
from supervisor.metrics.collector import MetricsPage
from supervisor.store.protocols import UserDirectory
from supervisor.usecases.accounts import Accounts
from supervisor.usecases.schedulers import UseCases
from supervisor.web import events
from supervisor.web.config import CSRF_FIELD, AdminConfig
from supervisor.web.render import Asset, render
from supervisor.web.replies import reply, text_reply
from supervisor.web.sessions import Flash, LoginThrottle, Session, SessionStore


@dataclass(slots=True, kw_only=True)
class Request:
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

    @property
    def wants_text(self) -> bool:
        """Event streams and the preview are read by scripts: they get plain-text errors."""
        return self.path.startswith("/events/") or self.path.endswith("/preview")


@dataclass(slots=True, kw_only=True)
class Site:
    use_cases: UseCases
    users: UserDirectory
    accounts: Accounts
    config: AdminConfig
    clock: Clock
    sessions: SessionStore
    throttle: LoginThrottle
    stop: threading.Event
    sleep: Callable[[float], None]
    assets: dict[str, Asset]
    env: jinja2.Environment
    slots: events.StreamSlots
    hub: events.StatusHub
    metrics: MetricsPage
    version: int = 0  # moves on every change made through the Admin Center
    _version_lock: threading.Lock = field(default_factory=threading.Lock)

    def note_change(self) -> None:
        with self._version_lock:
            self.version += 1

    def common(self, request: Request | None) -> dict[str, Any]:
        subject = request.subject if request is not None else None
        session = request.session if request is not None else None
        flashes = self.sessions.pop_flashes(session) if session is not None else []
        return {
            "store_trouble": self.store_trouble(subject),
            "app_name": self.config.app_name,
            "subject": subject,
            "can": (lambda p: subject is not None and subject.can(Permission(p))),
            "csrf": session.csrf if session is not None else "",
            "csrf_field": CSRF_FIELD,
            "flashes": flashes,
            "path": request.path if request is not None else "/",
            "logout": session is not None and not session.via_proxy,
            "limited": session is not None and session.must_change_password,
        }

    def store_trouble(self, subject: Subject | None) -> str | None:
        """What the banner of every page says while the store does not answer (to those
        logged in who may list the schedulers), or None."""
        if subject is None or not subject.can(Permission.LIST):
            return None
        trouble = self.use_cases.store_health(subject)
        return None if trouble is None else trouble.text

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> Any:
        body = render(self.env, template, {**self.common(request), **values})
        return reply(body, status)

    def fragment(self, template: str, values: Mapping[str, Any]) -> Any:
        return reply(render(self.env, template, values), 200)

    def refusal(self, request: Request | None, status: int, reason: str) -> Any:
        if request is not None and request.wants_text:
            return text_reply(reason, status)
        body = render(
            self.env, "error.html", {**self.common(request), "status": status, "reason": reason}
        )
        return reply(body, status)

    def flash(
        self,
        request: Request,
        kind: str,
        title: str,
        text: str = "",
        *,
        link: str = "",
        link_text: str = "",
    ) -> None:
        if request.session is not None:
            message = Flash(kind=kind, title=title, text=text, link=link, link_text=link_text)
            self.sessions.flash(request.session, message)


def subject_of(request: Request) -> Subject:
    assert request.subject is not None  # the guard let only logged-in requests through
    return request.subject
