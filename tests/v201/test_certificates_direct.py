"""The CSMS connection's certificates in direct 2.0.1 and 2.1 mode: M05 InstallCertificate,
M03 GetInstalledCertificateIds, M04 DeleteCertificate, and A02 (the charging station certificate
of security profile 3: TriggerMessage SignChargingStationCertificate, SignCertificate,
CertificateSigned), answered by the agent from the store and the key it keeps for 1.6.

The agent runs as a process on the e2e rig, against the `ocpp` library's 2.x CSMS (which checks
every CALL the agent sends, and every answer to its own CALLs, against that version's official
schemas) over real TLS with certificates generated per run.
"""

from __future__ import annotations

import importlib
import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.routing import on

from agent.demo import pki as fwpki
from agent.demo.csms import Csms2x
from agent.demo.rig import AgentProcess, ChargerRig
from agent.security.cpcert import ChargePointCertificate
from tests.integration.test_security_profiles import CP, Pki, profile
from tests.sidecar.test_certificates import expected_hash_data
from tests.sidecar.test_charge_point_certificate import SigningCsms, der, sign

CSMS_ROOT, MANUFACTURER = "CSMSRootCertificate", "ManufacturerRootCertificate"
ORGANIZATION = "Example CPO"


def library(version: str) -> Any:
    return importlib.import_module("ocpp.v" + version.replace(".", ""))


class CertCsms(SigningCsms, Csms2x):
    """The 2.x test CSMS, answering SignCertificate and noting each connection's client
    certificate (DER, None without one) as the 1.6 one does (`peer_certs`)."""

    __test__ = False

    def __init__(self, version: str = "2.0.1", **options: Any) -> None:
        super().__init__(version, **options)  # the 2.x side of that version
        results = library(version).call_result

        class Side(self.side_class):  # type: ignore[misc,name-defined]
            @on("SignCertificate")
            def on_sign_certificate(self, **payload: Any) -> Any:
                self.csms._note(self.id, "SignCertificate", payload)
                return results.SignCertificate(status="Accepted")

        self.side_class = Side

    def send(self, action: str, **payload: Any) -> Any:
        """One typed CALL of this version, its answer checked by the library."""
        request = getattr(library(self.schema_version).call, action)(**payload)
        return self.call(CP, request)

    def raw(self, action: str, payload: dict[str, Any]) -> list[Any]:
        unique_id = f"raw-{time.monotonic_ns()}"
        self.send_raw(CP, json.dumps([2, unique_id, action, payload]))
        return self.answer_to(unique_id)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [
            m.payload
            for m in self.messages("SecurityEventNotification")
            if m.payload["type"] == kind
        ]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def serve(
    servers: list[CertCsms],
    version: str = "2.0.1",
    context: ssl.SSLContext | None = None,
    port: int = 0,
) -> CertCsms:
    server = CertCsms(version, ssl_context=context)
    servers.append(server)
    return server.start(port)  # type: ignore[return-value]


def start(tmp_path: Path, agents: list[AgentProcess], csms: dict[str, Any]) -> ChargerRig:
    rig = ChargerRig(tmp_path, csms["url"], charge_point_id=CP)
    agents.append(AgentProcess(rig.config(csms={"ocpp_version": "2.0.1", **csms})).start())
    return rig


def hash_of(issued: fwpki.Issued) -> dict[str, str]:
    return expected_hash_data(issued.cert)


def listed(csms: CertCsms, *types: str) -> list[tuple[str, dict[str, str]]]:
    """(certificateType, hash data) of each chain GetInstalledCertificateIds lists."""
    reply = csms.send("GetInstalledCertificateIds", certificate_type=list(types) or None)
    if reply.status == "NotFound":
        assert reply.certificate_hash_data_chain is None
        return []
    assert reply.status == "Accepted"
    return [
        (c["certificate_type"], c["certificate_hash_data"])
        for c in reply.certificate_hash_data_chain
    ]


