"""RSA-PSS-signed signing certificates from committed OpenSSL fixtures (L01.FR.23, A00.FR.501).

cryptography 38 (Debian 12, what the .deb runs on) can verify a PSS-signed certificate but can
neither build one nor read its PSS parameters, so `certs.signed_by` tries the usual SHA-2
profiles there. Certificates made once with `openssl x509 -sigopt rsa_padding_mode:pss`
(fixtures/make-pss-fixtures.sh) put that branch under test in the Debian-stack pass too, and
the current-release branch (parameters read from the certificate) in the other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cryptography
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding

from agent.demo import pki as fwpki
from agent.firmware import certs, signature
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected, SignatureInvalid
from tests.security import certfactory as make

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLOCK = TrustedClock()
NO_CRLS = certs.CrlSet(())


def pem(name: str) -> str:
    return (FIXTURES / name).read_text()


def cert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem(name).encode())


def roots(*names: str) -> certs.RootStore:
    return certs.RootStore(tuple(cert(name) for name in names))


def with_flipped_signature_byte(certificate_pem: str) -> str:
    """The same certificate with one bit of its signature (the DER's last byte) changed."""
    loaded = x509.load_pem_x509_certificate(certificate_pem.encode())
    der = bytearray(loaded.public_bytes(Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_certificate(bytes(der)).public_bytes(Encoding.PEM).decode()


@pytest.mark.parametrize("signer", ["pss-sha256-signer.pem", "pss-sha512-signer.pem"])
def test_a_pss_signed_certificate_is_accepted(signer: str):
    """SHA-256 with salt 32 (the common profile) and SHA-512 with the longest salt (further
    down the list cryptography 38 has to try) both chain to the root."""
    verdict = certs.check_signing_certificate(pem(signer), roots("pss-root.pem"), NO_CRLS, CLOCK)
    assert verdict.root == cert("pss-root.pem")
    assert verdict.certificate.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSASSA_PSS


def test_a_pss_signature_from_another_key_is_refused():
    """A root with the same name but another key did not sign it: every PSS profile tried
    fails, and the answer is InvalidCertificate, not an exception."""
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(
            pem("pss-sha256-signer.pem"), roots("other-root.pem"), NO_CRLS, CLOCK
        )
    assert caught.value.status == "InvalidCertificate"


@pytest.mark.parametrize("signer", ["pss-sha256-signer.pem", "pss-sha512-signer.pem"])
def test_a_pss_certificate_with_a_changed_signature_is_refused(signer: str):
    tampered = with_flipped_signature_byte(pem(signer))
    changed = x509.load_pem_x509_certificate(tampered.encode())
    assert not certs.signed_by(changed, cert("pss-root.pem"))
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(tampered, roots("pss-root.pem"), NO_CRLS, CLOCK)
    assert caught.value.status == "InvalidCertificate"


def test_firmware_signed_with_the_pss_certificates_key_verifies(tmp_path: Path):
    """The whole offline check (`ocpp-fw-agent verify`) with a PSS-signed certificate: the
    certificate chains, the image's RSA-PSS signature verifies; a changed image does not."""
    image = tmp_path / "fw.bin"
    image.write_bytes(b"firmware 3.0" * 5000)
    key = (FIXTURES / "pss-signer.key").read_bytes()
    sig = signature.sign_image(image, key)
    verdict = signature.verify_image(
        image, sig, pem("pss-sha256-signer.pem"), roots("pss-root.pem"), clock=CLOCK
    )
    assert verdict.algorithm == "rsa-pss"
    assert verdict.digest == hashlib.sha256(image.read_bytes()).digest()
    image.write_bytes(b"firmware 3.1" * 5000)
    with pytest.raises(SignatureInvalid):
        signature.verify_image(
            image, sig, pem("pss-sha256-signer.pem"), roots("pss-root.pem"), clock=CLOCK
        )


def test_this_cryptography_builds_pss_certificates_if_it_is_new_enough(rsa_root):
    """Where cryptography can build PSS certificates (>= 40), one it built is accepted too;
    cryptography 38 is the one release line expected not to (then the fixtures above are the
    PSS tests)."""
    if not fwpki.PSS_CERTS:
        assert int(cryptography.__version__.split(".")[0]) < 40, cryptography.__version__
        return
    signer = fwpki.issue("PSS signed", fwpki.rsa_key(2048, 1), rsa_root, pss=True)
    verdict = certs.check_signing_certificate(
        signer.pem, certs.RootStore((rsa_root.cert,)), NO_CRLS, CLOCK
    )
    assert verdict.root == rsa_root.cert


def test_a_pss_certificate_is_checked_with_the_parameters_it_names(rsa_root):
    """Where cryptography reads a certificate's PSS parameters (>= 41) they are used as named:
    SHA-256 with MGF1 over SHA-512, outside the usual profiles that cryptography 38 falls back
    to trying, verifies; the same bytes under another issuer key do not."""
    if not fwpki.PSS_CERTS or not hasattr(x509.Certificate, "signature_algorithm_parameters"):
        assert int(cryptography.__version__.split(".")[0]) < 41, cryptography.__version__
        return
    mixed = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=20)
    key = fwpki.rsa_key(2048, 1)
    signed = make.builder("PSS mixed hashes", key, rsa_root).sign(
        rsa_root.key,
        hashes.SHA256(),
        rsa_padding=mixed,  # type: ignore[call-arg]
    )
    assert certs.signed_by(signed, rsa_root.cert)
    verdict = certs.check_signing_certificate(
        fwpki.Issued(signed, key).pem, certs.RootStore((rsa_root.cert,)), NO_CRLS, CLOCK
    )
    assert verdict.root == rsa_root.cert
    assert not certs.signed_by(signed, cert("other-root.pem"))
