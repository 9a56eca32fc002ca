"""Fixtures shared across test modules."""

from tests.systemd_ns import systemd_namespace

__all__ = ["systemd_namespace"]
