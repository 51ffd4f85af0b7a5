"""Certificates that load but whose fields do not: cryptography parses names, extensions and
keys lazily, and what it raises then is not always a ValueError (KeyError for a name on
cryptography 38, UnsupportedAlgorithm for a key, DuplicateExtension, UnsupportedGeneralNameType).
Whatever the CSMS or a root file hands over, each check refuses such a certificate with its
answer; none raises out of it."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.demo import pki
from agent.firmware import certs
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected
from agent.ocpp.v16 import CertificateStatus, GenericStatus
from agent.security import certstore
from agent.security.certstore import CSMS_ROOT, MANUFACTURER_ROOT, CertStore
from agent.security.cpcert import ChargePointCertificate
from tests.security import certfactory as make

ROOT = pki.issue("CSMS Root Hostile", pki.rsa_key(2048, 40), ca=True)
CA = pki.issue("CPO CA Hostile", pki.rsa_key(2048, 41), ROOT, ca=True)


def now() -> datetime.datetime:
    """make.sign's certificates are valid from an hour before they are made, not from pki.NOW."""
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture
def waiting(tmp_path: Path) -> tuple[ChargePointCertificate, x509.CertificateSigningRequest]:
    """A charge point certificate store with a CSR waiting for its certificate (A02)."""
    store = ChargePointCertificate(tmp_path / "cp", "CP-HOSTILE-1")
    store.load()
    assert store.set_cpo_name("CPO")[0]
    return store, x509.load_pem_x509_csr(store.new_csr().encode("ascii"))


def test_a_chain_through_a_ca_of_an_unknown_key_algorithm_does_not_chain(waiting) -> None:
    """CertificateSigned (A02): the leaf is for the waiting key, its CA's key is of an
    algorithm nobody assigned. The CA cannot have signed anything: Rejected, nothing saved."""
    store, csr = waiting
    leaf = make.sign(csr, CA)
    good = leaf + CA.pem
    odd = leaf + make.as_pem(make.unknown_key_algorithm(CA.der))
    assert store.awaits(odd)
    status, why = store.install(odd, [ROOT.cert], now())
    assert (status, why) == (
        GenericStatus.REJECTED,
        "does not chain to a CentralSystemRootCertificate",
    )
    assert store.current() is None
    assert store.install(good, [ROOT.cert], now())[0] is GenericStatus.ACCEPTED


def test_a_leaf_of_an_unknown_key_algorithm_is_refused(waiting) -> None:
    store, _ = waiting
    odd = make.as_pem(make.unknown_key_algorithm(make.der(make.sign(waiting[1], CA)))) + CA.pem
    assert store.awaits(odd) is False
    status, why = store.install(odd, [ROOT.cert], now())
    assert status is GenericStatus.REJECTED and why.startswith("a field does not parse: ")
    assert store.current() is None


def test_a_leaf_whose_subject_does_not_parse_is_refused_before_it_is_saved(waiting) -> None:
    """install names the new certificate once it is saved; a subject cryptography cannot
    read, in a certificate the CA did sign, is found first: nothing is saved, nothing raises."""
    store, csr = waiting
    leaf = make.sign(csr, CA)
    odd = make.signed_again(make.garbled_subject(make.der(leaf)), CA)
    status, why = store.install(odd + CA.pem, [ROOT.cert], now())
    assert status is GenericStatus.REJECTED and why.startswith("a field does not parse: ")
    assert store.current() is None
    assert store.install(leaf + CA.pem, [ROOT.cert], now())[0] is GenericStatus.ACCEPTED


def test_a_csms_certificate_that_does_not_parse_was_not_issued_by_a_root() -> None:
    """DeleteCertificate keeps the CSMS root the connection uses; a server certificate
    whose issuer does not parse is no proof of use either way, and does not raise."""
    server = pki.issue("csms.example", pki.rsa_key(2048, 42), ROOT)
    assert certstore.issued(server.der, ROOT.cert) is True
    garbled = x509.load_pem_x509_certificate(make.garbled_issuer(server).encode("ascii"))
    assert certstore.issued(garbled.public_bytes(serialization.Encoding.DER), ROOT.cert) is False


