"""Settings changed on one host, applied on every host (``cluster_settings``).

A host that changes a scheduler's settings overrides writes them here (``share``); each
host looks for rows newer than the last it saw (``changed_since``, a version from one
sequence) at every renewal and applies those another host wrote. A host's first look
takes every row, so one that was down catches up. Durations travel as seconds.

May import ``cluster.db`` and psycopg.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb

from supervisor.cluster.db import Connection

SHARE_SETTINGS = """
INSERT INTO cluster_settings (scheduler_id, overrides, changed_by)
VALUES (%(id)s, %(overrides)s, %(by)s)
ON CONFLICT (scheduler_id) DO UPDATE SET
       overrides = EXCLUDED.overrides, changed_by = EXCLUDED.changed_by,
       version = nextval('cluster_settings_version'), changed_at = clock_timestamp()
"""


def encode(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Settings overrides as JSON (a duration as ``{"seconds": ...}``)."""
    return {
        name: {"seconds": value.total_seconds()} if isinstance(value, timedelta) else value
        for name, value in overrides.items()
    }


def decode(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: timedelta(seconds=value["seconds"]) if isinstance(value, dict) else value
        for name, value in raw.items()
    }


def share(conn: Connection, scheduler_id: str, overrides: Mapping[str, Any], *, by: str) -> None:
    """Record ``overrides`` as the settings of ``scheduler_id``, changed by host ``by``."""
    conn.execute(
        SHARE_SETTINGS, {"id": scheduler_id, "overrides": Jsonb(encode(overrides)), "by": by}
    )


def changed_since(
    conn: Connection, version: int, scheduler_ids: list[str]
) -> list[tuple[str, dict[str, Any], int, str]]:
    """(scheduler, overrides, version, changed by) of the rows newer than ``version``,
    oldest first."""
    rows = conn.execute(
        "SELECT scheduler_id, overrides, version, changed_by FROM cluster_settings "
        "WHERE version > %s AND scheduler_id = ANY(%s) ORDER BY version",
        (version, scheduler_ids),
    ).fetchall()
    return [(sid, decode(raw), ver, by) for sid, raw, ver, by in rows]
