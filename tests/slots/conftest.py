"""Fixtures for the slot backend tests: one rig per backend variant (see slot_rigs.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from slot_rigs import RIGS, Rig


@pytest.fixture(params=sorted(RIGS))
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    """Every backend, on real tools where they exist, booted into slot A."""
    made = RIGS[request.param](tmp_path)
    yield made
    made.close()
