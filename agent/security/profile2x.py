"""OCPP 2.0.1 and 2.1: the CSMS connection's password and security profile are the agent's.

The agent holds the one connection to the CSMS (direct and sidecar mode), so what describes it
is answered by the agent and never by the charger's stack; `ConnectionSettings` keeps it and
the transport asks it at each attempt, as in 1.6.

- A01 `SecurityCtrlr.BasicAuthPassword` (SetVariables): WriteOnly, a passwordString of 16-40
  characters (A00.FR.205, part 2 §2.1.4), else Rejected `InvalidValue`; saved atomically, then
  (the answer out) the connection made again with it when the profile uses Basic auth;
  `ReconfigurationOfSecurityParameters` is sent. GetVariables answers `Rejected` and reports
  carry no value: the password is never returned, nor logged.
- `SecurityCtrlr.SecurityProfile`: ReadOnly, the profile in use.
- `SecurityCtrlr.OrganizationName` (A02, with the charge point certificate given): ReadWrite,
  the O= of the charging station certificate's CSR; 1-64 characters (X.520), saved atomically
  by `ChargePointCertificate.set_cpo_name` (the same name as 1.6's CpoName), then
  `ReconfigurationOfSecurityParameters`. Empty until one is set: the trigger
  SignChargingStationCertificate is Rejected until then.
- B09 `SetNetworkProfile`: kept per `configurationSlot` (1-`SLOTS`; slot 0 is agent.toml's
  connection and cannot be set) in `network_profiles.json`. Refused (Rejected + `statusInfo`):
  a securityProfile lower than the one in use (A05, no downgrade over OCPP) or outside 0-3; a
  profile the charger lacks credentials for (a password for 1/2, a CSMS root for 2/3, a valid
  charge point certificate for 3: A05.FR.02-04); a URL `[csms] url` would refuse (ws:// for
  0/1, wss:// for 2/3, a host); an ocppVersion other than this one's (2.0.1; ignored in 2.1,
  as its schema says); SOAP; an `apn` or `vpn` (the agent manages no modem nor VPN); in 2.1 an
  `identity` other than the charge point id and a `basicAuthPassword` (set it with
  SetVariables); a messageTimeout outside `TIMEOUT_MIN`-`TIMEOUT_MAX` s. `ocppInterface` is
  accepted and not used: the system's routing picks it.
- `OCPPCommCtrlr.NetworkConfigurationPriority` (SetVariables): a comma-separated list of slots,
  each 0 or a stored one, no repeats.
- B10/A05 Reset: the first slot of the priority becomes the connection (when it differs from
  the one in use and its profile is not lower; slot 0: back to agent.toml's): saved, the
  connection made again with it, `ReconfigurationOfSecurityParameters` sent. If
  `TRIAL_ATTEMPTS` attempts fail, the previous URL and profile are back and the CSMS is told
  (the same fallback as 1.6's A05.FR.08, `ConnectionSettings.switch`). In direct mode the
  agent answers Reset: Accepted when there is such a change to apply (the agent resets its
  connection, not the charger) and the charger holds what its profile needs (as for
  SetNetworkProfile: A05.FR.02-04), else Rejected. In sidecar mode Reset is the stack's; the agent
  applies the priority once the stack accepted it.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import csms_url_problem
from agent.durable import StateFileError, StateWriteError, atomic_write_json, read_json
from agent.firmware.reporting import Reporter
from agent.ocpp import v16, v201
from agent.ocpp.devicemodel import InvalidValue, Owned
from agent.ocpp.session import Session
from agent.security.cpcert import CPO_NAME_MAX, ChargePointCertificate
from agent.security.credentials import PASSWORD_MAX, ConnectionSettings
from agent.security.events import report

LOG = logging.getLogger(__name__)
PROFILES_FILE = "network_profiles.json"
VERSION = 1
SLOTS = 3  # configurationSlot 1..SLOTS; 0 is agent.toml's connection
# messageTimeout is the connection's CALL timeout; 2.0.1 gives no bound (an integer): one
# beyond an hour would stall the outbox behind a CALL that never times out.
TIMEOUT_MIN, TIMEOUT_MAX = 1, 3600
SECURITY, COMM = "SecurityCtrlr", "OCPPCommCtrlr"
PASSWORD, PROFILE, PRIORITY = "BasicAuthPassword", "SecurityProfile", "NetworkConfigurationPriority"
ORGANIZATION = "OrganizationName"
# The agent's variables in sidecar mode (the stack has every other one).
OWNED_IN_SIDECAR = frozenset(
    {(SECURITY, PASSWORD), (SECURITY, PROFILE), (SECURITY, ORGANIZATION), (COMM, PRIORITY)}
)
Reconfigured = v16.SecurityEvent.RECONFIGURATION_OF_SECURITY_PARAMETERS


class NetworkProfiles:
    """The slots the CSMS set and the priority, one JSON document written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / PROFILES_FILE
        self._lock = threading.Lock()
        self._slots: dict[int, dict[str, Any]] = {}
        self._priority: list[int] = [0]
        try:
            document = read_json(self._path, VERSION) or {}
        except StateFileError as exc:
            LOG.error("ignoring the saved network profiles: %s", exc)
            document = {}
        slots = document.get("slots", {})
        if isinstance(slots, dict):
            for key, value in slots.items():
                problem = _slot_problem(key, value)
                if problem is None:
                    self._slots[int(key)] = value
                else:  # a hand-edited file: checked here, not on the loop at Reset
                    LOG.error("ignoring network profile %.10r in %s: %s", key, self._path, problem)
        priority = document.get("priority")
        if isinstance(priority, list) and all(type(n) is int for n in priority) and priority:
            self._priority = priority

    def _save(self, slots: dict[int, dict[str, Any]], priority: list[int]) -> None:
        document = {
            "version": VERSION,
            "slots": {str(k): v for k, v in sorted(slots.items())},
            "priority": priority,
        }
        atomic_write_json(self._path, document, update_step=False)

    def slot(self, number: int) -> dict[str, Any] | None:
        with self._lock:
            return self._slots.get(number)

    def store(self, number: int, profile: dict[str, Any]) -> None:
        """Persist first, then change (a StateWriteError changes nothing)."""
        with self._lock:
            slots = {**self._slots, number: profile}
            self._save(slots, self._priority)
            self._slots = slots

    @property
    def priority(self) -> list[int]:
        with self._lock:
            return list(self._priority)

    def set_priority(self, text: str) -> None:
        order = []
        for part in text.split(","):
            part = part.strip()
            if not part.isascii() or not part.isdigit():
                raise InvalidValue("expected a comma-separated list of configuration slots")
            order.append(int(part))
        with self._lock:
            unknown = [n for n in order if n != 0 and n not in self._slots]
            if unknown:
                raise InvalidValue(f"no network profile in slot(s) {unknown}")
            if len(set(order)) != len(order):
                raise InvalidValue("a slot is listed twice")
            self._save(self._slots, order)
            self._priority = order


