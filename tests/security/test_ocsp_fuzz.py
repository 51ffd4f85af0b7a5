"""Property-based fuzzing of the OCSP answer (issue 11): the responder is a server on the
network, so its bytes are hostile input like a CSMS's certificate.

Property: whatever bytes come back, `ocsp.judge` returns a status or raises `Unusable`, never
anything else; and since the signature covers what it says, an answer changed anywhere that
still counts says exactly what the original said.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as x509_ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.demo import pki
from agent.firmware import ocsp
from tests.security import certfactory as make
from tests.security.test_cert_fuzz import mutated

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROOT = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 0), ca=True)
SIGNER = make.with_ocsp(ROOT, pki.rsa_key(2048, 1), "http://ocsp.example.com/")
DELEGATE = make.ocsp_signer(ROOT, pki.ec_key("secp256r1", 5))
NONCE = b"\x5a" * ocsp.NONCE_BYTES
REQUEST = (
    x509_ocsp.OCSPRequestBuilder()
    .add_certificate(SIGNER.cert, ROOT.cert, hashes.SHA1())
    .add_extension(x509.OCSPNonce(NONCE), critical=False)
    .build()
)
NOW = datetime.datetime.now(datetime.UTC)
GOOD = x509_ocsp.OCSPCertStatus.GOOD
BY_ROOT = make.ocsp_response(REQUEST, SIGNER.cert, ROOT, GOOD)
BY_DELEGATE = make.ocsp_response(
    REQUEST, SIGNER.cert, ROOT, GOOD, signer=DELEGATE, include_signer=True
)


def judged(body: bytes) -> str:
    try:
        return ocsp.judge(body, REQUEST, ROOT.cert, NONCE, NOW)[0]
    except ocsp.Unusable:
        return "unusable"


def test_the_originals_are_good() -> None:
    assert judged(BY_ROOT) == judged(BY_DELEGATE) == ocsp.GOOD


@FUZZ
@given(body=st.one_of(mutated(BY_ROOT), mutated(BY_DELEGATE)))
def test_a_changed_answer_is_unusable_or_unchanged(body: bytes) -> None:
    assert judged(body) in ("unusable", ocsp.GOOD)


@FUZZ
@given(body=st.binary(max_size=2048))
def test_any_bytes_are_judged_without_a_crash(body: bytes) -> None:
    assert judged(body) in ("unusable", ocsp.GOOD, ocsp.REVOKED, ocsp.UNKNOWN)
