"""Trust checks: root never imports, opens or follows what a less privileged user controls.

Uses a real second OS user (created and removed by the tests) and real files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.core.errors import UntrustedPath
from supervisor.service.paths import (
    APP_CWD_META,
    APP_SPEC_META,
    DATABASE_NAME,
    LOCK_NAME,
    check_state_dir,
    ensure_state_dir,
    open_state_dir,
)
from supervisor.service.trust import check_module, check_path
from supervisor.store.sqlite import SqliteStore
from supervisor.systemd.install import Manifest, write_manifest
from tests.commands import ROOT, supervisor
from tests.os_users import OsUser, throwaway_user

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, a second user)")


@pytest.fixture(scope="module")
def other() -> Iterator[OsUser]:
    with throwaway_user() as user:
        yield user


def chown_tree(path: Path, user: OsUser) -> None:
    for item in [path, *path.rglob("*")]:
        os.lchown(item, user.uid, user.gid)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory that root owns and nobody else can write, below directories alike
    (not under /tmp: a world-writable directory above makes everything below untrusted)."""
    path = Path(tempfile.mkdtemp(prefix=".trust-", dir=ROOT))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


# -- check_path ----------------------------------------------------------------------------


@ROOT_ONLY
def test_a_path_owned_by_the_caller_below_root_owned_directories_is_trusted(base: Path) -> None:
    file = base / "app.py"
    file.write_text("")
    check_path(file, caller_uid=0, what="the app module")


@ROOT_ONLY
def test_a_file_owned_by_another_user_is_refused_naming_the_owner(
    base: Path, other: OsUser
) -> None:
    file = base / "app.py"
    file.write_text("")
    os.chown(file, other.uid, other.gid)
    with pytest.raises(UntrustedPath, match=f"app.py: it is owned by {other.name}"):
        check_path(file, caller_uid=0, what="the app module")
    # The owner itself may rely on it.
    check_path(file, caller_uid=other.uid, what="the app module")


@ROOT_ONLY
def test_a_directory_above_writable_by_its_group_is_refused(base: Path) -> None:
    (base / "code").mkdir()
    file = base / "code" / "app.py"
    file.write_text("")
    os.chmod(base / "code", 0o775)
    with pytest.raises(UntrustedPath, match=r"\(in .*code\): it is writable by its group"):
        check_path(file, caller_uid=0, what="the app module")


@ROOT_ONLY
def test_in_a_sticky_directory_only_entries_owned_by_a_trusted_user_count(
    base: Path, other: OsUser
) -> None:
    """In a sticky world-writable directory (like /tmp) others can neither remove nor
    rename root's entries, but they may own theirs, or create what is missing."""
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (shared / "mine.py").write_text("")
    check_path(shared / "mine.py", caller_uid=0, what="the app module")
    (shared / "theirs.py").write_text("")
    os.chown(shared / "theirs.py", other.uid, other.gid)
    with pytest.raises(UntrustedPath, match=f"owned by {other.name}"):
        check_path(shared / "theirs.py", caller_uid=0, what="the app module")
    with pytest.raises(UntrustedPath, match="does not exist and anyone may create it"):
        check_path(shared / "later" / "app.py", caller_uid=0, what="the app module")
    with pytest.raises(UntrustedPath, match="writable by every user"):
        check_path(shared, caller_uid=0, what="the import path entry")


@ROOT_ONLY
def test_regression_a_symlink_in_a_directory_others_can_write_is_refused(
    base: Path, other: OsUser
) -> None:
    """Its owner could retarget it between the check and the import."""
    good = base / "good"
    good.mkdir()
    (good / "goodapp.py").write_text("")
    mallory = base / "mallory"
    mallory.mkdir()
    os.chmod(mallory, 0o777)
    (mallory / "link").symlink_to(good)
    with pytest.raises(UntrustedPath, match="writable by every user"):
        check_module("goodapp", [str(mallory / "link")], caller_uid=0)
    # A link that another user owns, even in root's own directory, is theirs to retarget.
    os.chmod(mallory, 0o755)
    os.lchown(mallory / "link", other.uid, other.gid)
    with pytest.raises(UntrustedPath, match=f"owned by {other.name}"):
        check_module("goodapp", [str(mallory / "link")], caller_uid=0)


