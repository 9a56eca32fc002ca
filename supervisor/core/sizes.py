"""Byte sizes as operators write them: ``1MiB``, ``512KiB``, ``10MB``, ``4096``.

May import ``errors`` and the stdlib only.
"""

from __future__ import annotations

import re

from supervisor.core.errors import DefinitionError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str, *, field: str = "size") -> int:
    """A whole number of bytes; raises ``DefinitionError(field, ...)`` for anything else."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise DefinitionError(field, f"{text!r} is not a size (e.g. 4096, 512KiB, 1MiB)")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise DefinitionError(field, f"{text!r} must be more than zero bytes")
    return value
