"""Signing-certificate checks against a generated manufacturer PKI (L01.FR.12, .23-.25)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from agent import RELEASE_DATE
from agent.demo import pki as fwpki
from agent.firmware import certs
from agent.firmware.clock import ClockSource, CsmsTimeOffset, TrustedClock
from agent.firmware.errors import CertificateRejected
from tests.security import certfactory as make

CLOCK = TrustedClock()
NO_CRLS = certs.CrlSet(())


def store(*issued: fwpki.Issued) -> certs.RootStore:
    return certs.RootStore(tuple(i.cert for i in issued))


def rejected(pem: str, roots: certs.RootStore, crls: certs.CrlSet = NO_CRLS) -> CertificateRejected:
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(pem, roots, crls, CLOCK)
    assert len(caught.value.tech_info) <= 255
    return caught.value


def test_rsa_signer_issued_by_rsa_root_is_accepted(rsa_root, rsa_signer):
    """L01.FR.23: a certificate issued directly by an installed root passes."""
    verdict = certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), NO_CRLS, CLOCK)
    assert verdict.root.subject == rsa_root.cert.subject
    assert verdict.clock_source is ClockSource.SYSTEM
    assert verdict.key_description == "RSA 2048"
    assert verdict.summary.endswith(", RSA 2048, valid by system clock")  # the accepted log line


def test_ec_signer_found_among_several_roots(rsa_root, ec_root, ec_signer):
    verdict = certs.check_signing_certificate(
        ec_signer.pem, store(rsa_root, ec_root), NO_CRLS, CLOCK
    )
    assert verdict.root.subject == ec_root.cert.subject
    assert verdict.key_description.startswith("EC secp256r1")


def test_ec_signer_under_rsa_root(rsa_root):
    signer = fwpki.issue("EC under RSA", fwpki.ec_key("secp256r1", 2), rsa_root)
    verdict = certs.check_signing_certificate(signer.pem, store(rsa_root), NO_CRLS, CLOCK)
    assert verdict.certificate.serial_number == signer.cert.serial_number


# RSA-PSS-signed certificates: test_certs_pss.py (committed OpenSSL fixtures, both stacks).


def test_certificate_identical_to_root_is_accepted(rsa_root, ec_root):
    """The manufacturer may sign with the root itself (the issue allows byte-identical)."""
    verdict = certs.check_signing_certificate(
        rsa_root.pem, store(ec_root, rsa_root), NO_CRLS, CLOCK
    )
    assert verdict.root == rsa_root.cert


def test_no_root_installed():
    """L01.FR.24 + CP-PRE-2: without a ManufacturerRootCertificate nothing can be accepted."""
    signer = fwpki.issue("lonely", fwpki.ec_key("secp256r1", 3))
    error = rejected(signer.pem, certs.RootStore(()))
    assert error.status == "InvalidCertificate"
    assert error.tech_info == "no manufacturer root certificate installed"


def test_expired(rsa_root):
    """L01.FR.24: outside the validity period -> InvalidCertificate, naming the clock."""
    old = fwpki.issue(
        "expired",
        fwpki.rsa_key(2048, 1),
        rsa_root,
        not_before=fwpki.NOW - 20 * fwpki.DAY,
        not_after=fwpki.NOW - 10 * fwpki.DAY,
    )
    error = rejected(old.pem, store(rsa_root))
    assert error.status == "InvalidCertificate"
    assert "expired" in error.tech_info and "system clock" in error.tech_info


def test_not_yet_valid(rsa_root):
    early = fwpki.issue(
        "future", fwpki.rsa_key(2048, 1), rsa_root, not_before=fwpki.NOW + 10 * fwpki.DAY
    )
    error = rejected(early.pem, store(rsa_root))
    assert "not valid before" in error.tech_info


def test_intermediate_issued_is_refused(rsa_root):
    """L01 remarks: the manufacturer SHALL NOT use intermediates for the signing cert."""
    intermediate = fwpki.issue("Intermediate", fwpki.ec_key("secp256r1", 4), rsa_root, ca=True)
    leaf = fwpki.issue("via intermediate", fwpki.ec_key("secp256r1", 5), intermediate)
    error = rejected(leaf.pem, store(rsa_root))
    assert "not an installed manufacturer root" in error.tech_info
    # Sending the chain does not help either.
    error = rejected(leaf.pem + intermediate.pem, store(rsa_root))
    assert "more than one certificate" in error.tech_info


def test_same_issuer_name_but_other_key_is_refused(rsa_root):
    """A forged root with the real root's name must not pass (signature is checked)."""
    forged_root = fwpki.issue("Manufacturer Root RSA", fwpki.rsa_key(2048, 3), ca=True)
    forged = fwpki.issue("forged", fwpki.rsa_key(2048, 1), forged_root)
    error = rejected(forged.pem, store(rsa_root))
    assert "does not verify" in error.tech_info


