"""OCSP (RFC 6960) for the firmware signing certificate: the online check WP3 Table 13
recommends before a SignedUpdateFirmware is answered (RevokedCertificate, L01.FR.25).

The question goes to `[firmware] ocsp_responder` when configured, else to the http(s) OCSP
responder in the certificate's Authority Information Access, as a POST (RFC 6960 A.1) carrying
a fresh nonce, through `online.exchange` (the download guards, no redirects, bounded in size
and time). The answer counts only when:

* it is a successful BasicOCSPResponse about this certificate (serial and issuer hashes);
* it is signed by the root itself, or by a responder certificate in the answer that the root
  issued, that carries id-kp-OCSPSigning and is valid now (RFC 6960 §4.2.2.2), with SHA-256
  or stronger;
* it echoes our nonce, when it carries one (a responder that serves pre-signed answers sends
  none: its thisUpdate/nextUpdate window is then what bounds a replay);
* thisUpdate is not in the future (5 minutes of skew allowed) and nextUpdate, when present, is
  still ahead (RFC 6960 §3.2); without nextUpdate ("newer information is available all the
  time", §4.2.2.1), thisUpdate is at most an hour old. Our nonce proves the answer was made
  for this question, not that the status it reports is recent: a CRL-backed responder dates
  its answers by its CRL, so an echoed nonce does not lift the bound.

A signed `revoked` counts even when stale, as a listed serial in a CRL does: a revocation is
never taken back. Everything else that is not a fresh `good` (`unknown`, no answer, a bad
one) leaves revocation unknown, for `crl_policy` to decide. Written against cryptography 38
(naive datetimes, no `_utc` properties) and current releases.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from agent.firmware import certpolicy, certs, online
from agent.firmware.fetch_base import redact_url

GOOD, REVOKED, UNKNOWN, FAILED = "good", "revoked", "unknown", "failed"
SKEW = datetime.timedelta(minutes=5)
MAX_AGE_WITHOUT_NEXT_UPDATE = datetime.timedelta(hours=1)
NONCE_BYTES = 32  # RFC 8954: 1-32 octets


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the responder said about the certificate, or why nothing usable came back."""

    url: str  # redacted, for logs
    status: str  # GOOD, REVOKED, UNKNOWN or FAILED
    detail: str


class Unusable(Exception):
    """The answer arrived but cannot be relied on."""


def responder_urls(cert: x509.Certificate) -> list[str]:
    """The certificate's http(s) OCSP responders (Authority Information Access)."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        description.access_location.value
        for description in access
        if description.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(description.access_location, x509.UniformResourceIdentifier)
        and description.access_location.value.lower().startswith(("http://", "https://"))
    ]


def ask(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime.datetime,
    guards: online.Guards,
    *,
    responder: str | None = None,
) -> Answer | None:
    """Ask the configured responder, else the certificate's first; None when there is none."""
    urls = [responder] if responder else responder_urls(cert)
    if not urls:
        return None
    url = urls[0]
    nonce = os.urandom(NONCE_BYTES)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA1())  # the CertID hash every responder knows
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
    )
    shown = redact_url(url)
    try:
        body = online.exchange(
            url,
            guards,
            body=request.public_bytes(serialization.Encoding.DER),
            content_type="application/ocsp-request",
        )
        status, detail = judge(body, request, issuer, nonce, now)
    except (online.OnlineFailed, Unusable) as exc:
        return Answer(shown, FAILED, str(exc))
    return Answer(shown, status, detail)


