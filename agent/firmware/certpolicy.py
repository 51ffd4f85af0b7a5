"""The certificate policy: what a manufacturer root and a firmware signing certificate must be.

One place for every rule, so the README, the man page and the code say the same thing:

* signatures over a signing certificate use SHA-256 or stronger (MD5, SHA-1, SHA-224 refused);
* keys: RSA of at least 2048 bits, EC on P-256, P-384 or P-521 (other named curves only when
  `[firmware] allowed_ec_curves` lists them); nothing else can sign firmware here;
* a signing certificate's keyUsage, when present, allows digitalSignature; its
  extendedKeyUsage, when present, includes codeSigning; it is not a CA (CA:TRUE), unless it is
  byte for byte an installed root (the manufacturer may sign with the root itself);
* a root is a CA (basicConstraints CA:TRUE), its keyUsage, when present, allows keyCertSign,
  and its key passes the key rule; a root that fails is refused at load, with one log line.
  A root's own self-signature is not judged: it is trusted because it is installed, not
  because of it;
* revocation: `[firmware] crl_policy` says what unknown revocation means once `crl_dir`
  is configured, or `online_crl` is on and the signing certificate names a CRL distribution
  point (fetched before answering, a few seconds at most, signed by the root to count), or
  `online_ocsp` is on and a responder is configured or named (agent.firmware.ocsp): unknown is
  neither a current CRL of the root nor a fresh, root-authorised OCSP `good` (a missing or
  stale CRL, an OCSP `unknown`, an unreachable or unusable responder).
  `refuse`, the default: InvalidCertificate; `warn`: accepted with a warning; `ignore`:
  accepted, logged at info. A serial listed in a root's CRL, or a signed OCSP `revoked`, is
  revoked whatever its age.

Every rule returns a short reason (for techInfo, <= 255 characters) or None.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

MIN_RSA_BITS = 2048
DEFAULT_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
# Named curves an integrator may add with `allowed_ec_curves` (all at least 224 bits).
KNOWN_EC_CURVES = (
    *DEFAULT_EC_CURVES,
    "secp224r1",
    "secp256k1",
    "brainpoolP256r1",
    "brainpoolP384r1",
    "brainpoolP512r1",
)
CRL_REFUSE, CRL_WARN, CRL_IGNORE = "refuse", "warn", "ignore"
CRL_POLICIES = (CRL_REFUSE, CRL_WARN, CRL_IGNORE)
_STRONG_HASHES = (
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
    hashes.SHA3_256,
    hashes.SHA3_384,
    hashes.SHA3_512,
)


@dataclasses.dataclass(frozen=True)
class CertPolicy:
    """The configurable part of the policy (the rest is fixed)."""

    crl_policy: str = CRL_REFUSE
    ec_curves: tuple[str, ...] = DEFAULT_EC_CURVES
    online_crl: bool = False  # fetch the CRL the signing certificate names (http/https)
    online_ocsp: bool = False  # ask the OCSP responder (configured, or the certificate's AIA)
    ocsp_responder: str | None = None  # asked instead of the one the certificate names
    # What bounds the online checks' connections: the download settings' allowed_hosts and
    # ca_file, and a time for the whole exchange (agent.firmware.online).
    online_hosts: tuple[str, ...] = ()
    online_ca_file: Path | None = None
    online_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.crl_policy not in CRL_POLICIES:
            raise ValueError(f"crl_policy {self.crl_policy!r}; one of {list(CRL_POLICIES)}")
        unknown = [c for c in self.ec_curves if c not in KNOWN_EC_CURVES]
        if unknown:
            raise ValueError(f"unknown EC curve(s) {unknown}; known: {list(KNOWN_EC_CURVES)}")


def describe_key(cert: x509.Certificate, policy: CertPolicy) -> tuple[str, str | None]:
    """("RSA 2048", None) for an acceptable key, or (description, reason to refuse it)."""
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
        if key.curve.name not in policy.ec_curves:
            return text, (
                f"EC curve {key.curve.name} ({key.curve.key_size} bits) not allowed; "
                f"allowed: {', '.join(policy.ec_curves)}"
            )
        return text, None
    # The signature module verifies RSA and ECDSA only; anything else could never verify.
    return type(key).__name__, "key type not usable for firmware signatures (RSA or EC only)"


def signature_hash_problem(cert: x509.Certificate) -> str | None:
    """The hash the issuer signed `cert` with must be SHA-256 or stronger.

    On cryptography 38 an RSA-PSS-signed certificate tells no hash; `certs.signed_by` then
    tries SHA-256/384/512 only, so a weaker PSS hash never verifies there either."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        if cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
            return None  # cryptography 38: the signature check tries strong hashes only
        return f"certificate signature algorithm not supported ({exc})"
    except ValueError as exc:  # current releases: RSASSA-PSS parameters that do not parse
        return f"certificate signature algorithm parameters do not parse ({exc})"
    if algorithm is None:
        return None  # Ed25519/Ed448: no separate hash
    return hash_problem(algorithm, "certificate")


