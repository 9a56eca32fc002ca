"""The developer-facing scheduler namespace: ``scheduler.Options``, ``scheduler.Kind``, ...

Only re-exports; the definitions live in ``definitions`` and the runtime in ``context``.
"""

from supervisor.core.definitions import Command, CustomAction, Kind, Options, Settings, command
from supervisor.runs.context import Cancelled, Context, RunError, logger_from

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