def judge(
    body: bytes,
    request: ocsp.OCSPRequest,
    issuer: x509.Certificate,
    nonce: bytes,
    now: datetime.datetime,
) -> tuple[str, str]:
    """(status, detail) of a DER OCSP response to `request`; raises Unusable when it cannot
    count."""
    try:
        response = ocsp.load_der_ocsp_response(body)
    except ValueError as exc:
        raise Unusable(f"not an OCSP response ({exc})") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise Unusable(f"responder answered {response.response_status.name}")
    try:
        single = _about(response, request)
        signer = _signer(response, issuer, now)
        _verify(response, signer)
        echoed = _nonce(response)
        this_update, next_update = _utc(single, "this_update"), _utc(single, "next_update")
        status = single.certificate_status
        revoked = status is ocsp.OCSPCertStatus.REVOKED
        revoked_at = _utc(single, "revocation_time") if revoked else None
    except (ValueError, TypeError, KeyError, UnsupportedAlgorithm) as exc:
        raise Unusable(f"OCSP response does not parse ({exc!r})") from None
    serial = f"{request.serial_number:x}"
    if revoked:
        when = _iso(revoked_at) if revoked_at is not None else "an unknown time"
        return REVOKED, f"signing certificate serial {serial} revoked at {when} (OCSP)"
    if echoed is not None and echoed != nonce:
        raise Unusable("nonce does not match ours (a replayed answer)")
    if this_update is None or this_update > now + SKEW:
        raise Unusable("thisUpdate missing or in the future")
    if next_update is not None and next_update <= now:  # RFC 6960 §3.2: nextUpdate > now
        raise Unusable(f"answer is stale since {_iso(next_update)}")
    if next_update is None and now - this_update > MAX_AGE_WITHOUT_NEXT_UPDATE:
        raise Unusable(f"answer from {_iso(this_update)} without nextUpdate is over an hour old")
    if status is ocsp.OCSPCertStatus.UNKNOWN:
        return UNKNOWN, f"responder does not know serial {serial}"
    until = f"until {_iso(next_update)}" if next_update is not None else "(no nextUpdate)"
    return GOOD, f"serial {serial} good {until}"


def _about(response: ocsp.OCSPResponse, request: ocsp.OCSPRequest) -> ocsp.OCSPSingleResponse:
    """The single response for the request's CertID (serial, issuer name and key hashes)."""
    for single in response.responses:
        if (
            single.serial_number == request.serial_number
            and single.hash_algorithm.name == request.hash_algorithm.name
            and single.issuer_name_hash == request.issuer_name_hash
            and single.issuer_key_hash == request.issuer_key_hash
        ):
            return single
    raise Unusable("the answer is about another certificate")


def _signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime.datetime
) -> x509.Certificate:
    """The root, or a delegated responder certificate the root issued for OCSP signing."""
    if _named(response, issuer):
        return issuer
    for candidate in response.certificates:
        if not _named(response, candidate):
            continue
        if candidate.issuer != issuer.subject or not certs.signed_by(candidate, issuer):
            raise Unusable("responder certificate not issued by the root")
        if (problem := certpolicy.signature_hash_problem(candidate)) is not None:
            raise Unusable(f"responder {problem}")
        try:
            usage = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.OCSP_SIGNING not in list(usage):
            raise Unusable("responder certificate lacks id-kp-OCSPSigning")
        not_before, not_after = certs.validity(candidate)
        if not not_before <= now <= not_after:
            raise Unusable("responder certificate not valid now")
        return candidate
    raise Unusable("signed by neither the root nor a responder certificate it issued")


def _named(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """The response's ResponderID (by name or by key hash) identifies `cert`."""
    if response.responder_name is not None:
        return bool(response.responder_name == cert.subject)
    return response.responder_key_hash == _key_hash(cert)


def _verify(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """The signature over the response data, by `signer`'s key. An RSASSA-PSS response never
    gets past the first line: cryptography (38 to 50 at least) cannot name its hash and raises
    UnsupportedAlgorithm, which leaves revocation unknown."""
    algorithm = response.signature_hash_algorithm
    if algorithm is not None and (problem := certpolicy.hash_problem(algorithm)) is not None:
        raise Unusable(problem)
    key = signer.public_key()
    data, signature = response.tbs_response_bytes, response.signature
    try:
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        elif algorithm is None:
            raise Unusable("OCSP response signature algorithm not supported")
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            raise Unusable("OCSP signer's key type not supported")
    except InvalidSignature:
        raise Unusable("OCSP response signature does not verify") from None


def _nonce(response: ocsp.OCSPResponse) -> bytes | None:
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey bits: what a ResponderID byKey holds (RFC 6960 §4.2.1)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _utc(single: object, name: str) -> datetime.datetime | None:
    """A datetime of a single response as aware UTC, on cryptography 38 and current."""
    if hasattr(single, f"{name}_utc"):
        value = getattr(single, f"{name}_utc")
        return value if isinstance(value, datetime.datetime) else None
    naive = getattr(single, name)
    return naive.replace(tzinfo=datetime.UTC) if isinstance(naive, datetime.datetime) else None


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