def test_small_rsa_key(rsa_root):
    """A00.FR.501 via L01 remarks: RSA keys below 2048 bits are refused."""
    weak = fwpki.issue("weak", fwpki.rsa_key(1024, 0), rsa_root)
    assert "1024 bits" in rejected(weak.pem, store(rsa_root)).tech_info


def test_small_ec_key(rsa_root):
    weak = fwpki.issue("weak ec", fwpki.ec_key("secp192r1", 0), rsa_root)
    assert "192 bits" in rejected(weak.pem, store(rsa_root)).tech_info


def test_key_usage_without_signatures(rsa_root):
    enc = fwpki.issue("encrypt only", fwpki.rsa_key(2048, 1), rsa_root, key_usage="encipher")
    assert "key usage" in rejected(enc.pem, store(rsa_root)).tech_info


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing"),
        ("hello, I am a certificate", "not a PEM certificate"),
        (
            "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n",
            "does not parse",
        ),
    ],
)
def test_garbage(rsa_root, text, reason):
    assert reason in rejected(text, store(rsa_root)).tech_info


def test_a_version_field_beyond_v3_is_refused_not_raised(tmp_path: Path, rsa_root, rsa_signer):
    """cryptography raises InvalidVersion, no ValueError, for a certificate that says it is
    v4: as the signing certificate (L01.FR.12) and as a root file, in PEM and in DER, it is
    one that does not parse, and the good root beside it still loads."""
    assert (
        "does not parse"
        in rejected(make.as_pem(make.beyond_v3(rsa_signer.der)), store(rsa_root)).tech_info
    )
    folder = tmp_path / "roots"
    folder.mkdir()
    (folder / "v4.pem").write_text(make.as_pem(make.beyond_v3(rsa_root.der)))
    (folder / "v4.der").write_bytes(make.beyond_v3(rsa_root.der))
    (folder / "good.pem").write_text(rsa_root.pem)
    loaded = certs.load_roots(folder)
    assert loaded.roots == (rsa_root.cert,)
    assert sorted(p.split(":")[0] for p in loaded.problems) == [
        str(folder / "v4.der"),
        str(folder / "v4.pem"),
    ]


def test_too_long(rsa_root, rsa_signer):
    """Schema: signingCertificate maxLength 5500; longer text is refused whatever it holds."""
    padded = rsa_signer.pem + "\n" * (5501 - len(rsa_signer.pem))
    assert len(padded) == 5501
    assert "5500" in rejected(padded, store(rsa_root)).tech_info


