"""The CA certificates the agent trusts, managed over OCPP (white paper M03, M04, M05).

Two stores, the ones the agent uses: `CentralSystemRootCertificate` (the CSMS's TLS server
certificate is verified against them, profiles 2 and 3) and `ManufacturerRootCertificate` (a
firmware signing certificate must be issued by one of them, L01). Each starts with what
agent.toml configures (`[csms] ca_file`, `[firmware] manufacturer_roots`: read-only files the
integrator owns) and changes with `InstallCertificate` and `DeleteCertificate`.

One file is the truth: `<state>/certs/index.json` (every certificate's PEM, its store, whether
agent.toml or the CSMS put it there, and the configured ones the CSMS deleted), replaced
atomically. What the other parts read is derived from it and rewritten after it (and at every
start, so a power cut between the two is repaired): `csms-roots.pem`, the TLS bundle, and
`manufacturer/`, one PEM file per root, which the firmware check reads as its roots directory.

Rules:
- an installed certificate is one PEM X.509 certificate of at most the InstallCertificate
  schema's maxLength (`max_chars`: 5500 in 1.6 and 2.0.1, 10000 in 2.1), a self-signed CA
  (basicConstraints CA:TRUE, keyCertSign when keyUsage is present) whose key passes the
  certificate policy (A00.FR.501-503), inside its validity period: otherwise `Rejected`
  (M05.FR.06; the EVerest issue #2109 failure, a leaf certificate accepted into a root
  store, is refused here);
- at most `STORE_MAX` certificates in both stores together (`CertificateStoreMaxLength`):
  one more is `Rejected` (M05.FR.03); installing one already there is `Accepted`, unchanged;
- a write that fails (a full or read-only state dir) is `Failed` (M05.FR.04), nothing changed;
- a CSMS root that verified the connection in use cannot be deleted (M04.FR.06, `Failed`),
  nor the last CSMS root while the profile uses TLS (the next reconnect could not verify the
  CSMS: stricter than M04's remark, which allows it);
- a configured certificate the CSMS deletes stays deleted until agent.toml changes it.

Failing closed: when the manufacturer roots cannot be worked out or written (agent.toml's roots
unreadable, a torn index entry, a full or failing state dir), `manufacturer/` is taken away
whole (one rename) and left empty, so a root removed from agent.toml or deleted by the CSMS is
never trusted from a stale file: every firmware request is answered InvalidCertificate until a
start or a change derives it again. `manufacturer_problems` tells the self-check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from agent.durable import (
    StateFileError,
    StateWriteError,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    read_json,
)
from agent.firmware import certpolicy, certs
from agent.firmware.certpolicy import CertPolicy
from agent.ocpp.v16 import CertificateStatus, CertificateUse, DeleteCertificateStatus

LOG = logging.getLogger(__name__)

CSMS_ROOT = CertificateUse.CENTRAL_SYSTEM_ROOT.value
MANUFACTURER_ROOT = CertificateUse.MANUFACTURER_ROOT.value
STORE_MAX = 20  # CertificateStoreMaxLength: both stores together
MAX_PEM_CHARS = 5500  # 1.6's InstallCertificate.req certificate maxLength (2.x: its message's)
INDEX_VERSION = 1
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


@dataclasses.dataclass(frozen=True)
class Entry:
    store: str  # CSMS_ROOT or MANUFACTURER_ROOT
    pem: str
    origin: str  # "configured" (agent.toml) or "installed" (InstallCertificate)

    @property
    def cert(self) -> x509.Certificate:
        return certs.load_pem_certificate(self.pem.encode("ascii"))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def hash_data(cert: x509.Certificate, algorithm: str = "SHA256") -> dict[str, str]:
    """CertificateHashDataType of a root (white paper §6.1, Ed. 3: RFC 6960 hashes over the
    issuer's DER name and the issuer's public key bits; the serial in hex without leading
    zeros). A root is its own issuer."""
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, _HASHES[algorithm]()).build()
    return {
        "hashAlgorithm": algorithm,
        "issuerNameHash": request.issuer_name_hash.hex(),
        "issuerKeyHash": request.issuer_key_hash.hex(),
        "serialNumber": format(cert.serial_number, "X"),
    }


def _same_hash_data(cert: x509.Certificate, wanted: Mapping[str, str]) -> bool:
    """CiStrings: case does not matter; a serial's leading zeros are forgiven."""
    mine = hash_data(cert, wanted["hashAlgorithm"])
    return (
        mine["issuerNameHash"] == wanted["issuerNameHash"].lower()
        and mine["issuerKeyHash"] == wanted["issuerKeyHash"].lower()
        and mine["serialNumber"] == (wanted["serialNumber"].upper().lstrip("0") or "0")
    )