def _slot_problem(key: object, value: object) -> str | None:
    """Why a saved slot cannot be used as `store` would have written it, or None."""
    if not isinstance(key, str) or not key.isascii() or not key.isdigit():
        return "not a slot number"
    if not 1 <= int(key) <= SLOTS:
        return f"slot outside 1-{SLOTS}"
    if not isinstance(value, dict):
        return "not an object"
    url, profile = value.get("url"), value.get("security_profile")
    if not isinstance(url, str) or type(profile) is not int or not 0 <= profile <= 3:
        return "no url, or a security_profile not 0-3"
    try:
        problem = csms_url_problem(url, profile)
    except ValueError:  # urlsplit: an unbalanced bracket
        problem = "not a URL"
    if problem is not None:
        return problem
    timeout = value.get("message_timeout")
    if timeout is not None and (
        type(timeout) is not int or not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX
    ):
        return f"message_timeout not {TIMEOUT_MIN}-{TIMEOUT_MAX} s"
    return None


class Profile2x:
    """The 2.x messages about the connection; runs on the daemon's loop thread."""

    def __init__(
        self,
        settings: ConnectionSettings,
        profiles: NetworkProfiles,
        reporter: Reporter,
        *,
        charge_point_id: str,
        ocpp_version: str,
        reconnect: Callable[[], None],
        payloads: v201.Payloads,
        new_csms: Callable[[], None] = lambda: None,
        organization: ChargePointCertificate | None = None,
    ) -> None:
        self._settings = settings
        self._profiles = profiles
        self._reporter = reporter
        self._charge_point_id = charge_point_id
        self._ocpp_version = ocpp_version
        self._reconnect = reconnect
        self._new_csms = new_csms  # the next connection registers the station again
        self._cpcert = organization  # OrganizationName's owner (A02), when there is one
        self._info = payloads.status_info  # 2.1's allows a longer additionalInfo
        self._password_changed = False

    def register(self, session: Session, *, reset: bool) -> None:
        """SetNetworkProfile always; Reset in direct mode only (in sidecar mode the stack's)."""
        session.route("SetNetworkProfile", self.set_network_profile)
        if reset:
            session.route("Reset", self.reset, self.after_reset)

    # --- the variables ------------------------------------------------------------------------

    def variables(self) -> list[Owned]:
        settings = self._settings

        def set_password(text: str) -> None:
            done, why = settings.set_password(text)
            if not done:
                if "not saved" in why:
                    raise StateWriteError(why)
                raise InvalidValue(why)
            self._password_changed = True
            report(self._reporter, Reconfigured, why)

        def set_priority(text: str) -> None:
            self._profiles.set_priority(text)

        variables = [
            Owned(
                SECURITY,
                PASSWORD,
                v201.DataType.STRING,
                lambda: "",
                set_password,
                readable=False,
                max_limit=PASSWORD_MAX,
            ),
            Owned(SECURITY, PROFILE, v201.DataType.INTEGER, lambda: str(settings.profile)),
            Owned(
                COMM,
                PRIORITY,
                v201.DataType.SEQUENCE_LIST,
                lambda: ",".join(map(str, self._profiles.priority)),
                set_priority,
                values_list=",".join(map(str, range(SLOTS + 1))),
            ),
        ]
        if self._cpcert is not None:
            variables.append(self._organization(self._cpcert))
        return variables

    def _organization(self, cpcert: ChargePointCertificate) -> Owned:
        """A02: the CSR's O=, kept where 1.6's CpoName is (one owner, one file)."""

        def set_organization(text: str) -> None:
            done, why = cpcert.set_cpo_name(text)
            if not done:
                if "not saved" in why:
                    raise StateWriteError(why)
                raise InvalidValue(why)
            report(self._reporter, Reconfigured, why)

        return Owned(
            SECURITY,
            ORGANIZATION,
            v201.DataType.STRING,
            lambda: cpcert.cpo_name or "",
            set_organization,
            max_limit=CPO_NAME_MAX,
        )

    def after_set_variables(self) -> None:
        """A01: the answer is out; a new password is used from a new connection at once."""
        if self._password_changed:
            self._password_changed = False
            if self._settings.uses_basic_auth():
                LOG.info("reconnecting to the CSMS with the new BasicAuthPassword (A01)")
                self._reconnect()

    # --- SetNetworkProfile (B09) --------------------------------------------------------------

    def set_network_profile(
        self, request: v201.SetNetworkProfileRequest
    ) -> v201.SetNetworkProfileResponse:
        slot, data = request.configuration_slot, request.connection_data
        refused = self._refusal(slot, data)
        if refused is not None:
            code, why = refused
            LOG.warning("SetNetworkProfile slot %d refused: %s", slot, why)
            return v201.SetNetworkProfileResponse(
                status=v201.SetNetworkProfileStatus.REJECTED, status_info=self._info.of(code, why)
            )
        profile = {
            "url": data.ocpp_csms_url,
            "security_profile": data.security_profile,
            "message_timeout": data.message_timeout,
            "interface": data.ocpp_interface.value,
        }
        try:
            self._profiles.store(slot, profile)
        except StateWriteError as exc:
            LOG.error("cannot store network profile %d: %s", slot, exc)
            return v201.SetNetworkProfileResponse(
                status=v201.SetNetworkProfileStatus.FAILED,
                status_info=self._info.of("InternalError", "cannot store the profile"),
            )
        LOG.info(
            "network profile %d stored: %s, security profile %d",
            slot,
            _redacted(data.ocpp_csms_url),
            data.security_profile,
        )
        return v201.SetNetworkProfileResponse(status=v201.SetNetworkProfileStatus.ACCEPTED)

    def _refusal(self, slot: int, data: v201.NetworkConnectionProfile) -> tuple[str, str] | None:
        """(reasonCode, why) when the profile cannot be taken, else None."""
        if not 1 <= slot <= SLOTS:
            return "InvalidValue", f"configurationSlot {slot}: 1-{SLOTS} (0 is the configured one)"
        new, current = data.security_profile, self._settings.profile
        if not 0 <= new <= 3:
            return "InvalidValue", f"securityProfile {new} is not 0-3"
        if new < current:
            return "InvalidValue", f"securityProfile {new} is lower than {current} in use (A05)"
        problem = self._settings.refusal(new)
        if problem is not None:
            return "InvalidValue", problem
        url = data.ocpp_csms_url
        problem = csms_url_problem(url, new)
        parts = urllib.parse.urlsplit(url)
        if problem is None and (not parts.hostname or parts.username or parts.password):
            problem = "the URL needs a host and no user information"
        if problem is not None:
            return "InvalidURL", problem
        version = data.ocpp_version
        if self._ocpp_version == "2.0.1" and version is not v201.OcppVersion.OCPP20:
            return "UnsupportedParam", f"ocppVersion {version}: this agent speaks OCPP 2.0.1"
        if data.ocpp_transport is not v201.OcppTransport.JSON:
            return "UnsupportedParam", "ocppTransport: only JSON"
        if data.apn is not None or data.vpn is not None:
            return "UnsupportedParam", "apn and vpn: the agent manages no modem or VPN"
        identity = getattr(data, "identity", None)
        if identity is not None and identity != self._charge_point_id:
            return "UnsupportedParam", "identity: the charge point id cannot change over OCPP"
        if getattr(data, "basic_auth_password", None) is not None:
            return "UnsupportedParam", "basicAuthPassword: set SecurityCtrlr.BasicAuthPassword"
        timeout = data.message_timeout
        if not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:
            return "InvalidValue", f"messageTimeout {timeout}: {TIMEOUT_MIN}-{TIMEOUT_MAX} s"
        return None

    # --- applying the priority (B10, A05) -----------------------------------------------------

    def pending(self) -> tuple[int, str | None, int, int | None] | None:
        """(slot, URL, profile, timeout) of the priority's first slot when it is not the
        connection in use and may replace it (never a lower profile), else None. Slot 0 is
        agent.toml's connection (URL None)."""
        settings, first = self._settings, self._profiles.priority[0]
        if first == 0:
            if settings.network_url is None:
                return None
            url, profile, timeout = None, settings.configured_profile, None
        else:
            slot = self._profiles.slot(first)
            if slot is None:
                return None
            url, profile = str(slot["url"]), int(slot["security_profile"])
            number = slot.get("message_timeout")
            timeout = number if type(number) is int else None
            if url == settings.url and profile == settings.profile:
                return None
        if profile < settings.profile:
            return None
        # What switch() would refuse (an expired cp certificate, the CSMS roots deleted since
        # SetNetworkProfile): not pending, so Reset is Rejected rather than Accepted and ignored.
        problem = settings.refusal(profile)
        if problem is not None:
            LOG.warning("network profile %d cannot be used now: %s", first, problem)
            return None
        return first, url, profile, timeout

    def apply_priority(self) -> bool:
        """Connect with the priority's first profile from now on; True when it changed."""
        target = self.pending()
        if target is None:
            return False
        slot, url, profile, timeout = target
        done, why = self._settings.switch(profile, url, timeout)
        if not done:
            LOG.warning("network profile %d not applied: %s", slot, why)
            return False
        why = f"network profile {slot}: {why}"
        LOG.info("%s; reconnecting to %s", why, _redacted(self._settings.url))
        report(self._reporter, Reconfigured, why)
        self._new_csms()
        self._reconnect()
        return True

    # --- Reset (direct mode) ------------------------------------------------------------------

    def reset(self, request: v201.ResetRequest) -> v201.ResetResponse:
        rejected = v201.ResetStatus.REJECTED
        if request.evse_id is not None:
            return v201.ResetResponse(
                status=rejected, status_info=self._info.of("UnknownEvse", "the agent has no EVSE")
            )
        if self.pending() is None:
            why = "this agent resets only its CSMS connection, to apply a new network profile"
            return v201.ResetResponse(
                status=rejected, status_info=self._info.of("UnsupportedRequest", why)
            )
        return v201.ResetResponse(status=v201.ResetStatus.ACCEPTED)

    def after_reset(self, request: v201.ResetRequest, response: v201.ResetResponse) -> None:
        if response.status is v201.ResetStatus.ACCEPTED:
            self.apply_priority()


def _redacted(url: str) -> str:
    """A URL for the log, without a query (which could hold a token)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))[:200]
