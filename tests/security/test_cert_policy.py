"""The certificate policy (issue 11): certificates that used to pass and must not.

L01.FR.12 (RFC 5280 rules), L01.FR.23/.24 (checked before answering; InvalidCertificate),
L01.FR.25 (RevokedCertificate), A00.FR.501-503 (key sizes), A00.FR.512 (key usage). Each
class is refused with a techInfo naming the reason; the good counterparts still pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from agent.demo import pki
from agent.firmware import certpolicy, certs
from agent.firmware.certpolicy import CertPolicy
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected
from tests.security import certfactory as make

CLOCK = TrustedClock()
NO_CRLS = certs.CrlSet(())
ROOT = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 0), ca=True)
SIGNER_KEY = pki.rsa_key(2048, 1)


def store(*issued: pki.Issued) -> certs.RootStore:
    return certs.RootStore(tuple(i.cert for i in issued))


def refused(
    issued: pki.Issued | str,
    roots: certs.RootStore,
    crls: certs.CrlSet = NO_CRLS,
    policy: CertPolicy | None = None,
) -> CertificateRejected:
    pem = issued if isinstance(issued, str) else issued.pem
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(pem, roots, crls, CLOCK, policy=policy or CertPolicy())
    assert len(caught.value.tech_info) <= 255
    return caught.value


def accepted(
    issued: pki.Issued,
    roots: certs.RootStore,
    crls: certs.CrlSet = NO_CRLS,
    policy: CertPolicy | None = None,
) -> certs.CertVerdict:
    return certs.check_signing_certificate(
        issued.pem, roots, crls, CLOCK, policy=policy or CertPolicy()
    )


# --- the hash the root signed with -------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["md5", "sha1"])
def test_a_certificate_signed_with_a_weak_hash_is_refused(algorithm: str) -> None:
    """A genuine md5/sha1WithRSAEncryption signature by the installed root: refused."""
    weak = make.weak_hash(algorithm, ROOT, SIGNER_KEY)
    assert certs.signed_by(weak.cert, ROOT.cert)  # it does verify: only the hash is wrong
    error = refused(weak, store(ROOT))
    assert error.status == "InvalidCertificate"
    assert f"signed with {algorithm.upper()}" in error.tech_info
    assert "SHA-256 or stronger" in error.tech_info


@pytest.mark.parametrize("algorithm", ["sha384", "sha512"])
def test_stronger_hashes_pass(algorithm: str) -> None:
    from cryptography.hazmat.primitives import hashes

    chosen = {"sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[algorithm]
    cert = (
        make.builder("Firmware Signing", SIGNER_KEY, ROOT)
        .add_extension(make._usage(sign=True, ca=False), critical=True)
        .sign(ROOT.key, chosen)
    )
    assert accepted(pki.Issued(cert, SIGNER_KEY), store(ROOT)).root == ROOT.cert


# --- usages and the CA flag --------------------------------------------------------------------


def test_extended_key_usage_server_auth_only_is_refused() -> None:
    error = refused(make.server_auth_only(ROOT, SIGNER_KEY), store(ROOT))
    assert "extended key usage (serverAuth) does not include codeSigning" in error.tech_info


def test_extended_key_usage_with_code_signing_passes() -> None:
    accepted(make.code_signing(ROOT, SIGNER_KEY), store(ROOT))


def test_a_certificate_without_any_extension_passes() -> None:
    """keyUsage and extendedKeyUsage are checked *when present*; absent they restrict nothing."""
    accepted(make.no_extensions(ROOT, SIGNER_KEY), store(ROOT))


def test_key_usage_without_digital_signature_is_refused() -> None:
    """nonRepudiation alone used to pass; the rule is digitalSignature (A00.FR.512)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    usage = x509.KeyUsage(False, True, False, False, False, False, False, False, False)
    cert = (
        make.builder("Firmware Signing NR", SIGNER_KEY, ROOT)
        .add_extension(usage, critical=True)
        .sign(ROOT.key, hashes.SHA256())
    )
    error = refused(pki.Issued(cert, SIGNER_KEY), store(ROOT))
    assert "no digitalSignature" in error.tech_info


def test_a_ca_leaf_is_refused_unless_it_is_an_installed_root() -> None:
    sub_ca = make.ca_leaf(ROOT, SIGNER_KEY)
    error = refused(sub_ca, store(ROOT))
    assert "is a CA (CA:TRUE) but not an installed root" in error.tech_info
    # Installed as a root itself (and signing with its own key), it is that root: accepted.
    installed = certs.RootStore((ROOT.cert, sub_ca.cert))
    assert accepted(sub_ca, installed).root == sub_ca.cert


# --- keys and curves ---------------------------------------------------------------------------


def test_a_secp256k1_key_is_refused_by_default() -> None:
    k1 = pki.issue("Firmware Signing K1", make.secp256k1_key(), ROOT)
    error = refused(k1, store(ROOT))
    assert "EC curve secp256k1 (256 bits) not allowed" in error.tech_info


