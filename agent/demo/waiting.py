"""How long the demo's and the tests' waits may last before they call it a hang."""

from __future__ import annotations

import os

HANG_GUARD_VARIABLE = "FW_AGENT_TEST_HANG_GUARD"


def hang_guard() -> float:
    """The shortest deadline a wait may have, in seconds (0 = none). The test suite sets it:
    a deadline there only catches a hang, so a loaded machine must be slow, never a failure."""
    try:
        return max(0.0, float(os.environ.get(HANG_GUARD_VARIABLE, "0")))
    except ValueError:
        return 0.0


def deadline(seconds: float) -> float:
    """`seconds`, or the hang guard if that is longer: for a wait's timeout argument."""
    return max(seconds, hang_guard())
