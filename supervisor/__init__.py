"""sched-supervisor: define background processes in Python, run them crash-isolated,
and watch and control them from the Admin Center, the CLI, or systemd.

The names below are the developer-facing API (see the README):
``from supervisor import Configurator, cfgscheduler, scheduler, user``.
"""

from supervisor import cfgscheduler, scheduler, user
from supervisor.core.app import Configurator

__version__ = "0.1.0"

__all__ = ["Configurator", "__version__", "cfgscheduler", "scheduler", "user"]
