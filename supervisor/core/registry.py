"""The scheduler definitions of one application, in the order they were configured.

May import ``definitions`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Iterator

from supervisor.core.definitions import Options
from supervisor.core.errors import DefinitionError, UnknownScheduler


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
