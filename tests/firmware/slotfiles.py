"""File slots for the writer tests: pre-allocated (sparse), as the daemon requires."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SIZE = 8 << 20


def new_slot(path: Path, size: int = DEFAULT_SIZE) -> Path:
    """`path` as a file slot of at least `size` bytes (existing content kept)."""
    with path.open("ab"):
        pass
    if path.stat().st_size < size:
        os.truncate(path, size)
    return path