def test_a_secp256k1_key_passes_when_allowed() -> None:
    k1 = pki.issue("Firmware Signing K1", make.secp256k1_key(), ROOT)
    allowed = CertPolicy(ec_curves=("secp256r1", "secp256k1"))
    assert accepted(k1, store(ROOT), policy=allowed).key_description == "EC secp256k1 (256)"


@pytest.mark.parametrize("curve", ["secp256r1", "secp384r1"])
def test_the_nist_curves_pass(curve: str) -> None:
    signer = pki.issue("Firmware Signing EC", pki.ec_key(curve, 7), ROOT)
    assert accepted(signer, store(ROOT)).key_description.startswith(f"EC {curve}")


# --- roots -------------------------------------------------------------------------------------


def roots_dir(tmp_path: Path, **files: pki.Issued) -> Path:
    folder = tmp_path / "roots"
    folder.mkdir()
    for name, issued in files.items():
        (folder / f"{name}.pem").write_text(issued.pem)
    return folder


def test_a_weak_root_is_refused_at_load_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An RSA-1024 root used to be installed as is, and what it signed passed."""
    weak_root = pki.issue("Weak Root", pki.rsa_key(1024, 9), ca=True)
    signer = pki.issue("Firmware Signing", SIGNER_KEY, weak_root)
    folder = roots_dir(tmp_path, good=ROOT, weak=weak_root)
    with caplog.at_level(logging.WARNING, logger="agent.firmware.certs"):
        loaded = certs.load_roots(folder, CertPolicy())
    assert loaded.roots == (ROOT.cert,)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert str(folder / "weak.pem") in lines[0] and "RSA key of 1024 bits" in lines[0]
    assert loaded.problems == (lines[0].removeprefix("refusing manufacturer root "),)
    error = refused(signer, loaded)
    assert "not an installed manufacturer root" in error.tech_info


def test_a_root_that_is_not_a_ca_is_refused_at_load(tmp_path: Path) -> None:
    fake = make.not_a_ca_root(pki.rsa_key(2048, 10))
    loaded = certs.load_roots(roots_dir(tmp_path, fake=fake), CertPolicy())
    assert loaded.roots == ()
    assert "basicConstraints CA:TRUE missing" in loaded.problems[0]
    signer = pki.issue("Firmware Signing", SIGNER_KEY, fake)
    assert "no manufacturer root certificate installed" in refused(signer, loaded).tech_info


def test_a_root_on_a_curve_not_allowed_is_refused_at_load(tmp_path: Path) -> None:
    k1_root = pki.issue("K1 Root", make.secp256k1_key(), ca=True)
    loaded = certs.load_roots(roots_dir(tmp_path, k1=k1_root), CertPolicy())
    assert loaded.roots == () and "secp256k1" in loaded.problems[0]
    allowed = CertPolicy(ec_curves=("secp256r1", "secp256k1"))
    assert certs.load_roots(tmp_path / "roots", allowed).roots == (k1_root.cert,)


def test_good_roots_load(tmp_path: Path) -> None:
    ec_root = pki.issue("EC Root", pki.ec_key("secp384r1", 11), ca=True)
    loaded = certs.load_roots(roots_dir(tmp_path, rsa=ROOT, ec=ec_root), CertPolicy())
    assert set(loaded.roots) == {ROOT.cert, ec_root.cert} and loaded.problems == ()


# --- revocation: crl_policy ----------------------------------------------------------------


def crl_dir(tmp_path: Path, *crls: bytes) -> certs.CrlSet:
    folder = tmp_path / "crl"
    folder.mkdir(exist_ok=True)
    for n, data in enumerate(crls):
        (folder / f"{n}.crl").write_bytes(data)
    return certs.load_crls(folder)


SIGNER = pki.issue("Firmware Signing", SIGNER_KEY, ROOT)
STALE = pki.NOW - 3 * pki.DAY


def test_a_current_crl_without_the_serial_passes(tmp_path: Path) -> None:
    crls = crl_dir(tmp_path, make.crl(ROOT, (7,)))
    accepted(SIGNER, store(ROOT), crls)
    assert certs.revocation_status().startswith("CRL of CN=Manufacturer Root RSA current until")


def test_a_stale_crl_is_refused_by_default(tmp_path: Path) -> None:
    """It used to revoke (or clear) as if current."""
    crls = crl_dir(tmp_path, make.crl(ROOT, (7,), next_update=STALE))
    error = refused(SIGNER, store(ROOT), crls)
    assert error.status == "InvalidCertificate"
    assert "CRL of CN=Manufacturer Root RSA is stale since" in error.tech_info
    assert "crl_policy = refuse" in error.tech_info
    assert "stale since" in certs.revocation_status()


def test_a_stale_crl_still_revokes_what_it_lists(tmp_path: Path) -> None:
    crls = crl_dir(tmp_path, make.crl(ROOT, (SIGNER.cert.serial_number,), next_update=STALE))
    for policy in ("refuse", "warn", "ignore"):
        error = refused(SIGNER, store(ROOT), crls, CertPolicy(crl_policy=policy))
        assert error.status == "RevokedCertificate"


def test_a_missing_crl_is_refused_by_default(tmp_path: Path) -> None:
    """A crl_dir with no CRL of this root (here: only another root's) used to revoke
    nothing, silently."""
    other = pki.issue("Other Root", pki.rsa_key(2048, 12), ca=True)
    crls = crl_dir(tmp_path, make.crl(other, ()))
    error = refused(SIGNER, store(ROOT, other), crls)
    assert "no CRL from CN=Manufacturer Root RSA (crl_policy = refuse)" in error.tech_info


def test_the_latest_of_a_roots_crls_decides_whether_they_are_current(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An old CRL left beside the current one (the first file) makes nothing stale, and CRLs
    of other issuers are passed over without a word."""
    crls = crl_dir(tmp_path, make.crl(ROOT, (), next_update=STALE), make.crl(ROOT, ()))
    accepted(SIGNER, store(ROOT), crls)
    other = pki.issue("Other Root", pki.rsa_key(2048, 12), ca=True)
    crls = crl_dir(tmp_path, make.crl(other, ()), make.crl(ROOT, ()))
    accepted(SIGNER, store(ROOT), crls)
    assert "does not verify" not in caplog.text  # not taken for a forgery of ours


def test_a_name_without_a_common_name_is_written_whole() -> None:
    """techInfo and logs name a root or CRL issuer by its (first) CN, else by its whole name."""
    named = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Vendor")])
    assert certs.describe_name(named) == "O=Example Vendor"
    assert certs.describe_name(x509.Name([])) == "<empty name>"
    two = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in ("First", "Second")])
    assert certs.describe_name(two) == "CN=First"