def test_revoked_by_root_signed_crl(tmp_path: Path, rsa_root, rsa_signer):
    """L01.FR.25: a serial listed in a CRL signed by the root -> RevokedCertificate."""
    crl = fwpki.crl(rsa_root, [12345, rsa_signer.cert.serial_number])
    (tmp_path / "root.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    crls = certs.load_crls(tmp_path)
    assert len(crls.crls) == 1
    error = rejected(rsa_signer.pem, store(rsa_root), crls)
    assert error.status == "RevokedCertificate"
    assert f"{rsa_signer.cert.serial_number:x}" in error.tech_info


def test_crl_not_signed_by_root_is_ignored(tmp_path: Path, rsa_root, rsa_signer):
    """The forged CRL lists the serial and does not revoke; the root's own (current, without
    the serial) is there too, or crl_policy would refuse for the want of a CRL."""
    impostor = fwpki.issue("Manufacturer Root RSA", fwpki.rsa_key(2048, 3), ca=True)
    crl = fwpki.crl(impostor, [rsa_signer.cert.serial_number])
    (tmp_path / "fake.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    genuine = fwpki.crl(rsa_root, [1])
    (tmp_path / "root.crl").write_bytes(genuine.public_bytes(serialization.Encoding.DER))
    crls = certs.load_crls(tmp_path)
    verdict = certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), crls, CLOCK)
    assert verdict.certificate.serial_number == rsa_signer.cert.serial_number


def test_crl_without_our_serial_accepts(tmp_path: Path, rsa_root, rsa_signer):
    crl = fwpki.crl(rsa_root, [1, 2, 3])
    (tmp_path / "a.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "broken.crl").write_bytes(b"not a crl")
    crls = certs.load_crls(tmp_path)
    assert len(crls.crls) == 1 and len(crls.problems) == 1
    certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), crls, CLOCK)


@pytest.mark.parametrize("version", [0, 5])
def test_a_crl_of_another_version_is_skipped_with_its_problem(
    tmp_path: Path, rsa_root, rsa_signer, version: int
):
    """cryptography raises InvalidVersion, no ValueError, for a CRL version other than v2:
    in DER or in a PEM bundle, crl_dir skips it with its problem; the good one still counts."""
    (tmp_path / "root.crl").write_bytes(make.crl(rsa_root, (rsa_signer.cert.serial_number,)))
    odd = make.crl_of_version(make.crl(rsa_root, (1,)), version)
    (tmp_path / "odd.crl").write_bytes(odd)
    body = base64.encodebytes(odd).decode("ascii")
    (tmp_path / "odd.pem").write_text(f"-----BEGIN X509 CRL-----\n{body}-----END X509 CRL-----\n")
    crls = certs.load_crls(tmp_path)
    assert [crl.issuer for crl in crls.crls] == [rsa_root.cert.subject]
    assert sorted(p.split(":")[0] for p in crls.problems) == [
        str(tmp_path / "odd.crl"),
        str(tmp_path / "odd.pem"),
    ]
    assert all("not a valid CRL version" in p for p in crls.problems)
    assert rejected(rsa_signer.pem, store(rsa_root), crls).status == "RevokedCertificate"


def test_a_crl_that_loads_but_cannot_be_read_is_skipped_with_its_problem(
    tmp_path: Path, rsa_root, rsa_signer
):
    """cryptography parses a CRL lazily: one whose issuer name holds a string type it does not
    know (VideotexString) loads, and fails only when its issuer is read, on cryptography 38
    (KeyError) and on current releases (ValueError) alike. crl_dir's loader reads every field
    up front, so such a CRL is skipped with its problem, not carried into the check."""
    genuine = fwpki.crl(rsa_root, [1])
    (tmp_path / "root.crl").write_bytes(genuine.public_bytes(serialization.Encoding.DER))
    der = fwpki.crl(rsa_root, [rsa_signer.cert.serial_number]).public_bytes(
        serialization.Encoding.DER
    )
    (common_name,) = rsa_root.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(common_name.value).encode()
    tag = der.index(name) - 2  # the string's tag, before its one-byte length
    assert der[tag] in (0x0C, 0x13) and der[tag + 1] == len(name)  # UTF8 or PrintableString
    unreadable = der[:tag] + bytes([0x15]) + der[tag + 1 :]
    (tmp_path / "unreadable.crl").write_bytes(unreadable)
    with pytest.raises((KeyError, ValueError)):
        str(x509.load_der_x509_crl(unreadable).issuer)  # what the check would meet

    crls = certs.load_crls(tmp_path)

    assert [crl.issuer for crl in crls.crls] == [rsa_root.cert.subject]
    assert len(crls.problems) == 1
    assert "unreadable.crl" in crls.problems[0] and "does not parse" in crls.problems[0]
    certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), crls, CLOCK)


