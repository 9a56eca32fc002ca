"""The one error hierarchy of sched-supervisor.

Everything the product raises on purpose derives from ``SupervisorError``. The CLI and
the web app turn these into exit codes and HTTP statuses; nothing below them does.
Imports nothing from the package.
"""

from __future__ import annotations


class SupervisorError(Exception):
    """Base of every error raised on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1
    http_status = 500


class DefinitionError(SupervisorError, ValueError):
    """A scheduler definition or a setting is invalid; ``field`` names the culprit."""

    exit_code = 2
    http_status = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownScheduler(SupervisorError, LookupError):
    """No scheduler has the given ID."""

    exit_code = 3
    http_status = 404

    def __init__(self, scheduler_id: str) -> None:
        super().__init__(f"no scheduler with id {scheduler_id!r}")
        self.scheduler_id = scheduler_id


class UnknownAction(SupervisorError, LookupError):
    """The scheduler has no custom action with the given ID."""

    exit_code = 3
    http_status = 404


class UnknownRun(SupervisorError, LookupError):
    """No run has the given ID."""

    exit_code = 3
    http_status = 404


class AlreadyRunning(SupervisorError):
    """Execute Now was refused because a run of the scheduler is in progress."""

    exit_code = 4
    http_status = 409

    def __init__(self, scheduler_id: str, run_id: str) -> None:
        super().__init__(f"scheduler {scheduler_id!r} is already running (run {run_id})")
        self.scheduler_id = scheduler_id
        self.run_id = run_id


class PermissionDenied(SupervisorError):
    """The subject lacks the permission a use case requires."""

    exit_code = 5
    http_status = 403

    def __init__(self, subject: str, permission: str) -> None:
        super().__init__(f"user {subject!r} lacks permission {permission!r}")
        self.subject = subject
        self.permission = permission


class AppLoadError(SupervisorError):
    """The ``module:attribute`` given with ``--app`` could not be loaded."""

    exit_code = 6


class StoreError(SupervisorError):
    """The state database cannot be used (corrupt, foreign, or unwritable)."""

    exit_code = 7


class ManagerUnavailable(SupervisorError):
    """No manager answers on the control socket of the state directory."""

    exit_code = 8


class BackendError(SupervisorError):
    """The backend (manager or systemd) failed to carry out a command."""

    exit_code = 9
    http_status = 502


class CommandUnconfirmed(BackendError):
    """A command reached the host that owns the scheduler, which did not answer in time:
    it may still be carried out there (check before sending it again)."""

    http_status = 504


class ActionFailed(SupervisorError):
    """A custom action raised; the message is the action's error."""

    exit_code = 10
    http_status = 500


class UntrustedPath(SupervisorError):
    """A file or directory that someone other than the caller (or root) could change, or a
    symlink where none is allowed: refused before it is used (imported, opened, followed)."""

    exit_code = 11
    http_status = 500


class NotifyError(SupervisorError):
    """A notification could not be delivered (after its retries)."""

    exit_code = 12


class StaleLease(SupervisorError):
    """A write carried a fencing token that is no longer the lease's: another host has taken
    the scheduler over (or the lease was released), so the write was refused."""

    exit_code = 13
    http_status = 409

    def __init__(self, scheduler_id: str, token: int) -> None:
        super().__init__(f"lease of scheduler {scheduler_id!r} no longer carries token {token}")
        self.scheduler_id = scheduler_id
        self.token = token
