"""Certificates and CRLs that the certificate policy must refuse, built for the tests.

cryptography (since 40-ish) refuses to *sign* with MD5 or SHA-1, but a manufacturer's old
tooling did, and OpenSSL still verifies such signatures. `weak_hash` builds the certificate
with SHA-256, swaps the signature-algorithm OID (same length in DER) and signs the new TBS
with the root's key over MD5 or SHA-1: a genuine md5WithRSA/sha1WithRSA certificate, on
cryptography 38 and on current releases.
"""

from __future__ import annotations

import base64
import datetime
import functools
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from agent.demo import pki

# DER of the AlgorithmIdentifier OIDs (1.2.840.113549.1.1.x): 11 = sha256WithRSAEncryption.
_RSA_OID = bytes.fromhex("06092a864886f70d0101")
_SHA256_RSA = _RSA_OID + b"\x0b"
YEAR = 365 * pki.DAY
SHA256 = hashes.SHA256()
REVOKED_AT = pki.NOW - pki.DAY  # when a `revoked` answer says it happened
_WEAK = {"md5": (_RSA_OID + b"\x04", hashes.MD5()), "sha1": (_RSA_OID + b"\x05", hashes.SHA1())}


def _naive(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


def _usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    """digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, keyAgreement,
    keyCertSign, cRLSign, encipherOnly, decipherOnly."""
    return x509.KeyUsage(sign, False, False, False, False, ca, ca, False, False)


def builder(
    subject: str,
    key: Any,
    issuer: pki.Issued,
    *,
    issuer_name: x509.Name | None = None,
    valid: tuple[datetime.datetime, datetime.datetime] = (pki.NOW - pki.DAY, pki.NOW + YEAR),
) -> x509.CertificateBuilder:
    """A signing certificate's builder with no extensions yet (the caller adds them). An
    `issuer_name` other than the issuer's subject gives a certificate the issuer's key signs
    but whose issuer field names someone else."""
    return (
        x509.CertificateBuilder()
        .subject_name(pki.name(subject))
        .issuer_name(issuer.cert.subject if issuer_name is None else issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_naive(valid[0]))
        .not_valid_after(_naive(valid[1]))
    )


def weak_hash(algorithm: str, issuer: pki.Issued, key: pki.PrivateKey) -> pki.Issued:
    """A signing certificate the (RSA) root signed with MD5 or SHA-1 (PKCS#1 v1.5)."""
    oid, weak = _WEAK[algorithm]
    good = (
        builder(f"Firmware Signing {algorithm.upper()}", key, issuer)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, ca=False), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    assert isinstance(issuer.key, rsa.RSAPrivateKey)
    tbs = good.tbs_certificate_bytes
    assert tbs.count(_SHA256_RSA) == 1
    tbs = tbs.replace(_SHA256_RSA, oid)
    signature = issuer.key.sign(tbs, padding.PKCS1v15(), weak)
    der = good.public_bytes(serialization.Encoding.DER)
    assert der.count(good.signature) == 1
    # Outer: SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING }; every length is unchanged.
    der = der.replace(good.tbs_certificate_bytes, tbs).replace(_SHA256_RSA, oid)
    der = der.replace(good.signature, signature)
    return pki.Issued(x509.load_der_x509_certificate(der), key)


def server_auth_only(issuer: pki.Issued, key: pki.PrivateKey) -> pki.Issued:
    """digitalSignature allowed, but the extendedKeyUsage says TLS server only."""
    cert = (
        builder("Firmware Signing TLS", key, issuer)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return pki.Issued(cert, key)


def code_signing(issuer: pki.Issued, key: pki.PrivateKey) -> pki.Issued:
    """The good counterpart: extendedKeyUsage codeSigning (with serverAuth beside it)."""
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]
    cert = (
        builder("Firmware Signing Code", key, issuer)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return pki.Issued(cert, key)


def ca_leaf(issuer: pki.Issued, key: pki.PrivateKey) -> pki.Issued:
    """A CA:TRUE certificate the root issued, with digitalSignature too (so no key-usage
    rule catches it): a sub-CA that could sign firmware."""
    cert = (
        builder("Firmware Signing CA", key, issuer)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign=True, ca=True), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return pki.Issued(cert, key)


def no_extensions(issuer: pki.Issued, key: pki.PrivateKey) -> pki.Issued:
    """A bare signing certificate: no basicConstraints, keyUsage or extendedKeyUsage."""
    return pki.Issued(
        builder("Firmware Signing Bare", key, issuer).sign(issuer.key, hashes.SHA256()), key
    )


@functools.cache
def secp256k1_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256K1())


def not_a_ca_root(key: pki.PrivateKey) -> pki.Issued:
    """A self-signed certificate with CA:FALSE, installed as if it were a root."""
    return pki.issue("Example Manufacturer Root", key, ca=False)


def crl(
    issuer: pki.Issued,
    serials: tuple[int, ...] = (),
    *,
    next_update: datetime.datetime = pki.NOW + 30 * pki.DAY,
) -> bytes:
    """A CRL (DER) signed by `issuer`; `next_update` in the past makes it stale."""
    built = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(_naive(min(next_update, pki.NOW) - 7 * pki.DAY))
        .next_update(_naive(next_update))
    )
    for serial in serials:
        built = built.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_naive(pki.NOW - pki.DAY))
            .build()
        )
    return built.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


