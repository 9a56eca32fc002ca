"""Where state lives: the state directory and the files in it, and whether to trust them.

A state directory is used only when it is a real directory (not a symlink), owned by the
caller, and writable by no one else; its known files must be regular files (or the socket)
owned by the directory's owner. One exception: root may use the directory of the packaged
service's user (``sched-supervisor``), so ``sudo supervisor list`` works on a packaged
install; such a directory is marked ``foreign`` and what is read from it is never imported.

May import ``core.errors``, ``service.trust`` and the stdlib. Reads the environment only when
asked (never at import).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.core.errors import StoreError, UntrustedPath
from supervisor.service.trust import check_module, check_path, owner_name

SYSTEM_STATE_DIR = Path("/var/lib/sched-supervisor")
DATABASE_NAME = "state.db"
LOCK_NAME = "manager.lock"
SOCKET_NAME = "control.sock"
MANIFEST_NAME = "systemd-units.json"  # written by systemd.install
# The packaged service's system user: root may use its state directory.
SERVICE_USER = "sched-supervisor"
# The files a state directory holds (SQLite adds -wal and -shm beside the database).
STATE_FILES = (
    DATABASE_NAME,
    f"{DATABASE_NAME}-wal",
    f"{DATABASE_NAME}-shm",
    LOCK_NAME,
    SOCKET_NAME,
    MANIFEST_NAME,
)
# Keys in the store's meta table: the app a manager last ran with this state directory.
APP_SPEC_META = "app_spec"
APP_CWD_META = "app_cwd"


def default_state_dir(environ: Mapping[str, str], *, uid: int, home: Path) -> Path:
    """``$SUPERVISOR_STATE_DIR``, else the system directory for root, else the user's."""
    configured = environ.get("SUPERVISOR_STATE_DIR")
    if configured:
        return Path(configured)
    if uid == 0:
        return SYSTEM_STATE_DIR
    base = environ.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(base) / "sched-supervisor"


def resolve_state_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    return default_state_dir(os.environ, uid=os.getuid(), home=Path.home())


@dataclass(frozen=True, slots=True, kw_only=True)
class StateDir:
    """A checked state directory. ``foreign`` is the owner's name when root uses the
    service user's directory: read from it, write nothing new, import nothing it names."""

    path: Path
    owner_uid: int
    foreign: str | None = None

    def file(self, name: str) -> Path:
        return self.path / name


def _service_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def check_state_dir(
    path: Path, *, caller_uid: int | None = None, service_user: str = SERVICE_USER
) -> StateDir:
    """Check an existing state directory and its files; raise ``UntrustedPath`` naming the
    problem (symlink, other owner, group/world-writable) or ``StoreError`` if unusable."""
    uid = os.getuid() if caller_uid is None else caller_uid
    path = path.absolute()
    try:
        st = os.lstat(path)
    except OSError as error:
        raise StoreError(f"cannot use state directory {path}: {error.strerror or error}") from error
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPath(f"refusing state directory {path}: it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"state directory {path} is not a directory")
    # Whoever can write a directory above could swap the state directory for theirs.
    check_path(path.parent, caller_uid=uid, what=f"the directory of state directory {path}:")
    foreign: str | None = None
    if st.st_uid != uid:
        if uid == 0 and st.st_uid == _service_uid(service_user):
            foreign = service_user
        else:
            raise UntrustedPath(
                f"refusing state directory {path}: it is owned by {owner_name(st.st_uid)}, "
                f"not {owner_name(uid)}"
            )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "every user" if st.st_mode & stat.S_IWOTH else "its group"
        raise UntrustedPath(
            f"refusing state directory {path}: it is writable by {who} (chmod 700 {path})"
        )
    for name in STATE_FILES:
        _check_state_file(path / name, owner=st.st_uid)
    return StateDir(path=path, owner_uid=st.st_uid, foreign=foreign)


def _check_state_file(path: Path, *, owner: int) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPath(f"refusing {path}: it is a symlink")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
        raise UntrustedPath(f"refusing {path}: it is not a regular file")
    if st.st_uid != owner:
        raise UntrustedPath(
            f"refusing {path}: it is owned by {owner_name(st.st_uid)}, "
            f"not by the state directory's owner {owner_name(owner)}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedPath(f"refusing {path}: it is writable by others than its owner")


def open_state_dir(
    path: Path, *, caller_uid: int | None = None, service_user: str = SERVICE_USER
) -> StateDir:
    """Create the state directory (0700) if needed, then check it (see ``check_state_dir``)."""
    path = path.absolute()
    try:
        os.lstat(path)
    except FileNotFoundError:
        uid = os.getuid() if caller_uid is None else caller_uid
        check_path(path.parent, caller_uid=uid, what=f"the directory of state directory {path}:")
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # made by someone else meanwhile: the check below decides
        except OSError as error:
            raise StoreError(
                f"cannot create state directory {path}: {error.strerror or error}"
            ) from error
    return check_state_dir(path, caller_uid=caller_uid, service_user=service_user)


def ensure_state_dir(path: Path, *, service_user: str = SERVICE_USER) -> Path:
    """Create the state directory (owner-only) if needed, check it, return its absolute path.

    For callers that write: the service user's directory is refused to root as well, since
    files root creates there (a database journal, a lock) would lock the service out.
    """
    state = open_state_dir(path, service_user=service_user)
    if state.foreign is not None:
        raise UntrustedPath(
            f"refusing to write to state directory {state.path}: it belongs to the service "
            f"user {state.foreign}; run this as that user (sudo -u {state.foreign} supervisor ...)"
        )
    return state.path


def check_app_from_state(
    state: StateDir,
    *,
    app_spec: str,
    source: Path,
    search_path: list[str],
    caller_uid: int | None = None,
) -> None:
    """Refuse (``UntrustedPath``) to import an app named by the state directory (``source``:
    its database or install manifest) unless nobody but the caller or root could have
    chosen it or changed its code. An ``--app`` the caller typed needs no such check."""
    uid = os.getuid() if caller_uid is None else caller_uid
    if state.foreign is not None or state.owner_uid not in (uid, 0):
        raise UntrustedPath(
            f"refusing to import the app {app_spec!r} named in {source}: the state directory "
            f"belongs to {owner_name(state.owner_uid)}; pass --app MODULE:ATTR yourself"
        )
    module = app_spec.partition(":")[0]
    check_module(module, search_path, caller_uid=uid)
