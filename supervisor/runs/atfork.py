"""Leaving out the standard library's lock-resetting fork hooks in the fork server.

``threading`` and ``logging`` register fork hooks (``os.register_at_fork``) that make
fresh locks in the child, in case another thread held one when the process forked;
``logging``'s also takes its module lock in the parent around each fork. In a process
with one thread, which holds none of those locks when it forks (the fork server forks
from its loop), they re-create locks nobody holds, and being the first Python code a
child runs they cost it some 140 page copies (about a tenth of a run's CPU).

``drop_lock_hooks`` removes exactly those hooks from the interpreter's fork hook lists,
where it can tell that this is safe: CPython 3.11 (whose hooks were read for this), one
thread alive and no other ``Thread`` object left, each hook found in one list. Any other
hook (the app's, ``random``'s reseed, ...) keeps running. Call it in the fork server after
the app is loaded (the app may have started threads) and before ``gc.freeze``.

May import the stdlib only.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any


def lock_hooks() -> list[Callable[..., Any]]:
    """The hooks ``drop_lock_hooks`` removes (none where it would not)."""
    if sys.version_info[:2] != (3, 11):
        return []
    names = (
        (threading, "_after_fork"),  # after_in_child
        (logging, "_acquireLock"),  # before
        (logging, "_releaseLock"),  # after_in_parent
        (logging, "_after_at_fork_child_reinit_locks"),  # after_in_child
    )
    hooks = [getattr(module, name, None) for module, name in names]
    return [hook for hook in hooks if callable(hook)] if all(hooks) else []


def drop_lock_hooks() -> bool:
    """Remove ``threading``'s and ``logging``'s lock-resetting fork hooks from this
    (single-threaded) process; False, and nothing removed, where that is not known safe."""
    hooks = lock_hooks()
    if not hooks or not _alone():
        return False
    found: list[list[object]] = []
    for hook in hooks:
        holders = [
            o
            for o in gc.get_referrers(hook)
            if type(o) is list and o is not hooks and _is_hook_list(o)
        ]
        if len(holders) != 1:
            return False
        found.append(holders[0])
    for hook, holder in zip(hooks, found, strict=True):
        holder.remove(hook)
    return True


def _alone() -> bool:
    """Only the main thread, and no other ``Thread`` object whose locks a hook resets."""
    dangling = getattr(threading, "_dangling", None)
    return (
        threading.active_count() == 1
        and threading.current_thread() is threading.main_thread()
        and (dangling is None or all(t is threading.main_thread() for t in list(dangling)))
    )


def _is_hook_list(candidate: list[object]) -> bool:
    """A list of nothing but callables (the interpreter's fork hook lists are)."""
    return all(callable(item) for item in candidate)