_CN_UTF8 = b"\x06\x03U\x04\x03\x0c"  # OID 2.5.4.3, then a UTF8String


def garbled_issuer(issued: pki.Issued) -> str:
    """The certificate with its issuer's CN retagged to an unknown string type (13): the DER
    loads, the name does not (cryptography parses names lazily: ValueError on current
    releases, KeyError on 38). Found by fuzzing."""
    return as_pem(issued.der.replace(_CN_UTF8, _CN_UTF8[:-1] + b"\x0d", 1))


def garbled_subject(der: bytes) -> str:
    """As garbled_issuer, for the subject's CN (the second CN in the DER)."""
    at = der.index(_CN_UTF8, der.index(_CN_UTF8) + 1) + len(_CN_UTF8) - 1
    return as_pem(der[:at] + b"\x0d" + der[at + 1 :])


def signed_again(pem: str, issuer: pki.Issued) -> str:
    """The certificate, changed after it was signed, signed again by `issuer`'s RSA key
    (PKCS#1 v1.5, SHA-256, as pki signs): what a CA that signs anything hands over."""
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    assert isinstance(issuer.key, rsa.RSAPrivateKey)
    again = issuer.key.sign(cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert len(again) == len(cert.signature) and der.count(cert.signature) == 1
    return as_pem(der.replace(cert.signature, again))


DUPLICATE_BASIC_CONSTRAINTS = (0x13, bytes.fromhex("3000"))  # 2.5.29.19, cA false
X400_SUBJECT_ALT_NAME = (0x11, bytes.fromhex("3002a300"))  # 2.5.29.17, an x400Address


def with_raw_extension(
    built: x509.CertificateBuilder, signer: rsa.RSAPrivateKey, extension: tuple[int, bytes]
) -> pki.Issued:
    """What `built` makes plus one id-ce extension (2.5.29.<arc>) holding its bytes as they
    are, signed by `signer` (RSA): what no builder makes, such as a second basicConstraints
    or a general name cryptography has no type for. The key is `signer` (self-signed roots)."""
    arc, value = extension
    placeholder = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.99"), value)
    cert = built.add_extension(placeholder, critical=False).sign(signer, hashes.SHA256())
    tbs, old = cert.tbs_certificate_bytes, bytes.fromhex("0603551d63")
    assert tbs.count(old) == 1
    patched = tbs.replace(old, old[:-1] + bytes([arc]))
    again = signer.sign(patched, padding.PKCS1v15(), hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER).replace(tbs, patched)
    return pki.Issued(x509.load_der_x509_certificate(der.replace(cert.signature, again)), signer)


def _der_items(body: bytes) -> list[bytes]:
    """The encoded TLVs, one after another, that make up a DER body."""
    items, at = [], 0
    while at < len(body):
        length, start = body[at + 1], at + 2
        if length & 0x80:
            start = at + 2 + (length & 0x7F)
            length = int.from_bytes(body[at + 2 : start], "big")
        items.append(body[at : start + length])
        at = start + length
    return items


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + body


def pss_without_parameters(der: bytes) -> bytes:
    """The certificate with its signature algorithm, inside and outside what is signed, made
    RSASSA-PSS without the parameters RFC 4055 requires: it loads, and asking for its hash
    raises ValueError on current cryptography (UnsupportedAlgorithm on 38)."""
    (certificate,) = _der_items(der)
    tbs, _, signature = _der_items(certificate[4:] if certificate[1] == 0x82 else certificate[2:])
    fields = _der_items(tbs[4:] if tbs[1] == 0x82 else tbs[2:])
    pss = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d01010a")))  # 1.2.840.113549.1.1.10
    fields[2] = pss  # after version and serialNumber
    return _der(0x30, _der(0x30, b"".join(fields)) + pss + signature)


def unknown_key_algorithm(der: bytes) -> bytes:
    """The RSA or EC certificate with its key's algorithm OID made one nobody assigned: it
    loads, its public_key() raises UnsupportedAlgorithm on current releases and ValueError on
    cryptography 38."""
    for oid in (
        bytes.fromhex("06092a864886f70d010101"),  # rsaEncryption, 1.2.840.113549.1.1.1
        bytes.fromhex("06072a8648ce3d0201"),  # id-ecPublicKey, 1.2.840.10045.2.1
    ):
        if oid in der:
            return der.replace(oid, oid[:-1] + b"\x63", 1)
    raise AssertionError("neither an RSA nor an EC key")


def beyond_v3(der: bytes) -> bytes:
    """The certificate with its version field made 3, v4, which X.509 does not have: the
    signature no longer matters, cryptography refuses to load it with InvalidVersion, which is
    no ValueError. Found by fuzzing."""
    v3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2, the first in the DER
    assert v3 in der
    return der.replace(v3, v3[:-1] + b"\x03", 1)


def crl_of_version(der: bytes, version: int) -> bytes:
    """The CRL with its version INTEGER made `version` (v2 is 1): cryptography refuses every
    other with InvalidVersion, which is no ValueError."""

    def inside(at: int) -> int:  # past the tag and length of the SEQUENCE at `at`
        length = der[at + 1]
        return at + 2 + (length & 0x7F if length & 0x80 else 0)

    at = inside(inside(0))  # CertificateList, then its TBSCertList
    assert der[at : at + 3] == b"\x02\x01\x01", "a v2 CRL starts its TBSCertList with 1"
    return der[: at + 2] + bytes([version]) + der[at + 3 :]


def as_pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def with_ocsp(
    issuer: pki.Issued,
    key: pki.PrivateKey,
    url: str | None,
    *,
    access: Sequence[tuple[x509.ObjectIdentifier, str]] = (),
) -> pki.Issued:
    """A good signing certificate (codeSigning) naming `url` as its OCSP responder (AIA), or
    the (method, URL) pairs of `access` instead."""
    built = (
        builder("Firmware Signing OCSP", key, issuer)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    )
    pairs = list(access) or ([] if url is None else [(AuthorityInformationAccessOID.OCSP, url)])
    if pairs:
        descriptions = [
            x509.AccessDescription(method, x509.UniformResourceIdentifier(location))
            for method, location in pairs
        ]
        built = built.add_extension(x509.AuthorityInformationAccess(descriptions), critical=False)
    return pki.Issued(built.sign(issuer.key, hashes.SHA256()), key)


def ocsp_signer(
    issuer: pki.Issued,
    key: Any,
    *,
    eku: bool = True,
    issuer_name: x509.Name | None = None,
    valid: tuple[datetime.datetime, datetime.datetime] = (pki.NOW - pki.DAY, pki.NOW + YEAR),
) -> pki.Issued:
    """A delegated OCSP responder certificate (id-kp-OCSPSigning unless `eku` is False), for
    any signing key, Ed25519 too."""
    built = builder(
        "Manufacturer OCSP Responder", key, issuer, issuer_name=issuer_name, valid=valid
    ).add_extension(_usage(sign=True, ca=False), critical=True)
    if eku:
        usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING])
        built = built.add_extension(usage, critical=False)
    return pki.Issued(built.sign(issuer.key, hashes.SHA256()), key)


