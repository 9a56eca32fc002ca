"""The developer-facing scheduler namespace: ``scheduler.Options``, ``scheduler.Kind``, ...

Only re-exports; the definitions live in ``core.definitions`` and the runtime in
``runs.context``. ``Context`` is the Protocol a runner is typed against
(``core.definitions.RunContext``); the context a run is handed fulfils it.
"""

from supervisor.core.definitions import Command, CustomAction, Kind, Options, Settings, command
from supervisor.core.definitions import RunContext as Context
from supervisor.runs.context import Cancelled, RunError, logger_from

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