def test_load_roots_from_directory_and_bundle(tmp_path: Path, rsa_root, ec_root):
    folder = tmp_path / "roots"
    folder.mkdir()
    (folder / "rsa.pem").write_text(rsa_root.pem)
    (folder / "ec.der").write_bytes(ec_root.der)
    (folder / "junk.crt").write_text("junk")
    (folder / "README").write_text("ignored: not a certificate suffix")
    loaded = certs.load_roots(folder)
    assert {c.subject for c in loaded.roots} == {rsa_root.cert.subject, ec_root.cert.subject}
    assert len(loaded.problems) == 1 and "junk.crt" in loaded.problems[0]

    bundle = tmp_path / "bundle.pem"
    bundle.write_text(rsa_root.pem + ec_root.pem)
    assert len(certs.load_roots(bundle).roots) == 2
    assert certs.load_roots(None).roots == ()


# --- which clock decides -------------------------------------------------------------------


BOOT_1970 = 86400.0  # a controller without RTC


def test_clock_prefers_plausible_system_time():
    clock = TrustedClock(lambda: -1e9)  # a CSMS offset exists but the system clock is fine
    reading = clock.read()
    assert reading.source is ClockSource.SYSTEM
    assert reading.now >= RELEASE_DATE


def test_implausible_system_clock_uses_csms_time(rsa_root, rsa_signer):
    """Issue #3: with the system clock before the release date, the CSMS time decides."""
    real_now = fwpki.NOW.timestamp()
    offset = CsmsTimeOffset(system=lambda: BOOT_1970)
    offset.record(datetime.datetime.fromtimestamp(real_now, datetime.UTC))
    clock = TrustedClock(offset, system=lambda: BOOT_1970)
    verdict = certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), NO_CRLS, clock)
    assert verdict.clock_source is ClockSource.CSMS


def test_csms_time_can_reject(rsa_root, rsa_signer):
    offset = CsmsTimeOffset(system=lambda: BOOT_1970)
    offset.record(fwpki.NOW + 3650 * fwpki.DAY)
    clock = TrustedClock(offset, system=lambda: BOOT_1970)
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), NO_CRLS, clock)
    assert "expired" in caught.value.tech_info and "CSMS time" in caught.value.tech_info


def test_no_trustworthy_time_refuses(rsa_root, rsa_signer):
    clock = TrustedClock(system=lambda: BOOT_1970)
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), NO_CRLS, clock)
    assert "no trustworthy time" in caught.value.tech_info


def test_tech_info_is_capped():
    error = CertificateRejected("InvalidCertificate", "x" * 400)
    assert len(error.tech_info) == 255
    with pytest.raises(ValueError):
        CertificateRejected("Accepted", "nope")


# --- pinned signing keys ([firmware] signing_key_pins) ----------------------------------------


def test_key_pin_is_what_openssl_computes(rsa_signer, tmp_path: Path):
    """The pin an operator derives with openssl is the one the agent compares."""
    (tmp_path / "cert.pem").write_text(rsa_signer.pem)
    public = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "cert.pem")],
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"], input=public, capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    assert certs.key_pin(rsa_signer.cert) == hashlib.sha256(der).hexdigest()


