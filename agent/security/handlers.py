"""The OCPP messages about the connection's keys and certificates, answered by the agent.

Routed to the session in direct 1.6 mode and, in sidecar mode, taken from the stream before the
charger's stack sees it (`agent.sidecar.router`): ChangeConfiguration of the keys below,
InstallCertificate, GetInstalledCertificateIds, DeleteCertificate. GetConfiguration is the
stack's in sidecar mode; the router merges `key_values()` into its answer.

The configuration keys the agent owns (white paper §7):

| key | access | value |
|---|---|---|
| AuthorizationKey | write-only | never returned (§7.2), listed without a value |
| SecurityProfile | read-write | the profile in use (A05) |
| CertificateStoreMaxLength | read-only | `certstore.STORE_MAX` |
| AdditionalRootCertificateCheck | read-only | false (M05.FR.08-13 not implemented) |
| CpoName | read-write | the O of the charge point certificate's CSR (A02.FR.13) |
| CertificateSignedMaxChainSize | read-only | 10000 |

Direct mode only (the stack's own in sidecar mode): GetConfigurationMaxKeys, read-only,
`v16.GET_CONFIGURATION_MAX_KEYS`; a GetConfiguration.req with more keys is answered CALLERROR
OccurenceConstraintViolation before it gets here (the payload's bound, `v16`).

Security events (§8; each also in the journal's security log, A04.FR.04):
`ReconfigurationOfSecurityParameters` for a changed key, profile or root store (A01.FR.11: the
key's change is logged, its value never, A01.FR.12), and `InvalidCentralSystemCertificate` for
a refused CentralSystemRootCertificate (OCTT TC_078), `InvalidChargePointCertificate` for a
refused CertificateSigned (A02.FR.07).

Profile 3's certificate (A02, `agent.security.cpcert`): ExtendedTriggerMessage
SignChargePointCertificate is `Accepted` once CpoName is set (A02 prerequisite), else
`Rejected`; then SignCertificate carries the CSR; CertificateSigned installs the result.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509

from agent.durable import StateWriteError
from agent.firmware.reporting import Reporter
from agent.ocpp import v16
from agent.ocpp.session import Session
from agent.ocpp.validate import to_wire
from agent.security import certstore
from agent.security.certstore import CertStore
from agent.security.cpcert import MAX_CHAIN_CHARS, ChargePointCertificate
from agent.security.credentials import ConnectionSettings
from agent.security.events import report

LOG = logging.getLogger(__name__)

AUTHORIZATION_KEY = "AuthorizationKey"
SECURITY_PROFILE = "SecurityProfile"
STORE_MAX_LENGTH = "CertificateStoreMaxLength"
ADDITIONAL_ROOT_CHECK = "AdditionalRootCertificateCheck"
CPO_NAME = "CpoName"
MAX_CHAIN_SIZE = "CertificateSignedMaxChainSize"
OWNED_KEYS = (
    AUTHORIZATION_KEY,
    SECURITY_PROFILE,
    STORE_MAX_LENGTH,
    ADDITIONAL_ROOT_CHECK,
    CPO_NAME,
    MAX_CHAIN_SIZE,
)
_CANONICAL = {key.lower(): key for key in OWNED_KEYS}  # keys are CiString50: any case
MAX_KEYS = "GetConfigurationMaxKeys"  # direct mode's: in sidecar mode the stack's
Status = v16.ConfigurationStatus
Reconfigured = v16.SecurityEvent.RECONFIGURATION_OF_SECURITY_PARAMETERS


def _direct_key(key: str) -> bool:
    return SecurityHandlers.owns(key) or key.lower() == MAX_KEYS.lower()


class SecurityHandlers:
    """Runs on the daemon's loop thread."""

    def __init__(
        self,
        settings: ConnectionSettings,
        store: CertStore,
        reporter: Reporter,
        *,
        reconnect: Callable[[], None],
        peer_certificate: Callable[[], bytes | None],
        charge_point_certificate: ChargePointCertificate,
    ) -> None:
        self._cpcert = charge_point_certificate
        self._session: Session | None = None
        self._settings = settings
        self._store = store
        self._reporter = reporter
        self._reconnect = reconnect
        self._peer_certificate = peer_certificate

    def attach(self, session: Session) -> None:
        """The session SignCertificate goes out on (every version)."""
        self._session = session

    def register(self, session: Session) -> None:
        self.attach(session)
        session.route(v16.Action.CERTIFICATE_SIGNED, self.certificate_signed, self.after_signed)
        session.route(v16.Action.CHANGE_CONFIGURATION, self.change, self.after_change)
        # Direct mode only: in sidecar mode GetConfiguration is the stack's (router merges).
        session.route(v16.Action.GET_CONFIGURATION, self.get_configuration)
        session.route(v16.Action.INSTALL_CERTIFICATE, self.install)
        session.route(v16.Action.GET_INSTALLED_CERTIFICATE_IDS, self.installed_ids)
        session.route(v16.Action.DELETE_CERTIFICATE, self.delete)

    # --- configuration keys -------------------------------------------------------------------

    @staticmethod
    def owns(key: Any) -> bool:
        return isinstance(key, str) and key.lower() in _CANONICAL

    def key_values(self, wanted: list[str] | None) -> list[dict[str, Any]]:
        """GetConfiguration's KeyValues of the agent's keys (all, or those of `wanted`)."""
        names = OWNED_KEYS if wanted is None else [_CANONICAL[k.lower()] for k in wanted]
        values: dict[str, dict[str, Any]] = {
            AUTHORIZATION_KEY: {"key": AUTHORIZATION_KEY, "readonly": False},
            SECURITY_PROFILE: {
                "key": SECURITY_PROFILE,
                "readonly": False,
                "value": str(self._settings.profile),
            },
            STORE_MAX_LENGTH: {
                "key": STORE_MAX_LENGTH,
                "readonly": True,
                "value": str(certstore.STORE_MAX),
            },
            ADDITIONAL_ROOT_CHECK: {
                "key": ADDITIONAL_ROOT_CHECK,
                "readonly": True,
                "value": "false",
            },
            CPO_NAME: {"key": CPO_NAME, "readonly": False},
            MAX_CHAIN_SIZE: {
                "key": MAX_CHAIN_SIZE,
                "readonly": True,
                "value": str(MAX_CHAIN_CHARS),
            },
        }
        if self._cpcert.cpo_name is not None:
            values[CPO_NAME]["value"] = self._cpcert.cpo_name
        return [values[name] for name in dict.fromkeys(names)]

    def get_configuration(self, request: v16.GetConfigurationReq) -> v16.GetConfigurationConf:
        """Direct mode: the agent's keys, and GetConfigurationMaxKeys, are all the charge
        point has."""
        wanted = request.key or None
        mine = None if wanted is None else [k for k in wanted if self.owns(k)]
        unknown = [] if wanted is None else [k for k in wanted if not _direct_key(k)]
        values = self.key_values(mine)
        if wanted is None or any(k.lower() == MAX_KEYS.lower() for k in wanted):
            limit = str(v16.GET_CONFIGURATION_MAX_KEYS)
            values.append({"key": MAX_KEYS, "readonly": True, "value": limit})
        return v16.GetConfigurationConf(
            configuration_key=values or None, unknown_key=unknown or None
        )

    def change(self, request: v16.ChangeConfigurationReq) -> v16.ChangeConfigurationConf:
        key = _CANONICAL.get(request.key.lower())
        if key == AUTHORIZATION_KEY:
            status, why = self._settings.set_authorization_key(request.value)
        elif key == SECURITY_PROFILE:
            status, why = self._settings.raise_profile(request.value)
        elif key == CPO_NAME:
            done, why = self._cpcert.set_cpo_name(request.value)
            status = Status.ACCEPTED if done else Status.REJECTED
        elif key is not None or request.key.lower() == MAX_KEYS.lower():
            status, why = Status.REJECTED, f"{key or MAX_KEYS} is read-only"
        else:  # direct mode: the agent has no other keys
            status, why = Status.NOT_SUPPORTED, f"unknown configuration key {request.key[:50]!r}"
        if status is Status.ACCEPTED:
            report(self._reporter, Reconfigured, why)
        else:
            LOG.warning("ChangeConfiguration(%s) %s: %s", request.key[:50], status, why)
        return v16.ChangeConfigurationConf(status=status)

    def after_change(
        self, request: v16.ChangeConfigurationReq, conf: v16.ChangeConfigurationConf
    ) -> None:
        """The answer is out: reconnect with what changed (A01 step 3, A05.FR.06)."""
        if conf.status is not Status.ACCEPTED:
            return
        key = _CANONICAL.get(request.key.lower())
        basic = self._settings.uses_basic_auth()
        if key == SECURITY_PROFILE or (key == AUTHORIZATION_KEY and basic):
            LOG.info("reconnecting to the CSMS with the new %s", key)
            self._reconnect()

    # --- profile 3's charge point certificate (A02) -------------------------------------------

    def sign_trigger(self) -> v16.TriggerMessageConf:
        """ExtendedTriggerMessage(SignChargePointCertificate): only with a CpoName (A02)."""
        status = v16.TriggerStatus.ACCEPTED if self.may_sign() else v16.TriggerStatus.REJECTED
        return v16.TriggerMessageConf(status=status)

    def may_sign(self) -> bool:
        """A CSR needs the organization (1.6 CpoName, 2.x SecurityCtrlr.OrganizationName)."""
        if self._cpcert.cpo_name is None:
            LOG.warning("a charge point certificate cannot be requested: no organization name")
            return False
        return True

    def after_sign_trigger(self, build: Callable[[str], Any] = v16.SignCertificateReq) -> None:
        """The trigger's answer is out: a new key, its CSR in SignCertificate (A02.FR.02/03);
        `build(csr)` is the version's request."""
        try:
            csr = self._cpcert.new_csr()
        except (StateWriteError, ValueError) as exc:
            LOG.error("cannot make a certificate signing request: %s", exc)
            return
        assert self._session is not None
        LOG.info("sending SignCertificate for a new charge point key")
        self._session.send_live(v16.Action.SIGN_CERTIFICATE, build(csr), self._signing_answer)

    @staticmethod
    def _signing_answer(conf: Any) -> None:
        LOG.info("the CSMS answered SignCertificate %s", conf.status)

    def certificate_signed(self, request: v16.CertificateSignedReq) -> v16.CertificateSignedConf:
        status, _ = self.install_signed(
            request.certificate_chain, v16.SecurityEvent.INVALID_CHARGE_POINT_CERTIFICATE
        )
        return v16.CertificateSignedConf(status=status)

    def install_signed(self, chain: str, invalid_event: str) -> tuple[v16.GenericStatus, str]:
        """CertificateSigned in any version: `invalid_event` names a refusal (A02.FR.07).
        (status, why): `why` is the log's, not for the CSMS as it is."""
        roots = self._store.certificates(certstore.CSMS_ROOT)
        now = datetime.datetime.now(datetime.UTC)
        status, why = self._cpcert.install(chain, roots, now)
        if status is v16.GenericStatus.ACCEPTED:
            report(self._reporter, Reconfigured, why)
        else:
            LOG.warning("CertificateSigned %s: %s", status, why)
            report(self._reporter, invalid_event, why)
        return status, why

    def after_signed(
        self, request: v16.CertificateSignedReq, conf: v16.CertificateSignedConf
    ) -> None:
        self.use_signed(conf.status)

    def use_signed(self, status: v16.GenericStatus) -> None:
        """A02.FR.08: in use from the next connection, made at once under profile 3."""
        if status is v16.GenericStatus.ACCEPTED and self._settings.profile == 3:
            LOG.info("reconnecting to the CSMS with the new charge point certificate")
            self._reconnect()

    # --- certificates --------------------------------------------------------------------------

    def install(self, request: v16.InstallCertificateReq) -> v16.InstallCertificateConf:
        store = request.certificate_type.value
        event = v16.SecurityEvent.INVALID_CENTRAL_SYSTEM_CERTIFICATE
        return v16.InstallCertificateConf(
            status=self.install_root(store, request.certificate, event)[0]
        )

    def install_root(
        self, store: str, pem: str, invalid_event: str, max_chars: int = certstore.MAX_PEM_CHARS
    ) -> tuple[v16.CertificateStatus, str]:
        """InstallCertificate in any version, `store` in the store's (1.6) words, `max_chars`
        the version's maxLength; a CSMS root refused raises `invalid_event` (OCTT TC_078).
        (status, why), `why` the log's."""
        status, why = self._store.install(store, pem, max_chars)
        if status is v16.CertificateStatus.ACCEPTED:
            if not why.endswith("already installed"):
                report(self._reporter, Reconfigured, f"{store}: {why}")
        else:
            LOG.warning("InstallCertificate(%s) %s: %s", store, status, why)
            if store == certstore.CSMS_ROOT and status is v16.CertificateStatus.REJECTED:
                report(self._reporter, invalid_event, why)
        return status, why

    def installed_ids(
        self, request: v16.GetInstalledCertificateIdsReq
    ) -> v16.GetInstalledCertificateIdsConf:
        found = self._store.hash_data(request.certificate_type.value)
        if not found:  # M03.FR.02
            return v16.GetInstalledCertificateIdsConf(
                status=v16.GetInstalledCertificateStatus.NOT_FOUND
            )
        return v16.GetInstalledCertificateIdsConf(
            status=v16.GetInstalledCertificateStatus.ACCEPTED, certificate_hash_data=found
        )

    def delete(self, request: v16.DeleteCertificateReq) -> v16.DeleteCertificateConf:
        status, _ = self.delete_root(to_wire(request.certificate_hash_data))
        return v16.DeleteCertificateConf(status=status)

    def delete_root(self, wanted: Mapping[str, str]) -> tuple[v16.DeleteCertificateStatus, str]:
        """DeleteCertificate in any version (M04), by wire hash data: (status, why)."""
        status, why = self._store.delete(wanted, self._in_use)
        if status is v16.DeleteCertificateStatus.ACCEPTED:
            report(self._reporter, Reconfigured, why)
        else:
            LOG.warning("DeleteCertificate %s: %s", status, why)
        return status, why

    def _in_use(self, root: x509.Certificate, csms_roots_left: int) -> bool:
        """M04.FR.06: the root that verified the connection in use; and the last one while
        the profile verifies the CSMS (the next connection could not)."""
        if self._settings.profile < 2:
            return False
        return csms_roots_left <= 1 or certstore.issued(self._peer_certificate(), root)