def test_M05_M03_M04_a_new_csms_root_is_trusted_by_the_next_connection_and_the_one_in_use_stays(
    tmp_path: Path, pki: Pki, servers: list[CertCsms], agents: list[AgentProcess]
) -> None:
    """Profile 2, 2.0.1. M05: a leaf as CSMSRootCertificate → Rejected (M05.FR.06) and
    `InvalidCsmsCertificate` (2.x's name for 1.6's InvalidCentralSystemCertificate); a new CA
    → Accepted and listed by M03 with its RFC 6960 hash data. A CSMS whose server certificate
    that new root issued is then trusted by the next connection. M04: the root that verified
    the connection in use cannot be deleted (M04.FR.06, Failed), the other one can; then the
    last one stays (the next connection could not verify the CSMS); an unknown hash is
    NotFound."""
    first = serve(servers, context=pki.server_context(pki.server))
    start(tmp_path, agents, profile(2, first.url, pki))
    first.wait_message("BootNotification")

    leaf = first.send("InstallCertificate", certificate_type=CSMS_ROOT, certificate=pki.server.pem)
    assert leaf.status == "Rejected"
    first.wait_for(lambda: first.events("InvalidCsmsCertificate"), what="InvalidCsmsCertificate")
    assert first.events("InvalidCentralSystemCertificate") == []
    new_root = first.send(
        "InstallCertificate", certificate_type=CSMS_ROOT, certificate=pki.other_ca.pem
    )
    assert new_root.status == "Accepted"
    assert listed(first, CSMS_ROOT) == [
        (CSMS_ROOT, hash_of(pki.ca)),
        (CSMS_ROOT, hash_of(pki.other_ca)),
    ]

    port = first.port
    first.stop()
    moved = serve(servers, context=pki.server_context(pki.impostor), port=port)  # other_ca's
    moved.wait_for(lambda: moved.connected(CP), 30, "the agent trusting the new root")

    assert (
        moved.send("DeleteCertificate", certificate_hash_data=hash_of(pki.other_ca)).status
        == "Failed"
    )
    assert (
        moved.send("DeleteCertificate", certificate_hash_data=hash_of(pki.ca)).status == "Accepted"
    )
    assert listed(moved, CSMS_ROOT) == [(CSMS_ROOT, hash_of(pki.other_ca))]
    assert (
        moved.send("DeleteCertificate", certificate_hash_data=hash_of(pki.other_ca)).status
        == "Failed"
    )
    assert (
        moved.send("DeleteCertificate", certificate_hash_data=hash_of(pki.ca)).status == "NotFound"
    )
    moved.wait_for(
        lambda: len(moved.events("ReconfigurationOfSecurityParameters")) >= 1,
        what="the deletion reported",
    )


