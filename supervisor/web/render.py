"""The Admin Center's templates and static files, read from the ``supervisor.admin`` package.

Our own ``jinja2.Environment``: autoescape on for every template, ``StrictUndefined`` so a
misspelt name fails loudly instead of rendering empty. Static files get a content hash in
their URL so browsers may cache them for good.
May import ``present``, ``records``, ``definitions`` and the stdlib plus jinja2.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

from supervisor.core.definitions import Kind
from supervisor.core.records import Level, Outcome, State
from supervisor.web import present

ASSET_PACKAGE = "supervisor.admin"

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    version: str


def load_assets() -> dict[str, Asset]:
    """Every CSS, JS and SVG file of the admin package, by file name."""
    root = importlib.resources.files(ASSET_PACKAGE)
    assets: dict[str, Asset] = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        assets[entry.name] = Asset(
            name=entry.name,
            body=body,
            content_type=CONTENT_TYPES[suffix],
            version=hashlib.sha256(body).hexdigest()[:12],
        )
    return assets


def _load_template(name: str) -> str:
    if "/" in name or "\\" in name or not name.endswith(".html"):
        raise jinja2.TemplateNotFound(name)
    entry = importlib.resources.files(ASSET_PACKAGE).joinpath(name)
    if not entry.is_file():
        raise jinja2.TemplateNotFound(name)
    return entry.read_text(encoding="utf-8")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def _utc_text(value: datetime | None) -> str:
    return "" if value is None else present.zoned_text(value, form="datetime")


def _url(path: str, **query: object) -> str:
    """``path`` with the non-empty ``query`` values appended, properly encoded."""
    pairs = [(k, str(v)) for k, v in query.items() if v is not None and v != ""]
    return path + ("?" + urlencode(pairs) if pairs else "")


def scheduler_url(scheduler_id: str, *rest: str) -> str:
    return "/".join(["/schedulers", quote(scheduler_id, safe=""), *rest])


def make_environment(assets: Mapping[str, Asset]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def static_url(name: str) -> str:
        asset = assets[name]
        return f"/static/{quote(name)}?v={asset.version}"

    env.globals.update(
        static_url=static_url,
        url=_url,
        scheduler_url=scheduler_url,
        kind_words=present.KIND_WORDS,
        outcome_words=present.OUTCOME_WORDS,
        outcome_text=present.outcome_text,
        schedule_text=present.schedule_text,
        field_labels=present.FIELD_LABELS,
        field_hints=present.FIELD_HINTS,
        levels=list(Level),
        Kind=Kind,
        State=State,
        Outcome=Outcome,
    )
    env.filters.update(
        iso=_iso,
        utc=_utc_text,
        timetag=present.time_tag,
        duration=present.human_duration,
        field_value=present.field_value,
    )
    return env


def render(env: jinja2.Environment, name: str, values: Mapping[str, Any]) -> str:
    return env.get_template(name).render(values)
