"""Byte sizes for retention limits."""

from __future__ import annotations

import pytest

from supervisor.core.errors import DefinitionError
from supervisor.core.sizes import parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("1MiB", 1 << 20), ("512KiB", 512 * 1024), ("10MB", 10**7), ("1.5k", 1500)],
)
def test_sizes_parse(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "1 parsec", "-5", "MiB"])
def test_bad_sizes_name_the_field(text: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_size(text, field="--max-log-per-run")
    assert caught.value.field == "--max-log-per-run"
