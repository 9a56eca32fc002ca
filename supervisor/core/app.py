"""The application object developers create, and loading it from ``module:attribute``.

May import ``definitions`` (its text check), ``errors``, ``locations`` and the stdlib only.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import TypeVar

from supervisor.core.definitions import check_text
from supervisor.core.errors import AppLoadError, DefinitionError
from supervisor.core.locations import is_postgres_url

T = TypeVar("T")


class Configurator:
    """An application: a name, where it keeps its state, and the extensions enabled on it
    (schedulers, ...).

    ``store``: a ``postgresql://USER@HOST[:PORT]/DATABASE`` URL to keep runs, logs,
    settings and users in PostgreSQL (several hosts can share it); None keeps them in
    SQLite in the state directory. ``supervisor run --store`` overrides it.
    """

    def __init__(self, name: str, *, store: str | None = None) -> None:
        # The name is shown on every page and stored: text that can be (``DefinitionError``,
        # a ValueError, naming ``name``), like the other names.
        self.name = check_text("name", name)
        if store is not None and not is_postgres_url(check_text("store", store)):
            # Never the value itself in the message: it may carry a password.
            raise DefinitionError(
                "store",
                "expected a postgresql://USER@HOST[:PORT]/DATABASE URL, or None for SQLite"
                " in the state directory",
            )
        self.store = store
        self._extensions: dict[str, object] = {}

    def extension(self, key: str, factory: Callable[[], T], kind: type[T]) -> T:
        """The extension stored under ``key``, created by ``factory`` on first use."""
        existing = self._extensions.get(key)
        if existing is None:
            existing = factory()
            self._extensions[key] = existing
        if not isinstance(existing, kind):
            raise TypeError(f"extension {key!r} is a {type(existing).__name__}")
        return existing

    def __repr__(self) -> str:
        return f"Configurator({self.name!r})"


def load_app(spec: str) -> Configurator:
    """Import ``module:attribute`` (attribute defaults to ``cfg``) and return the Configurator.

    The current directory is put first on ``sys.path``, as ``python -m`` would.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "cfg"
    if not module_name:
        raise AppLoadError(f"--app {spec!r}: expected MODULE:ATTRIBUTE, e.g. examples.jobs:cfg")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise AppLoadError(f"--app {spec!r}: cannot import module: {error}") from error
        # The app module exists; something it imports does not.
        raise AppLoadError(f"--app {spec!r}: importing {module_name} failed: {error}") from error
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        # An app that calls sys.exit() at import is a broken app, not a way to stop us.
        raise AppLoadError(
            f"--app {spec!r}: importing {module_name} raised {type(error).__name__}: {error}"
        ) from error
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise AppLoadError(f"--app {spec!r}: module {module_name} has no {attribute!r}") from None
    if not isinstance(app, Configurator):
        raise AppLoadError(
            f"--app {spec!r}: {attribute} is a {type(app).__name__}, not a supervisor.Configurator"
        )
    return app
