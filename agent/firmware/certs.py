"""Manufacturer root store and the check of a firmware signing certificate (L01.FR.12/.23-.25).

A `SignedUpdateFirmware.req` carries the certificate the manufacturer signed the image with.
The white paper forbids intermediate CAs for it, so the rule is simple and strict: the
certificate must be issued *directly* by one of the installed ManufacturerRootCertificates (or
be byte-identical to one), inside its validity period, with an RSA key of at least 2048 bits or
an EC key of at least 224 bits (A00.FR.501-503), in PEM of at most 5500 characters. It is
checked before the request is answered; a failure answers `InvalidCertificate`, a serial listed
in a CRL that a root signed answers `RevokedCertificate`.

Revocation comes from CRL files in a configured directory. A CRL counts only when its signature
verifies with the key of an installed root, so a CRL dropped in by anyone else cannot revoke
(or un-revoke) anything.

Written against the cryptography 38 API (Debian 12): `not_valid_before` (naive UTC) when the
`_utc` properties are absent, no `verify_directly_issued_by`, and no `signature_algorithm_
parameters` for RSA-PSS-signed certificates (then SHA-256/384/512 with MGF1 of the same hash
and any salt length are tried).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import re
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from agent.firmware.clock import ClockSource, TrustedClock
from agent.firmware.errors import CertificateRejected, UntrustedTime

log = logging.getLogger(__name__)

MAX_PEM_CHARS = 5500  # firmware.signingCertificate maxLength in the schema
MIN_RSA_BITS = 2048
MIN_EC_BITS = 224
CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")
CRL_SUFFIXES = (".pem", ".crl", ".der")
INVALID = "InvalidCertificate"
REVOKED = "RevokedCertificate"

_ISSUER_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    dsa.DSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class RootStore:
    """The installed manufacturer roots; `problems` lists entries that were skipped."""

    roots: tuple[x509.Certificate, ...]
    problems: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CrlSet:
    """CRLs as read from disk; whether each one counts is decided against the roots."""

    crls: tuple[x509.CertificateRevocationList, ...]
    problems: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CertVerdict:
    """An accepted signing certificate and why it was accepted."""

    certificate: x509.Certificate
    root: x509.Certificate
    clock_source: ClockSource
    key_description: str  # e.g. "RSA 3072", "EC secp256r1 (256)"

    @property
    def summary(self) -> str:
        return (
            f"{describe_name(self.certificate.subject)} issued by root "
            f"{describe_name(self.root.subject)}, {self.key_description}, "
            f"valid by {self.clock_source}"
        )


def describe_name(name: x509.Name) -> str:
    """The CN (or the whole RFC 4514 string) of a name, for logs and techInfo."""
    common_names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common_names:
        return f"CN={common_names[0].value!s}"
    return name.rfc4514_string() or "<empty name>"


# --- loading ----------------------------------------------------------------------------------


def _files(path: Path, suffixes: Sequence[str]) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file()
        )
    return [path]


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates in a PEM bundle, or the one DER certificate."""
    if b"-----BEGIN" in data:
        blocks = _PEM_CERT.findall(data)
        if not blocks:
            raise ValueError("no CERTIFICATE block in PEM data")
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    return [x509.load_der_x509_certificate(data)]


def load_roots(path: Path | None) -> RootStore:
    """Read the roots from a directory (*.pem/*.crt/*.cer/*.der) or a PEM bundle file.

    Unreadable or unparsable entries are skipped and logged; they never stop the others.
    """
    if path is None:
        return RootStore(())
    roots: list[x509.Certificate] = []
    problems: list[str] = []
    for file in _files(Path(path), CERT_SUFFIXES):
        try:
            roots.extend(parse_certificates(file.read_bytes()))
        except (OSError, ValueError) as exc:
            problems.append(f"{file}: {exc}")
            log.warning("skipping manufacturer root %s: %s", file, exc)
    return RootStore(tuple(roots), tuple(problems))


