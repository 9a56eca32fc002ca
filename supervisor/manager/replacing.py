"""``replace(obj, **changes)``: ``dataclasses.replace`` for the manager's frozen values, faster.

The state machine copies its frozen ``Slot`` (and plans, runs) with a change or two on
every event. ``dataclasses.replace`` walks the class's fields in Python each time,
checking each one's kind and ``init`` flag and reading its value by name. Here that walk
is done once per class: it yields a small function, made from source as ``dataclasses``
makes ``__init__``, that reads every field into a dict display
(``{"options": obj.options, ...}``), applies the changes and calls the class. The class's
``__init__`` (and ``__post_init__``) runs as with the stdlib, and an unknown field name
raises the same ``TypeError`` (the class's own, about an unexpected keyword).

A class with an ``init=False`` field or a pseudo-field (an ``InitVar``; a ``ClassVar``
too, for simplicity) takes ``dataclasses.replace`` itself: there the old values are not
simply the class's arguments (an ``init=False`` field is computed, an ``InitVar`` is no
attribute), and the stdlib's own checks and errors apply. So does anything that is not a
dataclass instance (the stdlib raises its ``TypeError``).

The cache maps a class to what was found about it, which never changes, filled on first
use; it is the only state of the module.

May import the stdlib only.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

# A class's quick path: (an instance, the changes) -> the copy.
Copier = Callable[[Any, dict[str, Any]], Any]

# A class -> its quick path, or None: use ``dataclasses.replace``.
_QUICK: dict[type, Copier | None] = {}


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of the dataclass instance ``obj`` with ``changes``, as
    ``dataclasses.replace(obj, **changes)`` makes it (the same value, the same errors)."""
    cls = type(obj)
    try:
        copier = _QUICK[cls]
    except KeyError:
        copier = _QUICK[cls] = quick_path(cls)
    if copier is None:
        return dataclasses.replace(obj, **changes)
    return cast("T", copier(obj, changes))


def quick_path(cls: type) -> Copier | None:
    """The quick path of ``cls``, or None where only ``dataclasses.replace`` is right (not
    a dataclass; an ``init=False`` field; an ``InitVar`` or ``ClassVar`` pseudo-field)."""
    if not dataclasses.is_dataclass(cls):
        return None
    fields = dataclasses.fields(cls)  # the regular fields, without pseudo-fields
    if len(fields) != len(cls.__dataclass_fields__):
        return None
    names = [field.name for field in fields]
    if not all(field.init for field in fields) or not all(map(_plain_name, names)):
        return None
    values = ", ".join(f"{name!r}: obj.{name}" for name in names)
    source = (
        "def copy(obj, changes):\n"
        f"    values = {{{values}}}\n"
        "    values.update(changes)\n"
        "    return cls(**values)\n"
    )
    namespace: dict[str, Any] = {"cls": cls}
    # Source of our own making from the field names alone (identifiers, checked above).
    exec(compile(source, f"<replace {cls.__qualname__}>", "exec"), namespace)  # noqa: S102
    return cast("Copier", namespace["copy"])


def _plain_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)
