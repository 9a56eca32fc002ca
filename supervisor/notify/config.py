"""Configuring notifications: in code on the application, and from the command line.

``notify.enable(cfg)`` gives the application's notification settings (idempotent, like
``cfgscheduler.enable``); ``add`` sets targets for every scheduler, ``route`` replaces
them for one. ``supervisor run --notify-webhook URL --notify-email ADDR ...`` adds
targets for every scheduler. May import ``core``, ``notify`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from supervisor.core.app import Configurator
from supervisor.core.errors import DefinitionError
from supervisor.notify.targets import Email, Target, Webhook
from supervisor.notify.watcher import Routing

_KEY = "supervisor.notify"


class Notifications:
    """Who hears about which scheduler, for one application."""

    def __init__(self) -> None:
        self._default: list[Target] = []
        self._per_scheduler: dict[str, tuple[Target, ...]] = {}
        self.missed_grace = timedelta(minutes=5)

    def add(self, *targets: Target) -> Notifications:
        """Tell ``targets`` about every scheduler (unless routed otherwise)."""
        self._default.extend(targets)
        return self

    def route(self, scheduler_id: str, *targets: Target) -> Notifications:
        """Tell only ``targets`` about ``scheduler_id`` (none: keep it quiet)."""
        self._per_scheduler[scheduler_id] = tuple(targets)
        return self

    def routing(self, *, extra: Sequence[Target] = ()) -> Routing:
        return Routing(
            default=(*self._default, *extra),
            per_scheduler=dict(self._per_scheduler),
            missed_grace=self.missed_grace,
        )


def enable(cfg: Configurator) -> Notifications:
    """The notification settings of ``cfg``; a second call returns the same object."""
    if not isinstance(cfg, Configurator):
        raise TypeError(f"notify.enable needs a Configurator, got {type(cfg).__name__}")
    return cfg.extension(_KEY, Notifications, Notifications)


def targets_from_options(
    *,
    webhooks: Sequence[str],
    webhook_secret_file: str | None,
    emails: Sequence[str],
    smtp: str | None,
    sender: str | None,
) -> list[Target]:
    """The targets given on the command line; errors name the option."""
    secret: bytes | None = None
    if webhook_secret_file is not None:
        try:
            secret = Path(webhook_secret_file).read_bytes().strip()
        except OSError as error:
            raise DefinitionError(
                "--notify-webhook-secret-file", f"cannot read {webhook_secret_file}: {error}"
            ) from error
        if not secret:
            raise DefinitionError("--notify-webhook-secret-file", "the file is empty")
    targets: list[Target] = [Webhook(url=url, secret=secret) for url in webhooks]
    if emails:
        host, _, port = (smtp or "localhost:25").rpartition(":")
        if not host or not port.isascii() or not port.isdigit():
            raise DefinitionError("--smtp", f"expected HOST:PORT, got {smtp!r}")
        targets.append(
            Email(
                host=host,
                port=int(port),
                sender=sender or "sched-supervisor@localhost",
                recipients=tuple(emails),
            )
        )
    elif smtp or sender:
        raise DefinitionError("--smtp", "needs --notify-email ADDRESS")
    return targets
