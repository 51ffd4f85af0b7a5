"""Manufacturer root store and the check of a firmware signing certificate (L01.FR.12/.23-.25).

A `SignedUpdateFirmware.req` carries the certificate the manufacturer signed the image with.
The white paper forbids intermediate CAs for it, so the rule is simple and strict: the
certificate must be issued *directly* by one of the installed ManufacturerRootCertificates (or
be byte-identical to one), inside its validity period, in PEM of at most 5500 characters, and
pass the certificate policy (`agent.firmware.certpolicy`: hashes, key sizes and curves, key
usages, CA flags, roots). It is checked before the request is answered; a failure answers
`InvalidCertificate`, a serial listed in a CRL that a root signed answers `RevokedCertificate`.

Revocation comes from CRL files in a configured directory and, when enabled, from the CRL the
certificate names (`online_crl`) and its OCSP responder (`online_ocsp`, `agent.firmware.ocsp`),
both asked through `agent.firmware.online`. A CRL counts only when its signature verifies with
the key of an installed root, so a CRL dropped in by anyone else cannot revoke (or un-revoke)
anything; an OCSP answer only when the root or a responder it authorised signed it. What
unknown revocation (no current CRL, no fresh OCSP `good`) means is `crl_policy`'s to say.

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
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from agent.config import FirmwareConfig
from agent.firmware import certpolicy
from agent.firmware.certpolicy import CertPolicy
from agent.firmware.clock import ClockSource, TrustedClock
from agent.firmware.errors import CertificateRejected, UntrustedTime
from agent.firmware.fetch_base import redact_url

if TYPE_CHECKING:  # imported when used: they bring requests, which only online checks need
    from agent.firmware import ocsp, online

log = logging.getLogger(__name__)

MAX_PEM_CHARS = 5500  # firmware.signingCertificate maxLength in the schema
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
    """CRLs as read from disk; whether each one counts is decided against the roots.
    `source` is the configured crl_dir: None means revocation is not checked at all."""

    crls: tuple[x509.CertificateRevocationList, ...]
    problems: tuple[str, ...] = ()
    source: Path | None = None


# --- the policy ---------------------------------------------------------------------------
# The daemon passes its configured policy (`policy_from_config`) to every check; callers
# without a configuration (`ocpp-fw-agent verify`, tests) get the documented defaults.

DEFAULT_POLICY = CertPolicy()
_revocation_note = "no signing certificate checked yet"
_roots_reported: set[tuple[str, str]] = set()  # the roots are read at every request


def policy_from_config(firmware: FirmwareConfig) -> CertPolicy:
    return CertPolicy(
        crl_policy=firmware.crl_policy,
        ec_curves=firmware.allowed_ec_curves,
        online_crl=firmware.online_crl,
        online_ocsp=firmware.online_ocsp,
        ocsp_responder=firmware.ocsp_responder,
        online_timeout=firmware.online_timeout,
        online_hosts=firmware.allowed_hosts,
        online_ca_file=firmware.ca_file,
    )


def _guards(policy: CertPolicy) -> online.Guards:
    from agent.firmware import online

    return online.Guards(policy.online_hosts, policy.online_ca_file, policy.online_timeout)


def revocation_status() -> str:
    """What the last check found about revocation (for `ocpp-fw-agent status`): the CRL that
    was current, or that it was missing or stale and what crl_policy made of it."""
    return _revocation_note


def _note_revocation(text: str) -> None:
    global _revocation_note
    _revocation_note = text


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
    """All certificates in a PEM bundle, or the one DER certificate; ValueError for anything
    that does not load."""
    if b"-----BEGIN" in data:
        blocks = _PEM_CERT.findall(data)
        if not blocks:
            raise ValueError("no CERTIFICATE block in PEM data")
        return [load_pem_certificate(block) for block in blocks]
    return [load_der_certificate(data)]


def load_pem_certificate(data: bytes) -> x509.Certificate:
    """The first PEM certificate in `data`; ValueError for anything that does not load,
    cryptography's InvalidVersion (a version field beyond v3, no ValueError) included."""
    try:
        return x509.load_pem_x509_certificate(data)
    except x509.InvalidVersion as exc:
        raise ValueError(str(exc)) from None


