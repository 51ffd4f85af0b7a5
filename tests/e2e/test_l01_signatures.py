"""L01 end to end: the signature over the whole image decides whether it is ever booted.

L01.FR.03/.04/.12, CP-SIG-1..5: the SHA-256 of the streamed image is checked against
`firmware.signature` with the signing certificate's key: RSA-PSS, RSA PKCS#1 v1.5 or ECDSA,
within the configured set. A bad, empty or undecodable signature is `InvalidSignature` after
`Downloaded` (never a download failure), with SecurityEventNotification
`InvalidFirmwareSignature`, and the written slot is never armed.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from agent.demo import pki
from agent.demo.rig import ChargerRig, Firmware
from agent.firmware.signature import sign_digest
from agent.slots import filemodel
from tests.e2e.conftest import HAPPY, Charger

BAD_SIGNATURES = {
    "made for another image": lambda rig: rig.sign(b"another image"),
    "empty": lambda rig: "",
    "not Base64": lambda rig: "this is not base64 !!!",
    "random bytes": lambda rig: base64.b64encode(bytes(range(256))).decode(),
}


def pkcs1v15(rig: ChargerRig, image: bytes) -> str:
    """An RSA PKCS#1 v1.5 signature as `openssl dgst -sha256 -sign` makes it."""
    key = rig.signer.key
    assert isinstance(key, rsa.RSAPrivateKey)
    raw = key.sign(image, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def assert_never_armed(rig: ChargerRig) -> None:
    env = filemodel.load_env(rig.env)
    assert env["primary"] == "A" and env["trial"] is None, env
    assert not rig.reboot_marker.exists()


@pytest.mark.parametrize("case", BAD_SIGNATURES)
def test_a_bad_signature_is_invalid_and_the_slot_is_never_armed(
    charger: Charger, rig: ChargerRig, firmware: Firmware, case: str
):
    """L01.FR.03, CP-SIG-3: Downloading, Downloaded, InvalidSignature with the requestId, the
    InvalidFirmwareSignature event, no trial armed, no reboot."""
    charger.start()
    signature = BAD_SIGNATURES[case](rig)
    assert charger.update(firmware, 11, signature=signature) == "Accepted"
    charger.wait_status("InvalidSignature")
    event = charger.wait_event("InvalidFirmwareSignature")
    assert "signature" in event["tech_info"]
    charger.assert_coherent(11, ["Downloading", "Downloaded", "InvalidSignature"])
    assert_never_armed(rig)
    assert charger.job()["outcome"] == "InvalidSignature"
    charger.assert_triggers("InvalidSignature", 11)  # L01.FR.29: a failure end state too


def test_rsa_pss_is_accepted(charger: Charger, rig: ChargerRig, firmware: Firmware):
    """L01.FR.04: RSA-PSS, MGF1-SHA256 (what `ocpp-fw-agent sign` makes)."""
    agent = charger.start()
    assert charger.update(firmware, 12) == "Accepted"
    rig.wait_reboot_request(agent)
    charger.assert_coherent(12, HAPPY)
    assert "signature verified (rsa-pss)" in agent.log


def test_rsa_pss_with_another_salt_length_is_accepted(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """CP-SIG-5: any valid PSS salt length, not only 32 (here the maximum, OpenSSL's -1)."""
    key = rig.signer.key
    assert isinstance(key, rsa.RSAPrivateKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    signature = base64.b64encode(key.sign(firmware.image, pss, hashes.SHA256())).decode()
    agent = charger.start()
    assert charger.update(firmware, 13, signature=signature) == "Accepted"
    rig.wait_reboot_request(agent)
    charger.assert_coherent(13, HAPPY)


def test_rsa_pkcs1v15_is_accepted(charger: Charger, rig: ChargerRig, firmware: Firmware):
    """CP-SIG-5: RSA PKCS#1 v1.5 over SHA-256, what OpenSSL-based signers produce."""
    agent = charger.start()
    assert charger.update(firmware, 14, signature=pkcs1v15(rig, firmware.image)) == "Accepted"
    rig.wait_reboot_request(agent)
    charger.assert_coherent(14, HAPPY)
    assert "signature verified (rsa-pkcs1v15)" in agent.log


def test_ecdsa_with_an_ec_signing_certificate_is_accepted(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """CP-SIG-5: an EC P-256 signing certificate under the root, ECDSA-SHA256 (DER r,s)."""
    signer = pki.issue("Firmware Signing EC", pki.ec_key("secp256r1", 1), rig.root)
    digest = hashlib.sha256(firmware.image).digest()
    signature = sign_digest(digest, signer.key_pem)
    agent = charger.start()
    reply = charger.update(firmware, 15, certificate=signer.pem, signature=signature)
    assert reply == "Accepted"
    rig.wait_reboot_request(agent)
    charger.assert_coherent(15, HAPPY)
    assert "signature verified (ecdsa)" in agent.log


def test_a_scheme_left_out_of_the_configured_set_is_invalid(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """CP-SIG-5: the accepted set is configurable; a PKCS#1 v1.5 signature with only RSA-PSS
    allowed is InvalidSignature (and the same signature verifies by default, test above)."""
    charger.start(firmware={"signature_algorithms": ["rsa-pss"]})
    signature = pkcs1v15(rig, firmware.image)
    assert charger.update(firmware, 16, signature=signature) == "Accepted"
    charger.wait_status("InvalidSignature")
    charger.wait_event("InvalidFirmwareSignature")
    charger.assert_coherent(16, ["Downloading", "Downloaded", "InvalidSignature"])
    assert_never_armed(rig)


def test_the_digest_is_bound_to_the_whole_file(
    charger: Charger, rig: ChargerRig, fileserver, firmware: Firmware
):
    """L01.FR.04: a valid signature of the image with one byte more appended does not pass."""
    longer = firmware.image + b"\0"
    signature = sign_digest(hashlib.sha256(longer).digest(), rig.signer.key_pem)
    charger.start()
    assert charger.update(firmware, 17, signature=signature) == "Accepted"
    charger.wait_status("InvalidSignature")
    assert_never_armed(rig)
