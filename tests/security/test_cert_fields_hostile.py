"""Certificates that load but whose fields do not: cryptography parses names and keys lazily,
and what it raises is not always a ValueError (KeyError for a name on cryptography 38,
UnsupportedAlgorithm for a key on current releases). Whatever the CSMS or a root file hands
over, each check refuses such a certificate with its answer; none raises out of it."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.demo import pki
from agent.firmware import certs
from agent.ocpp.v16 import GenericStatus
from agent.security import certstore
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
