"""What every layer means by "the slots": exactly two, A and B, and where the agent keeps state.

The configuration check, the backend loader, every backend and the bootloader observation all
refuse anything but a pair with the same words; this is the one place that says so. It imports
nothing from the agent, so agent/config.py can use it without pulling a backend in.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Final

SLOT_COUNT: Final = 2
DEFAULT_STATE_DIR: Final = Path("/var/lib/ocpp-fw-agent")


def pair_problem(names: Collection[object]) -> str | None:
    """None for two distinct slot names; otherwise what is wrong, for the caller's error."""
    if len(names) == SLOT_COUNT and len(set(names)) == SLOT_COUNT:
        return None
    return f"expected exactly two slots, got {sorted(str(name) for name in names)}"