def test_a_pinned_key_is_accepted_and_an_unpinned_one_refused(rsa_root, rsa_signer):
    """Issue #3 peers §7 item 14: pinned as well as chained. A certificate the root did issue
    is still refused when its key is not pinned."""
    pinned = certs.key_pin(rsa_signer.cert)
    verdict = certs.check_signing_certificate(
        rsa_signer.pem, store(rsa_root), NO_CRLS, CLOCK, pins=(pinned,)
    )
    assert verdict.certificate == rsa_signer.cert
    other = fwpki.issue("Also issued by the root", fwpki.rsa_key(2048, 77), rsa_root)
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(other.pem, store(rsa_root), NO_CRLS, CLOCK, pins=(pinned,))
    assert caught.value.status == "InvalidCertificate"
    assert "not one of the pinned keys" in caught.value.tech_info
    assert certs.key_pin(other.cert)[:16] in caught.value.tech_info


def test_a_pin_does_not_replace_the_chain(rsa_root, ec_root, ec_signer):
    """Pinning the key of a certificate no installed root issued accepts nothing."""
    pins = (certs.key_pin(ec_signer.cert),)
    with pytest.raises(CertificateRejected):
        certs.check_signing_certificate(ec_signer.pem, store(rsa_root), NO_CRLS, CLOCK, pins=pins)


# --- found by mutation testing (tests/mutation, issue #10) -------------------------------


def test_a_root_crl_after_another_issuers_crl_still_counts(rsa_root, ec_root, rsa_signer):
    """L01.FR.25: CRLs of other issuers are passed over, not the end of the search."""
    crls = certs.CrlSet(
        (fwpki.crl(ec_root, [1]), fwpki.crl(rsa_root, [rsa_signer.cert.serial_number])),
        source=Path("/crl-dir"),
    )
    assert rejected(rsa_signer.pem, store(rsa_root), crls).status == "RevokedCertificate"


def test_a_blank_certificate_is_missing(rsa_root):
    assert "missing" in rejected(" \n\t ", store(rsa_root)).tech_info


def test_an_unpinned_key_is_named_by_16_hex_digits(rsa_root, rsa_signer):
    """techInfo names the refused key briefly (255 characters at most in all)."""
    other = fwpki.issue("Also issued by the root", fwpki.rsa_key(2048, 77), rsa_root)
    pin = certs.key_pin(other.cert)
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(
            other.pem, store(rsa_root), NO_CRLS, CLOCK, pins=(certs.key_pin(rsa_signer.cert),)
        )
    assert f"signing key {pin[:16]}… is not" in caught.value.tech_info


def test_the_root_store_cannot_be_altered():
    roots = certs.RootStore(())
    with pytest.raises(dataclasses.FrozenInstanceError):
        roots.roots = ()  # type: ignore[misc]


def test_a_certificate_is_valid_from_its_first_second(rsa_root):
    """notBefore is inclusive (RFC 5280 §4.1.2.5): at that very second it is valid."""
    start = fwpki.NOW + fwpki.DAY  # a whole second, inside the root's validity
    signer = fwpki.issue("From tomorrow", fwpki.rsa_key(2048, 78), rsa_root, not_before=start)
    clock = TrustedClock(system=lambda: start.timestamp())
    verdict = certs.check_signing_certificate(signer.pem, store(rsa_root), NO_CRLS, clock)
    assert verdict.certificate == signer.cert


def test_a_certificate_is_valid_until_its_last_second(rsa_root):
    """notAfter is inclusive too (RFC 5280 §4.1.2.5): valid at that very second (L01.FR.24),
    expired the next one."""
    end = fwpki.NOW + fwpki.DAY  # a whole second, inside the root's validity
    signer = fwpki.issue("Until tomorrow", fwpki.rsa_key(2048, 79), rsa_root, not_after=end)
    clock = TrustedClock(system=lambda: end.timestamp())
    verdict = certs.check_signing_certificate(signer.pem, store(rsa_root), NO_CRLS, clock)
    assert verdict.certificate == signer.cert
    after = TrustedClock(system=lambda: end.timestamp() + 1)
    with pytest.raises(CertificateRejected) as caught:
        certs.check_signing_certificate(signer.pem, store(rsa_root), NO_CRLS, after)
    error = caught.value
    assert error.status == "InvalidCertificate" and "expired" in error.tech_info