def load_der_certificate(data: bytes) -> x509.Certificate:
    """A DER certificate; ValueError for anything that does not load, as above."""
    try:
        return x509.load_der_x509_certificate(data)
    except x509.InvalidVersion as exc:
        raise ValueError(str(exc)) from None


def load_roots(path: Path | None, policy: CertPolicy | None = None) -> RootStore:
    """Read the roots from a directory (*.pem/*.crt/*.cer/*.der) or a PEM bundle file.

    Unreadable or unparsable entries, and roots the policy refuses (not a CA, a weak key), are
    skipped with one log line naming the file and the reason; they never stop the others.
    """
    if path is None:
        return RootStore(())
    policy = policy or DEFAULT_POLICY
    roots: list[x509.Certificate] = []
    problems: list[str] = []
    for file in _files(Path(path), CERT_SUFFIXES):
        try:
            found = parse_certificates(file.read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"{file}: {exc}")
            log.warning("skipping manufacturer root %s: %s", file, exc)
            continue
        for cert in found:
            problem = certpolicy.root_problem(cert, policy)
            if problem is None:
                roots.append(cert)
                continue
            try:
                name = describe_name(cert.subject)
            except (ValueError, KeyError, TypeError):
                name = "subject does not parse"
            problems.append(f"{file} ({name}): {problem}")
            if (str(file), problem) not in _roots_reported:  # once, not at every request
                _roots_reported.add((str(file), problem))
                log.warning("refusing manufacturer root %s (%s): %s", file, name, problem)
    return RootStore(tuple(roots), tuple(problems))


def load_crls(path: Path | None) -> CrlSet:
    """Read CRLs (PEM, possibly several per file, or DER) from a directory or one file."""
    if path is None:
        return CrlSet(())
    crls: list[x509.CertificateRevocationList] = []
    problems: list[str] = []
    for file in _files(Path(path), CRL_SUFFIXES):
        try:
            crls.extend(parse_crls(file.read_bytes()))
        except (OSError, ValueError) as exc:
            problems.append(f"{file}: {exc}")
            log.warning("skipping CRL %s: %s", file, exc)
    return CrlSet(tuple(crls), tuple(problems), Path(path))


def parse_crls(data: bytes, *, first_only: bool = False) -> list[x509.CertificateRevocationList]:
    """The CRLs in PEM data (the first block only, if asked), or the one DER CRL, each read
    whole; ValueError for anything that does not load or read, cryptography's InvalidVersion
    (a version field that says anything but v2) included."""
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError("no X509 CRL block in PEM data")
            found = [x509.load_pem_x509_crl(b) for b in blocks[: 1 if first_only else None]]
        else:
            found = [x509.load_der_x509_crl(data)]
    except x509.InvalidVersion as exc:
        raise ValueError(str(exc)) from None
    for crl in found:
        if (problem := certpolicy.crl_parse_problem(crl)) is not None:
            raise ValueError(problem)
    return found


# --- signatures and keys ----------------------------------------------------------------------


