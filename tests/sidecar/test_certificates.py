"""The CA stores the agent uses, managed over OCPP (white paper M03, M04, M05): in sidecar
mode the agent answers InstallCertificate, GetInstalledCertificateIds and DeleteCertificate and
the stack never sees them; the firmware check trusts exactly what the store holds."""

from __future__ import annotations

import hashlib
import json
import stat
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from ocpp.v16 import call

from agent.demo import pki
from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, Firmware
from agent.security.certstore import STORE_MAX
from tests.sidecar.conftest import Sidecar, Stack

MANUFACTURER = "ManufacturerRootCertificate"
CSMS_ROOT = "CentralSystemRootCertificate"


def expected_hash_data(cert: Any) -> dict[str, str]:
    """RFC 6960 CertID fields of a self-signed RSA root, computed here without the agent's
    code: SHA-256 of the DER issuer name and of the issuer key's BIT STRING contents (for RSA
    the PKCS#1 RSAPublicKey); the serial in upper-case hex without leading zeros (§6.1)."""
    key_bits = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return {
        "hash_algorithm": "SHA256",
        "issuer_name_hash": hashlib.sha256(cert.issuer.public_bytes()).hexdigest(),
        "issuer_key_hash": hashlib.sha256(key_bits).hexdigest(),
        "serial_number": format(cert.serial_number, "X"),
    }


def install(csms: TestCsms, cp: str, kind: str, pem: str) -> str:
    reply = csms.call(cp, call.InstallCertificate(certificate_type=kind, certificate=pem))
    return str(reply.status)


def installed(csms: TestCsms, cp: str, kind: str) -> Any:
    return csms.call(cp, call.GetInstalledCertificateIds(certificate_type=kind))


def delete(csms: TestCsms, cp: str, hash_data: dict[str, str]) -> str:
    return str(csms.call(cp, call.DeleteCertificate(certificate_hash_data=hash_data)).status)


def update(csms: TestCsms, sidecar: Sidecar, signer: pki.Issued, request_id: int) -> str:
    rig = sidecar.rig
    firmware = Firmware("http://127.0.0.1:9/none.bin", b"x", rig.sign(b"x"))
    payload = rig.request(firmware, request_id, certificate=signer.pem)
    return str(csms.call(rig.charge_point_id, call.SignedUpdateFirmware(**payload)).status)


def stack_saw_any(stack: Stack, *actions: str) -> bool:
    return any(f'"{a}"' in text for a in actions for text in stack.texts("in"))


@pytest.mark.both_peers
def test_roots_installed_listed_and_deleted_by_the_agent_and_used_by_the_firmware_check(
    sidecar: Sidecar, csms: TestCsms, agents: list[AgentProcess]
) -> None:
    """M03: the configured manufacturer root is listed with its RFC 6960 hash data, no CSMS
    root → NotFound (M03.FR.02). M05: a leaf, garbage, two certificates, an expired CA, a PEM
    over 5500 characters → Rejected (M05.FR.06), a CSMS root refused raises
    InvalidCentralSystemCertificate (TC_078); a new manufacturer root is Accepted and from then
    on a signing certificate it issued is accepted (L01.FR.23). M04: deleted → Accepted, again
    → NotFound (M04.FR.02/04); a configured root deleted stays deleted after a restart."""
    rig = sidecar.rig
    cp = rig.charge_point_id
    sidecar.start(firmware={"csms_manages_manufacturer_roots": True})
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"

    reply = installed(csms, cp, MANUFACTURER)
    assert reply.status == "Accepted"
    assert reply.certificate_hash_data == [expected_hash_data(rig.root.cert)]
    assert installed(csms, cp, CSMS_ROOT).status == "NotFound"

    expired = pki.issue("Old CA", pki.ec_key("secp256r1", 200), ca=True, not_after=pki.NOW)
    other = pki.issue("Other CA", pki.ec_key("secp256r1", 201), ca=True)
    refused = {
        "leaf": rig.signer.pem,
        "garbage": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "two": other.pem + pki.issue("Third CA", pki.ec_key("secp256r1", 202), ca=True).pem,
        "expired": expired.pem,
    }
    for why, pem in refused.items():
        assert install(csms, cp, CSMS_ROOT, pem) == "Rejected", why
    oversize = other.pem + "\n" * (5501 - len(other.pem))
    frame = [
        2,
        "big-1",
        "InstallCertificate",
        {"certificateType": CSMS_ROOT, "certificate": oversize},
    ]
    csms.send_raw(cp, json.dumps(frame))
    assert csms.answer_to("big-1") == [3, "big-1", {"status": "Rejected"}]
    events = csms.wait_message("SecurityEventNotification", len(refused) + 1)
    assert {e.payload["type"] for e in events} == {"InvalidCentralSystemCertificate"}

    vendor_b = pki.issue("Vendor B Root", pki.rsa_key(2048, 203), ca=True)
    signer_b = pki.issue("Vendor B Signing", pki.rsa_key(2048, 204), vendor_b)
    assert update(csms, sidecar, signer_b, 31) == "InvalidCertificate"
    assert install(csms, cp, MANUFACTURER, vendor_b.pem) == "Accepted"
    assert install(csms, cp, MANUFACTURER, vendor_b.pem) == "Accepted"  # already there
    listed = installed(csms, cp, MANUFACTURER).certificate_hash_data
    assert listed == [expected_hash_data(rig.root.cert), expected_hash_data(vendor_b.cert)]
    assert update(csms, sidecar, signer_b, 32) == "Accepted"

    assert delete(csms, cp, expected_hash_data(vendor_b.cert)) == "Accepted"
    assert delete(csms, cp, expected_hash_data(vendor_b.cert)) == "NotFound"
    assert update(csms, sidecar, signer_b, 33) == "InvalidCertificate"
    configured = expected_hash_data(rig.root.cert)
    configured["issuer_key_hash"] = configured["issuer_key_hash"].upper()  # CiString
    assert delete(csms, cp, configured) == "Accepted"
    assert installed(csms, cp, MANUFACTURER).status == "NotFound"

    index = rig.state / "certs" / "index.json"
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    agents[-1].stop()
    sidecar.restart()
    assert installed(csms, cp, MANUFACTURER).status == "NotFound"  # agent.toml's stays deleted
    assert update(csms, sidecar, rig.signer, 34) == "InvalidCertificate"
    assert install(csms, cp, MANUFACTURER, rig.root.pem) == "Accepted"
    assert installed(csms, cp, MANUFACTURER).certificate_hash_data == [
        expected_hash_data(rig.root.cert)
    ]
    assert not stack_saw_any(
        stack, "InstallCertificate", "GetInstalledCertificateIds", "DeleteCertificate"
    )


