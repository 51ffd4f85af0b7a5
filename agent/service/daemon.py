"""The daemon: config → persisted state → CSMS session → firmware updater, in one event loop.

One thread owns the protocol state. The transport thread and the firmware worker hand it work
through a queue (`post`), so nothing but the loop touches the session. The loop pets the systemd
watchdog: if it stops turning, systemd restarts the daemon. READY=1 is sent once the state is
loaded and the loop runs, whether or not the CSMS is reachable.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from agent.api.events import status_call as api_status_call
from agent.api.mode import Api
from agent.config import Config, ConfigError, CsmsConfig
from agent.durable import StateWriteError
from agent.firmware import certs
from agent.firmware.charger import Charger
from agent.firmware.clock import TrustedClock
from agent.firmware.reporting import Reporter, signed_status_call
from agent.firmware.updater import Updater
from agent.ocpp import v16, v201
from agent.ocpp.connection import (
    CertificateRejected,
    Connected,
    Disconnected,
    Received,
    Transport,
    TransportEvent,
)
from agent.ocpp.devicemodel import Settings
from agent.ocpp.dialect import DIALECTS
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Session
from agent.security.certstore import CertStore, configured_stores
from agent.security.cpcert import ChargePointCertificate
from agent.security.credentials import ConnectionSettings
from agent.security.handlers import SecurityHandlers
from agent.security.handlers2x import SIGN_TRIGGER, CertificateHandlers2x
from agent.security.profile2x import NetworkProfiles, Profile2x
from agent.service import policy
from agent.service import status as status_file
from agent.service.availability import Availability, GuardedCharger, observing
from agent.service.systemd import Notifier
from agent.service.v2x_adapter import (
    V2xAdapter,
    boot_reason,
    direct_device_model,
    firmware_status_call,
)
from agent.sidecar.mode import Sidecar, TransactionGate
from agent.slots.base import BootBackend, SerializedBackend

LOG = logging.getLogger(__name__)
OUTBOX_FILE = "outbox.json"
STATUS_INTERVAL = 1.0
DRAIN_SECONDS = 2.0  # at SIGTERM, how long an answer to our CALL in flight is awaited
# Test-only: while the file this names exists, the loop blocks (proves the watchdog works).
HANG_FILE_ENV = "OCPP_FW_AGENT_TEST_HANG_FILE"


class _Stop:
    """Posted by the signal handler."""


Task = Callable[[], None]


class Daemon:
    def __init__(
        self, config: Config, backend: BootBackend, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        # SimpleQueue.put is reentrant: the SIGTERM handler may post while the interrupted loop
        # is inside get(). With queue.Queue that deadlocks on its mutex.
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # API mode: no websocket; statuses and security events become the API's events.
        self.api = Api(config, self.post) if config.csms.mode == "api" else None
        if self.api is not None:
            self.outbox: Outbox = self.api.events
        else:
            self.outbox = Outbox(
                config.state_dir / OUTBOX_FILE,
                on_change=self.wake,
                max_entries=config.csms.outbox_max_entries,
                max_bytes=config.csms.outbox_max_bytes,
            )
        dialect = DIALECTS[config.csms.ocpp_version]
        payloads = dialect.payloads  # the 2.x payload types; None for 1.6
        status_call = signed_status_call if payloads is None else firmware_status_call(payloads)
        # Direct 2.x: the agent owns a small device model and reports connector availability.
        self.availability: Availability | None = None
        settings = Settings(config.state_dir) if payloads is not None else None
        if settings is not None and config.csms.mode == "direct":
            station = config.station
            self.availability = Availability(
                settings,
                station.connectors,
                station.session_block,
                self.outbox.append,
                lambda: (self.reporter.last() or (None, None))[0],
            )
            status_call = observing(status_call, self.availability)
        self.reporter = Reporter(self.outbox, api_status_call if self.api else status_call)
        self.session = Session(
            self.outbox,
            self._boot_request,
            dialect=dialect,
            call_timeout=config.csms.call_timeout,
            heartbeat_interval=config.csms.heartbeat_interval,
            own_registration=config.csms.mode != "sidecar",
        )
        # The connection's keys and CA stores, which the CSMS may change (1.6 security white
        # paper A01, A05, M03-M05): the transport asks for them at each attempt.
        self.certstore = CertStore(
            config.state_dir / "certs",
            configured_stores(config.csms.ca_file, config.firmware.manufacturer_roots),
            certs.policy_from_config(config.firmware),
            csms_manages_manufacturer_roots=config.firmware.csms_manages_manufacturer_roots,
        )
        self.certstore.load()
        identity = config.identity
        serial = identity.serial_number or identity.charge_box_serial_number
        self.cpcert = ChargePointCertificate(
            config.state_dir / "certs" / "charge-point", serial or config.csms.charge_point_id
        )
        self.cpcert.load()
        self.credentials = ConnectionSettings(
            config.csms,
            config.state_dir,
            csms_roots=self.certstore.csms_roots_file,
            client_certificate=self.cpcert.current,
            tls_url=config.csms.tls_url,
            on_fallback=self._profile_fell_back,
        )
        self.transport = Transport(config.csms, self._events.put, settings=self._attempt)
        self.security = SecurityHandlers(
            self.credentials,
            self.certstore,
            self.reporter,
            reconnect=self.transport.drop,
            peer_certificate=self.transport.peer_certificate,
            charge_point_certificate=self.cpcert,
        )
        # 2.x: the same store and certificate in 2.x words (M03-M05, A02).
        self.certificates: CertificateHandlers2x | None = None
        if payloads is not None and self.api is None:
            self.certificates = CertificateHandlers2x(self.security, self.certstore, self.cpcert)
        # 2.x: the connection's password, profile and network profiles (A01, A05, B09, B10).
        self.profile2x: Profile2x | None = None
        if payloads is not None and self.api is None:
            version = config.csms.ocpp_version
            self.profile2x = Profile2x(
                self.credentials,
                NetworkProfiles(config.state_dir),
                self.reporter,
                charge_point_id=config.csms.charge_point_id,
                ocpp_version=version,
                reconnect=self.transport.drop,
                payloads=payloads,
                new_csms=self._new_csms,
                organization=self.cpcert,
            )
            self.profile2x.register(self.session, reset=config.csms.mode == "direct")
        serialized = SerializedBackend(backend)  # the worker, the loop and the checks share it
        self.sidecar: Sidecar | None = None
        charger: Charger = policy.CommandCharger(config, serialized)
        if config.csms.mode == "sidecar":
            self.sidecar = Sidecar(
                config,
                self.session,
                self.transport.send,
                self._events.put,
                self.security if payloads is None else self.certificates,
                self.profile2x,
            )
            charger = TransactionGate(config, serialized, self.sidecar.router.transactions_running)
        if self.api is not None:
            charger = self.api.charger(serialized)
        if self.availability is not None:
            charger = GuardedCharger(charger, self.availability)
        # The firmware check reads the manufacturer roots from the store (agent.toml's and
        # those the CSMS installed).
        roots = self.certstore.manufacturer_dir
        self.updater = Updater(
            dataclasses.replace(
                config, firmware=dataclasses.replace(config.firmware, manufacturer_roots=roots)
            ),
            self.reporter,
            serialized,
            TrustedClock(self.api.csms_offset if self.api else lambda: self.session.csms_offset),
            charger,
            wait_delivered=self.outbox.wait_delivered,
            post=self.post,  # online certificate checks answer from a helper thread
        )
        self._v2x: V2xAdapter | None = None
        if self.api is not None:  # before updater.start(): the saved job says why we booted
            phase = (self.updater.snapshot() or {}).get("phase")
            self.api.attach(self.updater, boot_reason(phase).value)
        elif payloads is None:
            self.session.route(
                v16.Action.SIGNED_UPDATE_FIRMWARE,
                self.updater.on_call,  # answered later when the check asks online
                self.updater.after_request,
            )
            self.session.route(
                v16.Action.EXTENDED_TRIGGER_MESSAGE, self._on_trigger, self._after_trigger
            )
            self.session.route(v16.Action.TRIGGER_MESSAGE, self._on_trigger, self._after_trigger)
            self.security.register(self.session)
        else:  # before updater.start(): the saved job's phase says why we booted
            job = self.updater.snapshot() or {}
            reason = boot_reason(job.get("phase"))
            device = None
            if self.availability is not None and settings is not None:
                assert self.profile2x is not None
                device = direct_device_model(
                    config,
                    self.session,
                    settings,
                    self.profile2x.variables(),
                    self.profile2x.after_set_variables,
                )
            self._v2x = V2xAdapter(
                config.identity,
                self.session,
                self.updater,
                reason,
                payloads,
                device,
                self.availability,
            )
            if self.certificates is not None:  # in direct and sidecar mode alike
                certificates = self.certificates
                certificates.register(self.session)
                self._v2x.add_trigger(
                    SIGN_TRIGGER,
                    certificates.sign_trigger,
                    certificates.after_sign_trigger,
                    certificates.sign_refusal,
                )
        self.session.on_accepted(self.updater.csms_accepted)
        self._generation = 0
        self._running = False
        self._status_due = 0.0
        self._last_status_line = ""
        self._publish_error = ""
        self._last_snapshot: dict[str, Any] = {}
        self._hang_file = os.environ.get(HANG_FILE_ENV)

    # --- cross-thread API -------------------------------------------------------------------

    def wake(self) -> None:
        """Make the loop look at its queues again (the outbox grew)."""
        self._events.put(None)

    def post(self, task: Task) -> None:
        """Run `task` on the loop's thread (the only one that may touch the session)."""
        self._events.put(task)

    def stop(self) -> None:
        self._events.put(_Stop())

    def _attempt(self) -> CsmsConfig:
        """The settings of the next connection attempt (transport thread): a new charge point
        certificate that keeps failing gives way to the previous one first."""
        if self.credentials.profile == 3 and self.cpcert.attempt():
            why = "new charge point certificate: no connection; back to the previous one"
            self.reporter.security_event(
                v16.SecurityEvent.RECONFIGURATION_OF_SECURITY_PARAMETERS, why
            )
        return self.credentials.current()

    def _connected_with_credentials(self) -> None:
        """The CSMS took a connection: what was on trial (a raised profile, a new charge
        point certificate under profile 3) is what the charger uses now."""
        self.credentials.connected()
        if self.credentials.profile == 3:
            self.cpcert.connected()

    def _profile_fell_back(self, new: int, old: int) -> None:
        """The transport thread gave up on a raised profile (A05.FR.08): the CSMS hears of it
        (the outbox takes events from any thread, as from the firmware worker)."""
        why = f"SecurityProfile {new}: no connection; back to profile {old}"
        self.reporter.security_event(v16.SecurityEvent.RECONFIGURATION_OF_SECURITY_PARAMETERS, why)

    def _new_csms(self) -> None:
        """2.x: the next connection uses another network profile (B10): the station registers
        there first; in direct mode the BootNotification says why (a remote reset)."""
        if self._v2x is not None:
            self._v2x.reason = v201.BootReason.REMOTE_RESET
        self.session.register_again()

    # --- BootNotification and triggers ------------------------------------------------------

    def _boot_request(self) -> Any:
        if self._v2x is not None:
            return self._v2x.boot_request()
        identity = self.config.identity
        return v16.BootNotificationReq(
            charge_point_vendor=identity.vendor,
            charge_point_model=identity.model,
            charge_point_serial_number=identity.serial_number,
            charge_box_serial_number=identity.charge_box_serial_number,
            firmware_version=identity.current_firmware_version(),
            iccid=identity.iccid,
            imsi=identity.imsi,
            meter_type=identity.meter_type,
            meter_serial_number=identity.meter_serial_number,
        )

    _TRIGGERABLE = frozenset({"BootNotification", "Heartbeat", "FirmwareStatusNotification"})

    def _on_trigger(self, request: Any) -> v16.TriggerMessageConf:
        if request.requested_message.value == v16.ExtendedTrigger.SIGN_CHARGE_POINT_CERTIFICATE:
            return self.security.sign_trigger()
        if request.requested_message.value in self._TRIGGERABLE:
            return v16.TriggerMessageConf(status=v16.TriggerStatus.ACCEPTED)
        return v16.TriggerMessageConf(status=v16.TriggerStatus.NOT_IMPLEMENTED)

    def _after_trigger(self, request: Any, conf: v16.TriggerMessageConf) -> None:
        """The .conf went out first (OCPP 1.6 §5.17); now the triggered message."""
        if conf.status is not v16.TriggerStatus.ACCEPTED:
            return
        wanted = request.requested_message.value
        if wanted == v16.ExtendedTrigger.SIGN_CHARGE_POINT_CERTIFICATE:
            self.security.after_sign_trigger()
        elif wanted == "FirmwareStatusNotification":
            # Answered with the *signed* notification (white paper §6.16, L01.FR.28/29).
            action = v16.Action.SIGNED_FIRMWARE_STATUS_NOTIFICATION
            self.session.send_live(action, self.reporter.triggered())
        elif wanted == "Heartbeat":
            self.session.send_live(v16.Action.HEARTBEAT, v16.HeartbeatReq())
        elif wanted == "BootNotification":
            self.session.request_boot_notification()

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        self._install_signal_handlers()
        if self.sidecar is not None:
            self.sidecar.start()
        if self.api is not None:
            self.api.start()
        else:
            self.transport.start()
        self.updater.start()
        self._running = True
        self._publish(force=True)
        self.notifier.ready(self._status_line(self.snapshot()))
        LOG.info("ocpp-fw-agent running; state in %s", self.config.state_dir)
        next_watchdog = time.monotonic()
        next_ping = time.monotonic() + self.config.csms.ping_interval
        while self._running:
            now = time.monotonic()
            if self.notifier.watchdog_interval is not None and now >= next_watchdog:
                self._hang_if_asked()
                self.notifier.watchdog()
                next_watchdog = now + self.notifier.watchdog_interval
            if self.config.csms.ping_interval > 0 and now >= next_ping:
                self.transport.ping()
                next_ping = now + self.config.csms.ping_interval
            idle = self.session.poll()
            if self.sidecar is not None:
                idle = min(idle, self.sidecar.router.poll())
            self._publish()
            if self.api is not None:
                self.api.tick()
            timeout = min(idle, STATUS_INTERVAL)
            if self.config.csms.ping_interval > 0:
                timeout = min(timeout, next_ping - now)
            if self.notifier.watchdog_interval is not None:
                timeout = min(timeout, next_watchdog - now)
            try:
                event = self._events.get(timeout=max(0.0, timeout))
            except queue.Empty:
                continue
            self._handle(event)
        self._shutdown()
        return 0

    def _handle(self, event: Any) -> None:
        """One event's failure is logged with its traceback and the loop goes on: the other
        events (the CSMS link, the stack, the update) must not die with it. A configuration
        error and anything not an Exception (SystemExit, KeyboardInterrupt) still end the
        daemon, as does MemoryError (systemd restarts it afresh)."""
        try:
            self._dispatch(event)
        except (ConfigError, MemoryError):
            raise
        except Exception:
            LOG.exception("handling %s failed; going on", type(event).__name__)

    def _dispatch(self, event: Any) -> None:
        if event is None or (self.sidecar is not None and self._sidecar_handle(event)):
            return
        if isinstance(event, _Stop):
            LOG.info("stopping")
            self._running = False
        elif isinstance(event, Connected):
            self._generation = event.generation
            self._connected_with_credentials()
            self.session.connected_with(self.transport.send)
        elif isinstance(event, Received):
            self.transport.consumed()  # the reader may read the next message (bounded queue)
            if event.generation == self._generation:
                self.session.receive(event.text)
        elif isinstance(event, Disconnected):
            if event.generation == self._generation:
                self.session.disconnected()
        elif isinstance(event, CertificateRejected):
            invalid: str = v16.SecurityEvent.INVALID_CENTRAL_SYSTEM_CERTIFICATE
            if self.certificates is not None:  # 2.x's name for it
                invalid = v201.SecurityEvent.INVALID_CSMS_CERTIFICATE
            self.reporter.security_event(invalid, event.reason)
        else:
            event()

    def _sidecar_handle(self, event: TransportEvent | object) -> bool:
        """Sidecar mode: the CSMS link's events go through the router, the stack's to it."""
        assert self.sidecar is not None
        router = self.sidecar.router
        if isinstance(event, Connected):
            self._generation = event.generation
            self._connected_with_credentials()
            router.csms_connected()
        elif isinstance(event, Received):
            self.transport.consumed()
            if event.generation == self._generation:
                router.from_csms(event.text)
        elif isinstance(event, Disconnected):
            if event.generation == self._generation:
                router.csms_disconnected()
        else:
            return self.sidecar.handle(event)
        return True

    def _drain(self, seconds: float) -> None:
        """Give a CALL in flight a moment for its answer: a status whose CALLRESULT arrives
        after we stopped listening is sent again at the next start (at least once), which a
        CSMS would see twice."""
        deadline = time.monotonic() + seconds
        while self.session.outstanding and (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self._events.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if isinstance(event, Received | Disconnected):
                self._handle(event)

    def _hang_if_asked(self) -> None:
        if self._hang_file:
            while Path(self._hang_file).exists():
                time.sleep(0.2)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        self.updater.stop()
        self._drain(DRAIN_SECONDS)
        if self.sidecar is not None:
            self.sidecar.server.stop()
        if self.api is not None:
            self.api.stop()
        else:
            self.transport.stop()
        self.session.disconnected()
        self._publish(force=True, stopped=True)
        LOG.info("stopped; %d message(s) kept in the outbox", len(self.outbox))

    # --- status -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        snap = {
            "connection": "connected" if self.session.connected else "offline",
            "connection_error": self.transport.last_error,
            "registration": self.session.registration.value,
            "queued": len(self.outbox),
            "job": self.updater.snapshot(),
            "problems": self.updater.problems,
            "revocation": certs.revocation_status(),
        }
        if (
            self._v2x is None and self.api is None
        ):  # the profile in use, which the CSMS may have raised (A05)
            snap["security_profile"] = self.credentials.profile
        if self.sidecar is not None:  # sidecar mode: is the charger's OCPP stack with us?
            snap["stack"] = "connected" if self.sidecar.router.stack_up else "offline"
        if self.api is not None:  # API mode: no websocket; the host's connections instead
            clients = self.api.server.clients
            snap["connection"] = f"local API ({clients} client{'' if clients == 1 else 's'})"
            snap["registration"] = "kept by the host"
            snap["api_clients"] = clients
        return snap

    @staticmethod
    def _status_line(snap: dict[str, Any]) -> str:
        line = f"{snap['connection']}, {snap['registration']}, {snap['queued']} queued"
        job = snap.get("job")
        if job:
            line += f", update {job.get('request_id')}: {job.get('phase')}"
        return line

    def _publish(self, force: bool = False, stopped: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._status_due:
            return
        self._status_due = now + STATUS_INTERVAL
        snap = self.snapshot()
        if stopped:
            snap["connection"] = "stopped"
        if force or snap != self._last_snapshot:  # unchanged: spare the flash a write
            self._last_snapshot = snap
            try:
                status_file.publish(self.config.state_dir, snap)
            except StateWriteError as exc:  # only what `status` shows goes stale
                if str(exc) != self._publish_error:
                    LOG.warning("cannot publish the status: %s", exc)
                self._publish_error = str(exc)
            else:
                self._publish_error = ""
        line = self._status_line(snap)
        if line != self._last_status_line:
            self._last_status_line = line
            self.notifier.status(line)
