"""L01 end to end: the signing certificate is judged before the request is answered.

CP-REQ-2..6: a certificate that does not pass answers `InvalidCertificate` (or
`RevokedCertificate`), sends SecurityEventNotification `InvalidFirmwareSigningCertificate`
(L01.FR.02, although the event table calls it non-critical) and starts nothing: no
SignedFirmwareStatusNotification at all, so a trigger afterwards still answers `Idle`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization

from agent.demo import pki
from agent.demo.rig import ChargerRig, Firmware
from agent.firmware import certs
from agent.slots import filemodel
from tests.e2e.conftest import HAPPY, Charger

DAY = datetime.timedelta(days=1)
NOW = datetime.datetime.now(datetime.UTC)
SIGNER_KEY = (2048, 101)  # the rig's signing key: only the certificate around it changes


def _signed_by(issuer: Callable[[ChargerRig], pki.Issued], **options: object) -> Callable:
    def make(rig: ChargerRig) -> str:
        return pki.issue("Firmware Signing", pki.rsa_key(*SIGNER_KEY), issuer(rig), **options).pem

    return make


def _other_root(rig: ChargerRig) -> pki.Issued:
    return pki.issue("Other Manufacturer Root", pki.rsa_key(2048, 200), ca=True)


def _impostor_root(rig: ChargerRig) -> pki.Issued:
    """The installed root's name on another key."""
    return pki.issue("Example Manufacturer Root", pki.rsa_key(2048, 200), ca=True)


def _intermediate(rig: ChargerRig) -> pki.Issued:
    return pki.issue("Example Intermediate CA", pki.rsa_key(2048, 201), rig.root, ca=True)


def _root(rig: ChargerRig) -> pki.Issued:
    return rig.root


def _small_key(rig: ChargerRig) -> str:
    return pki.issue("Firmware Signing", pki.rsa_key(1024, 102), rig.root).pem


def _garbage_in_pem(rig: ChargerRig) -> str:
    return "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def _too_long(rig: ChargerRig) -> str:
    """A certificate that is fine in every way but its length (many SANs)."""
    sans = [f"charger-{i:04d}.fleet.example" for i in range(150)]
    pem = pki.issue("Firmware Signing", pki.rsa_key(*SIGNER_KEY), rig.root, sans=sans).pem
    assert len(pem) > 5500
    return pem


CASES = {
    "untrusted root": (_signed_by(_other_root), "not an installed manufacturer root"),
    "same name, other key": (_signed_by(_impostor_root), "does not verify with root"),
    "intermediate-issued": (_signed_by(_intermediate), "intermediate CAs are not allowed"),
    "expired": (_signed_by(_root, not_after=NOW - DAY), "signing certificate expired"),
    "not yet valid": (_signed_by(_root, not_before=NOW + DAY), "not valid before"),
    "RSA 1024": (_small_key, "RSA key of 1024 bits"),
    "garbage": (lambda rig: "this is not a certificate", "not a PEM certificate"),
    "garbage PEM": (_garbage_in_pem, "does not parse"),
}


def assert_nothing_started(charger: Charger) -> None:
    """CP-REQ-6: no status for a refused request; the trigger still answers Idle (no
    requestId), which it could not if any status had been queued."""
    assert charger.trigger() == {"status": "Idle"}
    assert charger.csms.statuses() == [("Idle", None)]
    assert not charger.job()


@pytest.mark.parametrize("case", CASES)
def test_a_bad_signing_certificate_is_refused_before_anything_starts(
    charger: Charger, rig: ChargerRig, firmware: Firmware, fileserver, case: str
):
    """L01.FR.23/.24/.02, CP-REQ-3: InvalidCertificate in the .conf, the security event with
    a techInfo naming the reason, no download and no status."""
    make, reason = CASES[case]
    certificate = make(rig)
    charger.start()
    assert charger.update(firmware, 3, certificate=certificate) == "InvalidCertificate"
    event = charger.wait_event("InvalidFirmwareSigningCertificate")
    assert reason in event["tech_info"]
    assert_nothing_started(charger)
    assert fileserver.requests == []


