"""Who answers the 2.x certificate messages in sidecar mode: the agent owns the connection's
certificates (CSMSRootCertificate, ManufacturerRootCertificate, the ChargingStationCertificate),
the charging stack its ISO 15118 ones (V2G and MO roots, the V2G certificate chain, 2.1's OEM
root and V2G20 certificate). M05 InstallCertificate and A02 CertificateSigned go by type, M04
DeleteCertificate by who holds the hash, and M03 GetInstalledCertificateIds by the types asked:
the agent's alone, the stack's alone, or both merged into one answer the CSMS sees.

The agent as a process, a real 2.x stack behind it (the `ocpp` library's ChargePoint, here also
keeping certificates of its own), the 2.x test CSMS in front checking every CALL against the
version's schemas and the library checking every answer to its CALLs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cryptography import x509
from ocpp.routing import on

from agent.demo import pki
from agent.security.cpcert import ChargePointCertificate
from tests.sidecar.test_certificates import expected_hash_data
from tests.sidecar.test_charge_point_certificate import sign
from tests.sidecar2x import conftest
from tests.sidecar2x.conftest import Sidecar2x, library

CSMS_ROOT, MANUFACTURER, V2G = (
    "CSMSRootCertificate",
    "ManufacturerRootCertificate",
    "V2GRootCertificate",
)
STACK_V2G = {
    "hashAlgorithm": "SHA256",
    "issuerNameHash": "aa" * 32,
    "issuerKeyHash": "bb" * 32,
    "serialNumber": "1F",
}
# A CSMS root the stack kept from before the agent held its connection: not reported.
STACK_STALE_CSMS = {**STACK_V2G, "serialNumber": "2E"}


class StackStore:
    """The certificates the stack keeps: [certificateType, hash data (wire keys)]."""

    def __init__(self) -> None:
        self.held: list[tuple[str, dict[str, str]]] = [
            (V2G, STACK_V2G),
            (CSMS_ROOT, STACK_STALE_CSMS),
        ]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> StackStore:
    """The stack of `conftest` answering the certificate messages too, from `store`."""
    kept = StackStore()
    plain = conftest._stack_side

    def side(version: str) -> type[Any]:
        results = library(version).call_result

        class CertificateSide(plain(version)):  # type: ignore[misc]
            @on("InstallCertificate")
            def on_install(self, certificate_type: str, certificate: str, **_: Any) -> Any:
                self.stack.handled.append(f"InstallCertificate {certificate_type}")
                kept.held.append((certificate_type, {**STACK_V2G, "serialNumber": "3D"}))
                return results.InstallCertificate(status="Accepted")

            @on("GetInstalledCertificateIds")
            def on_ids(self, certificate_type: list[str] | None = None, **_: Any) -> Any:
                self.stack.handled.append("GetInstalledCertificateIds")
                chains = [
                    {"certificateType": kind, "certificateHashData": data}
                    for kind, data in kept.held
                    if certificate_type is None or kind in certificate_type
                ]
                if not chains:
                    info = {"reasonCode": "NotFound", "additionalInfo": "none of those here"}
                    return results.GetInstalledCertificateIds(status="NotFound", status_info=info)
                return results.GetInstalledCertificateIds(
                    status="Accepted", certificate_hash_data_chain=chains
                )

            @on("DeleteCertificate")
            def on_delete(self, certificate_hash_data: dict[str, str], **_: Any) -> Any:
                self.stack.handled.append("DeleteCertificate")
                wanted = {_camel(k): v for k, v in certificate_hash_data.items()}
                found = [c for c in kept.held if c[1] == wanted]
                kept.held[:] = [c for c in kept.held if c not in found]
                return results.DeleteCertificate(status="Accepted" if found else "NotFound")

            @on("CertificateSigned")
            def on_signed(self, certificate_chain: str, **payload: Any) -> Any:
                self.stack.handled.append(f"CertificateSigned {payload.get('certificate_type')}")
                return results.CertificateSigned(status="Accepted")

        return CertificateSide

    monkeypatch.setattr(conftest, "_stack_side", side)
    return kept


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word.title() for word in rest)


class Csms:
    """The test CSMS's verbs for one charger in sidecar mode."""

    def __init__(self, sidecar: Sidecar2x) -> None:
        self.sidecar, self.cp = sidecar, sidecar.rig.charge_point_id
        self.call = library(sidecar.version).call

    def send(self, action: str, **payload: Any) -> Any:
        return self.sidecar.csms.call(self.cp, getattr(self.call, action)(**payload))

    def raw(self, action: str, payload: dict[str, Any]) -> list[Any]:
        unique_id = f"raw-{time.monotonic_ns()}"
        self.sidecar.csms.send_raw(self.cp, json.dumps([2, unique_id, action, payload]))
        return self.sidecar.csms.answer_to(unique_id)

    def listed(self, *types: str) -> list[tuple[str, dict[str, str]]]:
        reply = self.send("GetInstalledCertificateIds", certificate_type=list(types) or None)
        if reply.status == "NotFound":
            return []
        return [
            (c["certificate_type"], _wire(c["certificate_hash_data"]))
            for c in reply.certificate_hash_data_chain
        ]