def test_a_root_file_whose_subject_does_not_parse_is_named_as_such(tmp_path: Path) -> None:
    """load_roots names each refused root by its subject; one that does not parse (KeyError
    on cryptography 38, ValueError on current releases) is named so, and the good one loads."""
    (tmp_path / "odd.pem").write_text(make.garbled_subject(ROOT.der))
    (tmp_path / "good.pem").write_text(ROOT.pem)
    loaded = certs.load_roots(tmp_path)
    assert loaded.roots == (ROOT.cert,)
    (problem,) = loaded.problems
    assert problem.startswith(f"{tmp_path / 'odd.pem'} (subject does not parse): ")


def test_no_certificate_is_signed_by_a_key_of_an_unknown_algorithm() -> None:
    odd = x509.load_der_x509_certificate(make.unknown_key_algorithm(CA.der))
    assert certs.signed_by(CA.cert, ROOT.cert) is True
    assert certs.signed_by(CA.cert, odd) is False


ODD_EXTENSIONS = pytest.mark.parametrize(
    "extension",
    [make.DUPLICATE_BASIC_CONSTRAINTS, make.X400_SUBJECT_ALT_NAME],
    ids=["duplicate-extension", "x400-name"],
)


def odd_signer(extension: tuple[int, bytes]) -> pki.Issued:
    built = (
        make.builder("Firmware Signing Odd", pki.rsa_key(2048, 43), ROOT)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(make._usage(sign=True, ca=False), critical=True)
    )
    made = make.with_raw_extension(built, ROOT.key, extension)
    return pki.Issued(made.cert, pki.rsa_key(2048, 43))


def odd_root(name: str, extension: tuple[int, bytes]) -> pki.Issued:
    key = pki.rsa_key(2048, 44)
    built = (
        make.builder(name, key, ROOT, issuer_name=pki.name(name))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(make._usage(sign=False, ca=True), critical=True)
    )
    return make.with_raw_extension(built, key, extension)


@ODD_EXTENSIONS
def test_a_signing_certificate_with_an_unreadable_extension_is_invalid(extension) -> None:
    """SignedUpdateFirmware / UpdateFirmware: InvalidCertificate (L01.FR.02), not a CALLERROR
    InternalError from an exception out of the check."""
    with pytest.raises((x509.DuplicateExtension, x509.UnsupportedGeneralNameType)):
        _ = odd_signer(extension).cert.extensions  # what the check meets
    roots = certs.RootStore((ROOT.cert,))
    with pytest.raises(CertificateRejected) as refused:
        certs.check_signing_certificate(
            odd_signer(extension).pem, roots, certs.CrlSet(()), TrustedClock()
        )
    assert refused.value.status == "InvalidCertificate"
    assert "signing certificate does not parse" in refused.value.tech_info


@ODD_EXTENSIONS
def test_installcertificate_refuses_a_root_with_an_unreadable_extension(
    tmp_path: Path, extension
) -> None:
    store = CertStore(tmp_path / "certs", {CSMS_ROOT: None, MANUFACTURER_ROOT: None})
    store.load()
    status, why = store.install(CSMS_ROOT, odd_root("CSMS Root Odd", extension).pem)
    assert status is CertificateStatus.REJECTED and "does not parse" in why
    assert store.certificates(CSMS_ROOT) == []


