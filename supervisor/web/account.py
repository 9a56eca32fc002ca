"""Handlers for logging in and out and changing one's password.

A login is counted by the throttle before its password is checked, and the checks
themselves wait for one of the few parallel scrypt slots. A temporary password (the
bootstrap admin's) logs in to a session that may only change it. A session keeps the
credentials stamp its user had at the login; a password change ends every other session
of the user, on every host sharing the store (``guard``).
May import ``errors``, ``passwords``, ``supervisor.web.*`` below the app, and the stdlib.
"""

from __future__ import annotations

from typing import Any

from supervisor.core.errors import DefinitionError
from supervisor.core.passwords import MIN_LENGTH
from supervisor.web.replies import redirect, safe_next
from supervisor.web.sessions import Attempt
from supervisor.web.site import Request, Site, subject_of

MAX_NAME = 128


def login_form(site: Site, request: Request) -> Any:
    if request.subject is not None:
        return redirect(safe_next(request.query.get("next")))
    if request.session is None:
        request.set_token, request.session = site.sessions.create(None)
    return site.page(
        request, "login.html", next=safe_next(request.query.get("next")), name="", error=""
    )


def login(site: Site, request: Request) -> Any:
    name = request.form.get("name", "").strip()[:MAX_NAME]
    password = request.form.get("password", "")
    target = safe_next(request.form.get("next"))

    def again(status: int, error: str) -> Any:
        return site.page(request, "login.html", status=status, next=target, name=name, error=error)

    if not name or not password:
        return again(401, "Wrong user name or password.")
    attempt = site.throttle.begin(name, request.address)
    if not isinstance(attempt, Attempt):
        if attempt.first:  # a flood of refusals is noted once per pair and wait
            site.accounts.refused_unchecked(name, address=request.address, reason="throttled")
        return again(429, f"Too many failed attempts. Try again in {int(attempt.wait) + 1} s.")
    with site.throttle.checking() as turn:
        if not turn:
            site.throttle.succeeded(attempt)  # not checked: does not count
            return again(503, "Too many logins at once. Try again in a moment.")
        found = site.accounts.authenticate(name, password, address=request.address)
    if found is None:
        site.throttle.failed(attempt)
        site.sleep(site.throttle.failure_delay)
        return again(401, "Wrong user name or password.")
    site.throttle.succeeded(attempt)
    if request.session is not None:
        site.sessions.end(request.session)
    request.set_token, request.session = site.sessions.create(
        found.name, stamp=found.stamp, must_change_password=found.must_change_password
    )
    if found.must_change_password:
        return redirect("/account/password")
    return redirect(target)


def logout(site: Site, request: Request) -> Any:
    if request.session is not None:
        site.sessions.end(request.session)
    request.session, request.clear_cookie = None, True
    return redirect("/login")


def password_form(
    site: Site, request: Request, *, errors: dict[str, str] | None = None, status: int = 200
) -> Any:
    session = request.session
    return site.page(
        request,
        "password.html",
        status=status,
        errors=errors or {},
        required=session is not None and session.must_change_password,
        min_length=MIN_LENGTH,
    )


def change_password(site: Site, request: Request) -> Any:
    subject = subject_of(request)
    current = request.form.get("current", "")
    new = request.form.get("password", "")
    repeated = request.form.get("repeat", "")
    if new != repeated:
        return password_form(
            site, request, errors={"repeat": "the two new passwords differ"}, status=400
        )
    try:
        stamp = site.accounts.change_own_password(
            subject,
            current=current,
            new=new,
            stamp=None if request.session is None else request.session.stamp,
        )
    except DefinitionError as error:
        field = error.field if error.field in ("current", "password") else "password"
        return password_form(site, request, errors={field: error.problem}, status=400)
    # Every other session of this user ends (here at once, on other hosts at their next
    # request: the stamp changed); this one goes on, with a fresh token and the new stamp.
    site.sessions.end_user(subject.name)
    if request.session is not None:
        site.sessions.end(request.session)
    request.set_token, request.session = site.sessions.create(subject.name, stamp=stamp)
    site.flash(request, "ok", "Password changed", "Use the new one from now on.")
    return redirect("/")
