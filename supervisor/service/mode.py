"""Which mode runs an app's schedulers for a state directory: a manager, or systemd.

Tiny on purpose: every operator command asks it first. May import ``paths``, ``errors``
and the stdlib.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from supervisor.core.errors import DefinitionError
from supervisor.service.paths import MANIFEST_NAME


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
