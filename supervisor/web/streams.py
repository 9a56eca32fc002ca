"""Handlers for the live streams (server-sent events): scheduler states and log tails.

Each stream takes a slot counted per user (``events.StreamSlots``: a cap per user and
slots kept for admins) and gives it back however it ends: its reader went away, its
session ended, its user was removed, or the server is closing.
May import ``access``, ``supervisor.web.*`` below the app and the stdlib.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from supervisor.core.access import Permission
from supervisor.web import events
from supervisor.web.auth import Ended, session_subject
from supervisor.web.config import CONNECTION_KEY
from supervisor.web.replies import Refused, cursor, event_stream, level, peer_gone, short_text
from supervisor.web.site import Request, Site, subject_of

USER_RECHECK_SECONDS = 10.0


def _open(site: Site, request: Request, alive: Callable[[], bool]) -> Callable[[], None]:
    subject = subject_of(request)
    taken = site.slots.acquire(
        subject.name, admin=subject.can(Permission.MANAGE_USERS), alive=alive
    )
    if isinstance(taken, tuple):
        raise Refused(*taken)
    slot = taken

    def release() -> None:
        site.slots.release(slot)

    return release


def _alive(site: Site, request: Request) -> Callable[[], bool]:
    session = request.session
    assert session is not None and session.user is not None
    user = session.user
    checked = [time.monotonic()]
    connection = request.environ.get(CONNECTION_KEY)

    def alive() -> bool:
        if not site.sessions.alive(session):
            return False
        if connection is not None and peer_gone(connection):
            return False
        now = time.monotonic()
        if now - checked[0] > USER_RECHECK_SECONDS:  # the account may have changed
            checked[0] = now
            ended = session_subject(site.users, user, stamp=session.stamp)
            return not isinstance(ended, Ended)
        return True

    return alive


def status_events(site: Site, request: Request) -> Any:
    only = short_text(request.query.get("id"), field="id")
    if only is not None:
        site.use_cases.status(subject_of(request), only)
    alive = _alive(site, request)
    release = _open(site, request, alive)
    stream = events.status_stream(
        site.hub,
        only=only,
        limits=site.config.streams,
        alive=alive,
        stop=site.stop,
        release=release,
    )
    return event_stream(stream, release)


def log_events(site: Site, request: Request, sid: str) -> Any:
    subject = subject_of(request)
    site.use_cases.status(subject, sid)
    after = cursor(request.environ.get("HTTP_LAST_EVENT_ID") or None)
    if after is None:
        after = cursor(request.query.get("after"))
    run_id = short_text(request.query.get("run"), field="run")
    min_level = level(request.query.get("level"))
    alive = _alive(site, request)
    release = _open(site, request, alive)
    stream = events.log_stream(
        site.use_cases,
        subject,
        sid,
        after=after,
        run_id=run_id,
        min_level=min_level,
        limits=site.config.streams,
        alive=alive,
        stop=site.stop,
        release=release,
    )
    return event_stream(stream, release)
