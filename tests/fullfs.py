"""A real, small file system that tests can fill up and free again (a 2 MiB tmpfs).

Mounting needs root; ``small_filesystem`` skips, saying why, when it cannot mount. The
mount lives inside the test's own temporary directory and is unmounted afterwards.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE = "2m"


class SmallFilesystem:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._filler = root / "filler"

    def fill(self) -> int:
        """Write a filler file until the file system is full; how many bytes it took."""
        written = 0
        chunk = b"\0" * 4096
        with self._filler.open("ab", buffering=0) as file:
            while True:
                try:
                    written += file.write(chunk) or 0
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
        return written

    def free(self) -> None:
        """Delete the filler: the space is there again."""
        self._filler.unlink(missing_ok=True)

    def available(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[SmallFilesystem]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    root = tmp_path / "small-fs"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield SmallFilesystem(root)
    finally:
        result = subprocess.run(["umount", str(root)], capture_output=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False)
