"""A throw-away manufacturer PKI for the firmware tests, built with cryptography.

Works with cryptography 38 (Debian 12) and current releases: naive-UTC validity on the
builders, no `rsa_padding` unless the builder supports it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import inspect
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
PSS_CERTS = "rsa_padding" in inspect.signature(x509.CertificateBuilder.sign).parameters


@functools.cache
def rsa_key(bits: int = 2048, n: int = 0) -> rsa.RSAPrivateKey:
    """Keys are cached by (bits, n): RSA generation is the slow part of these tests."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(curve: str = "secp256r1", n: int = 0) -> ec.EllipticCurvePrivateKey:
    curves: dict[str, ec.EllipticCurve] = {
        "secp256r1": ec.SECP256R1(),
        "secp384r1": ec.SECP384R1(),
        "secp192r1": ec.SECP192R1(),
    }
    return ec.generate_private_key(curves[curve])


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Manufacturer"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _naive(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


@dataclasses.dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    subject: str,
    key: PrivateKey,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 365 * DAY,
    serial: int | None = None,
    key_usage: str = "sign",
    pss: bool = False,
    sans: Sequence[str] = (),
) -> Issued:
    """A certificate for `key`, signed by `issuer` (self-signed when None)."""
    signer_key = key if issuer is None else issuer.key
    issuer_name = name(subject) if issuer is None else issuer.cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(_naive(not_before))
        .not_valid_after(_naive(not_after))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    signing = key_usage == "sign"
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=signing and not ca,
            content_commitment=False,
            key_encipherment=key_usage == "encipher",
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    if sans:
        entries: list[x509.GeneralName] = []
        for san in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                entries.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    if pss:
        assert PSS_CERTS
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        cert = builder.sign(signer_key, hashes.SHA256(), rsa_padding=pad)  # type: ignore[call-arg]
    else:
        cert = builder.sign(signer_key, hashes.SHA256())
    return Issued(cert, key)


def crl(issuer: Issued, serials: Sequence[int]) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(_naive(NOW - DAY))
        .next_update(_naive(NOW + 30 * DAY))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_naive(NOW - DAY))
            .build()
        )
    return builder.sign(issuer.key, hashes.SHA256())
