"""Handlers for one scheduler: its page, run history, cron preview and settings.

Its controls (Start, Stop, Execute Now, ...) live in ``actions``; a settings form with
bad fields is shown again with a message on each.
May import ``usecases``, ``definitions``, ``settings``, ``nextruns``, ``records``, ``errors``,
``serialize``, ``supervisor.web.*`` below the app and the stdlib.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from supervisor.core.access import Permission
from supervisor.core.definitions import Kind
from supervisor.core.errors import DefinitionError
from supervisor.core.nextruns import upcoming_for_cron
from supervisor.core.records import LogQuery, LogRecord
from supervisor.core.settings import read_form as read_settings_form
from supervisor.usecases.schedulers import SettingsView
from supervisor.usecases.serialize import status_json
from supervisor.web import present
from supervisor.web.health import health_of
from supervisor.web.render import scheduler_url
from supervisor.web.replies import json_reply, redirect
from supervisor.web.site import Request, Site, subject_of

RECENT_LOGS = 60
RUN_HISTORY = 50
PREVIEW_COUNT = 5
MAX_PREVIEW_TEXT = 200


def scheduler(
    site: Site,
    request: Request,
    sid: str,
    *,
    form_texts: Mapping[str, str] | None = None,
    form_errors: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> Any:
    subject = subject_of(request)
    status = site.use_cases.status(subject, sid)
    options = site.use_cases.registry.get(sid)
    now = site.clock.now()
    view: SettingsView | None = None
    texts: dict[str, str] = {}
    defaults_text: dict[str, str] = {}
    preview: dict[str, Any] | None = None
    fields = present.FORM_FIELDS[options.kind]
    if subject.can(Permission.FIND_SETTINGS):
        view = site.use_cases.find_settings(subject, sid)
        texts = {
            name: ("on" if view.effective.disabled else "")
            if name == "disabled"
            else present.setting_text(name, view.effective)
            for name in fields
        }
        defaults_text = {name: present.setting_text(name, view.defaults) for name in fields}
        if options.kind is Kind.CRON:
            preview = _preview(site, view.effective.cron or "", view.effective.timezone)
    if form_texts is not None:
        texts.update(form_texts)
    runs = site.use_cases.runs(subject, sid, limit=RUN_HISTORY)
    logs: list[tuple[int, LogRecord]] = []
    if subject.can(Permission.VIEW_LOGS):
        logs = site.use_cases.logs(subject, LogQuery(scheduler_id=sid, limit=RECENT_LOGS))
    return site.page(
        request,
        "scheduler.html",
        status=status_code,
        s=status,
        sid=status.id,
        view=view,
        fields=fields,
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
        h=health_of(status, runs, now),
        command=present.runs_a_command(options),
    )


def history(site: Site, request: Request, sid: str) -> Any:
    subject = subject_of(request)
    status = site.use_cases.status(subject, sid)
    runs = site.use_cases.runs(subject, sid, limit=RUN_HISTORY)
    now = site.clock.now()
    return site.fragment(
        "history.html",
        {
            "sid": sid,
            "s": status,
            "h": health_of(status, runs, now),
            "command": present.runs_a_command(site.use_cases.registry.get(sid)),
            "runs": runs,
            "chart": present.duration_chart(runs, now),
            "now": now,
            "can": lambda p: subject.can(Permission(p)),
        },
    )


def preview(site: Site, request: Request, sid: str) -> Any:
    site.use_cases.find_settings(subject_of(request), sid)
    cron = request.query.get("cron", "")[:MAX_PREVIEW_TEXT]
    timezone = request.query.get("timezone", "")[:MAX_PREVIEW_TEXT] or "UTC"
    return json_reply(_preview(site, cron, timezone))


def _preview(site: Site, cron: str, timezone: str) -> dict[str, Any]:
    try:
        times = upcoming_for_cron(cron, timezone, start=site.clock.now(), count=PREVIEW_COUNT)
    except DefinitionError as error:
        return {"times": [], "error": {"field": error.field, "message": error.problem}}
    zone = ZoneInfo(timezone)
    return {
        "times": [{"iso": t.isoformat(), "text": _zoned(t, zone)} for t in times],
        "error": None,
        "timezone": timezone,
    }


def _zoned(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return local.strftime("%a %Y-%m-%d %H:%M:%S %Z (UTC%z)")


# -- settings ------------------------------------------------------------------------------


def save_settings(site: Site, request: Request, sid: str) -> Any:
    subject = subject_of(request)
    options = site.use_cases.registry.get(sid)
    form = read_settings_form(options.kind, request.form)
    errors = dict(form.errors)
    if not errors:
        try:
            site.use_cases.update_settings(subject, sid, form.change)
        except DefinitionError as error:  # named by its setting name
            errors[error.field if error.field in form.texts else "general"] = error.problem
    if errors:
        return scheduler(
            site, request, sid, form_texts=form.texts, form_errors=errors, status_code=400
        )
    site.flash(request, "ok", "Settings saved", "They apply at once.")
    return redirect(scheduler_url(sid) + "#settings")


def reset_settings(site: Site, request: Request, sid: str) -> Any:
    site.use_cases.reset_settings(subject_of(request), sid)
    site.flash(request, "ok", "Settings reset", "The defaults from the code apply again.")
    return redirect(scheduler_url(sid) + "#settings")