def _wire(hash_data: dict[str, str]) -> dict[str, str]:
    return {_camel(k): v for k, v in hash_data.items()}


def mine(issued: pki.Issued) -> dict[str, str]:
    return _wire(expected_hash_data(issued.cert))


def ready(sidecar: Sidecar2x) -> tuple[Csms, Any]:
    """The agent started, the stack connected and registered: the CSMS's verbs and the stack."""
    sidecar.start()
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"
    return Csms(sidecar), stack


def triggered_sign_request(sidecar: Sidecar2x, csms: Csms) -> dict[str, Any]:
    """TriggerMessage SignChargingStationCertificate → Accepted; the payload of the
    SignCertificate the agent then sends (A02)."""
    trigger = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert trigger.status == "Accepted"
    server = sidecar.csms
    request: dict[str, Any] = server.wait_for(
        lambda: next(
            (
                f.parsed[3]
                for f in server.frames
                if f.direction == "in" and '"SignCertificate"' in f.text
            ),
            None,
        ),
        what="the agent's SignCertificate",
    )
    return request


def test_M03_M04_M05_each_certificate_type_is_answered_by_its_owner_and_listed_together(
    store: StackStore, sidecar201: Sidecar2x
) -> None:
    """2.0.1. M05: a CSMSRootCertificate is the agent's (Accepted, the stack never asked), a
    ManufacturerRootCertificate too (Rejected by default), a V2GRootCertificate the stack's.
    M03: asking for the agent's types only, the agent answers; for the stack's only, the
    stack; for all or both, the CSMS gets one answer with the stack's V2G root and the agent's
    roots, and not the CSMS root the stack still keeps (the agent holds the connection). M04:
    the agent's hash is deleted by the agent, the stack's by the stack. A02: the
    SignChargingStationCertificate trigger is the agent's, SignV2GCertificate and a V2G
    CertificateSigned the stack's. With the stack away, the CSMS still gets the agent's
    roots, and a stack's type is a CALLERROR. A certificate type that is no string goes to
    the stack, which judges it."""
    csms, stack = ready(sidecar201)
    rig = sidecar201.rig
    csms_root = pki.issue("CPO Root", pki.rsa_key(2048, 210), ca=True)
    v2g_root = pki.issue("V2G Root", pki.rsa_key(2048, 211), ca=True)

    assert (
        csms.send(
            "InstallCertificate", certificate_type=CSMS_ROOT, certificate=csms_root.pem
        ).status
        == "Accepted"
    )
    assert (
        csms.send(
            "InstallCertificate", certificate_type=MANUFACTURER, certificate=csms_root.pem
        ).status
        == "Rejected"
    )
    assert stack.handled == []
    assert (
        csms.send("InstallCertificate", certificate_type=V2G, certificate=v2g_root.pem).status
        == "Accepted"
    )
    assert stack.handled == [f"InstallCertificate {V2G}"]

    assert csms.listed(CSMS_ROOT, MANUFACTURER) == [
        (CSMS_ROOT, mine(csms_root)),
        (MANUFACTURER, mine(rig.root)),
    ]
    assert "GetInstalledCertificateIds" not in stack.handled
    stack_v2g = [(V2G, STACK_V2G), (V2G, {**STACK_V2G, "serialNumber": "3D"})]
    assert csms.listed(V2G) == stack_v2g
    assert stack.handled.count("GetInstalledCertificateIds") == 1
    agents_part = [(CSMS_ROOT, mine(csms_root)), (MANUFACTURER, mine(rig.root))]
    assert csms.listed() == stack_v2g + agents_part
    assert csms.listed(V2G, CSMS_ROOT) == [*stack_v2g, (CSMS_ROOT, mine(csms_root))]
    assert stack.handled.count("GetInstalledCertificateIds") == 3
    reply = csms.send(
        "GetInstalledCertificateIds", certificate_type=["MORootCertificate", MANUFACTURER]
    )
    assert reply.status == "Accepted" and reply.status_info is None  # not the stack's NotFound
    assert [c["certificate_type"] for c in reply.certificate_hash_data_chain] == [MANUFACTURER]

    assert (
        csms.send("DeleteCertificate", certificate_hash_data=mine(csms_root)).status == "Accepted"
    )
    assert "DeleteCertificate" not in stack.handled
    assert csms.send("DeleteCertificate", certificate_hash_data=STACK_V2G).status == "Accepted"
    assert stack.handled[-1] == "DeleteCertificate"
    assert csms.listed(CSMS_ROOT) == []  # M03.FR.02: NotFound

    trigger = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert trigger.status == "Rejected"  # the agent's: no organization name yet
    assert not any(h.startswith("TriggerMessage") for h in stack.handled)
    assert csms.send("TriggerMessage", requested_message="SignV2GCertificate").status == "Accepted"
    assert stack.handled[-1] == "TriggerMessage SignV2GCertificate"
    signed = csms.send(
        "CertificateSigned", certificate_chain=v2g_root.pem, certificate_type="V2GCertificate"
    )
    assert signed.status == "Accepted" and stack.handled[-1] == "CertificateSigned V2GCertificate"

    for action, odd in (
        ("GetInstalledCertificateIds", {"certificateType": [{"of": "no type"}]}),
        ("GetInstalledCertificateIds", {"certificateType": [CSMS_ROOT, {"of": "no type"}]}),
        ("InstallCertificate", {"certificateType": 7, "certificate": ""}),
    ):  # not a type anyone keeps: the stack judges it (the library answers a CALLERROR)
        assert csms.raw(action, odd)[0] == 4
        assert stack.texts("in")[-1].endswith(json.dumps(odd) + "]")

    stack.stop()
    assert sidecar201.agent is not None
    sidecar201.agent.wait_log("the charging stack disconnected")
    assert csms.listed() == [(MANUFACTURER, mine(rig.root))]
    away = csms.raw("InstallCertificate", {"certificateType": V2G, "certificate": v2g_root.pem})
    assert away[0] == 4 and away[2] == "InternalError", away
    assert not any(
        f'"{action}"' in text
        for action in ("InstallCertificate", "DeleteCertificate")
        for text in stack.texts("in")
        if CSMS_ROOT in text or MANUFACTURER in text
    )


