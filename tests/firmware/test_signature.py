"""Firmware signatures over SHA-256 of the whole file (L01.FR.03, .04, .12)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

from agent.demo import pki as fwpki
from agent.firmware import certs, signature
from agent.firmware.errors import CertificateRejected, SignatureInvalid

DATA = b"firmware bytes" * 1000
DIGEST = hashlib.sha256(DATA).digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_rsa_pss_round_trip(rsa_signer):
    """L01.FR.04: RSA-PSS with SHA-256 over the entire file, verified prehashed."""
    sig = signature.sign_digest(DIGEST, rsa_signer.key_pem)
    assert signature.verify_digest(DIGEST, sig, rsa_signer.cert) == "rsa-pss"


@pytest.mark.parametrize("salt", ["max", 0, 20, 64])
def test_rsa_pss_any_salt_length(rsa_signer, salt):
    salt_length = padding.PSS.MAX_LENGTH if salt == "max" else salt
    raw = rsa_signer.key.sign(
        DATA,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length),
        hashes.SHA256(),
    )
    assert signature.verify_digest(DIGEST, b64(raw), rsa_signer.cert) == "rsa-pss"


def test_rsa_pkcs1v15_as_openssl_dgst_makes_it(rsa_signer):
    """CP-SIG-5: peers sign with `openssl dgst -sha256 -sign` (PKCS#1 v1.5)."""
    raw = rsa_signer.key.sign(DATA, padding.PKCS1v15(), hashes.SHA256())
    assert signature.verify_digest(DIGEST, b64(raw), rsa_signer.cert) == "rsa-pkcs1v15"
    with pytest.raises(SignatureInvalid, match="does not verify"):
        signature.verify_digest(DIGEST, b64(raw), rsa_signer.cert, allowed=("rsa-pss",))


def test_ecdsa_round_trip(ec_signer):
    sig = signature.sign_digest(DIGEST, ec_signer.key_pem)
    assert signature.verify_digest(DIGEST, sig, ec_signer.cert) == "ecdsa"
    with pytest.raises(SignatureInvalid, match="not allowed"):
        signature.verify_digest(DIGEST, sig, ec_signer.cert, allowed=("rsa-pss", "rsa-pkcs1v15"))


def test_rsa_not_allowed_at_all(rsa_signer):
    sig = signature.sign_digest(DIGEST, rsa_signer.key_pem)
    with pytest.raises(SignatureInvalid, match="RSA signatures are not allowed"):
        signature.verify_digest(DIGEST, sig, rsa_signer.cert, allowed=("ecdsa",))


def test_signature_over_other_data_fails(rsa_signer, ec_signer):
    """L01.FR.03: a signature that does not match the file -> InvalidSignature."""
    other = hashlib.sha256(DATA + b"!").digest()
    for signer in (rsa_signer, ec_signer):
        sig = signature.sign_digest(other, signer.key_pem)
        with pytest.raises(SignatureInvalid) as caught:
            signature.verify_digest(DIGEST, sig, signer.cert)
        assert caught.value.status == "InvalidSignature"


def test_signature_by_other_key_fails(rsa_signer, ec_signer):
    ec_sig = signature.sign_digest(DIGEST, ec_signer.key_pem)
    with pytest.raises(SignatureInvalid):
        signature.verify_digest(DIGEST, ec_sig, rsa_signer.cert)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   \n", "missing"),
        ("not base64 at all!", "not valid Base64"),
        ("QUJ", "not valid Base64"),
        ("====", "not valid Base64"),
    ],
)
def test_missing_or_undecodable_signature(rsa_signer, text, reason):
    """L01 step 5: a missing signature is an invalid signature, never a crash."""
    with pytest.raises(SignatureInvalid, match=reason):
        signature.verify_digest(DIGEST, text, rsa_signer.cert)


def test_garbage_that_decodes_does_not_verify(ec_signer):
    with pytest.raises(SignatureInvalid, match="does not verify"):
        signature.verify_digest(DIGEST, b64(b"\x30\x03garbage"), ec_signer.cert)


def test_line_wrapped_base64_is_accepted(rsa_signer):
    sig = signature.sign_digest(DIGEST, rsa_signer.key_pem)
    wrapped = "\n".join(sig[i : i + 64] for i in range(0, len(sig), 64)) + "\n"
    assert signature.verify_digest(DIGEST, wrapped, rsa_signer.cert) == "rsa-pss"


def test_unsupported_private_key_type_cannot_sign():
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="use RSA or EC"):
        signature.sign_digest(DIGEST, pem)
    with pytest.raises(ValueError, match="cannot load the private key"):
        signature.sign_digest(
            DIGEST, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )


def test_sign_and_verify_image_offline(tmp_path: Path, ec_root, ec_signer):
    """What `ocpp-fw-agent sign` / `verify` do: the full charger-side check, offline."""
    image = tmp_path / "fw.bin"
    image.write_bytes(DATA)
    sig = signature.sign_image(image, ec_signer.key_pem)
    roots = certs.RootStore((ec_root.cert,))
    verdict = signature.verify_image(image, sig, ec_signer.pem, roots)
    assert verdict.algorithm == "ecdsa"
    assert verdict.digest == DIGEST
    image.write_bytes(DATA[:-1] + b"?")
    with pytest.raises(SignatureInvalid):
        signature.verify_image(image, sig, ec_signer.pem, roots)
    with pytest.raises(CertificateRejected):
        signature.verify_image(image, sig, ec_signer.pem, certs.RootStore(()))


def test_ecdsa_p384_signer(ec_root):
    signer = fwpki.issue("P-384 signer", fwpki.ec_key("secp384r1", 9), ec_root)
    raw = signer.key.sign(DATA, ec.ECDSA(hashes.SHA256()))
    assert signature.verify_digest(DIGEST, b64(raw), signer.cert) == "ecdsa"


def test_digest_must_be_sha256(rsa_signer):
    with pytest.raises(ValueError):
        signature.verify_digest(b"short", "QUJD", rsa_signer.cert)


@pytest.mark.parametrize("size", [31, 33])
def test_a_digest_of_any_other_length_is_refused(rsa_signer, size):
    """Only a SHA-256 digest is verified: one byte short or long is a caller's bug, refused
    before any key is used (mutation testing: `!=` made `<` let a longer one through)."""
    with pytest.raises(ValueError, match="SHA-256"):
        signature.verify_digest(b"\0" * size, "QUJD", rsa_signer.cert)


def test_rsa_signatures_are_made_with_the_digest_length_salt(rsa_signer):
    """`sign` makes RSA-PSS with MGF1-SHA-256 and a 32-byte salt (the digest's length), the
    profile verifiers that do not read the salt from the signature expect; checked with an
    explicit salt length, not AUTO (mutation testing: salt 31 or 33 went unnoticed)."""
    raw = base64.b64decode(signature.sign_digest(DIGEST, rsa_signer.key_pem))
    exact = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    rsa_signer.cert.public_key().verify(raw, DATA, exact, hashes.SHA256())