def root_problem(
    pem: str, policy: CertPolicy, now: datetime.datetime, max_chars: int = MAX_PEM_CHARS
) -> tuple[str | None, x509.Certificate | None]:
    """Why `pem` cannot be a root in a store (None: it can), and the certificate."""
    if len(pem) > max_chars:
        return f"certificate of {len(pem)} characters, at most {max_chars}", None
    try:
        found = certs.parse_certificates(pem.encode("utf-8"))
    except (ValueError, UnicodeEncodeError) as exc:
        return f"not a PEM X.509 certificate: {str(exc)[:120]}", None
    if "-----BEGIN" not in pem or len(found) != 1:
        return f"expected one PEM certificate, got {len(found)}", None
    cert = found[0]
    try:
        name = certs.describe_name(cert.subject)
        problem = certpolicy.root_problem(cert, policy)
        if problem is None and cert.issuer != cert.subject:
            problem = "not self-issued: a root's issuer is its subject (install roots only)"
        if problem is None and not certs.signed_by(cert, cert):
            problem = "its self-signature does not verify"
        if problem is None:
            start, end = validity(cert)
            if not start <= now <= end:
                problem = f"outside its validity period ({start:%Y-%m-%d} to {end:%Y-%m-%d})"
    except certpolicy.UNREADABLE as exc:  # lazily parsed fields
        return f"a field does not parse: {str(exc)[:120]}", cert
    return (f"{name}: {problem}" if problem else None), cert