def test_2_1_OEM_roots_and_V2G20_certificates_are_the_stacks_the_station_certificate_the_agents(
    store: StackStore, sidecar21: Sidecar2x
) -> None:
    """2.1's added types: an OEMRootCertificate and a V2G20Certificate go to the stack and the
    OEM root is listed beside the agent's; a CertificateSigned of a ChargingStationCertificate
    is the agent's (Rejected: it asked for none, + `InvalidChargingStationCertificate`), one
    without a type that is not for the agent's key goes to the stack."""
    csms, stack = ready(sidecar21)
    oem = pki.issue("OEM Root", pki.rsa_key(2048, 212), ca=True)

    assert (
        csms.send(
            "InstallCertificate", certificate_type="OEMRootCertificate", certificate=oem.pem
        ).status
        == "Accepted"
    )
    assert stack.handled == ["InstallCertificate OEMRootCertificate"]
    listed = csms.listed("OEMRootCertificate", MANUFACTURER)
    assert listed == [
        ("OEMRootCertificate", {**STACK_V2G, "serialNumber": "3D"}),
        (MANUFACTURER, mine(sidecar21.rig.root)),
    ]

    mine_signed = csms.send(
        "CertificateSigned",
        certificate_chain=oem.pem,
        certificate_type="ChargingStationCertificate",
    )
    assert mine_signed.status == "Rejected"
    assert not any(h.startswith("CertificateSigned") for h in stack.handled)
    sidecar21.csms.wait_for(
        lambda: any(
            m.payload["type"] == "InvalidChargingStationCertificate"
            for m in sidecar21.csms.messages("SecurityEventNotification")
        ),
        what="InvalidChargingStationCertificate",
    )
    assert (
        csms.send(
            "CertificateSigned", certificate_chain=oem.pem, certificate_type="V2G20Certificate"
        ).status
        == "Accepted"
    )
    assert csms.send("CertificateSigned", certificate_chain=oem.pem).status == "Accepted"
    assert stack.handled[-2:] == ["CertificateSigned V2G20Certificate", "CertificateSigned None"]


