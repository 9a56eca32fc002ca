"""Who is logged in: the subject of a user, whether a session may go on, and the bootstrap
admin of a first start.

A session is valid for the credentials stamp its user had when it was made
(``store.protocols.StoredUser.stamp``): a new password or a disable, made by the Admin
Center, by ``supervisor users`` or on another host sharing the store, writes a new stamp,
and ``session_subject`` ends every session made before it.

Users are stored by the store (``store.protocols.UserDirectory``); password
checks, changes and their audit are the account use cases' (``usecases.accounts``).
The bootstrap admin's one-time password is shown on a terminal only: when the output is
not one (a service whose output lands in the journal) it goes to an owner-only file in
the state directory and only that file's path is written out. It must be changed at the
first login, which deletes the file.
May import ``accounts``, ``passwords``, ``access``, ``errors``, ``store.protocols`` and
the stdlib.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from supervisor.core.access import ROLES, Subject, with_role
from supervisor.core.errors import DefinitionError
from supervisor.core.passwords import CURRENT_COST, ScryptCost, generate_password, hash_password
from supervisor.store.protocols import StoredUser, UserDirectory
from supervisor.usecases.accounts import BOOTSTRAP_PASSWORD_FILE, BOOTSTRAP_USER, is_disabled


def _acting(record: StoredUser | None) -> Subject | None:
    if record is None or record.role not in ROLES or is_disabled(record):
        return None
    return with_role(record.name, record.role)


def subject_for(users: UserDirectory, name: str) -> Subject | None:
    """The subject a logged-in user acts as, read afresh: a removed or disabled user acts
    no more (whether logged in by password or named by a trusted proxy), a changed role
    holds from the next request on."""
    return _acting(users.get_user(name))


def proxy_subject(users: UserDirectory, name: str) -> tuple[Subject, str] | None:
    """``subject_for`` and the user's credentials stamp, for a session a trusted proxy's
    header makes."""
    record = users.get_user(name)
    subject = _acting(record)
    return None if subject is None or record is None else (subject, record.stamp)


@dataclass(frozen=True, slots=True)
class Ended:
    """A session refused because its account changed since it was made.

    ``reason`` in the audit trail's words; ``notice``: what the person is told."""

    reason: str
    notice: str


CHANGED_SINCE_LOGIN = "the password was changed or the user disabled since the login"


def session_subject(users: UserDirectory, name: str, *, stamp: str) -> Subject | Ended:
    """The subject a session of ``name`` made with credentials stamp ``stamp`` acts as,
    read afresh from the store; ``Ended`` when the user was removed or disabled, their
    role is unknown, or their stamp is no longer ``stamp`` (a new password or a disable
    since, made on any host sharing the store). A changed role holds from this request
    on and keeps the session."""
    record = users.get_user(name)
    if record is None:
        return Ended("user removed", "Your account was removed.")
    if is_disabled(record):
        return Ended("user disabled", "Your account was disabled.")
    if record.role not in ROLES:
        return Ended(f"unknown role {record.role!r}", "Your account has no valid role.")
    if record.stamp != stamp:
        return Ended(
            CHANGED_SINCE_LOGIN,
            "Your password was changed (or your account disabled) since you logged in.",
        )
    return with_role(record.name, record.role)


def refusal_reason(users: UserDirectory, name: str) -> str:
    """Why ``name`` may not log in, in the audit trail's words (``subject_for`` was None)."""
    record = users.get_user(name)
    if record is None:
        return "unknown user"
    return "user disabled" if is_disabled(record) else f"unknown role {record.role!r}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bootstrap:
    """The bootstrap admin just created: its password and where it was left (or None)."""

    password: str
    file: Path | None


def bootstrap_file(state_dir: Path) -> Path:
    return state_dir / BOOTSTRAP_PASSWORD_FILE


def ensure_bootstrap_admin(
    users: UserDirectory,
    *,
    out: IO[str],
    state_dir: Path | None = None,
    cost: ScryptCost = CURRENT_COST,
) -> Bootstrap | None:
    """On a first start (no user at all) create ``admin`` with a one-time password.

    The password is printed on ``out`` only if it is a terminal (or no ``state_dir`` is
    given); otherwise it is written to an owner-only file in ``state_dir`` and ``out``
    gets the file's path. None if users already existed.
    """
    if users.list_users():
        return None
    password = generate_password()
    try:
        users.add_user(
            BOOTSTRAP_USER,
            role="admin",
            password_hash=hash_password(password, cost=cost, temporary=True),
        )
    except DefinitionError:
        return None  # another process created it first
    if state_dir is None or _is_terminal(out):
        print(
            f"Admin Center: created user {BOOTSTRAP_USER!r} (role admin) with the one-time"
            f" password: {password}\n"
            "Admin Center: change it at the first login; add users with"
            " `supervisor users add`.",
            file=out,
            flush=True,
        )
        return Bootstrap(password=password, file=None)
    path = bootstrap_file(state_dir)
    _write_private(path, password + "\n")
    print(
        f"Admin Center: created user {BOOTSTRAP_USER!r} (role admin); its one-time password"
        f" is in {path} (readable by its owner only, deleted once the password is changed"
        " at the first login).",
        file=out,
        flush=True,
    )
    return Bootstrap(password=password, file=path)


def _is_terminal(out: IO[str]) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new owner-only file (never through a planted link)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
