"""What the update asks of the charger it runs on, as one small interface.

The firmware core decides *when* to ask; the charger (in production `service.policy`, which runs
the integrator's commands) decides the answer. Every question that can take long is given the
job's cancel event and must return promptly once it is set (a command's process group is
killed), so a new request never waits behind a stuck gate or image check.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Protocol


class Charger(Protocol):
    def problems(self) -> list[str]:
        """What would make an update fail here (slots, boot env, tools, roots, sandbox), one
        line each naming the fix; a request is Rejected while any stands."""
        ...

    def boot_id(self) -> str:
        """The kernel's boot id: new at every boot, so a restart is told from a reboot."""
        ...

    def may_install(self, cancel: threading.Event) -> bool:
        """The install gate: may the charger be disturbed now (no session running)?"""
        ...

    def check_image(self, facts: Mapping[str, str], cancel: threading.Event) -> tuple[bool, str]:
        """The integrator's image check on the written slot: (accepted, reason)."""
        ...

    def healthy(self) -> tuple[bool, str]:
        """Is the system running from the trial slot healthy: (healthy, reason)."""
        ...

    def reboot(self, argv: Sequence[str]) -> None:
        """Start the reboot; a failure is logged (the saved phase redoes it on start)."""
        ...
