"""The account use cases: add, remove, list, disable, enable users, change a role, set or
change a password, and log in.

Like every use case they check the subject's permission (``VIEW_USERS`` to list,
``MANAGE_USERS`` to change users, ``RESET_PASSWORDS`` to set another user's password, or
being the user whose password changes) and write the audit trail: user changes, logins
and refused logins (name and address, never the password), also the logins a trusted
proxy's header makes or refuses (once per user and client address an hour). They work on
the store directly, so they need no running manager. A login whose stored hash is
cheaper than the current cost stores a fresh hash. Each change is one store step that
compares the user with what was read and keeps an enabled admin (``change_user``), so
changes made at once (several hosts on one store) cannot undo each other.

A new password (set, reset or changed by its owner), a disable and a removal end the
user's Admin Center sessions everywhere: each writes the login a new credentials stamp
(``StoredUser.stamp``) in the same store step, and a session made with an older stamp is
refused at its next request, on every host sharing the store; the refusal is audited
(``session ended``). A role change keeps the sessions: they act with the new role from
their next request on. A rehash at login keeps them too.

A disabled user keeps its record and password, locked as ``passwd -l`` locks one: the
stored hash gets a ``!`` in front, which no password matches; enabling removes it. No
administrator can remove, disable or demote themselves, nor the last enabled admin, so
the Admin Center always keeps someone who can manage it.

User changes (add, remove, set or change a password) are audited first, as
``usecases.schedulers`` explains: the entry is written before the change, so a trail that
cannot be written (``StoreError``) refuses the change and nothing is done; a change that
then fails gets a second entry ("<action> failed"). A login is audited before it is
answered: a trail that cannot be written fails the login (no session is made).
Entries are written after the audit entries kept in memory (``usecases.pendingaudit``).
May import ``core``, ``store.protocols``, ``usecases.pendingaudit``, ``usecases.recently``
and ``usecases.schedulers`` (its audit helper).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from supervisor.core.access import ROLES, Permission, Subject
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import DefinitionError, PermissionDenied, StoreError
from supervisor.core.passwords import (
    CURRENT_COST,
    ScryptCost,
    check_new_password,
    generate_password,
    hash_password,
    is_temporary,
    needs_rehash,
    verify_password,
)
from supervisor.core.records import AuditEntry
from supervisor.store.protocols import (
    AuditTrail,
    Changed,
    KeepOne,
    StoredUser,
    UserChange,
    UserDirectory,
    new_stamp,
)
from supervisor.usecases.pendingaudit import pending_for
from supervisor.usecases.recently import Recently
from supervisor.usecases.schedulers import AUDIT_LOG, note_after

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
LOCKED = "!"  # in front of a disabled user's stored hash
ADMIN_ROLE = "admin"
# Where the bootstrap admin's one-time password is left when no terminal shows it.
BOOTSTRAP_PASSWORD_FILE = "admin-password"  # noqa: S105 - a file name
BOOTSTRAP_USER = "admin"
# The rule every change keeps, atomically with it (``UserDirectory.change_user``).
KEEP_AN_ADMIN = KeepOne(role=ADMIN_ROLE, locked_prefix=LOCKED)
# A trusted proxy's header login is audited once per (user, client address) per window.
PROXY_AUDIT_WINDOW = 3600.0
_ATTEMPTS = 20  # a change computed again over a user that changed meanwhile


class AccountStore(UserDirectory, AuditTrail, Protocol):
    """The store's users and audit trail, which the account use cases write together
    (errors as ``store.protocols`` says)."""


def is_disabled(user: StoredUser) -> bool:
    return user.password_hash.startswith(LOCKED)


def must_change(user: StoredUser) -> bool:
    """Whether ``user``'s password is a one-time one, to change at the next login."""
    return is_temporary(user.password_hash.removeprefix(LOCKED))


@dataclass(frozen=True, slots=True, kw_only=True)
class Login:
    """A successful login: who, with which role, whether the password is temporary, and
    the credentials stamp its session is valid for (``StoredUser.stamp``)."""

    name: str
    role: str
    must_change_password: bool
    stamp: str


@functools.cache
def _dummy_hash(cost: ScryptCost) -> str:
    """Checked for unknown names, so they cost as much as a wrong password."""
    return hash_password(generate_password(), cost=cost)


