"""The developer-facing user namespace: ``user.su()``, ``user.with_role(...)``.

Only re-exports; subjects, permissions and roles live in ``core.access``.
"""

from supervisor.core.access import ROLES, Permission, Subject, os_user_name, su, with_role

__all__ = ["ROLES", "Permission", "Subject", "os_user_name", "su", "with_role"]
