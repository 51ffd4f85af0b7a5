"""The install gate in API mode: the host's `allow_installation`, then the integrator's command.

The host stack knows whether a session runs and makes the connectors inoperative before it
allows the reboot (EVerest's `allow_firmware_installation`), so the agent never decides that
itself (L01.FR.06). The first question for an update answers at once (the job reports
InstallScheduled, L01.FR.34); later ones wait up to `gate_poll_interval` for the allowance, so
an `allow_installation` moves the update on within moments, and return as soon as the job's
cancel event is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.config import Config
from agent.service.policy import CommandCharger
from agent.slots.base import BootBackend

LOG = logging.getLogger(__name__)
CANCEL_SLICE = 0.2  # seconds: how soon a wait for the allowance notices a cancel


class HostGate(CommandCharger):
    """The integrator's charger whose install gate also needs the host's allowance."""

    def __init__(
        self, config: Config, backend: BootBackend, current: Callable[[], int | None]
    ) -> None:
        super().__init__(config, backend)
        self._current = current  # the request id of the update that asks
        self._allowed: set[int] = set()
        self._asked: int | None = None  # the update that was told "not yet" already
        self._cond = threading.Condition()
        self.waiting: int | None = None  # the update waiting for allow_installation, if any

    def allow(self, request_id: int) -> None:
        with self._cond:
            self._allowed.add(request_id)
            self._cond.notify_all()
        LOG.info("install gate: the host allowed the installation of update %s", request_id)

    def may_install(self, cancel: threading.Event) -> bool:
        request_id = self._current()
        if request_id is None or not self._await_allowance(request_id, cancel):
            return False
        self.waiting = None
        return super().may_install(cancel)

    def _await_allowance(self, request_id: int, cancel: threading.Event) -> bool:
        with self._cond:
            if request_id in self._allowed:
                return True
            if self._asked != request_id:  # the first question: answered now
                self._asked = request_id
                self.waiting = request_id
                LOG.info("install gate: update %s waits for allow_installation", request_id)
                return False
            deadline = time.monotonic() + self._config.firmware.gate_poll_interval
            while request_id not in self._allowed and not cancel.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, CANCEL_SLICE))
            return request_id in self._allowed and not cancel.is_set()
