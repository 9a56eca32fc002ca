"""The scheduler definitions of one application, in the order they were configured.

A definition enters through ``Registry.add``, which checks its defaults for its kind
(``core.settings``), so every definition held here is one a backend can run.
Once a backend runs the definitions (``usecases.UseCases`` is built), the registry is
frozen: a later definition would be unknown to the backend, so ``add`` refuses it.
``registry_of(app)`` is the one registry of an application (what runs and the fork
server need from an app, without the use cases above).
May import ``app``, ``definitions``, ``settings`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Iterator

from supervisor.core.app import Configurator
from supervisor.core.definitions import Options
from supervisor.core.errors import DefinitionError, UnknownScheduler
from supervisor.core.settings import check_definition

_KEY = "supervisor.registry"


class Registry:
    """Definitions by ID; an ID can be configured once. ``app_name`` names the application."""

    def __init__(self, *, app_name: str = "") -> None:
        self.app_name = app_name
        self._definitions: dict[str, Options] = {}
        self._frozen = False

    def freeze(self) -> None:
        """Refuse every later ``add`` (the backend that runs these definitions is built)."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    def add(self, options: Options) -> Options:
        """Add ``options`` (its defaults checked, the cron expression normalised) and return
        what is stored; ``DefinitionError`` naming the field otherwise."""
        if not isinstance(options, Options):
            raise DefinitionError("options", "must be a scheduler.Options")
        if self._frozen:
            raise DefinitionError(
                "id",
                f"{options.id!r} is configured after the schedulers were started; configure "
                "every scheduler when the application module is imported",
            )
        if options.id in self._definitions:
            raise DefinitionError("id", f"{options.id!r} is already configured")
        checked = check_definition(options)
        self._definitions[options.id] = checked
        return checked

    def get(self, scheduler_id: str) -> Options:
        try:
            return self._definitions[scheduler_id]
        except KeyError:
            raise UnknownScheduler(scheduler_id) from None

    def __contains__(self, scheduler_id: object) -> bool:
        return scheduler_id in self._definitions

    def __iter__(self) -> Iterator[Options]:
        return iter(list(self._definitions.values()))

    def __len__(self) -> int:
        return len(self._definitions)

    def ids(self) -> list[str]:
        return list(self._definitions)


def registry_of(app: Configurator) -> Registry:
    """The registry of ``app``, created on first use (``cfgscheduler.enable`` uses it too)."""
    return app.extension(_KEY, lambda: Registry(app_name=app.name), Registry)
