"""Whom a path may be trusted by: the checks sudo and ssh make before using a file.

A privileged caller (root running ``sudo supervisor ...``) must never import, execute or
follow anything that a less privileged user can change. A path is trusted by a caller when
the path and every directory above it are owned by the caller or root and are writable by
no one else (no group or world write bit, sticky directories such as /tmp included).
Symlinks are resolved first and every component of the real path is checked.

Only what the caller did not choose is checked: an ``--app`` typed on the command line is
the caller's own choice, an app spec read from a state directory is not.

May import ``core.errors`` and the stdlib. Reads the file system only when asked.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Sequence
from pathlib import Path

from supervisor.core.errors import UntrustedPath


def owner_name(uid: int) -> str:
    """The user name of ``uid``, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def trusted_uids(caller_uid: int) -> frozenset[int]:
    """Who may own what ``caller_uid`` relies on: the caller and root."""
    return frozenset({caller_uid, 0})


def _check_chain(target: Path, *, trusted: frozenset[int], what: str, shown: str) -> None:
    """Check every component of ``target`` from ``/`` down, without following symlinks.

    A component must be owned by a trusted user (a symlink too: its mode means nothing,
    its target is checked on the resolved path) and writable by no one else, except a
    sticky directory (such as /tmp) whose next component exists and is trusted-owned:
    there others can neither remove nor rename that entry.
    """
    components = [*reversed(target.parents), target]
    for index, component in enumerate(components):
        try:
            st = os.lstat(component)
        except FileNotFoundError:
            return
        except OSError as error:
            raise UntrustedPath(
                f"refusing {what} {shown}: cannot check {component}: {error.strerror or error}"
            ) from error
        where = "" if component == target and shown == str(target) else f" (in {component})"
        if st.st_uid not in trusted:
            raise UntrustedPath(
                f"refusing {what} {shown}{where}: it is owned by {owner_name(st.st_uid)}"
            )
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and index + 1 < len(components):
            if not os.path.lexists(components[index + 1]):
                raise UntrustedPath(
                    f"refusing {what} {shown}: {components[index + 1]} does not exist and "
                    f"anyone may create it in {component}"
                )
            continue  # the entry's own owner is checked next
        who = "every user" if st.st_mode & stat.S_IWOTH else "its group"
        raise UntrustedPath(f"refusing {what} {shown}{where}: it is writable by {who}")


def check_path(path: Path | str, *, caller_uid: int, what: str) -> None:
    """Raise ``UntrustedPath`` unless nobody but the caller or root can change ``path``:
    neither the path as written (symlinks included) nor the path it resolves to.

    ``what`` says in the message what the path is for ("the app module", ...).
    """
    trusted = trusted_uids(caller_uid)
    literal = Path(os.path.abspath(path))
    shown = str(literal)
    _check_chain(literal, trusted=trusted, what=what, shown=shown)
    real = Path(os.path.realpath(literal))
    if real != literal:
        _check_chain(real, trusted=trusted, what=what, shown=shown)


def _module_locations(module: str, search_path: Sequence[str]) -> list[Path]:
    """The files and package directories ``import module`` would use from ``search_path``.

    Found without importing anything: the first entry of ``search_path`` holding the top
    package wins, as for the import system's path finder.
    """
    parts = module.split(".")
    for entry in search_path:
        base = Path(entry or ".").absolute()
        found: list[Path] = []
        directory = base
        for index, part in enumerate(parts):
            package = directory / part
            last = index == len(parts) - 1
            if (package / "__init__.py").is_file():
                found += [package, package / "__init__.py"]
                directory = package
                continue
            if last:
                candidates = [directory / f"{part}.py", *directory.glob(f"{part}.*.so")]
                files = [c for c in candidates if c.is_file()]
                if files:
                    found.append(files[0])
                    return found
                if package.is_dir():  # a namespace package
                    found.append(package)
                    return found
            break
        else:
            return found
        if found:
            return found
    return []


def check_module(module: str, search_path: Sequence[str], *, caller_uid: int) -> None:
    """Raise ``UntrustedPath`` if importing ``module`` from ``search_path`` could run code
    that someone other than the caller or root can change.

    Checks every ``search_path`` entry (an entry anywhere could shadow a module the app
    imports, before or after the app's own directory) and the module's files.
    """
    for entry in search_path:
        check_path(entry or ".", caller_uid=caller_uid, what="the import path entry")
    for location in _module_locations(module, search_path):
        check_path(location, caller_uid=caller_uid, what=f"the app module {module}")
