"""The CSMS connection's certificates in OCPP 2.0.1 and 2.1, answered by the agent.

The same store, policy and charge point certificate as 1.6 (`agent.security.handlers`, whose
logic this reuses; only the 2.x words differ). Who owns which certificate type:

- the agent: `CSMSRootCertificate` (the TLS trust of profiles 2/3, the store's
  `CentralSystemRootCertificate`), `ManufacturerRootCertificate` (the firmware check's roots;
  by default the CSMS may not change them), and the `ChargingStationCertificate` (profile 3's
  client certificate: the trigger `SignChargingStationCertificate`, SignCertificate,
  CertificateSigned; A02, A03);
- the charging stack (ISO 15118): `V2GRootCertificate`, `MORootCertificate`,
  `V2GCertificateChain`, the `V2GCertificate` and the combined certificate, 2.1's
  `OEMRootCertificate` and `V2G20Certificate`. Forwarded in sidecar mode; refused in direct
  mode, where no 15118 stack stands behind the agent.

M03 GetInstalledCertificateIds, M04 DeleteCertificate (M04.FR.06: never the CSMS root of the
connection in use, nor the last one while the profile uses TLS), M05 InstallCertificate
(M05.FR.03 a full store, M05.FR.06 an unusable certificate: Rejected; M05.FR.04 a failed write:
Failed). Security events as in 1.6 under the 2.x names (`InvalidCsmsCertificate`,
`InvalidChargingStationCertificate`; `ReconfigurationOfSecurityParameters` is unchanged).

A refusal carries a `statusInfo`: a standard reasonCode where one fits and fixed words
(`public_info`), never the log's reason as it is (it may name configuration; the policy of
`agent.service.public_reason`).

In sidecar mode the router asks `owns_type`, `owns_signed` and `holds` which CALLs
are the agent's, and merges `hash_chains` into the stack's GetInstalledCertificateIds answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from agent.ocpp import v16, v201
from agent.ocpp.errors import OcppError
from agent.ocpp.session import Session
from agent.ocpp.validate import from_wire, to_wire
from agent.security import certstore
from agent.security.certstore import CertStore
from agent.security.cpcert import ChargePointCertificate
from agent.security.handlers import SecurityHandlers

LOG = logging.getLogger(__name__)

# The 2.x certificate types the agent keeps, and their store in the store's (1.6) words.
STORES = {
    v201.CSMS_ROOT: certstore.CSMS_ROOT,
    v201.MANUFACTURER_ROOT: certstore.MANUFACTURER_ROOT,
}
CHARGING_STATION = v201.CHARGING_STATION_CERTIFICATE
SIGN_TRIGGER = v201.MessageTrigger.SIGN_CHARGING_STATION_CERTIFICATE.value
NOT_KEPT = ("UnsupportedRequest", "this certificate type is not kept by the charging station")
NO_ORGANIZATION = ("MissingDevModelInfo", "SecurityCtrlr.OrganizationName is not set")
# (words in the log's reason, lower case) -> (reasonCode, what the CSMS is told); first wins.
_PUBLIC: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("manufacturer roots",), "NotEnabled", "the CSMS may not change the manufacturer roots"),
    (("cannot be written", "cannot be saved"), "InternalError", "the certificate cannot be stored"),
    (("store full",), "OutOfStorage", "the certificate store is full"),
    (("characters, at most",), "TooLargeElement", "the certificate is too long"),
    (("in use for the csms connection",), "Unspecified", "the root verifies the CSMS connection"),
    (("no certificate signing request",), "InvalidMessageSeq", "no certificate was requested"),
    (("not for the key",), "InvalidCertificate", "not for the key of the last request"),
    (("validity period",), "InvalidCertificate", "outside its validity period"),
    (("does not chain",), "InvalidCertificate", "does not chain to a CSMS root"),
    (("self-issued", "self-signature"), "InvalidCertificate", "not a self-signed root"),
    (("a ca certificate cannot",), "InvalidCertificate", "a CA cannot be the station's"),
    (("not a ca", "keycertsign"), "InvalidCertificate", "not a CA that may sign certificates"),
    (("pem",), "InvalidCertificate", "not one PEM X.509 certificate"),
)


def public_info(why: str) -> v201.StatusInfo:
    """The statusInfo of a refusal whose log reason is `why`."""
    text = why.lower()
    for words, code, phrase in _PUBLIC:
        if any(w in text for w in words):
            return v201.StatusInfo.of(code, phrase)
    return v201.StatusInfo.of("InvalidCertificate", "the certificate is not acceptable")


class CertificateHandlers2x:
    """Runs on the daemon's loop thread, as `SecurityHandlers`, which does the work."""

    def __init__(
        self, security: SecurityHandlers, store: CertStore, cpcert: ChargePointCertificate
    ) -> None:
        self._security = security
        self._store = store
        self._cpcert = cpcert

    def register(self, session: Session) -> None:
        self._security.attach(session)
        session.route("InstallCertificate", self.install)
        session.route("GetInstalledCertificateIds", self.installed_ids)
        session.route("DeleteCertificate", self.delete)
        session.route("CertificateSigned", self.certificate_signed, self.after_signed)

    # --- what the sidecar's router asks ----------------------------------------------------

    @staticmethod
    def owns_type(certificate_type: Any) -> bool:
        """A type the agent keeps (any JSON value: the router asks before validation)."""
        return isinstance(certificate_type, str) and certificate_type in STORES

    def owns_signed(self, payload: Any) -> bool:
        """CertificateSigned of the station's certificate; without a type, when it is for
        the key of the agent's own request (the stack may have asked for its own)."""
        if not isinstance(payload, dict):
            return False
        kind, chain = payload.get("certificateType"), payload.get("certificateChain")
        if kind is not None:
            return bool(kind == CHARGING_STATION)
        return isinstance(chain, str) and self._cpcert.awaits(chain)

    def holds(self, hash_data: Any) -> bool:
        """Whether a certificate in the agent's store has this CertificateHashData."""
        try:
            wanted = from_wire(v16.CertificateHashData, v201.strip_custom_data(hash_data))
        except OcppError:
            return False  # malformed: the stack answers it
        return self._store.holds(to_wire(wanted))

    def hash_chains(self, types: Iterable[str] | None) -> list[dict[str, Any]]:
        """CertificateHashDataChain (wire) of the agent's roots of `types` (None: all)."""
        chosen = None if types is None else list(types)
        wanted = [t for t in STORES if chosen is None or t in chosen]
        return [
            {"certificateType": kind, "certificateHashData": data}
            for kind in wanted
            for data in self._store.hash_data(STORES[kind])
        ]

    def ids_answer(self, types: Iterable[str] | None) -> dict[str, Any]:
        """GetInstalledCertificateIdsResponse (wire) with the agent's roots only."""
        chains = self.hash_chains(types)
        if not chains:  # M03.FR.02
            return {"status": v16.GetInstalledCertificateStatus.NOT_FOUND.value}
        status = v16.GetInstalledCertificateStatus.ACCEPTED.value
        return {"status": status, "certificateHashDataChain": chains}

    # --- M05, M03, M04 ----------------------------------------------------------------------

    def install(self, request: v201.InstallCertificateRequest) -> Any:
        kind = request.certificate_type
        store = STORES.get(kind)
        if store is None:  # direct mode: no ISO 15118 stack behind the agent
            LOG.warning("InstallCertificate(%s) Rejected: not kept by this agent", kind)
            return v201.InstallCertificateResponse(
                status=v16.CertificateStatus.REJECTED, status_info=v201.StatusInfo.of(*NOT_KEPT)
            )
        event = v201.SecurityEvent.INVALID_CSMS_CERTIFICATE
        bound = request.certificate_max  # the version's schema: 5500 in 2.0.1, 10000 in 2.1
        status, why = self._security.install_root(store, request.certificate, event, bound)
        info = None if status is v16.CertificateStatus.ACCEPTED else public_info(why)
        return v201.InstallCertificateResponse(status=status, status_info=info)

    def installed_ids(self, request: v201.GetInstalledCertificateIdsRequest) -> Any:
        answer = self.ids_answer(request.certificate_type)
        return from_wire(v201.GetInstalledCertificateIdsResponse, answer)

    def delete(self, request: v201.DeleteCertificateRequest) -> Any:
        status, why = self._security.delete_root(to_wire(request.certificate_hash_data))
        info = public_info(why) if status is v16.DeleteCertificateStatus.FAILED else None
        return v201.DeleteCertificateResponse(status=status, status_info=info)

    # --- A02: the charging station certificate --------------------------------------------

    def certificate_signed(self, request: v201.CertificateSignedRequest) -> Any:
        kind = request.certificate_type
        if kind is not None and kind != CHARGING_STATION:
            LOG.warning("CertificateSigned(%s) Rejected: not kept by this agent", kind)
            return v201.CertificateSignedResponse(
                status=v16.GenericStatus.REJECTED, status_info=v201.StatusInfo.of(*NOT_KEPT)
            )
        event = v201.SecurityEvent.INVALID_CHARGING_STATION_CERTIFICATE
        status, why = self._security.install_signed(request.certificate_chain, event)
        info = None if status is v16.GenericStatus.ACCEPTED else public_info(why)
        return v201.CertificateSignedResponse(status=status, status_info=info)

    def after_signed(self, request: v201.CertificateSignedRequest, conf: Any) -> None:
        self._security.use_signed(conf.status)

    def sign_trigger(self) -> v16.TriggerStatus:
        """TriggerMessage(SignChargingStationCertificate): only with an organization name."""
        return (
            v16.TriggerStatus.ACCEPTED if self._security.may_sign() else v16.TriggerStatus.REJECTED
        )

    def sign_refusal(self) -> tuple[str, str] | None:
        """The statusInfo of a Rejected trigger: the only reason is a missing name."""
        return None if self._cpcert.cpo_name is not None else NO_ORGANIZATION

    def after_sign_trigger(self) -> None:
        """A02.FR.02/03: a new key made here, its CSR sent for a ChargingStationCertificate."""
        self._security.after_sign_trigger(_sign_request)


def _sign_request(csr: str) -> v201.SignCertificateRequest:
    return v201.SignCertificateRequest(csr=csr, certificate_type=CHARGING_STATION)
