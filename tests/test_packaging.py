"""What the distributions hold and what an installed package writes into units.

The sdist and the wheel are built from a copy of the tree with Debian 12's setuptools 66
(``/usr/bin/python3``, what the .deb is built with: it cannot read an SPDX ``license``
string, so this is the oldest setuptools the metadata must suit). The wheel is then
installed into a real virtualenv (by pip, without its dependencies: those come from
this interpreter's site directories through a ``.pth`` file), whose ``bin/supervisor``
runs ``generate-units``: its ``ExecStart=`` must be that script, and an interpreter or
an app under /tmp must be refused (``PrivateTmp=yes`` hides them from the units).
"""

from __future__ import annotations

import contextlib
import email.parser
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.launching import ROOT
from tests.required import skip_or_fail

DEBIAN_PYTHON = Path("/usr/bin/python3")
APP = "examples.jobs:cfg"
BUILD = "import sys; from setuptools import build_meta as b; print('BUILT', b.{hook}(sys.argv[1]))"
PIP_OPTIONS = ("--quiet", "--no-deps", "--no-index", "--no-compile")


def _has_setuptools(python: Path) -> bool:
    if not python.exists():
        return False
    done = subprocess.run(
        [str(python), "-c", "import setuptools"], capture_output=True, check=False
    )
    return done.returncode == 0


def _tree_files() -> list[str]:
    """The files of the tree (tracked and new ones; not the ignored ones)."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]
    skip = {"__pycache__", "build", "dist", "out"}
    return [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*")
        if path.is_file()
        and not any(
            part in skip or part.startswith(".") or part.endswith(".egg-info")
            for part in path.relative_to(ROOT).parts
        )
    ]


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    skip_or_fail(
        "debian-python",
        None if _has_setuptools(DEBIAN_PYTHON) else f"{DEBIAN_PYTHON} with setuptools is missing",
    )
    base = tmp_path_factory.mktemp("dist")
    tree, out = base / "tree", base / "out"
    for name in _tree_files():
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    out.mkdir()
    names = []
    for hook in ("build_sdist", "build_wheel"):  # one process each, as build frontends do
        done = subprocess.run(
            [str(DEBIAN_PYTHON), "-I", "-c", BUILD.format(hook=hook), str(out)],
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        (line,) = [line for line in done.stdout.splitlines() if line.startswith("BUILT ")]
        names.append(line.split()[1])
    sdist_name, wheel_name = names
    return Built(sdist=out / sdist_name, wheel=out / wheel_name)


def test_the_sdist_holds_the_examples_and_the_license(built: Built) -> None:
    # Before: no LICENSE anywhere, and examples/ (the README's demo) missing from the sdist.
    with tarfile.open(built.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        info = sdist.extractfile(next(n for n in sdist.getnames() if n.endswith("/PKG-INFO")))
        assert info is not None
        metadata = email.parser.BytesParser().parse(info)
    assert {"examples/jobs.py", "examples/__init__.py", "LICENSE", "README.md"} <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert metadata["License"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert {"Homepage", "Source", "Issues"} <= set(urls)
    classifiers = metadata.get_all("Classifier", [])
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers


def test_the_wheel_installs_only_supervisor_and_carries_the_license(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.BytesParser().parsebytes(wheel.read(metadata_name))
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith("-info")}
    assert top == {"supervisor"}  # no top-level examples, tests or admin module
    assert any(n.endswith(".dist-info/LICENSE") or n.endswith("/licenses/LICENSE") for n in names)
    assert metadata["License"] == "MIT"


# -- an installed package in a virtualenv -------------------------------------------------


def _site_directories() -> list[str]:
    """Where this interpreter finds the dependencies: its path without the checkout."""
    checkout = ROOT.resolve()
    found = [
        entry
        for entry in sys.path
        if entry and Path(entry).is_dir() and Path(entry).resolve() != checkout
    ]
    return list(dict.fromkeys(found))


def _make_venv(where: Path, *site_dirs: str) -> Path:
    """A virtualenv without pip that also reads ``site_dirs``; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "zz-test-dependencies.pth").write_text("".join(f"{d}\n" for d in site_dirs))
    return python


@pytest.fixture(scope="module")
def venv(built: Built) -> Iterator[Path]:
    """A virtualenv (outside /tmp, as a real one would be) with the wheel installed."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed here (it installs the wheel into the virtualenv)")
    scratch = ROOT / "build"
    scratch.mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="venv-test-", dir=scratch))
    try:
        python = _make_venv(home / "venv", *_site_directories())
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", *PIP_OPTIONS]
        subprocess.run(
            [*pip, str(built.wheel)],
            check=True,
            capture_output=True,
        )
        yield home / "venv"
    finally:
        shutil.rmtree(home)
        with contextlib.suppress(OSError):
            scratch.rmdir()  # if nothing else is in it


def _app_dir(parent: Path) -> Path:
    """A directory holding only the app (``examples/``), as a user's project would."""
    app = parent / "app"
    shutil.copytree(
        ROOT / "examples", app / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    return app


def _generate(command: list[str], *, cwd: Path, output: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    state = ("--state-dir", str(output.parent / "state"))
    return subprocess.run(
        [*command, "generate-units", "--app", APP, "--output-dir", str(output), *state],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_units_from_a_virtualenv_run_its_bin_supervisor(venv: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="units-", dir=venv.parent))
    script = venv / "bin" / "supervisor"
    assert script.is_file()
    done = _generate([str(script)], cwd=_app_dir(work), output=work / "units")
    assert done.returncode == 0, done.stderr
    service = (work / "units" / "sched-demo-my.test.failure.service").read_text()
    (exec_start,) = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == f"ExecStart={script} exec --app {APP} my.test.failure"


def test_generate_units_refuses_an_app_under_tmp(venv: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        app = _app_dir(Path(scratch))
        done = _generate([str(venv / "bin" / "supervisor")], cwd=app, output=venv.parent / "u")
    assert done.returncode != 0
    assert str(app) in done.stderr and "PrivateTmp" in done.stderr
    assert not (venv.parent / "u").exists()


def test_generate_units_refuses_an_interpreter_under_tmp(venv: Path) -> None:
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import supervisor, os; print(os.path.dirname(os.path.dirname(supervisor.__file__)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        python = _make_venv(Path(scratch) / "venv", installed, *_site_directories())
        done = _generate(
            [str(python), "-m", "supervisor"],
            cwd=_app_dir(venv.parent / "tmp-python"),
            output=venv.parent / "u2",
        )
    assert done.returncode != 0
    assert scratch in done.stderr and "PrivateTmp" in done.stderr
    assert not (venv.parent / "u2").exists()
