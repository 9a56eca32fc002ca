"""Handlers for the user-management page: list users, add one, change a role, disable,
enable, delete, and reset a password.

Each change goes through the account use cases (permission check and audit trail); the
route table in ``app`` guards each route with the same permission. A new user and a reset
password get a one-time password, shown once in the page's notice and to be changed at
the first login. A user disabled, deleted or given a new password is logged out of every
session: at once on this server, and on every other host sharing the store at the
session's next request (the store's credentials stamp changed: ``guard``); each is told
why on the login page. A new role keeps the sessions and holds from their next request.
May import ``access``, ``errors``, ``passwords``, ``usecases.accounts``,
``supervisor.web.*`` below the app, and the stdlib.
"""

from __future__ import annotations

from typing import Any, Final

from supervisor.core.access import ROLES
from supervisor.core.errors import DefinitionError
from supervisor.core.passwords import MIN_LENGTH, generate_password
from supervisor.usecases.accounts import is_disabled, must_change
from supervisor.web.replies import redirect
from supervisor.web.site import Request, Site, subject_of

USERS_PAGE: Final = "/users"
MAX_NAME: Final = 128


def users(site: Site, request: Request) -> Any:
    subject = subject_of(request)
    rows = [
        {
            "name": user.name,
            "role": user.role,
            "created_at": user.created_at,
            "disabled": is_disabled(user),
            "must_change": must_change(user),
            "is_me": user.name == subject.name,
        }
        for user in site.accounts.list(subject)
    ]
    return site.page(request, "users.html", rows=rows, roles=list(ROLES), min_length=MIN_LENGTH)


def add(site: Site, request: Request) -> Any:
    subject = subject_of(request)
    name = _name(request)
    role = request.form.get("role", "")
    password = request.form.get("password", "")
    one_time = password or generate_password()
    site.accounts.add(subject, name, role=role, password=one_time, temporary=True)
    shown = "the password you typed" if password else f"this one-time password: {one_time}"
    site.flash(
        request,
        "ok",
        f"User {name} added ({role})",
        f"Give {name} {shown}\nIt must be changed at the first login.",
    )
    return redirect(USERS_PAGE)


def set_role(site: Site, request: Request) -> Any:
    name = _name(request)
    role = request.form.get("role", "")
    site.accounts.set_role(subject_of(request), name, role)
    site.flash(request, "ok", f"{name} is now {role}", "From their next page on.")
    return redirect(USERS_PAGE)


def disable(site: Site, request: Request) -> Any:
    name = _name(request)
    site.accounts.disable(subject_of(request), name)
    site.sessions.end_user(name)
    site.flash(request, "ok", f"{name} disabled", "Logged out; can no longer log in.")
    return redirect(USERS_PAGE)


def enable(site: Site, request: Request) -> Any:
    name = _name(request)
    site.accounts.enable(subject_of(request), name)
    site.flash(request, "ok", f"{name} enabled", "Can log in again with their password.")
    return redirect(USERS_PAGE)


def remove(site: Site, request: Request) -> Any:
    name = _name(request)
    site.accounts.remove(subject_of(request), name)
    site.sessions.end_user(name)
    site.flash(request, "ok", f"{name} deleted")
    return redirect(USERS_PAGE)


def reset_password(site: Site, request: Request) -> Any:
    name = _name(request)
    one_time = generate_password()
    site.accounts.set_password(subject_of(request), name, one_time, temporary=True)
    site.sessions.end_user(name)
    site.flash(
        request,
        "ok",
        f"New one-time password for {name}",
        f"Give {name} this one-time password: {one_time}\n"
        "It must be changed at the next login; their sessions were logged out.",
    )
    return redirect(USERS_PAGE)


def _name(request: Request) -> str:
    name = request.form.get("name", "").strip()
    if not name or len(name) > MAX_NAME:
        raise DefinitionError("name", "give a user name")
    return name
