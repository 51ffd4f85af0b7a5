"""The firmware signature: SHA-256 over the whole file, signed with the signing certificate's key.

L01.FR.04 names RSA-PSS (or EC-Schnorr, which no common library offers) with SHA-256; real
signers mostly use OpenSSL defaults (RSA PKCS#1 v1.5, ECDSA). So the scheme follows the signing
certificate's key type and a configurable allowed set (`config.SIGNATURE_ALGORITHMS`):

* RSA: RSA-PSS with MGF1-SHA256 and any valid salt length ("rsa-pss"), then PKCS#1 v1.5
  ("rsa-pkcs1v15");
* EC: ECDSA with SHA-256, DER-encoded (r, s) ("ecdsa").

Verification uses the digest computed while the image streamed into the slot (`Prehashed`),
so the image is never read a second time for it. `firmware.signature` is Base64; a missing or
undecodable one is an invalid signature (L01 scenario step 5), never a download error.
The signing helpers serve `ocpp-fw-agent sign` and the tests; they sign RSA with PSS (salt
length 32, the most widely accepted choice) and EC with ECDSA.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from agent.config import SIGNATURE_ALGORITHMS
from agent.firmware import certs
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import SignatureInvalid

log = logging.getLogger(__name__)

MAX_SIGNATURE_CHARS = 800  # firmware.signature maxLength in the schema
_READ_SIZE = 1 << 20
# PSS.AUTO (salt length read from the signature) exists since cryptography 37, so also on
# Debian 12's 38.0.4; it is for verification only.
_PSS_ANY = padding.PSS.AUTO


def decode_signature(signature_b64: str | None) -> bytes:
    """The raw signature bytes; whitespace (line wrapping) is ignored, anything else must be B64."""
    if signature_b64 is None or not signature_b64.strip():
        raise SignatureInvalid("signature missing")
    compact = "".join(signature_b64.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid(f"signature is not valid Base64 ({exc})") from exc
    if not raw:
        raise SignatureInvalid("signature is empty")
    return raw


def verify_digest(
    digest: bytes,
    signature_b64: str | None,
    certificate: x509.Certificate,
    allowed: Sequence[str] = SIGNATURE_ALGORITHMS,
) -> str:
    """Check the signature over the SHA-256 `digest`; return the algorithm that matched.

    Raises `SignatureInvalid` (status InvalidSignature) when it is missing, undecodable, made
    with a key type or scheme that is not allowed, or does not verify.
    """
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError("digest must be a SHA-256 digest (32 bytes)")
    raw = decode_signature(signature_b64)
    prehashed = utils.Prehashed(hashes.SHA256())
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        schemes: list[tuple[str, padding.AsymmetricPadding]] = [
            ("rsa-pss", padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_PSS_ANY)),
            ("rsa-pkcs1v15", padding.PKCS1v15()),
        ]
        usable = [(name, pad) for name, pad in schemes if name in allowed]
        if not usable:
            raise SignatureInvalid("RSA signatures are not allowed by the configuration")
        for name, pad in usable:
            try:
                key.verify(raw, digest, pad, prehashed)
            except (InvalidSignature, ValueError):
                continue
            return name
        raise SignatureInvalid(f"signature does not verify ({', '.join(n for n, _ in usable)})")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if "ecdsa" not in allowed:
            raise SignatureInvalid("ECDSA signatures are not allowed by the configuration")
        try:
            key.verify(raw, digest, ec.ECDSA(prehashed))
        except (InvalidSignature, ValueError, UnsupportedAlgorithm) as exc:
            raise SignatureInvalid("signature does not verify (ecdsa)") from exc
        return "ecdsa"
    raise SignatureInvalid(f"signing key type {type(key).__name__} is not supported")


def file_digest(path: Path) -> bytes:
    """SHA-256 of a file, read in bounded chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_READ_SIZE):
            hasher.update(block)
    return hasher.digest()


def load_private_key(private_key_pem: bytes, password: bytes | None = None) -> object:
    """A private key from PEM; never logs or echoes the key material."""
    try:
        return serialization.load_pem_private_key(private_key_pem, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"cannot load the private key: {type(exc).__name__}") from None


def sign_digest(digest: bytes, private_key_pem: bytes, password: bytes | None = None) -> str:
    """Base64 signature over a SHA-256 digest: RSA-PSS for RSA keys, ECDSA for EC keys."""
    key = load_private_key(private_key_pem, password)
    prehashed = utils.Prehashed(hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        raw = key.sign(digest, pss, prehashed)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(digest, ec.ECDSA(prehashed))
    else:
        raise ValueError(f"cannot sign firmware with a {type(key).__name__}: use RSA or EC")
    return base64.b64encode(raw).decode("ascii")


def sign_image(path: Path, private_key_pem: bytes, password: bytes | None = None) -> str:
    """Base64 signature of a firmware image file (for `ocpp-fw-agent sign`)."""
    return sign_digest(file_digest(path), private_key_pem, password)


@dataclasses.dataclass(frozen=True)
class OfflineVerdict:
    certificate: certs.CertVerdict
    algorithm: str
    digest: bytes


def verify_image(
    image: Path,
    signature_b64: str,
    certificate_pem: str,
    roots: certs.RootStore,
    *,
    crls: certs.CrlSet | None = None,
    clock: TrustedClock | None = None,
    allowed: Sequence[str] = SIGNATURE_ALGORITHMS,
    pins: Sequence[str] = (),
) -> OfflineVerdict:
    """The whole check a charger does, offline (for `ocpp-fw-agent verify`).

    Raises `CertificateRejected` or `SignatureInvalid`.
    """
    verdict = certs.check_signing_certificate(
        certificate_pem, roots, crls or certs.CrlSet(()), clock or TrustedClock(), pins=pins
    )
    digest = file_digest(image)
    algorithm = verify_digest(digest, signature_b64, verdict.certificate, allowed)
    return OfflineVerdict(verdict, algorithm, digest)