def test_no_certificate_is_signed_by_a_key_that_cannot_sign(rsa_root, rsa_signer):
    """signed_by fails closed: an issuer whose key is X25519 (a key-agreement key, which
    signs nothing) signed nothing, whatever the certificate."""
    agreement = x25519.X25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    issuer = (
        x509.CertificateBuilder()
        .subject_name(rsa_signer.cert.issuer)
        .issuer_name(rsa_root.cert.subject)
        .public_key(agreement)
        .serial_number(1)
        .not_valid_before(fwpki.NOW - fwpki.DAY)
        .not_valid_after(fwpki.NOW + fwpki.DAY)
        .sign(rsa_root.key, hashes.SHA256())
    )
    assert not certs.signed_by(rsa_signer.cert, issuer)


def test_a_signature_of_another_kind_than_the_issuers_key_is_refused(rsa_root, rsa_signer):
    """Anyone can sign a certificate with their own Ed25519 key and name the RSA root as its
    issuer: an Ed25519 signature (which names no hash) never verifies with an RSA key."""
    forger = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    forged = (
        x509.CertificateBuilder()
        .subject_name(rsa_signer.cert.subject)
        .issuer_name(rsa_root.cert.subject)
        .public_key(rsa_signer.cert.public_key())
        .serial_number(2)
        .not_valid_before(fwpki.NOW - fwpki.DAY)
        .not_valid_after(fwpki.NOW + fwpki.DAY)
        .sign(forger, None)
    )
    assert not certs.signed_by(forged, rsa_root.cert)
    pem = forged.public_bytes(serialization.Encoding.PEM).decode()
    assert rejected(pem, store(rsa_root)).status == "InvalidCertificate"


def test_an_ed25519_issuer_verifies_what_it_signed_and_nothing_else():
    """signed_by serves the CSMS certificate store and the charge point's chain too, where an
    Ed25519 root may sign: its own signature verifies, another key's does not."""

    def self_signed(seed: int) -> x509.Certificate:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        return (
            x509.CertificateBuilder()
            .subject_name(fwpki.name("Ed25519 Root"))
            .issuer_name(fwpki.name("Ed25519 Root"))
            .public_key(key.public_key())
            .serial_number(seed)
            .not_valid_before(fwpki.NOW - fwpki.DAY)
            .not_valid_after(fwpki.NOW + fwpki.DAY)
            .sign(key, None)
        )

    root, impostor = self_signed(1), self_signed(2)
    assert certs.signed_by(root, root)
    assert not certs.signed_by(root, impostor)


def test_the_certificate_check_does_not_load_the_http_stack():
    """Offline checks (`ocpp-fw-agent verify`, every check without online_crl/online_ocsp)
    import no HTTP client: the online modules, and requests with them, load when first used."""
    probe = (
        "import sys, agent.firmware.certs; "
        "print(sorted(m for m in ('requests', 'agent.firmware.online', 'agent.firmware.ocsp') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "[]"


def test_a_certificate_of_5500_characters_is_read_and_one_more_is_refused(rsa_root, rsa_signer):
    """The schema's maxLength for signingCertificate is 5500: that length is allowed."""
    padded = rsa_signer.pem + "\n" * (5500 - len(rsa_signer.pem))
    certs.check_signing_certificate(padded, store(rsa_root), NO_CRLS, CLOCK)
    assert "at most 5500" in rejected(padded + "\n", store(rsa_root)).tech_info


def test_verdicts_and_crl_sets_cannot_be_altered(rsa_root, rsa_signer):
    verdict = certs.check_signing_certificate(rsa_signer.pem, store(rsa_root), NO_CRLS, CLOCK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.certificate = rsa_root.cert  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        NO_CRLS.crls = ()  # type: ignore[misc]