def test_A02_a_station_certificate_without_a_type_is_the_agents_only_for_its_own_key(
    store: StackStore, sidecar201: Sidecar2x
) -> None:
    """2.0.1, the organization name provisioned: TriggerMessage SignChargingStationCertificate
    is the agent's (Accepted, A02.FR.02) and its SignCertificate carries certificateType
    ChargingStationCertificate and the CSR. A CertificateSigned without certificateType (the
    schema allows it) goes to the stack unless it is for the key of the agent's request: one
    for another key reaches the stack, the one for the agent's key is installed by the agent
    (A02.FR.06) and never reaches the stack."""
    cpcert = ChargePointCertificate(sidecar201.rig.state / "certs" / "charge-point", "SN-1")
    cpcert.load()
    assert cpcert.set_cpo_name("Example CPO")[0]
    csms, stack = ready(sidecar201)
    cpo_root = pki.issue("CPO Root", pki.rsa_key(2048, 213), ca=True)
    assert (
        csms.send("InstallCertificate", certificate_type=CSMS_ROOT, certificate=cpo_root.pem).status
        == "Accepted"
    )

    request = triggered_sign_request(sidecar201, csms)
    server = sidecar201.csms
    assert request["certificateType"] == "ChargingStationCertificate"
    csr = x509.load_pem_x509_csr(request["csr"].encode())

    someone_else = pki.issue("stack's key", pki.ec_key("secp256r1", 214), cpo_root).pem
    assert csms.send("CertificateSigned", certificate_chain=someone_else).status == "Accepted"
    assert stack.handled[-1] == "CertificateSigned None"
    assert (
        csms.send("CertificateSigned", certificate_chain=sign(csr, cpo_root)).status == "Accepted"
    )
    assert stack.handled.count("CertificateSigned None") == 1
    server.wait_for(
        lambda: any(
            "new charge point certificate" in (m.payload.get("tech_info") or "")
            for m in server.messages("SecurityEventNotification")
        ),
        what="the new certificate reported",
    )
    assert not any(
        word in text
        for word in ("SignChargingStationCertificate", "SignCertificate", CSMS_ROOT)
        for text in stack.texts("in")
    )