def test_M05_manufacturer_roots_are_the_integrators_and_the_15118_types_are_not_the_agents(
    tmp_path: Path, servers: list[CertCsms], agents: list[AgentProcess]
) -> None:
    """Profile 0, 2.0.1, `[firmware] csms_manages_manufacturer_roots` left false: installing a
    ManufacturerRootCertificate is Rejected and deleting the configured one Failed; M03 lists
    it. Direct mode has no ISO 15118 stack: a V2GRootCertificate is Rejected and asking for
    one is NotFound (M03.FR.02); a type outside 2.0.1's enum (2.1's OEMRootCertificate) is a
    CALLERROR. Without an organization name the certificate trigger is Rejected (A02
    prerequisite, as 1.6's CpoName)."""
    csms = serve(servers)
    rig_root = start(tmp_path, agents, {"url": csms.url, "charge_point_id": CP}).root
    csms.wait_message("BootNotification")

    vendor = fwpki.issue("CSMS's own CA", fwpki.rsa_key(2048, 205), ca=True)
    assert (
        csms.send(
            "InstallCertificate", certificate_type=MANUFACTURER, certificate=vendor.pem
        ).status
        == "Rejected"
    )
    assert listed(csms, MANUFACTURER) == [(MANUFACTURER, hash_of(rig_root))]
    assert listed(csms) == [(MANUFACTURER, hash_of(rig_root))]
    assert (
        csms.send("DeleteCertificate", certificate_hash_data=hash_of(rig_root)).status == "Failed"
    )

    v2g = csms.send(
        "InstallCertificate", certificate_type="V2GRootCertificate", certificate=vendor.pem
    )
    assert v2g.status == "Rejected"
    assert listed(csms, "V2GRootCertificate", "MORootCertificate") == []
    answer = csms.raw(
        "InstallCertificate", {"certificateType": "OEMRootCertificate", "certificate": vendor.pem}
    )
    assert answer[0] == 4 and answer[2] == "PropertyConstraintViolation", answer

    trigger = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert trigger.status == "Rejected"
    assert csms.messages("SignCertificate") == []


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_A02_the_station_certificate_made_here_signed_by_the_cpo_is_used_by_the_next_connection(
    tmp_path: Path, pki: Pki, servers: list[CertCsms], agents: list[AgentProcess], version: str
) -> None:
    """Profile 3 (client certificates required). TriggerMessage SignChargingStationCertificate
    → Accepted, then SignCertificate with certificateType ChargingStationCertificate and a
    PKCS#10 CSR of a new EC P-256 key made on the charger (A02.FR.02/03), O = the
    organization name, CN = the identity. CertificateSigned from another CA → Rejected +
    `InvalidChargingStationCertificate` (A02.FR.07, 2.x's name); of another type (V2G) →
    Rejected (no 15118 stack here); from the CSMS root's CA → Accepted, and the connection
    is made again at once with the new certificate (A02.FR.08)."""
    csms = serve(servers, version, pki.server_context(pki.server, require_client=True))
    cpcert = ChargePointCertificate(tmp_path / "state" / "certs" / "charge-point", CP)
    cpcert.load()
    assert cpcert.set_cpo_name(ORGANIZATION)[0]  # provisioned with the station
    start(tmp_path, agents, {**profile(3, csms.url, pki), "ocpp_version": version})
    csms.wait_message("BootNotification")
    assert csms.peer_certs == [der(pki.client.pem)]

    trigger = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert trigger.status == "Accepted"
    request = csms.wait_message("SignCertificate")[-1].payload
    assert request["certificate_type"] == "ChargingStationCertificate"
    csr = x509.load_pem_x509_csr(request["csr"].encode())
    assert csr.is_signature_valid and isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORGANIZATION
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP

    stranger = sign(csr, fwpki.Issued(pki.other_ca.cert, pki.other_ca.key))
    refused = csms.send(
        "CertificateSigned",
        certificate_chain=stranger,
        certificate_type="ChargingStationCertificate",
    )
    assert refused.status == "Rejected"
    csms.wait_for(lambda: csms.events("InvalidChargingStationCertificate"), what="the event")
    leaf = sign(csr, pki.ca)
    v2g = csms.send("CertificateSigned", certificate_chain=leaf, certificate_type="V2GCertificate")
    assert v2g.status == "Rejected"
    assert csms.send("CertificateSigned", certificate_chain=leaf).status == "Accepted"
    csms.wait_for(lambda: csms.peer_certs[-1] == der(leaf), 30, "a connection with the new one")
    assert csms.events("InvalidChargePointCertificate") == []


def test_a_csms_server_certificate_refused_is_reported_under_its_2x_name(
    tmp_path: Path, pki: Pki, servers: list[CertCsms], agents: list[AgentProcess]
) -> None:
    """Profile 2, 2.0.1: a CSMS whose server certificate no installed root issued is never
    connected to, and the event queued for it is sent, once a trusted connection exists, as
    `InvalidCsmsCertificate` (the 2.x security events list; 1.6 said
    InvalidCentralSystemCertificate)."""
    bad = serve(servers, context=pki.server_context(pki.impostor))
    start(tmp_path, agents, profile(2, bad.url, pki))
    agents[-1].wait_log("security event InvalidCsmsCertificate")
    assert bad.connections == 0
    port = bad.port
    bad.stop()
    good = serve(servers, context=pki.server_context(pki.server), port=port)
    events = good.wait_message("SecurityEventNotification", timeout=60)
    assert [e.payload["type"] for e in events] == ["InvalidCsmsCertificate"]
