"""Telling people without them looking: notifications on failure, recovery and runs that
did not happen when expected, delivered by webhook (signed JSON) or email.

May import ``core`` and the stdlib. The manager feeds it run ends and planned times; it
never blocks the manager (delivery happens on its own thread).
"""

from supervisor.notify.config import Notifications, enable
from supervisor.notify.targets import Email, Webhook

__all__ = ["Email", "Notifications", "Webhook", "enable"]