def validity(cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    start = getattr(cert, "not_valid_before_utc", None)
    end = getattr(cert, "not_valid_after_utc", None)
    if start is None or end is None:  # cryptography 38: naive UTC
        start = cert.not_valid_before.replace(tzinfo=datetime.UTC)
        end = cert.not_valid_after.replace(tzinfo=datetime.UTC)
    return start, end


def _usable_root(cert: x509.Certificate, policy: CertPolicy) -> bool:
    try:
        return certpolicy.root_problem(cert, policy) is None
    except certpolicy.UNREADABLE:  # a field that does not parse
        return False


def issued(leaf_der: bytes | None, root: x509.Certificate) -> bool:
    """True when the CSMS's server certificate `leaf_der` is `root` or was issued by it."""
    if leaf_der is None:
        return False
    try:
        leaf = certs.load_der_certificate(leaf_der)
        if leaf == root:
            return True
        return leaf.issuer == root.subject and certs.signed_by(leaf, root)
    except certpolicy.UNREADABLE:  # a field that does not parse
        return False


MANUFACTURER_REFUSAL = (
    "manufacturer roots sign firmware and are the integrator's, not the CSMS's "
    "([firmware] csms_manages_manufacturer_roots = true lets the CSMS change them)"
)

# "cannot be written": answered InternalError (handlers2x.public_info).
LOAD_FAILED = "the certificate store cannot be written: it did not load (see the log, restart)"


class CertStore:
    """Owns index.json and what is derived from it; callers are the daemon's loop (OCPP
    handlers) and, read-only through the derived files, the transport and the firmware check."""

    def __init__(
        self,
        directory: Path,
        configured: Mapping[str, Path | None],
        policy: CertPolicy | None = None,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        *,
        csms_manages_manufacturer_roots: bool = False,
    ) -> None:
        self.directory = directory
        # A manufacturer root signs firmware: one the CSMS installs would let the CSMS (or
        # whoever speaks for it) sign an image this charger boots, and deleting the configured
        # ones blocks every update. Off unless the integrator opts in (README).
        self._csms_roots_ok = csms_manages_manufacturer_roots
        self.csms_bundle = directory / "csms-roots.pem"
        self.manufacturer_dir = directory / "manufacturer"
        self._index = directory / "index.json"
        self._configured = configured
        self._policy = policy or certpolicy.CertPolicy()
        self._now = now
        self._entries: list[Entry] = []
        self._removed: set[str] = set()  # fingerprints of configured certificates deleted
        # Why the manufacturer roots failed closed (None: `manufacturer/` is what the store says).
        self.manufacturer_failure: str | None = None
        # The last load() could not work out the entries: they are not what index.json holds,
        # so a change would write an index (and a TLS bundle) without the others. No change
        # until a load succeeds.
        self._load_failed = False

    # --- start ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the index, fold in what agent.toml configures now, rewrite the derived files."""
        _remove_stale_copies(self.directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._entries, self._removed, changed = self._expected()
        except _UNUSABLE as exc:
            self._load_failed = True
            self._fail_closed(f"cannot work out the trusted roots: {_why(exc)}")
            return
        self._load_failed = False
        if changed:
            try:
                self._save()
            except StateWriteError as exc:
                LOG.error("cannot save the certificate store: %s", exc)
        self._derive()

    def _expected(self) -> tuple[list[Entry], set[str], bool]:
        """The entries and deleted configured fingerprints the index and agent.toml give now,
        and whether the index must be rewritten. Reads only; raises what `_UNUSABLE` names."""
        try:
            document = read_json(self._index, INDEX_VERSION) or {}
        except StateFileError as exc:
            LOG.error("certificate store unreadable, starting from agent.toml's: %s", exc)
            document = {}
        entries = [Entry(**e) for e in document.get("entries", [])]
        for entry in entries:
            if entry.store not in (CSMS_ROOT, MANUFACTURER_ROOT):
                raise ValueError(f"index entry for an unknown store {entry.store!r}")
            _ = entry.fingerprint  # raises on a PEM that does not parse
        removed = set(document.get("removed", []))
        configured = {fingerprint(c): (store, c) for store, c in self._configured_certs()}
        kept = [e for e in entries if e.origin == "installed" or e.fingerprint in configured]
        known = {(e.store, e.fingerprint) for e in kept}
        for print_, (store, cert) in configured.items():
            if print_ not in removed and (store, print_) not in known:
                pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
                kept.append(Entry(store, pem, "configured"))
        still_removed = removed & set(configured)
        return kept, still_removed, kept != entries or still_removed != removed

    def _configured_certs(self) -> Iterable[tuple[str, x509.Certificate]]:
        for store, path in self._configured.items():
            if path is None:
                continue
            for file in certs._files(Path(path), certs.CERT_SUFFIXES):
                try:
                    found = certs.parse_certificates(file.read_bytes())
                except (OSError, ValueError) as exc:
                    LOG.warning("skipping %s for the %s store: %s", file, store, exc)
                    continue
                for cert in found:
                    # A manufacturer root the policy refuses is not taken in: the start-up
                    # check already names its file and the reason, once.
                    if store != MANUFACTURER_ROOT or _usable_root(cert, self._policy):
                        yield store, cert

    # --- what is in it -------------------------------------------------------------------------

    def certificates(self, store: str) -> list[x509.Certificate]:
        return [e.cert for e in self._entries if e.store == store]

    def hash_data(self, store: str) -> list[dict[str, str]]:
        """M03.FR.04: the hash data of every certificate of `store`, SHA-256."""
        return [hash_data(cert) for cert in self.certificates(store)]

    def holds(self, wanted: Mapping[str, str]) -> bool:
        """Whether a certificate in either store matches the hash data (wire keys)."""
        return any(_same_hash_data(e.cert, wanted) for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def csms_roots_file(self) -> Path | None:
        """The TLS bundle, when it holds a root (read by the transport thread: the entry list
        is replaced, never changed in place)."""
        if not any(e.store == CSMS_ROOT for e in self._entries):
            return None
        try:  # never written (a full state dir since the first start): agent.toml's file
            return self.csms_bundle if self.csms_bundle.stat().st_size > 0 else None
        except OSError:
            return None

    # --- changes ---------------------------------------------------------------------------------

    def install(
        self, store: str, pem: str, max_chars: int = MAX_PEM_CHARS
    ) -> tuple[CertificateStatus, str]:
        """InstallCertificate: (status, why) — `why` is for the log and techInfo; `max_chars`
        the version's maxLength of the message's certificate."""
        if self._load_failed:
            return CertificateStatus.FAILED, LOAD_FAILED
        if store == MANUFACTURER_ROOT and not self._csms_roots_ok:
            return CertificateStatus.REJECTED, MANUFACTURER_REFUSAL
        problem, cert = root_problem(pem, self._policy, self._now(), max_chars)
        if problem is not None or cert is None:
            return CertificateStatus.REJECTED, problem or "unusable"
        print_ = fingerprint(cert)
        name = certs.describe_name(cert.subject)
        if any(e.store == store and e.fingerprint == print_ for e in self._entries):
            return CertificateStatus.ACCEPTED, f"{name}: already installed"
        if len(self._entries) >= STORE_MAX:
            return CertificateStatus.REJECTED, f"store full ({STORE_MAX} certificates)"
        before = (list(self._entries), set(self._removed))
        origin = "configured" if print_ in self._removed else "installed"
        self._removed.discard(print_)
        text = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        self._entries = [*self._entries, Entry(store, text, origin)]
        if not self._commit(before):
            return CertificateStatus.FAILED, f"{name}: the certificate store cannot be written"
        return CertificateStatus.ACCEPTED, f"{name} installed"

    def delete(
        self, wanted: Mapping[str, str], in_use: Callable[[x509.Certificate, int], bool]
    ) -> tuple[DeleteCertificateStatus, str]:
        """DeleteCertificate (M04): `in_use(root, csms_roots_left)` says whether a CSMS root
        may not go (M04.FR.06)."""
        if self._load_failed:
            return DeleteCertificateStatus.FAILED, LOAD_FAILED
        matches = [e for e in self._entries if _same_hash_data(e.cert, wanted)]
        if not matches:
            return DeleteCertificateStatus.NOT_FOUND, "no installed certificate matches"
        if not self._csms_roots_ok and any(e.store == MANUFACTURER_ROOT for e in matches):
            return DeleteCertificateStatus.FAILED, MANUFACTURER_REFUSAL
        csms_roots = len(self.certificates(CSMS_ROOT))
        for entry in matches:
            if entry.store == CSMS_ROOT and in_use(entry.cert, csms_roots):
                name = certs.describe_name(entry.cert.subject)
                return DeleteCertificateStatus.FAILED, f"{name}: in use for the CSMS connection"
        before = (list(self._entries), set(self._removed))
        self._entries = [e for e in self._entries if e not in matches]
        self._removed = self._removed | {e.fingerprint for e in matches if e.origin == "configured"}
        if not self._commit(before):
            return DeleteCertificateStatus.FAILED, "the certificate store cannot be written"
        names = ", ".join(certs.describe_name(e.cert.subject) for e in matches)
        return DeleteCertificateStatus.ACCEPTED, f"{names} deleted"

    # --- persistence ---------------------------------------------------------------------------

    def _commit(self, before: tuple[list[Entry], set[str]]) -> bool:
        try:
            self._save()
        except StateWriteError as exc:
            LOG.error("cannot save the certificate store: %s", exc)
            self._entries, self._removed = before
            return False
        self._derive()
        return True

    def _save(self) -> None:
        document: dict[str, Any] = {
            "version": INDEX_VERSION,
            "entries": [dataclasses.asdict(e) for e in self._entries],
            "removed": sorted(self._removed),
        }
        atomic_write_json(self._index, document, update_step=False)

    def _derive(self) -> None:
        """The files others read. A failure is logged (the manufacturer roots fail closed);
        the next change or start retries."""
        try:
            bundle = "".join(e.pem for e in self._entries if e.store == CSMS_ROOT)
            atomic_write_bytes(self.csms_bundle, bundle.encode("ascii"), update_step=False)
        except OSError as exc:
            LOG.error("cannot write the certificate store's files: %s", exc)
        try:
            self._derive_manufacturer()
        except _UNUSABLE as exc:
            self._fail_closed(f"cannot write {self.manufacturer_dir}: {_why(exc)}")
            return
        if self.manufacturer_failure is not None:
            LOG.warning("manufacturer roots: %s is the store's again", self.manufacturer_dir)
        self.manufacturer_failure = None
        with contextlib.suppress(OSError):  # absent (or a failing disk: the next start retries)
            os.unlink(self.directory / FAILED_CLOSED)

    def _derive_manufacturer(self) -> None:
        self.manufacturer_dir.mkdir(mode=0o700, exist_ok=True)
        wanted = {
            f"{e.fingerprint}.pem": e.pem for e in self._entries if e.store == MANUFACTURER_ROOT
        }
        # Every file the firmware check would read: one the store did not write is stale too.
        present = {
            p.name
            for p in self.manufacturer_dir.iterdir()
            if p.suffix.lower() in certs.CERT_SUFFIXES and not p.name.startswith(".")
        }
        for name in sorted(set(wanted) - present):
            path = self.manufacturer_dir / name
            atomic_write_bytes(path, wanted[name].encode("ascii"), update_step=False)
        for name in sorted(present - set(wanted)):
            os.unlink(self.manufacturer_dir / name)
        if present - set(wanted):
            fsync_dir(self.manufacturer_dir)

    def _fail_closed(self, why: str) -> None:
        """Trust no manufacturer root until the store is derived again: `manufacturer/` is
        renamed away whole (a reader sees every old root or none, never a stale part) and an
        empty one takes its place."""
        self.manufacturer_failure = why
        LOG.error(
            "manufacturer roots: %s; failing closed: %s trusts no root and every firmware "
            "update is answered InvalidCertificate until this is fixed (then restart the agent)",
            why,
            self.manufacturer_dir,
        )
        stale = self.directory / f"{STALE_PREFIX}{os.getpid()}"
        try:
            shutil.rmtree(stale, ignore_errors=True)
            os.rename(self.manufacturer_dir, stale)
        except FileNotFoundError:
            pass
        except OSError as exc:  # not even a rename: take the roots one by one
            LOG.error("manufacturer roots: cannot move %s away: %s", self.manufacturer_dir, exc)
            _unlink_roots(self.manufacturer_dir)
        try:
            self.manufacturer_dir.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(self.directory)
        except OSError as exc:  # a missing directory trusts nothing either
            LOG.error("manufacturer roots: cannot make %s: %s", self.manufacturer_dir, exc)
        # For the self-check in another process: an empty marker (a full disk still takes it).
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.directory / FAILED_CLOSED, b"", update_step=False)
        shutil.rmtree(stale, ignore_errors=True)


STALE_PREFIX = ".manufacturer.stale-"
# What working out or writing the roots may raise: I/O, and an index entry or a configured
# file that does not parse.
_UNUSABLE: tuple[type[Exception], ...] = (OSError, AttributeError, *certpolicy.UNREADABLE)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _unlink_roots(directory: Path) -> None:
    try:
        names = [p for p in directory.iterdir() if p.suffix.lower() in certs.CERT_SUFFIXES]
    except OSError:
        return
    for path in names:
        try:
            os.unlink(path)
        except OSError as exc:
            LOG.error("manufacturer roots: cannot remove %s: %s", path, exc)


def _remove_stale_copies(directory: Path) -> None:
    """What a fail-closed rename left when the power went before its clean-up."""
    try:
        leftovers = [p for p in directory.iterdir() if p.name.startswith(STALE_PREFIX)]
    except OSError:
        return
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


FAILED_CLOSED = "manufacturer.failed-closed"  # in the store's directory, while it is so


def manufacturer_problems(
    directory: Path, configured: Mapping[str, Path | None], policy: CertPolicy | None = None
) -> list[str]:
    """For the self-check (another process than the daemon): does `<directory>/manufacturer/`
    trust exactly the manufacturer roots the store and agent.toml give? Nothing is written."""
    store = CertStore(directory, configured, policy)
    where = store.manufacturer_dir
    if not directory.exists():
        return []  # the daemon has not run yet: it derives the store at its first start
    try:
        entries, _, _ = store._expected()
    except _UNUSABLE as exc:
        return [
            f"certificate store: cannot work out the manufacturer roots ({_why(exc)}): the agent "
            f"fails closed, {where} trusts no root and every firmware update is answered "
            "InvalidCertificate; fix [firmware] manufacturer_roots or the state dir, then "
            "restart the agent"
        ]
    wanted = {e.fingerprint for e in entries if e.store == MANUFACTURER_ROOT}
    present: set[str] = set()
    for file in certs._files(where, certs.CERT_SUFFIXES) if where.is_dir() else []:
        try:
            present |= {fingerprint(c) for c in certs.parse_certificates(file.read_bytes())}
        except (OSError, ValueError):
            continue  # not trusted by the firmware check either
    out = []
    if present - wanted:
        out.append(
            f"certificate store: {where} trusts {len(present - wanted)} root(s) the store no "
            "longer lists (a stale copy the agent could not rewrite: see its log); free or "
            "repair the state dir and restart the agent"
        )
    # Lacking roots is the daemon's failure only when it says so: otherwise agent.toml gained
    # a root since the daemon last started, and its next start derives it.
    if wanted - present and (directory / FAILED_CLOSED).exists():
        out.append(
            f"certificate store: {where} lacks {len(wanted - present)} of the "
            f"{len(wanted)} manufacturer root(s) the store lists: the agent failed closed "
            "(its log says why: 'failing closed'), every firmware update is answered "
            "InvalidCertificate; free or repair the state dir and restart the agent"
        )
    return out


def configured_stores(csms_ca_file: Path | None, manufacturer_roots: Path | None) -> dict[str, Any]:
    return {CSMS_ROOT: csms_ca_file, MANUFACTURER_ROOT: manufacturer_roots}