class Accounts:
    def __init__(
        self,
        users: AccountStore,
        *,
        clock: Clock | None = None,
        cost: ScryptCost = CURRENT_COST,
        bootstrap_file: Path | None = None,
        proxy_audit_window: float = PROXY_AUDIT_WINDOW,
    ) -> None:
        self._users = users
        # The same queue as the scheduler use cases over this store: one order.
        self._pending = pending_for(users, AUDIT_LOG)
        self._clock = clock or SystemClock()
        self._proxy_noted = Recently(window=proxy_audit_window, monotonic=self._clock.monotonic)
        self._cost = cost
        self._bootstrap_file = bootstrap_file

    # -- managing users -------------------------------------------------------------------

    def add(
        self, subject: Subject, name: str, *, role: str, password: str, temporary: bool = False
    ) -> None:
        """Add a user; ``temporary``: the password must be changed at the first login."""
        subject.require(Permission.MANAGE_USERS)
        if not USER_NAME.fullmatch(name):
            raise DefinitionError("name", f"{name!r}: use letters, digits and . _ @ - (max 64)")
        if role not in ROLES:
            raise DefinitionError("role", f"{role!r}: choose one of {', '.join(ROLES)}")
        check_new_password(password)
        if self._users.get_user(name) is not None:
            raise DefinitionError("name", f"a user {name!r} already exists")
        password_hash = hash_password(password, cost=self._cost, temporary=temporary)
        with self._audited(subject.name, "add user", f"{name} ({role})"):
            self._users.add_user(name, role=role, password_hash=password_hash)

    def remove(self, subject: Subject, name: str) -> None:
        subject.require(Permission.MANAGE_USERS)
        record = self._existing(name)
        self._keep_an_admin(subject, record, "remove")
        with self._audited(subject.name, "remove user", name):
            self._change(name, "remove", lambda _user: UserChange(expected_hash="", remove=True))

    def list(self, subject: Subject) -> list[StoredUser]:
        subject.require(Permission.VIEW_USERS)
        return list(self._users.list_users())

    def set_role(self, subject: Subject, name: str, role: str) -> bool:
        """Give ``name`` another role; it holds from their next request on. False (and
        nothing audited) if ``name`` has that role already."""
        subject.require(Permission.MANAGE_USERS)
        if role not in ROLES:
            raise DefinitionError("role", f"{role!r}: choose one of {', '.join(ROLES)}")
        record = self._existing(name)
        if record.role == role:
            return False
        if role != ADMIN_ROLE:
            self._keep_an_admin(subject, record, "demote")
        with self._audited(subject.name, "set role", f"{name}: {record.role} -> {role}"):
            self._change(name, "demote", lambda _user: UserChange(expected_hash="", role=role))
        return True

    def disable(self, subject: Subject, name: str) -> bool:
        """Lock ``name`` out (the record and password stay) and end their sessions;
        refused logins are audited. False (and nothing audited) if ``name`` was disabled
        already."""
        subject.require(Permission.MANAGE_USERS)
        record = self._existing(name)
        if is_disabled(record):
            return False
        self._keep_an_admin(subject, record, "disable")
        with self._audited(subject.name, "disable user", name):
            self._change(
                name, "disable", lambda user: _with_hash(user, _locked(user), stamp=new_stamp())
            )
        return True

    def enable(self, subject: Subject, name: str) -> bool:
        """Let ``name`` log in again with their password; False if they could already."""
        subject.require(Permission.MANAGE_USERS)
        record = self._existing(name)
        if not is_disabled(record):
            return False
        with self._audited(subject.name, "enable user", name):
            self._change(
                name,
                "enable",
                lambda user: _with_hash(user, user.password_hash.removeprefix(LOCKED)),
            )
        return True

    def set_password(
        self, subject: Subject, name: str, password: str, *, temporary: bool = False
    ) -> None:
        """An administrator sets ``name``'s password (no current password needed); their
        sessions end, and a disabled user stays disabled."""
        subject.require(Permission.RESET_PASSWORDS)
        self._existing(name)
        check_new_password(password)
        detail = f"{name} (one-time)" if temporary else name
        with self._audited(subject.name, "set password", detail):
            self._store_password(name, password, temporary=temporary)

    def change_own_password(
        self, subject: Subject, *, current: str, new: str, stamp: str | None = None
    ) -> str:
        """``subject`` changes their own password; the current one must be given. Every
        session of theirs ends; returns the new credentials stamp, for the session that
        made the change to go on with. ``stamp``: the credentials stamp of the session
        asking; a login changed since it (a reset, a disable) is refused, also when the
        change lands while this one is checked: it is written only over what was checked."""
        record = self._users.get_user(subject.name)
        if record is None or (stamp is not None and record.stamp != stamp):
            raise PermissionDenied(subject.name, "change_password")
        if not verify_password(current, record.password_hash):
            self._record(subject.name, "change password refused", "wrong current password")
            raise DefinitionError("current", "is not your current password")
        if new == current:
            raise DefinitionError("password", "must differ from the current one")
        check_new_password(new)
        stored = hash_password(new, cost=self._cost, temporary=False)
        fresh = new_stamp()
        change = UserChange(
            expected_hash=record.password_hash,
            expected_stamp=record.stamp,
            password_hash=stored,
            stamp=fresh,
        )
        with self._audited(subject.name, "change password", subject.name):
            if self._users.change_user(subject.name, change) is not Changed.DONE:
                raise DefinitionError("current", "your account changed meanwhile: log in again")
        self._forget_bootstrap_file(record)
        return fresh

    # -- logging in ------------------------------------------------------------------------

    def authenticate(self, name: str, password: str, *, address: str) -> Login | None:
        """The login if ``password`` is ``name``'s; None (audited) otherwise.

        Unknown names cost as much as wrong passwords. A hash cheaper than the current
        cost is replaced by a fresh one.
        """
        record = self._users.get_user(name) if name else None
        if record is None:
            verify_password(password, _dummy_hash(self._cost))
            self._record(_actor(name), "login refused", f"unknown user, from {address}")
            return None
        if is_disabled(record):
            verify_password(password, _dummy_hash(self._cost))
            self._record(record.name, "login refused", f"user disabled, from {address}")
            return None
        if record.role not in ROLES or not verify_password(password, record.password_hash):
            self._record(record.name, "login refused", f"wrong password, from {address}")
            return None
        temporary = is_temporary(record.password_hash)
        if needs_rehash(record.password_hash, cost=self._cost):
            stored = hash_password(password, cost=self._cost, temporary=temporary)
            # Only over the hash just checked: one changed meanwhile (a new password, a
            # disable) stays as it is.
            change = UserChange(expected_hash=record.password_hash, password_hash=stored)
            self._users.change_user(record.name, change)
        self._record(record.name, "login", f"from {address}")
        return Login(
            name=record.name, role=record.role, must_change_password=temporary, stamp=record.stamp
        )

    def proxy_login(self, name: str, *, address: str, header: str) -> None:
        """Note that the trusted proxy's ``header`` logged ``name`` in (the proxy checked
        who they are): once per user and client address per ``proxy_audit_window``
        (a client keeping no cookie logs in on every request). ``StoreError`` when the
        trail cannot be written: the caller then lets nobody in."""
        detail = f"through proxy header {header}, from {address}"
        self._record_once((name, address, "login"), _actor(name), "login", detail)

    def proxy_login_refused(self, name: str, *, address: str, header: str, reason: str) -> None:
        """Note that the proxy's ``header`` named ``name``, who may not log in
        (``reason``: unknown, disabled), as often as ``proxy_login`` notes logins."""
        detail = f"{reason}, through proxy header {header}, from {address}"
        self._record_once((name, address, reason), _actor(name), "login refused", detail)

    def session_ended(self, name: str, *, address: str, reason: str) -> None:
        """Note that a session of ``name`` was refused and ended because the account
        changed since it was made (``reason``: what the store shows now). Best effort: a
        trail that cannot be written does not keep the session alive."""
        with contextlib.suppress(StoreError):
            self._record(_actor(name), "session ended", f"{reason}, from {address}")

    def refused_unchecked(self, name: str, *, address: str, reason: str) -> None:
        """Note a login refused before its password was checked (e.g. throttled)."""
        self._record(_actor(name), "login refused", f"{reason}, from {address}")

    def must_change_password(self, name: str) -> bool:
        record = self._users.get_user(name)
        return record is not None and is_temporary(record.password_hash)

    # -- internals -------------------------------------------------------------------------

    def _existing(self, name: str) -> StoredUser:
        record = self._users.get_user(name)
        if record is None:
            raise DefinitionError("name", f"no user {name!r}")
        return record

    def _keep_an_admin(self, subject: Subject, record: StoredUser, what: str) -> None:
        """Refuse to take away the subject's own account or the last enabled admin."""
        if record.name == subject.name:
            raise DefinitionError("name", f"you cannot {what} your own account")
        if record.role != ADMIN_ROLE or is_disabled(record):
            return
        # Checked early for a clear refusal without an audit entry; the store checks
        # again in the change itself (``_change``), against concurrent changes.
        admins = [
            u for u in self._users.list_users() if u.role == ADMIN_ROLE and not is_disabled(u)
        ]
        if [u.name for u in admins] == [record.name]:
            raise _last_admin(record.name, what)

    def _change(self, name: str, what: str, change: Callable[[StoredUser], UserChange]) -> None:
        """Make ``change`` (computed from the user as stored) in one store step that also
        keeps an enabled admin; computed again over a user changed meanwhile."""
        for _ in range(_ATTEMPTS):
            record = self._existing(name)
            wanted = dataclasses.replace(change(record), expected_hash=record.password_hash)
            outcome = self._users.change_user(name, wanted, keep=KEEP_AN_ADMIN)
            if outcome is Changed.DONE:
                return
            if outcome is Changed.REFUSED:
                raise _last_admin(name, what)
        raise StoreError(f"user {name!r} kept changing meanwhile: {what} not done, try again")

    def _store_password(self, name: str, password: str, *, temporary: bool) -> str:
        """Store a new password for ``name`` with a new credentials stamp (returned),
        keeping them disabled if they are (also when disabled meanwhile). The bootstrap
        admin's one-time password file goes once it no longer works: when it held the
        password this store had for ``admin``."""
        stored = hash_password(password, cost=self._cost, temporary=temporary)
        stamp = new_stamp()
        replaced: list[StoredUser] = []

        def new_hash(user: StoredUser) -> UserChange:
            replaced[:] = [user]
            hashed = LOCKED + stored if is_disabled(user) else stored
            return _with_hash(user, hashed, stamp=stamp)

        self._change(name, "set password", new_hash)
        if not temporary:
            self._forget_bootstrap_file(replaced[-1])
        return stamp

    def _forget_bootstrap_file(self, replaced: StoredUser) -> None:
        """Remove the bootstrap admin's one-time password file once it no longer works:
        when it held the password ``replaced`` (the login before a new password) had."""
        file = self._bootstrap_file
        if replaced.name == BOOTSTRAP_USER and file and _file_password_of(file, replaced):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()

    def _entry(self, actor: str, action: str, detail: str) -> AuditEntry:
        return AuditEntry(
            time=self._clock.now(), actor=actor, action=action, scheduler_id=None, detail=detail
        )

    def _record(self, actor: str, action: str, detail: str) -> None:
        self._pending.write_first(self._entry(actor, action, detail))

    def _record_once(self, key: tuple[str, str, str], actor: str, action: str, detail: str) -> None:
        """``_record``, unless the same ``key`` was recorded within the window."""
        if self._proxy_noted.due(key):
            self._record(actor, action, detail)
            self._proxy_noted.note(key)

    @contextlib.contextmanager
    def _audited(self, actor: str, action: str, detail: str) -> Iterator[None]:
        """Audit first, then the body (the change); refused when the trail cannot be
        written; a change that fails gets a second entry and its error propagates."""
        try:
            self._record(actor, action, detail)
        except StoreError as error:
            raise StoreError(
                f"{action} not done: the audit trail cannot be written ({error})"
            ) from error
        try:
            yield
        except Exception as error:
            failed = self._entry(actor, f"{action} failed", f"{detail}: {error}")
            note_after(self._pending, failed, lambda: None)
            raise


def _with_hash(user: StoredUser, password_hash: str, *, stamp: str | None = None) -> UserChange:
    return UserChange(expected_hash=user.password_hash, password_hash=password_hash, stamp=stamp)


def _locked(user: StoredUser) -> str:
    return user.password_hash if is_disabled(user) else LOCKED + user.password_hash


def _last_admin(name: str, what: str) -> DefinitionError:
    return DefinitionError("name", f"{name!r} is the last admin: cannot {what}")


def _file_password_of(path: Path, user: StoredUser) -> bool:
    """Whether the one-time password file ``path`` holds ``user``'s password (a file left
    for another store's ``admin`` stays)."""
    try:
        with path.open(encoding="utf-8") as handle:
            password = handle.readline(1024).rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(password) and verify_password(password, user.password_hash.removeprefix(LOCKED))


def _actor(name: str) -> str:
    """A name typed into the login form, fit for the audit trail (bounded, printable)."""
    cleaned = "".join(c if c.isprintable() else "?" for c in name[:64])
    return cleaned or "(no name)"
