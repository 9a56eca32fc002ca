"""Fixtures shared across test modules."""

from tests.launching import launcher
from tests.systemd_ns import systemd_namespace

__all__ = ["launcher", "systemd_namespace"]