@ROOT_ONLY
def test_a_symlink_is_judged_by_where_it_points(base: Path, other: OsUser) -> None:
    (base / "theirs").mkdir()
    target = base / "theirs" / "app.py"
    target.write_text("")
    os.chown(base / "theirs", other.uid, other.gid)
    link = base / "app.py"
    link.symlink_to(target)
    with pytest.raises(UntrustedPath, match=f"owned by {other.name}"):
        check_path(link, caller_uid=0, what="the app module")


# -- check_module --------------------------------------------------------------------------


@ROOT_ONLY
def test_a_module_in_another_users_directory_is_refused(base: Path, other: OsUser) -> None:
    code = base / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "__init__.py").write_text("")
    (code / "pkg" / "jobs.py").write_text("")
    check_module("pkg.jobs", [str(code), *sys.path], caller_uid=0)
    os.chown(code / "pkg" / "jobs.py", other.uid, other.gid)
    with pytest.raises(
        UntrustedPath, match=f"app module pkg.jobs .*jobs.py: it is owned by {other.name}"
    ):
        check_module("pkg.jobs", [str(code), *sys.path], caller_uid=0)


@ROOT_ONLY
def test_a_writable_directory_anywhere_on_the_search_path_is_refused(
    base: Path, other: OsUser
) -> None:
    """A directory searched first could shadow the app, or any module the app imports."""
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, other.uid, other.gid)
    code = base / "code"
    code.mkdir()
    (code / "jobs.py").write_text("")
    with pytest.raises(UntrustedPath, match="import path entry"):
        check_module("jobs", [str(theirs), str(code)], caller_uid=0)
    # Searched after the app it could still shadow what the app imports.
    with pytest.raises(UntrustedPath, match="import path entry"):
        check_module("jobs", [str(code), str(theirs)], caller_uid=0)
    check_module("jobs", [str(code)], caller_uid=0)


# -- state directories ---------------------------------------------------------------------


def test_a_new_state_dir_is_created_owner_only(tmp_path: Path) -> None:
    state = open_state_dir(tmp_path / "a" / "state")
    assert state.path == tmp_path / "a" / "state"
    assert (os.stat(state.path).st_mode & 0o777) == 0o700
    assert state.foreign is None


def test_a_symlinked_state_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "real")
    with pytest.raises(UntrustedPath, match="state: it is a symlink"):
        open_state_dir(tmp_path / "state")


def test_a_group_writable_state_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    os.chmod(tmp_path / "state", 0o770)
    with pytest.raises(UntrustedPath, match="writable by its group"):
        open_state_dir(tmp_path / "state")


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    """A root manager truncated a root-owned file through a planted manager.lock symlink."""
    victim = tmp_path / "precious"
    victim.write_text("keep me\n")
    state = open_state_dir(tmp_path / "state").path
    (state / LOCK_NAME).symlink_to(victim)
    with pytest.raises(UntrustedPath, match=f"{LOCK_NAME}: it is a symlink"):
        open_state_dir(state)
    assert victim.read_text() == "keep me\n"


@ROOT_ONLY
def test_a_pre_created_state_dir_of_another_user_is_refused(tmp_path: Path, other: OsUser) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, other.uid, other.gid)
    with pytest.raises(UntrustedPath, match=f"owned by {other.name}, not root"):
        open_state_dir(state)


@ROOT_ONLY
def test_a_planted_database_in_roots_state_dir_is_refused(tmp_path: Path, other: OsUser) -> None:
    """Another user's state.db (with their admin user) must not be root's Admin Center's."""
    state = open_state_dir(tmp_path / "state").path
    SqliteStore.open(state / DATABASE_NAME).close()
    os.chown(state / DATABASE_NAME, other.uid, other.gid)
    with pytest.raises(UntrustedPath, match=f"{DATABASE_NAME}: it is owned by {other.name}"):
        open_state_dir(state)


