"""`[firmware] online_ocsp`: the signing certificate's OCSP responder asked before answering.

WP3 Table 13 recommends online revocation for the firmware signing certificate; a certificate
the responder says is revoked is RevokedCertificate (L01.FR.25) with the security event
InvalidFirmwareSigningCertificate (L01.FR.02). A real responder on loopback answers with
responses built by cryptography's OCSPResponseBuilder: good, revoked, unknown, signed by the
wrong key or by a responder certificate the root did not authorise, stale, with a replayed
nonce, oversized, slow, hanging, redirecting, unreachable. Everything that is not a fresh,
root-authorised `good` or `revoked` leaves revocation unknown, for crl_policy (refuse by
default, as for a missing CRL). Each case asserts the answer and the log line.
"""

from __future__ import annotations

import datetime
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from agent import config
from agent.demo import pki
from agent.demo.rig import ChargerRig, Firmware
from agent.demo.waiting import deadline
from agent.firmware import certs, ocsp, online
from agent.firmware.certpolicy import CertPolicy
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected
from tests.e2e import conftest as e2e
from tests.security import certfactory as make
from tests.security.hostile_net import server_tls
from tests.security.ocsp_server import OcspServer

rig, charger, firmware, fileserver = e2e.rig, e2e.charger, e2e.firmware, e2e.fileserver

ROOT = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 0), ca=True)
IMPOSTOR = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 3), ca=True)  # same name
KEY = pki.rsa_key(2048, 1)
RESPONDER_KEY = pki.ec_key("secp256r1", 5)
LOOPBACK = ("127.0.0.1",)  # the responder's address: refused unless allowed_hosts names it
GOOD, REVOKED, UNKNOWN = (
    x509_ocsp.OCSPCertStatus.GOOD,
    x509_ocsp.OCSPCertStatus.REVOKED,
    x509_ocsp.OCSPCertStatus.UNKNOWN,
)


def policy(**changes: Any) -> CertPolicy:
    """The configuration's longest exchange (60 s): an answer that must arrive may take its
    time on a loaded machine; only the cut-off tests set a short one."""
    settings: dict[str, Any] = {"online_ocsp": True, "online_hosts": LOOPBACK}
    settings["online_timeout"] = 60.0
    return CertPolicy(**(settings | changes))


class Responder:
    """What the test server answers: a status, signed by `signer`, with these dates."""

    def __init__(self) -> None:
        self.subject: Any = None
        self.issuer = ROOT
        self.status = GOOD
        self.options: dict[str, Any] = {}
        self.tamper = False
        self.refusal: x509_ocsp.OCSPResponseStatus | None = None

    def __call__(self, request: x509_ocsp.OCSPRequest) -> bytes:
        if self.refusal is not None:
            refusal = x509_ocsp.OCSPResponseBuilder.build_unsuccessful(self.refusal)
            return refusal.public_bytes(serialization.Encoding.DER)
        der = make.ocsp_response(
            request, self.subject.cert, self.issuer, self.status, **self.options
        )
        return der[:-1] + bytes([der[-1] ^ 1]) if self.tamper else der


@pytest.fixture
def responder() -> Responder:
    return Responder()


@pytest.fixture
def server(responder: Responder) -> Iterator[OcspServer]:
    with OcspServer(responder) as running:
        yield running


@pytest.fixture
def signer(server: OcspServer, responder: Responder) -> pki.Issued:
    responder.subject = make.with_ocsp(ROOT, KEY, server.url())
    return responder.subject  # type: ignore[no-any-return]


def check(signer: pki.Issued, chosen: CertPolicy) -> certs.CertVerdict:
    roots = certs.RootStore((ROOT.cert,))
    return certs.check_signing_certificate(
        signer.pem, roots, certs.CrlSet(()), TrustedClock(), policy=chosen
    )


