"""Enabling schedulers on an application: ``cfgscheduler.enable(cfg)``.

May import ``app``, ``registry`` and ``usecases``.
"""

from __future__ import annotations

from supervisor.core.app import Configurator
from supervisor.core.registry import registry_of
from supervisor.usecases.schedulers import UseCases

_KEY = "supervisor.schedulers"


class Schedulers:
    """The scheduler extension of one application: its definitions and its use cases."""

    def __init__(self, app: Configurator) -> None:
        self.app = app
        self.registry = registry_of(app)
        self.use_cases = UseCases(self.registry)


def enable(cfg: Configurator) -> Schedulers:
    """Enable schedulers on ``cfg``; a second call returns the same object."""
    if not isinstance(cfg, Configurator):
        raise TypeError(f"cfgscheduler.enable needs a Configurator, got {type(cfg).__name__}")
    return cfg.extension(_KEY, lambda: Schedulers(cfg), Schedulers)
