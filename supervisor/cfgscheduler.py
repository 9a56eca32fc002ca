"""Enabling schedulers on an application: ``cfgscheduler.enable(cfg)``.

Only re-exports (a public facade, at the top of the layers): the extension lives in
``usecases.schedulers``.
"""

from supervisor.usecases.schedulers import Definitions, Schedulers, enable

__all__ = ["Definitions", "Schedulers", "enable"]