def refused(signer: pki.Issued, chosen: CertPolicy) -> CertificateRejected:
    with pytest.raises(CertificateRejected) as caught:
        check(signer, chosen)
    return caught.value


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_good_passes_and_status_says_so(
    server: OcspServer, signer: pki.Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    assert check(signer, policy()).root == ROOT.cert
    assert [(a.path, a.serial) for a in server.asked] == [("/ocsp", signer.cert.serial_number)]
    assert len(server.asked[0].nonce or b"") == 32  # a fresh nonce was sent
    assert server.asked[0].nonce_critical is False  # RFC 8954: a responder may not know it
    assert server.asked[0].content_type == "application/ocsp-request"  # RFC 6960 A.1
    line = f"online OCSP check: {server.url()}: serial {signer.cert.serial_number:x} good until"
    assert any(text.startswith(line) for text in said(caplog))
    assert certs.revocation_status().startswith(f"OCSP {server.url()}: serial")


def test_the_first_ocsp_responder_named_is_asked_and_never_the_ca_issuers_location(
    server: OcspServer, responder: Responder
) -> None:
    """The AIA may list where the issuer's certificate is (caIssuers) before its OCSP
    responders: only an OCSP entry is a responder, and the first one is asked."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{sock.getsockname()[1]}"
    entries = [
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{nobody}/root.crt"),
        (AuthorityInformationAccessOID.OCSP, server.url()),
        (AuthorityInformationAccessOID.OCSP, f"{nobody}/second"),
    ]
    responder.subject = make.with_ocsp(ROOT, KEY, None, access=entries)
    assert ocsp.responder_urls(responder.subject.cert) == [server.url(), f"{nobody}/second"]
    assert check(responder.subject, policy()).root == ROOT.cert
    assert [a.path for a in server.asked] == ["/ocsp"]


def test_revoked_is_revoked_certificate_L01_FR_25(
    server: OcspServer,
    signer: pki.Issued,
    responder: Responder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    responder.status = REVOKED
    error = refused(signer, policy())
    assert error.status == "RevokedCertificate"
    assert f"serial {signer.cert.serial_number:x} revoked at" in error.tech_info
    assert f"online OCSP check: {server.url()}: {error.tech_info}" in said(caplog)


def test_a_signed_revocation_counts_even_when_stale(
    server: OcspServer, signer: pki.Issued, responder: Responder
) -> None:
    """As a serial in an old CRL: a revocation is never taken back."""
    responder.status = REVOKED
    responder.options = {"this_update": pki.NOW - 3 * pki.DAY, "next_update": pki.NOW - pki.DAY}
    assert refused(signer, policy()).status == "RevokedCertificate"


def test_a_delegated_responder_the_root_issued_is_believed(
    server: OcspServer, signer: pki.Issued, responder: Responder
) -> None:
    """RFC 6960 §4.2.2.2: a responder certificate with id-kp-OCSPSigning, issued by the root."""
    delegate = make.ocsp_signer(ROOT, RESPONDER_KEY)
    responder.status = REVOKED
    responder.options = {"signer": delegate, "include_signer": True}
    assert refused(signer, policy()).status == "RevokedCertificate"


# Answers that cannot be relied on: revocation unknown, crl_policy decides (refuse by default).
UNUSABLE: dict[str, tuple[dict[str, Any], str]] = {
    "unknown": ({}, "OCSP unknown: responder does not know serial"),
    "wrong signer": (
        {"signer": IMPOSTOR},
        "signed by neither the root nor a responder certificate it issued",
    ),
    "tampered": ({}, "OCSP response signature does not verify"),
    "delegate without OCSPSigning": (
        {"signer": make.ocsp_signer(ROOT, RESPONDER_KEY, eku=False), "include_signer": True},
        "responder certificate lacks id-kp-OCSPSigning",
    ),
    "delegate of another root": (
        {"signer": make.ocsp_signer(IMPOSTOR, RESPONDER_KEY), "include_signer": True},
        "responder certificate not issued by the root",
    ),
    "stale": (
        {"this_update": pki.NOW - 3 * pki.DAY, "next_update": pki.NOW - pki.DAY},
        "answer is stale since",
    ),
    "replayed nonce": ({"nonce": b"\x01" * 32}, "nonce does not match ours"),
    "from the future": ({"this_update": pki.NOW + pki.DAY}, "thisUpdate missing or in the future"),
    "refused by the responder": ({}, "responder answered UNAUTHORIZED"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_an_unusable_answer_leaves_revocation_unknown(
    server: OcspServer,
    signer: pki.Issued,
    responder: Responder,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    options, reason = UNUSABLE[case]
    responder.options = dict(options)
    responder.status = UNKNOWN if case == "unknown" else GOOD
    responder.tamper = case == "tampered"
    if case == "refused by the responder":
        responder.refusal = x509_ocsp.OCSPResponseStatus.UNAUTHORIZED
    error = refused(signer, policy())
    assert error.status == "InvalidCertificate"
    assert error.tech_info.startswith("revocation unknown: OCSP ")
    assert "crl_policy = refuse" in error.tech_info
    assert reason in error.tech_info
    assert any(
        text.startswith(f"revocation cannot be checked (OCSP {server.url()}): ")
        for text in said(caplog)
    )
    asked = f"online OCSP check: {server.url()}: "
    answers = [r for r in caplog.records if r.getMessage().startswith(asked)]
    assert answers and all(r.levelno == logging.WARNING for r in answers)  # not "good"
    warn = check(signer, policy(crl_policy="warn"))  # fail open when configured so
    assert warn.root == ROOT.cert
    assert any(
        text.startswith(f"revocation cannot be checked (OCSP {server.url()}), accepted")
        for text in said(caplog)
    )


def test_an_answer_without_nonce_but_within_its_window_is_accepted(
    server: OcspServer, signer: pki.Issued, responder: Responder
) -> None:
    """Pre-signed answers (RFC 5019) carry no nonce: thisUpdate/nextUpdate bound them."""
    responder.options = {"nonce": None}
    assert check(signer, policy()).root == ROOT.cert


@pytest.mark.parametrize("nonce", [None, True], ids=["without nonce", "with our nonce"])
def test_an_old_answer_without_next_update_is_refused(
    server: OcspServer, signer: pki.Issued, responder: Responder, nonce: bool | None
) -> None:
    """Our nonce proves the answer is live, not that its status is recent."""
    responder.options = {
        "nonce": nonce,
        "next_update": None,
        "this_update": pki.NOW - datetime.timedelta(hours=2),
    }
    error = refused(signer, policy())
    assert "without nextUpdate is over an hour old" in error.tech_info


WIRE: dict[str, str] = {  # the refusal each wire gets (a regular expression)
    "redirect": "HTTP 302 redirect to",
    "redirect 300": "HTTP 300 redirect to",  # every 3xx is a redirect, not followed
    "redirect 399": "HTTP 399 redirect to",
    "status 400": "HTTP 400 from",  # the first code past them is an error, not a redirect
    "status 500": "HTTP 500 from",
    "status 299": "HTTP 299 from",  # nor is the last code before them
    # http.client skips only a 100 and takes any other 1xx as the final answer; a client that
    # skipped it too would find no answer after it.
    "status 103": r"HTTP 103 from|not fetched \(\w+\)",
    # Chunks, and a Content-Length 100 bytes short of them: http.client reads the chunks, and
    # a body that is not what was announced is refused (urllib3 may refuse both framings).
    "chunked and sized": r"is \d+ bytes, not the \d+ announced|not fetched \(\w+\)",
    # A whole answer, but 100 bytes fewer than announced: urllib3 1.26 (Debian 12) ends the
    # body as if it were complete and online.py counts; urllib3 2 raises on its own.
    "short": "OCSP failed: ",
    "endless": "larger than 1048576 bytes",
    "announced": "announced 2097152 bytes, larger than 1048576 bytes",
    "dribble": "no complete answer within 1 s",
    "hang": "no complete answer within 1 s",
}


@pytest.mark.parametrize("wire", sorted(WIRE))
def test_a_hostile_responder_is_cut_off(
    server: OcspServer, signer: pki.Issued, caplog: pytest.LogCaptureFixture, wire: str
) -> None:
    """Redirects are not followed, bodies are capped, the exchange is bounded in time."""
    server.wire = wire
    # Only the stalling wires need the exchange cut short; an answer that comes must not race it.
    error = refused(signer, policy(online_timeout=1.0 if wire in ("dribble", "hang") else 60.0))
    assert error.status == "InvalidCertificate" and "crl_policy = refuse" in error.tech_info
    assert f"online OCSP check: {server.url()}: " in " ".join(said(caplog))
    assert re.search(WIRE[wire], error.tech_info)
    if wire == "short":
        assert re.search(
            r"is \d+ bytes, not the \d+ announced|not fetched \(\w+\)", error.tech_info
        )
    if wire == "dribble":  # cut off at the timeout, not merely judged late once it is whole
        assert server.dribble_ended.wait(deadline(120))
        assert server.dribbled_whole is False
    assert [a.path for a in server.asked] == ["/ocsp"]  # the redirect's target never asked


def test_a_hostile_redirect_target_is_logged_cut_to_200_characters(
    server: OcspServer, signer: pki.Issued, caplog: pytest.LogCaptureFixture
) -> None:
    """The Location of a refused redirect is the server's text: it reaches the log at most
    200 characters long."""
    server.wire = "redirect"
    server.location = "http://example.invalid/" + "x" * 500
    refused(signer, policy())
    shown = [re.search(r"redirect to (\S*) from", line) for line in said(caplog)]
    cut = {found.group(1) for found in shown if found}  # the line and the warning after it
    assert cut == {server.location[:200]}


def test_an_answer_without_a_length_is_read_to_its_end(
    server: OcspServer, signer: pki.Issued
) -> None:
    """A responder may end its answer by closing the connection instead of announcing a
    length: the answer counts."""
    server.wire = "unsized"
    assert check(signer, policy()).root == ROOT.cert
    assert len(server.asked) == 1


@pytest.mark.parametrize("wire", ["ok", "unsized"])
def test_an_answer_of_exactly_max_bytes_is_taken_and_one_more_is_not(
    server: OcspServer, signer: pki.Issued, wire: str
) -> None:
    """`max_bytes` is the largest answer taken, whether announced (Content-Length) or counted
    as it arrives (no length)."""
    server.wire = wire
    request = (
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(signer.cert, ROOT.cert, hashes.SHA1())
        .add_extension(x509.OCSPNonce(b"n" * 32), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )

    def ask(max_bytes: int) -> bytes:
        guards = online.Guards(LOOPBACK, None, 60.0, max_bytes)
        return online.exchange(
            server.url(), guards, body=request, content_type="application/ocsp-request"
        )

    size = len(ask(1 << 20))
    assert len(ask(size)) == size
    with pytest.raises(online.OnlineFailed, match=f"larger than {size - 1} bytes"):
        ask(size - 1)


def test_an_unreachable_responder_follows_crl_policy(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/ocsp"
    signer = make.with_ocsp(ROOT, KEY, url)
    error = refused(signer, policy())
    assert error.status == "InvalidCertificate" and "cannot connect to" in error.tech_info
    assert any(t.startswith(f"online OCSP check: {url}: cannot connect") for t in said(caplog))
    caplog.set_level("INFO")
    assert check(signer, policy(crl_policy="ignore")).root == ROOT.cert
    assert any(text.startswith("revocation not checked (OCSP") for text in said(caplog))


def test_a_loopback_responder_is_refused_unless_allowed_hosts_names_it(
    server: OcspServer, signer: pki.Issued, caplog: pytest.LogCaptureFixture
) -> None:
    """The download guards apply (SSRF): nothing is sent to the refused address."""
    error = refused(signer, policy(online_hosts=()))
    assert "loopback, link-local and unspecified addresses are refused" in error.tech_info
    assert server.asked == []


def test_a_configured_responder_is_asked_instead_of_none(
    server: OcspServer, responder: Responder
) -> None:
    """`ocsp_responder`: for certificates that name none (or to go through a local proxy)."""
    responder.subject = make.with_ocsp(ROOT, KEY, None)
    responder.status = REVOKED
    check(responder.subject, policy())  # names no responder, none configured: not asked
    assert server.asked == []
    chosen = policy(ocsp_responder=server.url("/configured"))
    assert refused(responder.subject, chosen).status == "RevokedCertificate"
    assert [a.path for a in server.asked] == ["/configured"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_an_https_responder_is_verified_against_the_configured_ca(
    tmp_path: Path, responder: Responder, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    """TLS is verified (system store plus [firmware] ca_file), the host name checked; a
    responder addressed by IP address is matched against the certificate's IP entry (urllib3
    matches names itself: with OpenSSL's own check on, urllib3 1.26 would refuse it)."""
    context, ca_file = server_tls(tmp_path, host)
    with OcspServer(responder, tls=context) as server:
        url = server.url(host=host)
        responder.subject = make.with_ocsp(ROOT, KEY, url)
        trusting = policy(online_hosts=(host,), online_ca_file=ca_file)
        assert check(responder.subject, trusting).root == ROOT.cert
        error = refused(responder.subject, policy(online_hosts=(host,)))
    assert error.status == "InvalidCertificate" and "OCSP failed" in error.tech_info
    assert any(t.startswith(f"online OCSP check: {url}: not fetched") for t in said(caplog))
    assert len(server.asked) == 1  # the untrusted server was never asked


def test_the_configuration_reaches_the_policy(tmp_path: Path) -> None:
    """online_ocsp, ocsp_responder and the download guards (allowed_hosts, ca_file)."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("")
    raw: dict[str, Any] = {
        "csms": {"url": "ws://csms.invalid/", "charge_point_id": "CP", "security_profile": 0},
        "identity": {"vendor": "V", "model": "M"},
        "firmware": {
            "online_ocsp": True,
            "ocsp_responder": "http://ocsp.example.com/",
            "allowed_hosts": ["ocsp.example.com"],
            "ca_file": str(ca_file),
        },
    }
    chosen = certs.policy_from_config(config.parse(raw, tmp_path / "agent.toml").firmware)
    assert chosen.online_ocsp and chosen.ocsp_responder == "http://ocsp.example.com/"
    assert chosen.online_hosts == ("ocsp.example.com",) and chosen.online_ca_file == ca_file
    for bad in ("ftp://ocsp.example.com/", "http://", "ocsp.example.com", 7):
        raw["firmware"]["ocsp_responder"] = bad
        with pytest.raises(config.ConfigError) as caught:
            config.parse(raw, tmp_path / "agent.toml")
        assert "[firmware] ocsp_responder: expected an http:// or https:// URL" in str(
            caught.value
        ) or "[firmware] ocsp_responder: expected a non-empty string" in str(caught.value)


def test_without_online_ocsp_nothing_is_asked(server: OcspServer, signer: pki.Issued) -> None:
    check(signer, CertPolicy(online_hosts=LOOPBACK))
    assert server.asked == []


def test_the_daemon_asks_before_answering(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware, responder: Responder
) -> None:
    """End to end: online_ocsp reaches the daemon; the responder's `revoked` answers
    RevokedCertificate and sends InvalidFirmwareSigningCertificate (L01.FR.25, L01.FR.02)."""
    with OcspServer(responder) as server:
        responder.issuer = rig.root
        responder.subject = make.with_ocsp(rig.root, rig.signer.key, server.url())
        responder.status = REVOKED
        agent = charger.start(firmware={"online_ocsp": True, "online_timeout": 60})
        answer = charger.update(firmware, 8, certificate=responder.subject.pem)
        assert answer == "RevokedCertificate"
        event = charger.wait_event("InvalidFirmwareSigningCertificate")
        assert "revoked" in event["tech_info"] and "(OCSP)" in event["tech_info"]
        agent.wait_log(f"online OCSP check: {server.url()}: signing certificate serial")
    assert len(server.asked) == 1