def test_a_signing_key_that_is_not_pinned_is_refused(
    charger: Charger, rig: ChargerRig, firmware: Firmware, fileserver
):
    """`[firmware] signing_key_pins`: a certificate the manufacturer root did issue, but for
    another key than the pinned one, is InvalidCertificate with the event; the pinned one is
    accepted by the same daemon."""
    pinned = certs.key_pin(rig.signer.cert)
    other = pki.issue("Issued, not pinned", pki.rsa_key(2048, 78), rig.root)
    charger.start(firmware={"signing_key_pins": [pinned]})
    assert charger.update(firmware, 3, certificate=other.pem) == "InvalidCertificate"
    event = charger.wait_event("InvalidFirmwareSigningCertificate")
    assert "not one of the pinned keys" in event["tech_info"]
    assert fileserver.requests == []
    assert charger.update(firmware, 4) == "Accepted"
    charger.wait_status("Downloaded")


def test_a_certificate_longer_than_5500_characters_is_refused(
    charger: Charger, rig: ChargerRig, firmware: Firmware, fileserver
):
    """A00.FR.507 / schema maxLength 5500: a certificate fine in every way but its length is
    answered InvalidCertificate with the security event (L01.FR.24/.02), like any other
    unusable certificate, and nothing starts."""
    payload = {
        "requestId": 3,
        "firmware": {
            "location": firmware.url,
            "retrieveDateTime": "2020-01-01T00:00:00Z",
            "signingCertificate": _too_long(rig),
            "signature": firmware.signature,
        },
    }
    charger.start()
    answer = charger.update_raw(payload)  # past the library, whose schema will not send it
    assert answer[0] == 3 and answer[2] == {"status": "InvalidCertificate"}, answer
    event = charger.wait_event("InvalidFirmwareSigningCertificate")
    assert "5500" in event["tech_info"]
    assert_nothing_started(charger)
    assert fileserver.requests == []


def test_a_revoked_signing_certificate_answers_revoked(
    charger: Charger, rig: ChargerRig, firmware: Firmware, fileserver
):
    """L01.FR.25, CP-REQ-5: a serial listed in a CRL that the root signed → RevokedCertificate,
    with the same security event; nothing starts."""
    crl_dir = rig.base / "crl"
    crl_dir.mkdir()
    crl = pki.crl(rig.root, [rig.signer.cert.serial_number])
    (crl_dir / "root.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    charger.start(firmware={"crl_dir": str(crl_dir)})
    assert charger.update(firmware, 4) == "RevokedCertificate"
    event = charger.wait_event("InvalidFirmwareSigningCertificate")
    assert "revoked" in event["tech_info"]
    assert_nothing_started(charger)
    assert fileserver.requests == []


def test_a_crl_not_signed_by_the_root_revokes_nothing(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.25: only a CRL whose signature verifies with an installed root counts."""
    crl_dir = rig.base / "crl"
    crl_dir.mkdir()
    forged = pki.crl(_impostor_root(rig), [rig.signer.cert.serial_number])
    (crl_dir / "forged.pem").write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    genuine = pki.crl(rig.root, [])  # the root's own, current: crl_policy is satisfied
    (crl_dir / "root.crl").write_bytes(genuine.public_bytes(serialization.Encoding.DER))
    charger.start(firmware={"crl_dir": str(crl_dir)})
    assert charger.update(firmware, 5) == "Accepted"
    charger.wait_status("SignatureVerified")


def test_the_root_itself_may_sign_the_firmware(
    charger: Charger, rig: ChargerRig, fileserver, firmware: Firmware
):
    """CP-REQ-3: a signing certificate identical to an installed root is accepted, and the
    image signed with the root's key installs."""
    from agent.firmware.signature import sign_digest

    root_signed = Firmware(
        firmware.url, firmware.image, sign_digest(bytes.fromhex(firmware.digest), rig.root.key_pem)
    )
    agent = charger.start()
    assert charger.update(root_signed, 6, certificate=rig.root.pem) == "Accepted"
    rig.wait_reboot_request(agent)
    charger.assert_coherent(6, HAPPY)
    assert charger.events() == []


def test_without_a_manufacturer_root_nothing_can_be_installed(
    charger: Charger, rig: ChargerRig, firmware: Firmware, fileserver
):
    """CP-PRE-2, CP-REQ-4: no root installed → InvalidCertificate, and the techInfo says so."""
    empty = rig.base / "no-roots"
    empty.mkdir()
    charger.start(firmware={"manufacturer_roots": str(empty)})
    assert charger.update(firmware, 7) == "InvalidCertificate"
    event = charger.wait_event("InvalidFirmwareSigningCertificate")
    assert "no manufacturer root certificate installed" in event["tech_info"]
    assert_nothing_started(charger)
    assert filemodel.load_env(rig.env)["primary"] == "A"
    assert fileserver.requests == []
