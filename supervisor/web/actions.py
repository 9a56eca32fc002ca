"""The Admin Center's controls of one scheduler: Start, Stop, Execute Now, Pause, Disable,
Enable and custom actions (POST handlers).

Every control answers on the page it came from: its result, or why it was refused, is
flashed there (a refused Execute Now links to the running run's live log), never an
error page. Stop, Pause and Disable are decisions: without ``confirmed`` in the form they
answer with a confirmation page (the script opens the same form as a dialog instead),
and their optional reason goes to the status, the audit and the stopped run's log.
May import ``usecases``, ``records``, ``errors``, ``until``, ``supervisor.web.*`` below
the app and the stdlib.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from supervisor.core.errors import (
    AlreadyRunning,
    CommandUnconfirmed,
    DefinitionError,
    PermissionDenied,
    SupervisorError,
    UnknownAction,
)
from supervisor.core.records import MAX_REASON_CHARS
from supervisor.core.until import parse_until, zone_named
from supervisor.web.render import scheduler_url
from supervisor.web.replies import redirect, safe_next
from supervisor.web.site import Request, Site, subject_of

# The decisions that ask first (what their confirmation says is in confirm.html).
DECISIONS: Final = {"stop": "Stop", "pause": "Pause", "disable": "Disable"}
MAX_OFFSET_MINUTES: Final = 18 * 60


def came_from(request: Request, sid: str) -> str:
    """The page a control was pressed on: the form's ``back`` field, else the Referer's
    path when it is this site's, else the scheduler's page."""
    target = request.form.get("back")
    if target:
        return safe_next(target)
    referer = str(request.environ.get("HTTP_REFERER", ""))
    host = str(request.environ.get("HTTP_HOST", ""))
    if referer:
        parts = urlsplit(referer)
        if parts.netloc == host and parts.path:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            return safe_next(path)
    return scheduler_url(sid)


def _refused(site: Site, request: Request, sid: str, title: str, error: SupervisorError) -> Any:
    """Why ``title`` was refused, on the page it came from."""
    link = link_text = ""
    if isinstance(error, AlreadyRunning):
        link = scheduler_url(sid, "logs") + "?" + urlencode({"run": error.run_id})
        link_text = f"Watch run {error.run_id[:8]} live"
    # Delivered but not answered: not refused, and perhaps carried out (the text says so).
    heading = (
        f"{title} not confirmed" if isinstance(error, CommandUnconfirmed) else f"{title} refused"
    )
    site.flash(request, "error", heading, str(error), link=link, link_text=link_text)
    return redirect(came_from(request, sid))


def _done(site: Site, request: Request, sid: str, title: str, text: str) -> Any:
    site.flash(request, "ok", title, text)
    return redirect(came_from(request, sid))


def start(site: Site, request: Request, sid: str) -> Any:
    try:
        site.use_cases.start(subject_of(request), sid)
    except PermissionDenied:
        raise
    except SupervisorError as error:
        return _refused(site, request, sid, "Start", error)
    return _done(site, request, sid, "Started", "It plans runs again.")


def execute(site: Site, request: Request, sid: str) -> Any:
    try:
        run_id = site.use_cases.execute(subject_of(request), sid)
    except PermissionDenied:
        raise
    except SupervisorError as error:
        return _refused(site, request, sid, "Execute Now", error)
    return _done(site, request, sid, "Run started", f"Run {run_id} is in progress.")


def action(site: Site, request: Request, sid: str, action: str) -> Any:
    subject = subject_of(request)
    options = site.use_cases.registry.get(sid)
    defined = options.action(action)
    if defined is None:
        raise UnknownAction(f"scheduler {sid!r} has no action {action!r}")
    try:
        result = site.use_cases.run_action(subject, sid, action)
    except PermissionDenied:
        raise
    except SupervisorError as error:
        site.flash(request, "error", f"{defined.title} failed", str(error))
    else:
        site.flash(request, "ok", defined.title, result)
    return redirect(came_from(request, sid))


# -- decisions: asked first, with an optional reason ----------------------------------------


def stop(site: Site, request: Request, sid: str) -> Any:
    return _decide(site, request, sid, "stop")


def pause(site: Site, request: Request, sid: str) -> Any:
    return _decide(site, request, sid, "pause")


def disable(site: Site, request: Request, sid: str) -> Any:
    return _decide(site, request, sid, "disable")


def enable(site: Site, request: Request, sid: str) -> Any:
    try:
        site.use_cases.enable(subject_of(request), sid)
    except PermissionDenied:
        raise
    except SupervisorError as error:
        return _refused(site, request, sid, "Enable", error)
    return _done(site, request, sid, "Enabled", "It plans runs again.")


def _decide(site: Site, request: Request, sid: str, what: str) -> Any:
    if request.form.get("confirmed") != "1":
        return confirm_page(site, request, sid, what)
    title = DECISIONS[what]
    subject = subject_of(request)
    reason = request.form.get("reason", "")[: MAX_REASON_CHARS + 1]
    try:
        if what == "stop":
            note = site.use_cases.stop(subject, sid, reason=reason)
            text = "The current run, if any, was asked to stop."
            if note is not None:  # the store is down: done, its audit entry waits
                text += f" Note: {note}."
        elif what == "disable":
            site.use_cases.disable(subject, sid, reason=reason)
            text = "It plans nothing until enabled again."
        else:
            until = read_until(site, request)
            site.use_cases.pause(subject, sid, until=until, reason=reason)
            text = f"It resumes by itself at {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC."
    except PermissionDenied:
        raise
    except DefinitionError as error:  # a bad reason or time: ask again, saying why
        return confirm_page(site, request, sid, what, error=str(error), status=400)
    except SupervisorError as error:
        return _refused(site, request, sid, title, error)
    done = {"stop": "Stopped", "pause": "Paused", "disable": "Disabled"}[what]
    return _done(site, request, sid, done, text)


def read_until(site: Site, request: Request) -> datetime:
    """The end of a pause from the form: ``until`` as the CLI reads it, in the browser's
    zone (``zone``: its IANA name, filled in by the script; an unknown one is refused),
    else at ``offset`` (minutes east of UTC, a browser without zone names), else UTC."""
    text = request.form.get("until", "")[:64]
    zone_text = request.form.get("zone", "").strip()
    if zone_text:
        return parse_until(text, now=site.clock.now().astimezone(zone_named(zone_text)))
    offset_text = request.form.get("offset", "").strip()
    minutes = 0
    if offset_text:
        try:
            minutes = int(offset_text)
        except ValueError:
            raise DefinitionError("offset", "must be whole minutes") from None
        if abs(minutes) > MAX_OFFSET_MINUTES:
            raise DefinitionError("offset", "is not a time zone offset")
    zone = timezone(timedelta(minutes=minutes))
    return parse_until(text, now=site.clock.now().astimezone(zone))


def confirm_page(
    site: Site,
    request: Request,
    sid: str,
    what: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> Any:
    """The confirmation step of a decision (what a page without its script shows)."""
    subject = subject_of(request)
    scheduler = site.use_cases.status(subject, sid)
    return site.page(
        request,
        "confirm_page.html",
        status=status,
        s=scheduler,
        what=what,
        decision_title=DECISIONS[what],
        back=came_from(request, sid),
        reason=request.form.get("reason", ""),
        until=request.form.get("until", ""),
        error=error,
    )