@ODD_EXTENSIONS
def test_certificatesigned_refuses_a_leaf_with_an_unreadable_extension(waiting, extension) -> None:
    """The leaf is for the waiting key and signed by the CPO CA: it is the agent's to answer
    (2.x: not the charger's stack), and Rejected before anything is saved."""
    store, csr = waiting
    issued = x509.load_pem_x509_certificate(make.sign(csr, CA).encode("ascii"))
    start, end = certs.validity(issued)
    built = (
        x509.CertificateBuilder()
        .subject_name(issued.subject)
        .issuer_name(issued.issuer)
        .public_key(csr.public_key())
        .serial_number(issued.serial_number)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    odd = make.with_raw_extension(built, CA.key, extension).pem + CA.pem
    assert store.awaits(odd) is True
    status, why = store.install(odd, [ROOT.cert], now())
    assert status is GenericStatus.REJECTED and why.startswith("a field does not parse: ")
    assert store.current() is None


@ODD_EXTENSIONS
def test_a_manufacturer_root_file_with_an_unreadable_extension_is_skipped(
    tmp_path: Path, extension
) -> None:
    """agent.toml's manufacturer_roots, a bundle [good, odd, good]: the store still loads (it
    does not stop the daemon's start), trusts both good roots, and load_roots names the odd
    one; certificates load lazily, so one odd certificate does not take its file with it."""
    roots = tmp_path / "roots"
    roots.mkdir()
    other = pki.issue("Manufacturer Root Other", pki.rsa_key(2048, 46), ca=True)
    odd = odd_root("Manufacturer Root Odd", extension)
    (roots / "bundle.pem").write_text(ROOT.pem + odd.pem + other.pem)
    store = CertStore(tmp_path / "certs", certstore.configured_stores(None, roots))
    store.load()
    assert store.manufacturer_failure is None
    assert store.certificates(MANUFACTURER_ROOT) == [ROOT.cert, other.cert]
    loaded = certs.load_roots(roots)
    assert loaded.roots == (ROOT.cert, other.cert)
    (problem,) = loaded.problems
    assert problem.startswith(f"{roots / 'bundle.pem'} (CN=Manufacturer Root Odd): ")
    assert "does not parse" in problem


def test_the_certificate_index_loads_an_entry_it_cannot_read_whole(tmp_path: Path) -> None:
    """An installed root whose extensions no longer read (cryptography changed under it, or
    a store written by an older release) does not fail the store closed: the index still
    loads and the other roots stay trusted."""
    odd = odd_root("CSMS Root Odd", make.DUPLICATE_BASIC_CONSTRAINTS)
    state = tmp_path / "certs"
    store = CertStore(state, {CSMS_ROOT: None, MANUFACTURER_ROOT: None})
    store.load()
    assert store.install(CSMS_ROOT, ROOT.pem)[0] is CertificateStatus.ACCEPTED
    index = state / "index.json"
    document = json.loads(index.read_text())
    document["entries"].append({"store": CSMS_ROOT, "pem": odd.pem, "origin": "installed"})
    index.write_text(json.dumps(document))
    again = CertStore(state, {CSMS_ROOT: None, MANUFACTURER_ROOT: None})
    again.load()
    assert again.manufacturer_failure is None
    assert ROOT.cert in again.certificates(CSMS_ROOT)


def test_a_signing_certificate_signed_rsassa_pss_without_parameters_is_invalid() -> None:
    """RFC 4055 requires RSASSA-PSS parameters; without them current cryptography raises
    ValueError when asked for the hash (38: UnsupportedAlgorithm, whose PSS branch tries the
    strong hashes and finds none that verifies). InvalidCertificate either way, before any
    root is looked for."""
    plain = pki.issue("Firmware Signing PSS", pki.rsa_key(2048, 47), ROOT)
    odd = make.as_pem(make.pss_without_parameters(plain.der))
    assert x509.load_pem_x509_certificate(odd.encode()).signature_algorithm_oid.dotted_string == (
        "1.2.840.113549.1.1.10"
    )
    with pytest.raises(CertificateRejected) as refused:
        certs.check_signing_certificate(
            odd, certs.RootStore((ROOT.cert,)), certs.CrlSet(()), TrustedClock()
        )
    assert refused.value.status == "InvalidCertificate"
