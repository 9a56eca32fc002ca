"""The scheduler definitions of one application, in the order they were configured.

The registry of an application lives on its ``Configurator`` (``registry_of``), so code
that only runs schedulers (a run's process, the fork server) finds them without the
scheduler extension and the use cases above it.

May import ``app``, ``definitions`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Iterator

from supervisor.core.app import Configurator
from supervisor.core.definitions import Options
from supervisor.core.errors import DefinitionError, UnknownScheduler

_KEY = "supervisor.registry"


class Registry:
    """Definitions by ID; an ID can be configured once."""

    def __init__(self) -> None:
        self._definitions: dict[str, Options] = {}

    def add(self, options: Options) -> None:
        if not isinstance(options, Options):
            raise DefinitionError("options", "must be a scheduler.Options")
        if options.id in self._definitions:
            raise DefinitionError("id", f"{options.id!r} is already configured")
        self._definitions[options.id] = options

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
    """The registry of ``app``'s schedulers (empty if none were configured)."""
    return app.extension(_KEY, Registry, Registry)
