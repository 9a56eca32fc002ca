"""pyproject.toml ships every package of the source tree (the Debian build and wheels
install only the listed ones: a missing one imports in a checkout and fails installed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_for_installation() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "supervisor").rglob("__init__.py")
    }
    mapped = set(config["tool"]["setuptools"]["package-dir"])  # admin/ and templates/
    assert listed == found | mapped
