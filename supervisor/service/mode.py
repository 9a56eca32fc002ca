"""Which mode runs an app's schedulers, and where each mode keeps its state by default.

- ``backend_choice(state_dir)``: a manager, or systemd, for a state directory.
- ``units_state_dir`` / ``operator_state_dir``: the default state directories. systemd
  mode keeps its own (``/var/lib/sched-supervisor-units`` for root), apart from the
  manager's (the Debian service's), and the operator commands find the mode in use.

Small on purpose: every operator command asks it first. May import ``paths``, ``errors``
and the stdlib.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from supervisor.core.errors import DefinitionError
from supervisor.service.paths import MANIFEST_NAME, SOCKET_NAME, default_state_dir

UNITS_DIR_SUFFIX = "-units"


def backend_choice(state_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``systemd`` or ``manager``: ``$SUPERVISOR_BACKEND`` if set, else ``systemd`` when
    ``state_dir`` holds an install manifest, else ``manager``. Raises ``DefinitionError``
    for another value of ``$SUPERVISOR_BACKEND``."""
    env = os.environ if environ is None else environ
    chosen = env.get("SUPERVISOR_BACKEND", "").strip().lower()
    if chosen in ("systemd", "manager"):
        return chosen
    if chosen not in ("", "auto"):
        raise DefinitionError(
            "SUPERVISOR_BACKEND", f"must be systemd, manager or auto, not {chosen!r}"
        )
    return "systemd" if (Path(state_dir) / MANIFEST_NAME).exists() else "manager"


def units_state_dir(
    given: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    uid: int | None = None,
    home: Path | None = None,
) -> Path:
    """The state directory of ``install-units``/``uninstall-units``/``generate-units``.

    ``--state-dir`` or ``$SUPERVISOR_STATE_DIR`` if given; else the manager's default
    with ``-units`` appended (``/var/lib/sched-supervisor-units`` for root): systemd mode
    never shares a default with a manager (the Debian package's service runs one on
    ``/var/lib/sched-supervisor``, as its own user): one mode's install manifest, store
    and owner never land in the other's directory.
    """
    env = os.environ if environ is None else environ
    if given or env.get("SUPERVISOR_STATE_DIR"):
        return Path(given or env["SUPERVISOR_STATE_DIR"])
    manager = _manager_default(env, uid=uid, home=home)
    return manager.with_name(manager.name + UNITS_DIR_SUFFIX)


def _manager_default(env: Mapping[str, str], *, uid: int | None, home: Path | None) -> Path:
    return default_state_dir(
        env, uid=os.getuid() if uid is None else uid, home=Path.home() if home is None else home
    )


def operator_state_dir(
    given: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    uid: int | None = None,
    home: Path | None = None,
) -> Path:
    """The state directory of the operator commands (``list``, ``status``, ``admin`` ...).

    ``--state-dir`` or ``$SUPERVISOR_STATE_DIR`` if given. Else the manager's default,
    unless systemd mode is the one here: ``$SUPERVISOR_BACKEND=systemd``, or units were
    installed into the systemd mode's default (``units_state_dir``) and no manager
    (control socket) nor install uses the manager's default.
    """
    env = os.environ if environ is None else environ
    if given or env.get("SUPERVISOR_STATE_DIR"):
        return Path(given or env["SUPERVISOR_STATE_DIR"])
    manager = _manager_default(env, uid=uid, home=home)
    units = units_state_dir(None, env, uid=uid, home=home)
    chosen = env.get("SUPERVISOR_BACKEND", "").strip().lower()
    if chosen == "systemd":
        return manager if _exists(manager / MANIFEST_NAME) else units
    if chosen == "manager":
        return manager
    manager_in_use = _exists(manager / SOCKET_NAME) or _exists(manager / MANIFEST_NAME)
    if not manager_in_use and _exists(units / MANIFEST_NAME):
        return units
    return manager


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. another user's 0700 directory
        return False