def ocsp_response(
    request: ocsp.OCSPRequest,
    subject: x509.Certificate,
    issuer: pki.Issued,
    status: ocsp.OCSPCertStatus,
    *,
    signer: pki.Issued | None = None,
    include_signer: bool = False,
    certificates: Sequence[x509.Certificate] = (),
    by_name: bool = False,
    algorithm: hashes.HashAlgorithm | None = SHA256,
    this_update: datetime.datetime = pki.NOW - datetime.timedelta(minutes=1),
    next_update: datetime.datetime | None = pki.NOW + pki.DAY,
    nonce: bytes | bool | None = True,
) -> bytes:
    """A BasicOCSPResponse (DER) about `subject`, signed by `signer` (default: the issuer)
    with `algorithm` (None for Ed25519), echoing the request's nonce (`nonce=True`), sending
    another one (bytes) or none (None). Its ResponderID names the signer by key hash, or by
    name; it carries `certificates`, then the signer's if `include_signer`.
    A revocation is dated REVOKED_AT."""
    signer = signer or issuer
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    encoding = ocsp.OCSPResponderEncoding.NAME if by_name else ocsp.OCSPResponderEncoding.HASH
    built = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            subject,
            issuer.cert,
            request.hash_algorithm,
            status,
            _naive(this_update),
            None if next_update is None else _naive(next_update),
            _naive(REVOKED_AT) if revoked else None,
            x509.ReasonFlags.key_compromise if revoked else None,
        )
        .responder_id(encoding, signer.cert)
    )
    carried = [*certificates, *([signer.cert] if include_signer else [])]
    if carried:
        built = built.certificates(carried)
    if nonce is True:
        echoed = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        built = built.add_extension(x509.OCSPNonce(echoed), critical=False)
    elif isinstance(nonce, bytes):
        built = built.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = built.sign(signer.key, algorithm)
    return response.public_bytes(serialization.Encoding.DER)


