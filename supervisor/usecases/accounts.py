"""The user-management use cases: add, remove and list Admin Center users.

Like every use case they check the subject's permission (``MANAGE_USERS``) and write the
audit trail, audit first as ``usecases.schedulers`` explains: the entry is written before
the change, so a trail that cannot be written refuses the change. They work on the state
database directly, so they need no running manager.
May import ``core`` and ``usecases.schedulers`` (its audit helper).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from supervisor.core.access import ROLES, Permission, Subject
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import DefinitionError, StoreError
from supervisor.core.passwords import hash_password
from supervisor.core.records import AuditEntry
from supervisor.usecases.schedulers import note_after

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class StoredAccount(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


class UserDirectory(Protocol):
    """Where users live (the store); raises ``DefinitionError`` for a duplicate name."""

    def add_user(self, name: str, *, role: str, password_hash: str) -> None: ...

    def remove_user(self, name: str) -> bool: ...

    def list_users(self) -> Sequence[StoredAccount]: ...

    def add_audit(self, entry: AuditEntry) -> None: ...


class Accounts:
    def __init__(self, users: UserDirectory, *, clock: Clock | None = None) -> None:
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
        if self._known(name):
            raise DefinitionError("name", f"a user {name!r} already exists")
        password_hash = hash_password(password)
        entry = self._entry(subject, "add user", f"{name} ({role})")
        self._record_first(entry)
        try:
            self._users.add_user(name, role=role, password_hash=password_hash)
        except Exception as error:
            self._record_after(self._entry(subject, "add user failed", f"{name}: {error}"))
            raise

    def remove(self, subject: Subject, name: str) -> None:
        subject.require(Permission.MANAGE_USERS)
        if not self._known(name):
            raise DefinitionError("name", f"no user {name!r}")
        self._record_first(self._entry(subject, "remove user", name))
        try:
            removed = self._users.remove_user(name)
        except Exception as error:
            self._record_after(self._entry(subject, "remove user failed", f"{name}: {error}"))
            raise
        if not removed:  # removed by someone else in between
            self._record_after(self._entry(subject, "remove user failed", f"{name}: gone"))
            raise DefinitionError("name", f"no user {name!r}")

    def list(self, subject: Subject) -> list[StoredAccount]:
        subject.require(Permission.MANAGE_USERS)
        return list(self._users.list_users())

    def _known(self, name: str) -> bool:
        return any(account.name == name for account in self._users.list_users())

    def _entry(self, subject: Subject, action: str, detail: str) -> AuditEntry:
        return AuditEntry(
            time=self._clock.now(),
            actor=subject.name,
            action=action,
            scheduler_id=None,
            detail=detail,
        )

    def _record_first(self, entry: AuditEntry) -> None:
        try:
            self._users.add_audit(entry)
        except StoreError as error:
            raise StoreError(
                f"{entry.action} not done: the audit trail cannot be written ({error})"
            ) from error

    def _record_after(self, entry: AuditEntry) -> None:
        note_after(self._users, entry, lambda: None)
