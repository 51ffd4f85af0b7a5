"""The stand-in when `[slots]` names no devices: the agent talks OCPP but refuses updates.

`self_check()` reports the missing configuration, so a SignedUpdateFirmware is answered
`Rejected` with the reason in the log, and `ocpp-fw-agent status` shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agent.slots.base import BackendError, BootObservation, Capabilities

PROBLEM = "no A/B slots configured ([slots] devices)"


class UnconfiguredBackend:
    name = "unconfigured"
    slots: Mapping[str, Path] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(trial_attempts=0, persistent_bad_mark=False, atomic_switch=False)

    def self_check(self) -> list[str]:
        return [PROBLEM]

    def _refuse(self, *args: object) -> None:
        raise BackendError(PROBLEM)

    def observe(self) -> BootObservation:
        raise BackendError(PROBLEM)

    mark_bad = arm_trial = commit = abandon_trial = _refuse

    def reboot_argument(self) -> str | None:
        return None
