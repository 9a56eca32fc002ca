"""Who acts: subjects, the permissions of each use case, and the roles that bundle them.

Who may do what, pair by pair, is pinned by ``tests/test_access.py`` (through the use
cases themselves, not these sets).

May import ``errors`` and the stdlib only.
"""

from __future__ import annotations

import enum
import os
import pwd
from dataclasses import dataclass

from supervisor.core.errors import PermissionDenied


class Permission(enum.Enum):
    CONFIGURE = "configure"  # register scheduler definitions (code only)
    LIST = "list"
    STATUS = "status"
    VIEW_LOGS = "view_logs"
    START = "start"
    STOP = "stop"
    EXECUTE = "execute"
    FIND_SETTINGS = "find_settings"
    UPDATE_SETTINGS = "update_settings"
    RESET_SETTINGS = "reset_settings"
    RUN_ACTION = "run_action"
    VIEW_AUDIT = "view_audit"
    VIEW_USERS = "view_users"  # the list of Admin Center users and their roles
    MANAGE_USERS = "manage_users"  # add, remove, disable, enable, change a role
    RESET_PASSWORDS = "reset_passwords"  # give a user a new one-time password


_VIEWER = frozenset(
    {
        Permission.LIST,
        Permission.STATUS,
        Permission.VIEW_LOGS,
        Permission.FIND_SETTINGS,
    }
)
_OPERATOR = _VIEWER | {
    Permission.START,
    Permission.STOP,
    Permission.EXECUTE,
    Permission.RUN_ACTION,
    Permission.VIEW_AUDIT,
}
_ADMIN = _OPERATOR | {
    Permission.UPDATE_SETTINGS,
    Permission.RESET_SETTINGS,
    Permission.VIEW_USERS,
    Permission.MANAGE_USERS,
    Permission.RESET_PASSWORDS,
}

ROLES: dict[str, frozenset[Permission]] = {
    "viewer": _VIEWER,
    "operator": _OPERATOR,
    "admin": _ADMIN,
}


@dataclass(frozen=True, slots=True)
class Subject:
    """Someone (or something) acting through a use case."""

    name: str
    permissions: frozenset[Permission]
    role: str | None = None

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(self.name, permission.value)


def os_user_name(uid: int | None = None) -> str:
    """The login name of ``uid`` (default: this process's user), or ``uid:N``."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def su(name: str = "root") -> Subject:
    """The superuser: holds every permission (code, the CLI of the manager's owner)."""
    return Subject(name, frozenset(Permission), role="su")


def with_role(name: str, role: str) -> Subject:
    """A subject holding the permissions of ``role`` (viewer, operator or admin)."""
    try:
        return Subject(name, ROLES[role], role=role)
    except KeyError:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}") from None
