"""Where state lives: the state directory and the files in it.

May import ``errors`` and the stdlib. Reads the environment only when asked (never at import).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from supervisor.core.errors import StoreError

SYSTEM_STATE_DIR = Path("/var/lib/sched-supervisor")
DATABASE_NAME = "state.db"
LOCK_NAME = "manager.lock"
# Keys in the store's meta table: the app a manager last ran with this state directory.
APP_SPEC_META = "app_spec"
APP_CWD_META = "app_cwd"


def default_state_dir(environ: Mapping[str, str], *, uid: int, home: Path) -> Path:
    """``$SUPERVISOR_STATE_DIR``, else the system directory for root, else the user's."""
    configured = environ.get("SUPERVISOR_STATE_DIR")
    if configured:
        return Path(configured)
    if uid == 0:
        return SYSTEM_STATE_DIR
    base = environ.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(base) / "sched-supervisor"


def resolve_state_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    return default_state_dir(os.environ, uid=os.getuid(), home=Path.home())


def ensure_state_dir(path: Path) -> Path:
    """Create the state directory (owner-only) if needed and return its absolute path."""
    path = path.absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"cannot create state directory {path}: {error.strerror or error}"
        ) from error
    return path