@pytest.mark.both_peers
def test_by_default_the_csms_cannot_change_the_manufacturer_roots(
    sidecar: Sidecar, csms: TestCsms
) -> None:
    """The one promise against a hostile CSMS: a manufacturer root signs firmware, so by
    default InstallCertificate(ManufacturerRootCertificate) is Rejected and a signing
    certificate from the CSMS's own CA stays InvalidCertificate (L01.FR.02), and the configured
    root cannot be deleted (Failed); CSMS roots are still managed (M05)."""
    rig = sidecar.rig
    cp = rig.charge_point_id
    sidecar.start()
    assert sidecar.stack().boot().status == "Accepted"
    own = pki.issue("CSMS's own CA", pki.rsa_key(2048, 205), ca=True)
    own_signer = pki.issue("CSMS's signer", pki.rsa_key(2048, 206), own)
    assert install(csms, cp, MANUFACTURER, own.pem) == "Rejected"
    assert update(csms, sidecar, own_signer, 35) == "InvalidCertificate"
    assert installed(csms, cp, MANUFACTURER).certificate_hash_data == [
        expected_hash_data(rig.root.cert)
    ]
    assert delete(csms, cp, expected_hash_data(rig.root.cert)) == "Failed"
    assert update(csms, sidecar, rig.signer, 36) == "Accepted"
    assert install(csms, cp, CSMS_ROOT, own.pem) == "Accepted"
    assert sidecar.agent is not None
    sidecar.agent.wait_log("csms_manages_manufacturer_roots")


def test_the_store_holds_at_most_its_maximum(sidecar: Sidecar, csms: TestCsms) -> None:
    """M05.FR.03: with CertificateStoreMaxLength certificates installed (both stores, the
    configured manufacturer root included) one more is Rejected; deleting one makes room."""
    cp = sidecar.rig.charge_point_id
    sidecar.start()
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"
    reply = csms.call(cp, call.GetConfiguration(key=["CertificateStoreMaxLength"]))
    assert reply.configuration_key[0]["value"] == str(STORE_MAX)
    roots = [
        pki.issue(f"CA {n}", pki.ec_key("secp256r1", 300 + n), ca=True) for n in range(STORE_MAX)
    ]
    answers = [install(csms, cp, CSMS_ROOT, root.pem) for root in roots]
    assert answers == ["Accepted"] * (STORE_MAX - 1) + ["Rejected"]
    assert len(installed(csms, cp, CSMS_ROOT).certificate_hash_data) == STORE_MAX - 1
    first = installed(csms, cp, CSMS_ROOT).certificate_hash_data[0]
    assert delete(csms, cp, first) == "Accepted"  # profile 0: no CSMS root is in use
    assert install(csms, cp, CSMS_ROOT, roots[-1].pem) == "Accepted"


def test_direct_mode_answers_the_same_messages(
    sidecar: Sidecar, csms: TestCsms, agents: list[AgentProcess]
) -> None:
    """Direct 1.6 mode routes the same handlers: the agent is the only client there, so
    GetConfiguration is answered with its keys alone (others unknown)."""
    rig = sidecar.rig
    cp = rig.charge_point_id
    agents.append(AgentProcess(rig.config()).start())
    csms.wait_message("BootNotification")
    assert installed(csms, cp, MANUFACTURER).certificate_hash_data == [
        expected_hash_data(rig.root.cert)
    ]
    other = pki.issue("Other CA", pki.ec_key("secp256r1", 201), ca=True)
    assert install(csms, cp, CSMS_ROOT, other.pem) == "Accepted"
    reply = csms.call(cp, call.ChangeConfiguration(key="SecurityProfile", value="0"))
    assert reply.status == "Rejected"
    reply = csms.call(cp, call.ChangeConfiguration(key="HeartbeatInterval", value="60"))
    assert reply.status == "NotSupported"
    reply = csms.call(cp, call.GetConfiguration(key=["SecurityProfile", "HeartbeatInterval"]))
    assert reply.configuration_key == [{"key": "SecurityProfile", "readonly": False, "value": "0"}]
    assert reply.unknown_key == ["HeartbeatInterval"]
    keys = [kv["key"] for kv in csms.call(cp, call.GetConfiguration()).configuration_key]
    assert "AuthorizationKey" in keys and "CpoName" in keys
    csms.send_raw(cp, json.dumps([2, "gc-1", "GetConfiguration", {"key": ["x" * 51]}]))
    assert csms.answer_to("gc-1")[:3] == [4, "gc-1", "PropertyConstraintViolation"]