def validity(cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
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
    tbs, signature = cert.tbs_certificate_bytes, cert.signature
    try:
        key = issuer.public_key()  # a key algorithm cryptography does not know raises
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


def describe_key(
    cert: x509.Certificate, policy: CertPolicy = DEFAULT_POLICY
) -> tuple[str, str | None]:
    """("RSA 2048", None) for an acceptable key under `policy`, or why not."""
    return certpolicy.describe_key(cert, policy)


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
    policy: CertPolicy | None = None,
) -> CertVerdict:
    """Accept the firmware signing certificate or raise `CertificateRejected` saying why.

    Order: form (PEM, size, one certificate, extensions) -> a root installed -> the hash the
    root signed with -> issued directly by a root (or identical to one) -> listed in a CRL ->
    validity period -> a current CRL (crl_policy) -> key type and size -> usages and CA flag
    -> when `pins` are configured, its key among them (a second, independent anchor: a root
    that signs too much, or a certificate it should not have issued, is still refused).
    """
    policy = policy or DEFAULT_POLICY

    def invalid(reason: str) -> CertificateRejected:
        return CertificateRejected(INVALID, reason)

    cert = _parse_signing_certificate(pem_text)
    if (problem := certpolicy.parse_problem(cert)) is not None:
        raise invalid(f"signing {problem}")
    if not roots.roots:
        raise invalid("no manufacturer root certificate installed")
    der = cert.public_bytes(serialization.Encoding.DER)
    is_root = any(root.public_bytes(serialization.Encoding.DER) == der for root in roots.roots)
    if not is_root and (problem := certpolicy.signature_hash_problem(cert)) is not None:
        raise invalid(problem)
    root = _find_issuer(cert, roots.roots)

    counted = _root_crls(root, crls)
    sources = [f"CRLs in {crls.source}"] if crls.source is not None else []
    fetched_online = _online_crls(cert, _guards(policy)) if policy.online_crl else None
    if fetched_online is not None:
        fetched, urls, failures = fetched_online
        counted += _root_crls(root, CrlSet(fetched))
        sources += [f"CRL {url}" for url in urls]
        for failure in failures:
            log.warning("online CRL check: %s", failure)
    revoked = _revocation(cert, root, counted)
    if revoked is not None:
        raise CertificateRejected(REVOKED, revoked)

    try:
        reading = clock.read()
    except UntrustedTime as exc:
        raise invalid(exc.message) from exc
    when = f"({reading.source})"
    for subject, who in ((cert, "signing certificate"), (root, "manufacturer root")):
        not_before, not_after = validity(subject)
        if reading.now < not_before:
            raise invalid(f"{who} not valid before {_iso(not_before)} {when}")
        if reading.now > not_after:
            raise invalid(f"{who} expired {_iso(not_after)} {when}")
    answer = _ask_ocsp(cert, root, reading.now, policy) if not is_root else None
    _require_current_crl(root, sources, counted, reading.now, policy, answer)

    description, problem = certpolicy.describe_key(cert, policy)
    if problem is not None:
        raise invalid(problem)
    if not is_root and (problem := certpolicy.signer_usage_problem(cert)) is not None:
        raise invalid(problem)
    if pins and (pin := key_pin(cert)) not in pins:
        raise invalid(f"signing key {pin[:16]}… is not one of the pinned keys")
    verdict = CertVerdict(cert, root, reading.source, description)
    log.info("signing certificate accepted: %s", verdict.summary)
    return verdict


def _parse_signing_certificate(pem_text: str) -> x509.Certificate:
    """Exactly one PEM certificate of at most 5500 characters (the schema's maxLength)."""
    if not pem_text or not pem_text.strip():
        raise CertificateRejected(INVALID, "signing certificate missing")
    if len(pem_text) > MAX_PEM_CHARS:
        raise CertificateRejected(
            INVALID, f"signing certificate is {len(pem_text)} characters, at most 5500 allowed"
        )
    blocks = _PEM_CERT.findall(pem_text.encode("utf-8", errors="replace"))
    if not blocks:
        raise CertificateRejected(INVALID, "signing certificate is not a PEM certificate")
    if len(blocks) > 1:
        raise CertificateRejected(
            INVALID, "signing certificate contains more than one certificate (no chains)"
        )
    try:
        return x509.load_pem_x509_certificate(blocks[0])
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise CertificateRejected(INVALID, f"signing certificate does not parse: {exc}") from exc


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


def _online_crls(
    cert: x509.Certificate, guards: online.Guards
) -> tuple[tuple[x509.CertificateRevocationList, ...], list[str], list[str]] | None:
    """The CRLs fetched from the certificate's http(s) distribution points, the URLs tried
    and what went wrong; None when it names none. Only called once the chain is proven, so
    the URLs are the root's word, not the CSMS's."""
    from agent.firmware import online

    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    urls = [
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
        and name.value.lower().startswith(("http://", "https://"))
    ]
    if not urls:
        return None
    found: list[x509.CertificateRevocationList] = []
    failures: list[str] = []
    for url in urls[:2]:  # two at most: each may take the whole timeout
        try:
            found.extend(parse_crls(online.exchange(url, guards), first_only=True))
        except (online.OnlineFailed, ValueError) as exc:
            failures.append(f"{redact_url(url)}: {exc}")
    return tuple(found), [redact_url(url) for url in urls[:2]], failures


