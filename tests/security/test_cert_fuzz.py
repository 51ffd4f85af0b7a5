"""Property-based fuzzing of the certificate loaders and the check (issue 11).

Properties: whatever a CSMS sends as signingCertificate, the check returns a verdict or raises
`CertificateRejected` (InvalidCertificate) and nothing else; any change to the bytes of a good
certificate is refused; whatever lies in the roots or CRL directory, loading never raises, every
file is accounted for (loaded or listed as a problem), and what is loaded passes the policy.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from agent.demo import pki
from agent.firmware import certpolicy, certs
from agent.firmware.certpolicy import CertPolicy
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected
from tests.security import certfactory as make

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROOT = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 0), ca=True)
SIGNER = pki.issue("Firmware Signing", pki.rsa_key(2048, 1), ROOT)
ROOTS = certs.RootStore((ROOT.cert,))
CRL_DER = make.crl(ROOT, (5, 6))
POLICY = CertPolicy()


def pem(der: bytes, label: str = "CERTIFICATE") -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label.encode(),
        b"\n".join(lines),
        label.encode(),
    )


def check(text: str) -> certs.CertVerdict | CertificateRejected:
    try:
        return certs.check_signing_certificate(text, ROOTS, certs.CrlSet(()), TrustedClock())
    except CertificateRejected as exc:
        assert exc.status == "InvalidCertificate" and len(exc.tech_info) <= 255
        return exc


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """The bytes of a good certificate with a few bytes changed, cut, or inserted."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        if not data:
            data = bytearray(b"\x30")
    return bytes(data)


@FUZZ
@given(der=mutated(SIGNER.der))
# Found by this test: an X.509 version field of 3 (v4, which does not exist) raised
# cryptography's InvalidVersion, which is not a ValueError, out of the check.
@example(der=make.beyond_v3(SIGNER.der))
def test_a_changed_certificate_is_refused(der: bytes) -> None:
    outcome = check(pem(der).decode("ascii"))
    if der == SIGNER.der:
        assert isinstance(outcome, certs.CertVerdict)
    else:
        assert isinstance(outcome, CertificateRejected), f"accepted a changed certificate: {der!r}"
        event(outcome.tech_info.split(":")[0][:40])


@FUZZ
@given(text=st.text(max_size=6000) | st.sampled_from(["", "-----BEGIN CERTIFICATE-----"]))
def test_any_text_is_answered(text: str) -> None:
    assert isinstance(check(text), CertificateRejected)


@FUZZ
@given(
    junk=st.binary(max_size=64),
    body=st.binary(max_size=512),
    tail=st.sampled_from(["CERTIFICATE", "X509 CRL", "PRIVATE KEY"]),
)
def test_pem_blocks_of_anything_are_answered(junk: bytes, body: bytes, tail: str) -> None:
    text = (junk + pem(body, tail)).decode("latin-1")
    assert isinstance(check(text), CertificateRejected)


def load_dir(files: dict[str, bytes]) -> tuple[certs.RootStore, certs.CrlSet]:
    with tempfile.TemporaryDirectory() as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        return certs.load_roots(Path(folder), POLICY), certs.load_crls(Path(folder))


root_files = st.one_of(
    st.binary(max_size=2048),
    mutated(ROOT.der),
    mutated(ROOT.der).map(pem),
    mutated(pem(ROOT.der)),
    st.just(ROOT.der),
    st.just(pem(ROOT.der) + pem(SIGNER.der)),
)
crl_files = st.one_of(
    st.binary(max_size=1024), mutated(CRL_DER), mutated(CRL_DER).map(lambda d: pem(d, "X509 CRL"))
)


@FUZZ
@given(root=root_files, crl=crl_files)
def test_whatever_is_in_the_directories_loading_never_raises(root: bytes, crl: bytes) -> None:
    roots, crls = load_dir({"root.der": root, "root.crl": crl})
    accounted = len(roots.roots) + len([p for p in roots.problems if "root.der" in p])
    assert accounted >= 1  # loaded, or named with its reason
    for cert in roots.roots:
        assert certpolicy.root_problem(cert, POLICY) is None
    assert len(crls.crls) + len(crls.problems) >= 1
    if root == ROOT.der:
        assert roots.roots == (ROOT.cert,)
    if pem(SIGNER.der) in root:
        assert any("basicConstraints CA:TRUE missing" in p for p in roots.problems)
    for crl_loaded in crls.crls:  # whatever loaded counts only if the root signed it
        if certs.crl_signed_by(crl_loaded, ROOT.cert):
            assert crl_loaded.public_bytes(serialization.Encoding.DER) == CRL_DER or (
                x509.load_der_x509_crl(CRL_DER).tbs_certlist_bytes == crl_loaded.tbs_certlist_bytes
            )
