"""The user-management use cases: add, remove and list Admin Center users.

Like every use case they check the subject's permission (``MANAGE_USERS``) and write the
audit trail. They work on the state database directly, so they need no running manager.
May import ``passwords``, ``records``, ``user``, ``clock``, ``errors`` and ``store.protocols``.
"""

from __future__ import annotations

import re
from typing import Protocol

from supervisor.core.access import ROLES, Permission, Subject
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import DefinitionError
from supervisor.core.passwords import hash_password
from supervisor.core.records import AuditEntry
from supervisor.store.protocols import AuditTrail, StoredUser, UserDirectory

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class AccountStore(UserDirectory, AuditTrail, Protocol):
    """Where users live and their changes are audited (the store)."""


class Accounts:
    def __init__(self, users: AccountStore, *, clock: Clock | None = None) -> None:
        self._users = users
        self._clock = clock or SystemClock()

    def add(self, subject: Subject, name: str, *, role: str, password: str) -> None:
        subject.require(Permission.MANAGE_USERS)
        if not USER_NAME.fullmatch(name):
            raise DefinitionError("name", f"{name!r}: use letters, digits and . _ @ - (max 64)")
        if role not in ROLES:
            raise DefinitionError("role", f"{role!r}: choose one of {', '.join(ROLES)}")
        if not password:
            raise DefinitionError("password", "must not be empty")
        self._users.add_user(name, role=role, password_hash=hash_password(password))
        self._record(subject, "add user", f"{name} ({role})")

    def remove(self, subject: Subject, name: str) -> None:
        subject.require(Permission.MANAGE_USERS)
        if not self._users.remove_user(name):
            raise DefinitionError("name", f"no user {name!r}")
        self._record(subject, "remove user", name)

    def list(self, subject: Subject) -> list[StoredUser]:
        subject.require(Permission.MANAGE_USERS)
        return list(self._users.list_users())

    def _record(self, subject: Subject, action: str, detail: str) -> None:
        self._users.add_audit(
            AuditEntry(
                time=self._clock.now(),
                actor=subject.name,
                action=action,
                scheduler_id=None,
                detail=detail,
            )
        )
