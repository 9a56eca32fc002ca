"""The developer-facing scheduler namespace: ``scheduler.Options``, ``scheduler.Kind``, ...

Only re-exports; the definitions live in ``definitions`` and the runtime in ``context``.
"""

from supervisor.context import Cancelled, Context, RunError, logger_from
from supervisor.definitions import Command, CustomAction, Kind, Options, Settings, command

__all__ = [
    "Cancelled",
    "Command",
    "Context",
    "CustomAction",
    "Kind",
    "Options",
    "RunError",
    "Settings",
    "command",
    "logger_from",
]
