"""sched-supervisor: define background processes in Python, run them crash-isolated,
and watch and control them from the Admin Center, the CLI, or systemd.

The names below are the developer-facing API (see the README):
``from supervisor import Configurator, cfgscheduler, scheduler, user``. They are imported
when first used (PEP 562), so ``supervisor list`` and the other commands that only talk
to the manager do not pay for the definition API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor import cfgscheduler, scheduler, user
    from supervisor.core.app import Configurator

__version__ = "0.1.0"

__all__ = ["Configurator", "__version__", "cfgscheduler", "scheduler", "user"]

# Public name -> (module, attribute of it; None: the module itself).
_PUBLIC: dict[str, tuple[str, str | None]] = {
    "Configurator": ("supervisor.core.app", "Configurator"),
    "cfgscheduler": ("supervisor.cfgscheduler", None),
    "scheduler": ("supervisor.scheduler", None),
    "user": ("supervisor.user", None),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