def load_crls(path: Path | None) -> CrlSet:
    """Read CRLs (PEM, possibly several per file, or DER) from a directory or one file."""
    if path is None:
        return CrlSet(())
    crls: list[x509.CertificateRevocationList] = []
    problems: list[str] = []
    for file in _files(Path(path), CRL_SUFFIXES):
        try:
            data = file.read_bytes()
            if b"-----BEGIN" in data:
                blocks = _PEM_CRL.findall(data)
                if not blocks:
                    raise ValueError("no X509 CRL block in PEM data")
                crls.extend(x509.load_pem_x509_crl(block) for block in blocks)
            else:
                crls.append(x509.load_der_x509_crl(data))
        except (OSError, ValueError) as exc:
            problems.append(f"{file}: {exc}")
            log.warning("skipping CRL %s: %s", file, exc)
    return CrlSet(tuple(crls), tuple(problems))


# --- signatures and keys ----------------------------------------------------------------------


def _validity(cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    """notBefore/notAfter as aware UTC datetimes on cryptography 38 and on current releases."""
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    return (
        cert.not_valid_before.replace(tzinfo=datetime.UTC),
        cert.not_valid_after.replace(tzinfo=datetime.UTC),
    )


def _pss_candidates(cert: x509.Certificate) -> list[tuple[padding.PSS, hashes.HashAlgorithm]]:
    params = getattr(cert, "signature_algorithm_parameters", None)  # cryptography >= 41
    if isinstance(params, padding.PSS):
        algorithm = cert.signature_hash_algorithm
        if algorithm is not None:
            return [(params, algorithm)]
    # cryptography 38 cannot tell the PSS parameters: try the usual SHA-2 profiles.
    candidates: list[tuple[padding.PSS, hashes.HashAlgorithm]] = []
    for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
        candidates.append((pss, algorithm))
    return candidates


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `cert`'s signature verifies with `issuer`'s public key.

    The scheme follows the issuer's key: RSA PKCS#1 v1.5 or RSA-PSS (by the certificate's
    signature algorithm), ECDSA, DSA, Ed25519/Ed448.
    """
    key = issuer.public_key()
    tbs, signature = cert.tbs_certificate_bytes, cert.signature
    try:
        if isinstance(key, rsa.RSAPublicKey) and (
            cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
        ):
            for pss, pss_hash in _pss_candidates(cert):
                try:
                    key.verify(signature, tbs, pss, pss_hash)
                    return True
                except InvalidSignature:
                    continue
            return False
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, tbs)
            return True
        algorithm = cert.signature_hash_algorithm
        if algorithm is None:
            return False
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, tbs, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, tbs, ec.ECDSA(algorithm))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, tbs, algorithm)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def crl_signed_by(crl: x509.CertificateRevocationList, root: x509.Certificate) -> bool:
    """True when the CRL's signature verifies with the root's key (else it is ignored)."""
    key = root.public_key()
    if not isinstance(key, _ISSUER_KEYS):
        return False
    try:
        return bool(crl.is_signature_valid(key))
    except (UnsupportedAlgorithm, ValueError, TypeError):
        return False


def describe_key(cert: x509.Certificate) -> tuple[str, str | None]:
    """("RSA 2048", None) for an acceptable key, or (description, reason to reject)."""
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        return "unknown key", f"unsupported public key ({exc})"
    if isinstance(key, rsa.RSAPublicKey):
        text = f"RSA {key.key_size}"
        if key.key_size < MIN_RSA_BITS:
            return text, f"RSA key of {key.key_size} bits, at least {MIN_RSA_BITS} required"
        return text, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        text = f"EC {key.curve.name} ({key.curve.key_size})"
        if key.curve.key_size < MIN_EC_BITS:
            return text, f"EC key of {key.curve.key_size} bits, at least {MIN_EC_BITS} required"
        return text, None
    # The signature module verifies RSA and ECDSA only; anything else could never verify.
    return type(key).__name__, "key type not usable for firmware signatures (RSA or EC only)"


# --- the check --------------------------------------------------------------------------------


def key_pin(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (DER), in hex: what a pin names.
    The same as `openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum`."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def check_signing_certificate(
    pem_text: str,
    roots: RootStore,
    crls: CrlSet,
    clock: TrustedClock,
    *,
    pins: Collection[str] = (),
) -> CertVerdict:
    """Accept the firmware signing certificate or raise `CertificateRejected` saying why.

    Order: form (PEM, size, one certificate) -> a root installed -> issued directly by a root
    (or identical to one) -> revocation -> validity period -> key type and size -> when `pins`
    are configured, its key among them (a second, independent anchor: a root that signs too
    much, or a certificate it should not have issued, is still refused).
    """

    def invalid(reason: str) -> CertificateRejected:
        return CertificateRejected(INVALID, reason)

    if not pem_text or not pem_text.strip():
        raise invalid("signing certificate missing")
    if len(pem_text) > MAX_PEM_CHARS:
        raise invalid(f"signing certificate is {len(pem_text)} characters, at most 5500 allowed")
    data = pem_text.encode("utf-8", errors="replace")
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise invalid("signing certificate is not a PEM certificate")
    if len(blocks) > 1:
        raise invalid("signing certificate contains more than one certificate (no chains)")
    try:
        cert = x509.load_pem_x509_certificate(blocks[0])
    except ValueError as exc:
        raise invalid(f"signing certificate does not parse: {exc}") from exc

    if not roots.roots:
        raise invalid("no manufacturer root certificate installed")
    root = _find_issuer(cert, roots.roots)

    revoked = _revocation(cert, root, crls)
    if revoked is not None:
        raise CertificateRejected(REVOKED, revoked)

    try:
        reading = clock.read()
    except UntrustedTime as exc:
        raise invalid(exc.message) from exc
    when = f"({reading.source})"
    for subject, who in ((cert, "signing certificate"), (root, "manufacturer root")):
        not_before, not_after = _validity(subject)
        if reading.now < not_before:
            raise invalid(f"{who} not valid before {_iso(not_before)} {when}")
        if reading.now > not_after:
            raise invalid(f"{who} expired {_iso(not_after)} {when}")

    description, problem = describe_key(cert)
    if problem is not None:
        raise invalid(problem)
    if cert.public_bytes(serialization.Encoding.DER) != root.public_bytes(
        serialization.Encoding.DER
    ):
        _check_key_usage(cert)
    if pins and (pin := key_pin(cert)) not in pins:
        raise invalid(f"signing key {pin[:16]}… is not one of the pinned keys")
    verdict = CertVerdict(cert, root, reading.source, description)
    log.info("signing certificate accepted: %s", verdict.summary)
    return verdict


def _find_issuer(cert: x509.Certificate, roots: Iterable[x509.Certificate]) -> x509.Certificate:
    der = cert.public_bytes(serialization.Encoding.DER)
    named: list[x509.Certificate] = []
    for root in roots:
        if root.public_bytes(serialization.Encoding.DER) == der:
            return root  # the manufacturer signs with the root itself
        if root.subject == cert.issuer:
            named.append(root)
    for root in named:
        if signed_by(cert, root):
            return root
    issuer = describe_name(cert.issuer)
    if named:
        raise CertificateRejected(
            INVALID, f"signature of the certificate does not verify with root {issuer}"
        )
    raise CertificateRejected(
        INVALID,
        f"issuer {issuer} is not an installed manufacturer root (intermediate CAs are not allowed)",
    )


def _revocation(cert: x509.Certificate, root: x509.Certificate, crls: CrlSet) -> str | None:
    for crl in crls.crls:
        if crl.issuer != root.subject:
            continue
        if not crl_signed_by(crl, root):
            log.warning(
                "ignoring CRL of %s: its signature does not verify with the root",
                describe_name(crl.issuer),
            )
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return (
                f"signing certificate serial {cert.serial_number:x} revoked by "
                f"{describe_name(root.subject)} CRL"
            )
    return None


def _check_key_usage(cert: x509.Certificate) -> None:
    """A KeyUsage extension, when present, must allow digital signatures (A00.FR.512)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (usage.digital_signature or usage.content_commitment):
        raise CertificateRejected(INVALID, "key usage of the certificate excludes signatures")


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