def hash_problem(algorithm: hashes.HashAlgorithm, what: str = "OCSP response") -> str | None:
    """The rule itself, also for what is not a certificate (an OCSP response's signature)."""
    if isinstance(algorithm, _STRONG_HASHES):
        return None
    return f"{what} signed with {algorithm.name.upper()}; SHA-256 or stronger required"


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


# What cryptography raises for a field it cannot read, on 38 and on current releases: a name
# with an unknown string type (KeyError on 38), a key of an unknown algorithm, two extensions
# of one kind, a general name of a type it does not know. Only ValueError is the usual one.
# Certificates load lazily on purpose: reading them whole at load would refuse some OpenSSL
# accepts (cryptography, 38 included, refuses a BasicConstraints that spells out cA FALSE),
# and those may sit in files only OpenSSL reads (ca_file, client_cert).
UNREADABLE: tuple[type[Exception], ...] = (
    ValueError,
    KeyError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def parse_problem(cert: x509.Certificate) -> str | None:
    """cryptography parses names, validity and extensions only when asked: a certificate
    whose outer DER loads can still hold a field that does not. Ask for all of them now, so
    a broken one is refused whole instead of raising deep inside a check (found by fuzzing)."""
    try:
        for value in (cert.subject, cert.issuer, cert.serial_number, cert.extensions):
            str(value)
        for name in ("not_valid_before", "not_valid_after"):  # no _utc on cryptography 38
            getattr(cert, f"{name}_utc") if hasattr(cert, f"{name}_utc") else getattr(cert, name)
        str(cert.signature_algorithm_oid)
    except UNREADABLE as exc:
        return f"certificate does not parse ({exc!r})"
    return None


def crl_parse_problem(crl: x509.CertificateRevocationList) -> str | None:
    """The same for a CRL: its issuer, dates and every entry."""
    try:
        str(crl.issuer)
        for name in ("next_update", "last_update"):
            getattr(crl, f"{name}_utc") if hasattr(crl, f"{name}_utc") else getattr(crl, name)
        _ = [entry.serial_number for entry in crl]
    except UNREADABLE as exc:
        return f"CRL does not parse ({exc!r})"
    return None


RECIPE = "see docs/integrator-guide.md#manufacturer-pki"


def signer_usage_problem(cert: x509.Certificate) -> str | None:
    """A signing certificate that is not an installed root: X.509 v3 (a v1 certificate, what
    `openssl x509 -req` makes without -extfile, can state no usage at all), not a CA, and its
    keyUsage and extendedKeyUsage (each when present) allow signing code (A00.FR.512)."""
    if cert.version is not x509.Version.v3:
        return (
            f"signing certificate is X.509 {cert.version.name}, without extensions "
            f"(made the quick way, e.g. openssl x509 -req without -extfile); {RECIPE}"
        )
    constraints = _extension(cert, x509.BasicConstraints)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        return "signing certificate is a CA (CA:TRUE) but not an installed root"
    usage = _extension(cert, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.digital_signature:
        return "key usage of the certificate excludes signatures (no digitalSignature)"
    extended = _extension(cert, x509.ExtendedKeyUsage)
    if isinstance(extended, x509.ExtendedKeyUsage) and (
        ExtendedKeyUsageOID.CODE_SIGNING not in list(extended)
    ):
        names = ", ".join(getattr(oid, "_name", oid.dotted_string) for oid in extended)
        return f"extended key usage ({names}) does not include codeSigning"
    return None


def root_problem(cert: x509.Certificate, policy: CertPolicy) -> str | None:
    """Why an installed root must not be used, or None: a CA with a strong key."""
    problem = parse_problem(cert)
    if problem is not None:
        return problem
    constraints = _extension(cert, x509.BasicConstraints)
    if not (isinstance(constraints, x509.BasicConstraints) and constraints.ca):
        return "not a CA certificate (basicConstraints CA:TRUE missing)"
    usage = _extension(cert, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        return "key usage does not allow keyCertSign"
    return describe_key(cert, policy)[1]


def crl_staleness(next_update: datetime.datetime | None, now: datetime.datetime) -> str | None:
    """None for a current CRL, else why it is stale (its nextUpdate passed, or is absent:
    RFC 5280 requires it, and a CRL without one could be replayed forever)."""
    if next_update is None:
        return "has no nextUpdate"
    if next_update < now:
        return f"is stale since {next_update:%Y-%m-%dT%H:%M:%SZ}"
    return None
