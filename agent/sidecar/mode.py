"""Sidecar mode's parts put together for the daemon: the stack's server, the router, the gate."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.config import Config, ConfigError
from agent.ocpp.devicemodel import DeviceModel
from agent.ocpp.dialect import DIALECTS
from agent.ocpp.session import Session
from agent.security.handlers import SecurityHandlers
from agent.security.handlers2x import CertificateHandlers2x
from agent.security.profile2x import Profile2x
from agent.service.policy import CommandCharger
from agent.sidecar.router import Router, TransactionId
from agent.sidecar.wsserver import StackConnected, StackDisconnected, StackReceived, StackServer
from agent.slots.base import BootBackend

LOG = logging.getLogger(__name__)


class Sidecar:
    """Owns the stack's server and the router; `handle` takes the server's events."""

    def __init__(
        self,
        config: Config,
        session: Session,
        send_csms: Callable[[str], None],
        post: Any,
        security: SecurityHandlers | CertificateHandlers2x | None = None,
        network: Profile2x | None = None,
    ) -> None:
        dialect = DIALECTS[config.csms.ocpp_version]  # the stack speaks what the CSMS does
        self.server = StackServer(
            config.sidecar.address,
            config.csms.charge_point_id,
            post,
            accepting=lambda: self.router.csms_up,
            subprotocol=dialect.subprotocol,
        )
        self.router = Router(
            session,
            send_csms,
            self.server.send,
            self.server.drop,
            refuse_update_firmware=config.sidecar.update_firmware == "refuse",
            call_timeout=config.csms.call_timeout,
            security=security,
            dialect=dialect,
            # 2.x: the connection's variables are the agent's, answered as in direct mode.
            device=self._device(session, network) if network is not None else None,
            on_reset=network.apply_priority if network is not None else lambda: None,
        )
        self._generation = 0
        self._config = config

    @staticmethod
    def _device(session: Session, network: Profile2x) -> DeviceModel:
        """The agent's variables; all-agent Get/SetVariables reach the session, which answers
        them from this table (the split ones are answered by the router)."""
        device = DeviceModel(network.variables(), session.send_live, network.after_set_variables)
        session.route("GetVariables", device.get_variables)
        session.route("SetVariables", device.set_variables, device.after_set_variables)
        return device

    def start(self) -> None:
        """Listen for the stack; a port that cannot be had stops the daemon with one line."""
        try:
            self.server.start()
        except OSError as exc:
            listen = self._config.sidecar.listen
            raise ConfigError(
                f"{self._config.source}: [sidecar] listen: cannot listen on {listen}: "
                f"{exc.strerror or exc}"
            ) from None

    def handle(self, event: object) -> bool:
        """True when `event` was the server's."""
        if isinstance(event, StackConnected):
            self._generation = event.generation
            self.router.stack_connected()
        elif isinstance(event, StackReceived):
            self.server.consumed()
            if event.generation == self._generation:
                self.router.from_stack(event.text)
        elif isinstance(event, StackDisconnected):
            if event.generation == self._generation:
                self.router.stack_disconnected()
        else:
            return False
        return True


class TransactionGate(CommandCharger):
    """The integrator's charger, whose install gate is also closed while the stack has a
    transaction running (L01.FR.06: never cut a charging session), no command needed."""

    def __init__(
        self, config: Config, backend: BootBackend, running: Callable[[], list[TransactionId]]
    ):
        super().__init__(config, backend)
        self._running = running
        self._said: list[TransactionId] = []

    def may_install(self, cancel: threading.Event) -> bool:
        running = self._running()
        if running:
            if running != self._said:
                LOG.info("install gate closed: transaction(s) %s running", running)
            self._said = running
            return False
        self._said = []
        return super().may_install(cancel)
