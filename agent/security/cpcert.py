"""The charge point certificate of security profile 3, renewed over OCPP (white paper A02).

`ExtendedTriggerMessage(SignChargePointCertificate)` → the agent makes a new key on the charger
(EC P-256, A00.FR.501/503; A02.FR.02), keeps it in the state dir (mode 0600, written atomically;
it never leaves the charger, A02.FR.05) and sends `SignCertificate` with a PKCS#10 CSR whose
subject is CN = the charge point's serial number (A00.FR.511) and O = `CpoName` (A02.FR.13).
`CertificateSigned` then brings the certificate (chain): it is `Accepted` only when its first
certificate is for that key, inside its validity period (a certificate not yet valid is refused
rather than kept for later), not a CA, and chains through the given CA certificates to an
installed `CentralSystemRootCertificate` (the CPO hierarchy, A02.FR.06; white paper §6.4: the
root "used by the CA to sign the Central System and Charge Point certificate"), in at most
10000 characters (CertificateSignedMaxChainSize). Otherwise `Rejected` and the
`InvalidChargePointCertificate` security event (A02.FR.07), the current certificate kept.

Accepted, it becomes the client certificate of profile 3 from the next connection (made at once
when profile 3 is in use, A02.FR.08); the previous pair is kept beside it as a fallback
(A02.FR.10), older ones deleted. Until a connection with the new one succeeds it is on trial:
after `TRIAL_ATTEMPTS` failed connections in a row the previous pair is back (a CSMS that does
not take the new certificate must not lock the charger out). `state.json` names the pair in
use and is replaced last, so a power cut leaves the old pair or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.durable import (
    StateFileError,
    StateWriteError,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
)
from agent.firmware import certpolicy, certs
from agent.ocpp.v16 import GenericStatus
from agent.security.certstore import validity

LOG = logging.getLogger(__name__)
MAX_CHAIN_CHARS = 10000  # CertificateSignedMaxChainSize
MAX_CHAIN_CERTS = 5
TRIAL_ATTEMPTS = 3  # failed connections with a new certificate before the previous is back
CPO_NAME_MAX = 64  # the X.520 upper bound of an organizationName
VERSION = 1


# A chain, or the waiting key, that cannot be read (or read whole).
_UNUSABLE: tuple[type[Exception], ...] = (*certpolicy.UNREADABLE, UnicodeEncodeError, OSError)


class ChargePointCertificate:
    """Owns `<state>/certs/charge-point/`. The loop changes it; the transport thread reads
    `current()` (a tuple replaced whole, under a lock)."""

    def __init__(self, directory: Path, serial_number: str) -> None:
        self.directory = directory
        self._state_file = directory / "state.json"
        self._serial = serial_number
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}
        self._attempts = 0  # connection attempts with a certificate on trial

    def load(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._state = read_json(self._state_file, VERSION) or {}
        except StateFileError as exc:
            LOG.error("charge point certificate state unreadable, none in use: %s", exc)
            self._state = {}

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write_json(self._state_file, {**state, "version": VERSION}, update_step=False)
        with self._lock:
            self._state = state

    # --- what others read ----------------------------------------------------------------------

    @property
    def cpo_name(self) -> str | None:
        value = self._state.get("cpo_name")
        return value if isinstance(value, str) else None

    # --- a new certificate on trial (A02.FR.10: the old one kept "as fallback") -----------------

    def attempt(self) -> bool:
        """A connection attempt with the certificate in use is starting (transport thread).
        True when a new certificate failed TRIAL_ATTEMPTS times in a row and the previous
        one is back in use."""
        with self._lock:
            state = self._state
            if not state.get("trial") or not state.get("previous"):
                return False
            self._attempts += 1
            if self._attempts <= TRIAL_ATTEMPTS:
                return False
            failed = state["current"]
            back = {**state, "current": state["previous"], "previous": None, "trial": False}
            self._attempts = 0
        LOG.warning(
            "the new charge point certificate could not connect %d times: back to the "
            "previous one (A02.FR.10)",
            TRIAL_ATTEMPTS,
        )
        try:
            self._save(back)
        except StateWriteError as exc:  # in memory it is done; a restart tries the new one
            LOG.error("cannot save the return to the previous certificate: %s", exc)
            with self._lock:
                self._state = back
        self._unlink(failed["cert"])
        self._unlink(failed["key"])
        return True

    def connected(self) -> None:
        """The CSMS took the connection: a certificate on trial is the one now."""
        with self._lock:
            self._attempts = 0
            if not self._state.get("trial"):
                return
            state = {**self._state, "trial": False}
        LOG.info("connected with the new charge point certificate; it stays")
        try:
            self._save(state)
        except StateWriteError as exc:
            LOG.error("cannot save the new certificate's success: %s", exc)

    def current(self) -> tuple[Path, Path] | None:
        """(certificate chain, key) of the certificate the CSMS signed, if any."""
        with self._lock:
            pair = self._state.get("current")
        if not pair:
            return None
        return self.directory / pair["cert"], self.directory / pair["key"]

    # --- CpoName -----------------------------------------------------------------------------

    def set_cpo_name(self, value: str) -> tuple[bool, str]:
        """1.6's CpoName and 2.x's SecurityCtrlr.OrganizationName (the same value)."""
        if not value or len(value) > CPO_NAME_MAX:
            return False, f"organization name of {len(value)} characters: 1-{CPO_NAME_MAX} required"
        try:
            self._save({**self._state, "cpo_name": value})
        except StateWriteError as exc:
            return False, f"organization name not saved: {exc.strerror}"
        return True, "organization name (CpoName) changed"

    # --- A02: key, CSR, certificate ----------------------------------------------------------

    def new_csr(self) -> str:
        """A new key (kept, 0600) and the PEM CSR for it. Raises StateWriteError."""
        if self.cpo_name is None:
            raise ValueError("CpoName is not set (A02 prerequisite)")
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        name = f"key-{os.urandom(6).hex()}.pem"
        atomic_write_bytes(self.directory / name, key_pem, mode=0o600, update_step=False)
        previous = self._state.get("pending")
        self._save({**self._state, "pending": name})
        if previous and previous != name:
            self._unlink(previous)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, self._serial),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.cpo_name),
            ]
        )
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def install(
        self, chain_pem: str, roots: list[x509.Certificate], now: datetime.datetime
    ) -> tuple[GenericStatus, str]:
        """CertificateSigned: (status, why)."""
        problem = self._problem(chain_pem, roots, now)
        if problem is not None:
            return GenericStatus.REJECTED, problem
        pending = self._state["pending"]
        name = f"cert-{pending.removeprefix('key-')}"
        try:
            atomic_write_bytes(self.directory / name, chain_pem.encode("ascii"), update_step=False)
            state = dict(self._state)
            older = state.get("previous")
            state["previous"] = state.get("current")
            state["current"] = {"cert": name, "key": pending}
            state["trial"] = state["previous"] is not None
            state.pop("pending")
            self._save(state)
        except StateWriteError as exc:
            return GenericStatus.REJECTED, f"the certificate cannot be saved: {exc.strerror}"
        if older:
            self._unlink(older["cert"])
            self._unlink(older["key"])
        leaf = certs.parse_certificates(chain_pem.encode("ascii"))[0]
        subject = certs.describe_name(leaf.subject)
        return GenericStatus.ACCEPTED, f"new charge point certificate for {subject}"

    def _problem(
        self, chain_pem: str, roots: list[x509.Certificate], now: datetime.datetime
    ) -> str | None:
        if len(chain_pem) > MAX_CHAIN_CHARS:
            return f"certificate chain of {len(chain_pem)} characters, at most {MAX_CHAIN_CHARS}"
        pending = self._state.get("pending")
        if not pending:
            return "no certificate signing request is waiting for a certificate"
        try:
            chain = certs.parse_certificates(chain_pem.encode("ascii"))
            mine = self._pending_key(pending)
        except _UNUSABLE as exc:  # the waiting key's algorithm, too
            return f"unusable certificate chain: {str(exc)[:120]}"
        if "-----BEGIN" not in chain_pem or not 1 <= len(chain) <= MAX_CHAIN_CERTS:
            return f"expected 1-{MAX_CHAIN_CERTS} PEM certificates, got {len(chain)}"
        leaf = chain[0]
        try:
            certs.describe_name(leaf.subject)  # install names it, once it is saved
            if _spki(leaf.public_key()) != mine:
                return "the certificate is not for the key of the last request"
            start, end = validity(leaf)
            if not start <= now <= end:
                return f"outside its validity period ({start:%Y-%m-%d} to {end:%Y-%m-%d})"
            if _is_ca(leaf):
                return "a CA certificate cannot be the charge point certificate"
            return (
                None
                if _chains(chain, roots)
                else "does not chain to a CentralSystemRootCertificate"
            )
        except certpolicy.UNREADABLE as exc:
            return f"a field does not parse: {exc!r:.120}"

    def awaits(self, chain_pem: str) -> bool:
        """Whether the chain's first certificate is for the key of the CSR waiting for one:
        a 2.x CertificateSigned without certificateType is the agent's only then."""
        pending = self._state.get("pending")
        if not pending or len(chain_pem) > MAX_CHAIN_CHARS:
            return False
        try:
            chain = certs.parse_certificates(chain_pem.encode("ascii"))
            return bool(chain) and _spki(chain[0].public_key()) == self._pending_key(pending)
        except _UNUSABLE:
            return False

    def _pending_key(self, name: str) -> bytes:
        """The DER public key of the waiting request's private key."""
        key = serialization.load_pem_private_key((self.directory / name).read_bytes(), None)
        return _spki(key.public_key())

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.directory / name)


def _spki(key: Any) -> bytes:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bytes(key.public_bytes(serialization.Encoding.DER, spki))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _chains(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> bool:
    """Leaf → the chain's CA certificates (each a CA, each signing the one before) → a root."""
    current = chain[0]
    rest = list(chain[1:])
    for _ in range(len(chain)):
        for root in roots:
            if current.issuer == root.subject and certs.signed_by(current, root):
                return True
        issuer = next(
            (c for c in rest if c.subject == current.issuer and certs.signed_by(current, c)), None
        )
        if issuer is None or not _is_ca(issuer):
            return False
        rest.remove(issuer)
        current = issuer
    return False