def resigned(der: bytes, key: rsa.RSAPrivateKey, old: bytes, new: bytes) -> bytes:
    """The response with `old` made `new` (as long, found once) in what it signs, signed again
    by `key` (PKCS#1 v1.5, SHA-256): an answer no builder makes, such as a CertID whose hashes
    and hash algorithm disagree. Every DER length stays as it was."""
    response = ocsp.load_der_ocsp_response(der)
    tbs, signature = response.tbs_response_bytes, response.signature
    assert len(old) == len(new) and tbs.count(old) == 1
    assert der.count(tbs) == 1 and der.count(signature) == 1
    patched = tbs.replace(old, new)
    again = key.sign(patched, padding.PKCS1v15(), hashes.SHA256())
    assert len(again) == len(signature)
    return der.replace(tbs, patched).replace(signature, again)


def sha1_signed(der: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """The (SHA-256, PKCS#1 v1.5) response signed again over SHA-1, its signature algorithm
    made sha1WithRSAEncryption: what an old responder sends and cryptography no longer signs."""
    response = ocsp.load_der_ocsp_response(der)
    oid, weak = _WEAK["sha1"]
    assert der.count(_SHA256_RSA) == 1 and der.count(response.signature) == 1
    again = key.sign(response.tbs_response_bytes, padding.PKCS1v15(), weak)
    return der.replace(_SHA256_RSA, oid).replace(response.signature, again)


def sign(csr: x509.CertificateSigningRequest, issuer: pki.Issued, days: int = 30) -> str:
    """The PEM certificate `issuer` signs for a CSR, valid from an hour ago for `days`."""
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def der(pem: str) -> bytes:
    """The DER of a PEM certificate."""
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