def _ask_ocsp(
    cert: x509.Certificate, root: x509.Certificate, now: datetime.datetime, policy: CertPolicy
) -> ocsp.Answer | None:
    """With online_ocsp, what the responder said (None when there is none to ask); a signed
    `revoked` is RevokedCertificate (L01.FR.25), the rest is for `_require_current_crl`."""
    if not policy.online_ocsp:
        return None
    from agent.firmware import ocsp

    answer = ocsp.ask(cert, root, now, _guards(policy), responder=policy.ocsp_responder)
    if answer is None:
        log.info("online OCSP check: the signing certificate names no http(s) responder")
    elif answer.status == ocsp.REVOKED:
        log.warning("online OCSP check: %s: %s", answer.url, answer.detail)
        raise CertificateRejected(REVOKED, answer.detail)
    elif answer.status == ocsp.GOOD:
        log.info("online OCSP check: %s: %s", answer.url, answer.detail)
    else:
        log.warning("online OCSP check: %s: %s", answer.url, answer.detail)
    return answer


def _root_crls(root: x509.Certificate, crls: CrlSet) -> list[x509.CertificateRevocationList]:
    """The CRLs that count for `root`: issued in its name and signed with its key."""
    counted = []
    for crl in crls.crls:
        if crl.issuer != root.subject:
            continue
        if not crl_signed_by(crl, root):
            log.warning(
                "ignoring CRL of %s: its signature does not verify with the root",
                describe_name(crl.issuer),
            )
            continue
        counted.append(crl)
    return counted


def _revocation(
    cert: x509.Certificate, root: x509.Certificate, counted: list[x509.CertificateRevocationList]
) -> str | None:
    """Listed is revoked, however old the CRL: a revocation is never taken back."""
    for crl in counted:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return (
                f"signing certificate serial {cert.serial_number:x} revoked by "
                f"{describe_name(root.subject)} CRL"
            )
    return None


def _next_update(crl: x509.CertificateRevocationList) -> datetime.datetime | None:
    """nextUpdate as an aware UTC datetime on cryptography 38 and on current releases."""
    if hasattr(crl, "next_update_utc"):
        return crl.next_update_utc  # type: ignore[no-any-return]
    naive = crl.next_update
    return None if naive is None else naive.replace(tzinfo=datetime.UTC)


def _require_current_crl(
    root: x509.Certificate,
    sources: list[str],
    counted: list[x509.CertificateRevocationList],
    now: datetime.datetime,
    policy: CertPolicy,
    answer: ocsp.Answer | None = None,
) -> None:
    """With a crl_dir configured (or a CRL or OCSP responder asked online), revocation must be
    known: a current CRL of the root, or a fresh OCSP `good`. Otherwise crl_policy decides:
    refuse (InvalidCertificate), warn, or ignore. The outcome is logged and kept for
    `revocation_status()`."""
    issuer = describe_name(root.subject)
    if answer is not None and answer.status == "good":
        _note_revocation(f"OCSP {answer.url}: {answer.detail}")
        return
    if not sources and answer is None:
        _note_revocation("not checked: no crl_dir configured")
        return
    problems = []
    if sources and not counted:
        problems.append(f"no CRL from {issuer}")
    elif sources:
        latest = max(
            (_next_update(crl) for crl in counted),
            key=lambda moment: moment or datetime.datetime.min.replace(tzinfo=datetime.UTC),
        )
        stale = certpolicy.crl_staleness(latest, now)
        if stale is None and latest is not None:
            _note_revocation(f"CRL of {issuer} current until {_iso(latest)}")
            return
        problems.append(f"CRL of {issuer} {stale}")
    if answer is not None:  # without CRL sources, only the OCSP answer counts
        problems = [f"OCSP {answer.status}: {answer.detail}", *problems]
        sources = [*sources, f"OCSP {answer.url}"]
    source = ", ".join(sources)
    text = f"{'; '.join(problems)} (crl_policy = {policy.crl_policy})"
    _note_revocation(text)
    if policy.crl_policy == certpolicy.CRL_REFUSE:
        log.warning("revocation cannot be checked (%s): %s", source, text)
        raise CertificateRejected(INVALID, f"revocation unknown: {text}")
    if policy.crl_policy == certpolicy.CRL_WARN:
        log.warning("revocation cannot be checked (%s), accepted: %s", source, text)
    else:
        log.info("revocation not checked (%s): %s", source, text)


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