def test_a_configured_refuse_refuses(tmp_path: Path) -> None:
    """crl_policy = "refuse" as read from the configuration (equal to the constant, not the
    same object) refuses as the default does: compared by identity it would fail open."""
    crls = crl_dir(tmp_path, make.crl(ROOT, (), next_update=STALE))
    configured = b"refuse".decode()
    assert configured is not certpolicy.CRL_REFUSE
    error = refused(SIGNER, store(ROOT), crls, CertPolicy(crl_policy=configured))
    assert error.status == "InvalidCertificate" and "crl_policy = refuse" in error.tech_info


def test_a_forged_crl_does_not_count_as_the_roots_crl(tmp_path: Path) -> None:
    impostor = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 3), ca=True)
    crls = crl_dir(tmp_path, make.crl(impostor, ()))
    assert "no CRL from" in refused(SIGNER, store(ROOT), crls).tech_info


@pytest.mark.parametrize(("policy", "level"), [("warn", logging.WARNING), ("ignore", logging.INFO)])
def test_warn_and_ignore_accept_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str, level: int
) -> None:
    crls = crl_dir(tmp_path, make.crl(ROOT, (), next_update=STALE))
    configured = policy.encode().decode()  # as read from a file: equal, not the same object
    assert configured is not policy
    with caplog.at_level(logging.INFO, logger="agent.firmware.certs"):
        accepted(SIGNER, store(ROOT), crls, CertPolicy(crl_policy=configured))
    said = [r for r in caplog.records if "revocation" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == level
    message = said[0].getMessage()
    assert "stale since" in message and f"crl_policy = {policy}" in message
    assert f"crl_policy = {policy}" in certs.revocation_status()


def test_without_a_crl_dir_revocation_is_not_checked_and_says_so() -> None:
    accepted(SIGNER, store(ROOT), certs.load_crls(None))
    assert certs.revocation_status() == "not checked: no crl_dir configured"


def test_the_configured_policy_is_passed_not_installed(tmp_path: Path) -> None:
    """No module-wide policy: a check without one applies the documented defaults."""
    crls = crl_dir(tmp_path, make.crl(ROOT, (), next_update=STALE))
    certs.check_signing_certificate(
        SIGNER.pem, store(ROOT), crls, CLOCK, policy=CertPolicy(crl_policy="warn")
    )
    with pytest.raises(CertificateRejected):
        certs.check_signing_certificate(SIGNER.pem, store(ROOT), crls, CLOCK)


def test_crl_der_and_pem_both_load(tmp_path: Path) -> None:
    from cryptography import x509

    der = make.crl(ROOT, ())
    pem = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
    (tmp_path / "a.pem").write_bytes(pem)
    assert len(certs.load_crls(tmp_path / "a.pem").crls) == 1


def test_policy_refuses_unknown_names() -> None:
    with pytest.raises(ValueError):
        CertPolicy(crl_policy="maybe")
    with pytest.raises(ValueError):
        CertPolicy(ec_curves=("secp192r1",))


def test_a_name_that_does_not_parse_is_refused_not_raised() -> None:
    """cryptography parses names lazily: the DER loads, the issuer raises ValueError (or
    KeyError on cryptography 38) when read; that used to escape the check."""
    error = refused(make.garbled_issuer(SIGNER), store(ROOT))
    assert "signing certificate does not parse" in error.tech_info