@ROOT_ONLY
def test_root_may_read_the_service_users_state_dir_marked_foreign(
    tmp_path: Path, other: OsUser
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    SqliteStore.open(state / DATABASE_NAME).close()
    chown_tree(state, other)
    checked = check_state_dir(state, service_user=other.name)
    assert checked.foreign == other.name
    assert checked.owner_uid == other.uid
    # Another user's directory that is not the service user's stays refused.
    with pytest.raises(UntrustedPath, match=f"owned by {other.name}, not root"):
        check_state_dir(state)


@ROOT_ONLY
def test_root_never_writes_to_the_service_users_state_dir(tmp_path: Path, other: OsUser) -> None:
    """Files root would create there (the journal, a lock) would lock the service out."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, other.uid, other.gid)
    with pytest.raises(UntrustedPath, match=f"belongs to the service user {other.name}"):
        ensure_state_dir(state, service_user=other.name)
    assert list(state.iterdir()) == []


# -- the reported hole: root's next-runs imported a user's module ------------------------


def _planted_state(tmp_path: Path, other: OsUser, *, chown_state: bool) -> tuple[Path, Path]:
    """A state dir whose database names an app in a directory ``other`` owns; importing
    the app would create the returned marker file."""
    code = tmp_path / "code"
    code.mkdir()
    marker = tmp_path / "imported-as-root"
    (code / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from supervisor import Configurator\ncfg = Configurator('evil')\n"
    )
    chown_tree(code, other)
    state = open_state_dir(tmp_path / "state").path
    with SqliteStore.open(state / DATABASE_NAME) as store:
        store.set_meta(APP_SPEC_META, "evil:cfg")
        store.set_meta(APP_CWD_META, str(code))
    if chown_state:
        chown_tree(state, other)
    return state, marker


@ROOT_ONLY
@pytest.mark.parametrize("chown_state", [True, False], ids=["their-state-dir", "their-code"])
def test_regression_root_next_runs_never_imports_a_users_module(
    base: Path, other: OsUser, chown_state: bool
) -> None:
    state, marker = _planted_state(base, other, chown_state=chown_state)
    result = subprocess.run(
        supervisor("next-runs", "evil.job", "--state-dir", str(state)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == UntrustedPath.exit_code, result.stderr
    assert not marker.exists(), "the user's module ran as root"
    assert result.stderr.startswith("error: refusing"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert other.name in result.stderr


@ROOT_ONLY
def test_regression_a_manifest_path_entry_after_the_app_cannot_shadow_its_imports(
    base: Path, other: OsUser
) -> None:
    """The install manifest's sys_path [trusted, evil] once let root import evil's
    ``colorsys`` when the app imported it."""
    trusted_code = base / "code"
    trusted_code.mkdir()
    (trusted_code / "shadowed_app.py").write_text(
        "import colorsys\nfrom supervisor import Configurator\ncfg = Configurator('x')\n"
    )
    evil = base / "evil"
    evil.mkdir()
    marker = base / "imported-as-root"
    (evil / "colorsys.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    chown_tree(evil, other)
    os.chmod(evil, 0o777)
    state = open_state_dir(base / "state").path
    write_manifest(
        state,
        Manifest(
            app_spec="shadowed_app:cfg",
            unit_dir=str(base / "units"),
            runtime=True,
            units=(),
            files=(),
            cwd=str(trusted_code),
            sys_path=(str(trusted_code), str(evil)),
        ),
    )
    result = subprocess.run(
        supervisor("list", "--state-dir", str(state)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env={**os.environ, "SUPERVISOR_BACKEND": "systemd"},
    )
    assert not marker.exists(), "the user's module ran as root"
    assert result.returncode == UntrustedPath.exit_code, result.stderr
    assert "import path entry" in result.stderr and str(evil) in result.stderr


@ROOT_ONLY
def test_regression_a_state_dir_below_a_directory_others_can_write_is_refused(
    base: Path, other: OsUser
) -> None:
    """Its owner could swap the state directory (and plant a manager.lock symlink in it)."""
    open_dir = base / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.raises(UntrustedPath, match="writable by every user"):
        open_state_dir(open_dir / "state")
    assert not (open_dir / "state").exists(), "nothing is created in an untrusted place"
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, other.uid, other.gid)
    with pytest.raises(UntrustedPath, match=f"owned by {other.name}"):
        open_state_dir(theirs / "state")
    # Below a sticky directory (such as /tmp), a directory of the caller's own is fine.
    sticky = base / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (sticky / "mine").mkdir(mode=0o700)
    assert open_state_dir(sticky / "mine" / "state").path == sticky / "mine" / "state"
