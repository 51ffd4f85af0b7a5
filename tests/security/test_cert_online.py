"""`[firmware] online_crl`: the CRL named in the signing certificate, fetched before answering.

WP3 Table 13 recommends online revocation for the firmware signing certificate (L01.FR.25).
With online_crl on, a certificate with an http(s) CRL distribution point has that CRL fetched
(from a real HTTP server here, with injected faults) through the download guards
(agent.firmware.online) and judged as a CRL from crl_dir would be:
it counts when the root signed it; a listed serial is RevokedCertificate; a fetch that fails,
stalls, is too large or is not the root's is a missing CRL for crl_policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from agent.demo import pki
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.firmware import certs, online
from agent.firmware.certpolicy import CertPolicy
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected
from tests.e2e import conftest as e2e
from tests.security import certfactory as make

rig, charger, firmware, fileserver = e2e.rig, e2e.charger, e2e.firmware, e2e.fileserver

ROOT = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 0), ca=True)
KEY = pki.rsa_key(2048, 1)
LOOPBACK = ("127.0.0.1",)  # the test servers' address, refused unless allowed_hosts names it
# The configuration's longest exchange: a CRL that must arrive may take its time on a loaded
# machine; only the stalled server's test cuts an exchange short.
ONLINE = CertPolicy(online_crl=True, online_hosts=LOOPBACK, online_timeout=60.0)


def with_crl_point(url: str, issuer: pki.Issued = ROOT, *more: str) -> pki.Issued:
    points = [
        x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(each)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        for each in (url, *more)
    ]
    cert = (
        make.builder("Firmware Signing Online", KEY, issuer)
        .add_extension(x509.CRLDistributionPoints(points), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return pki.Issued(cert, KEY)


@pytest.fixture
def crl_server() -> Iterator[FirmwareHttpServer]:
    with FirmwareHttpServer() as server:
        yield server


def check(signer: pki.Issued, policy: CertPolicy = ONLINE) -> certs.CertVerdict:
    roots = certs.RootStore((ROOT.cert,))
    return certs.check_signing_certificate(
        signer.pem, roots, certs.CrlSet(()), TrustedClock(), policy=policy
    )


def refused(signer: pki.Issued, policy: CertPolicy = ONLINE) -> CertificateRejected:
    with pytest.raises(CertificateRejected) as caught:
        check(signer, policy)
    return caught.value


def test_a_serial_in_the_fetched_crl_is_revoked(crl_server: FirmwareHttpServer) -> None:
    signer = with_crl_point(crl_server.url("/root.crl"))
    crl_server.put("/root.crl", make.crl(ROOT, (signer.cert.serial_number,)))
    assert refused(signer).status == "RevokedCertificate"
    assert [r.path for r in crl_server.requests] == ["/root.crl"]


def test_a_current_fetched_crl_without_the_serial_passes(crl_server: FirmwareHttpServer) -> None:
    signer = with_crl_point(crl_server.url("/root.crl"))
    crl_server.put("/root.crl", make.crl(ROOT, (7,)))
    check(signer)
    assert "current until" in certs.revocation_status()


def test_two_crl_points_are_asked_at_most(
    crl_server: FirmwareHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each point may take the whole timeout, so two are asked at most: the second when the
    first fails, never a third; the log names the two asked."""
    one, two, three = (crl_server.url(f"/{n}.crl") for n in ("one", "two", "three"))
    signer = with_crl_point(one, ROOT, two, three)
    crl_server.put("/two.crl", make.crl(ROOT, (signer.cert.serial_number,)))
    assert refused(signer).status == "RevokedCertificate"
    assert [r.path for r in crl_server.requests] == ["/one.crl", "/two.crl"]
    crl_server.requests.clear()
    signer = with_crl_point(one, ROOT, three, two)  # the one that answers comes third
    caplog.clear()
    assert refused(signer).status == "InvalidCertificate"  # no CRL: crl_policy = refuse
    asked = [
        r.getMessage() for r in caplog.records if "revocation cannot be checked" in r.getMessage()
    ]
    assert len(asked) == 1 and f"CRL {one}, CRL {three})" in asked[0], asked
    assert [r.path for r in crl_server.requests] == ["/one.crl", "/three.crl"]


def test_of_a_pem_answer_with_several_crls_the_first_is_read(
    crl_server: FirmwareHttpServer,
) -> None:
    """A CRL point answers one CRL; PEM text around it is allowed, and of several blocks the
    first is the one read, whatever follows it."""
    signer = with_crl_point(crl_server.url("/root.crl"))

    def pem(der: bytes) -> bytes:
        crl = x509.load_der_x509_crl(der)
        return crl.public_bytes(serialization.Encoding.PEM)

    revoking = pem(make.crl(ROOT, (signer.cert.serial_number,)))
    clean = pem(make.crl(ROOT, (7,)))
    crl_server.put("/root.crl", b"the root's CRL:\n" + revoking + clean)
    assert refused(signer).status == "RevokedCertificate"
    crl_server.put("/root.crl", clean + revoking)
    check(signer)


def test_only_http_crl_points_are_asked(crl_server: FirmwareHttpServer) -> None:
    """ldap: and file: points are not ours to follow (and would count against the two asked):
    of [ldap, file, http] only the http one is asked; a certificate naming no point at all has
    nothing to fetch and is judged without (here: no crl_dir, so accepted), not an error."""
    http = crl_server.url("/root.crl")
    signer = with_crl_point("ldap://ldap.example/cn=root", ROOT, "file:///etc/root.crl", http)
    crl_server.put("/root.crl", make.crl(ROOT, (signer.cert.serial_number,)))
    assert refused(signer).status == "RevokedCertificate"
    assert [r.path for r in crl_server.requests] == ["/root.crl"]
    plain = pki.Issued(
        make.builder("Firmware Signing Online", KEY, ROOT).sign(ROOT.key, hashes.SHA256()), KEY
    )
    assert check(plain).root == ROOT.cert


def test_without_online_crl_nothing_is_fetched(crl_server: FirmwareHttpServer) -> None:
    signer = with_crl_point(crl_server.url("/root.crl"))
    crl_server.put("/root.crl", make.crl(ROOT, (signer.cert.serial_number,)))
    check(signer, CertPolicy())
    assert crl_server.requests == []


def test_a_crl_point_on_loopback_is_refused_unless_allowed_hosts_names_it(
    crl_server: FirmwareHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The download guards apply (SSRF): a CRL point on a loopback address, not named in
    allowed_hosts, is never contacted; the CRL is missing, for crl_policy."""
    signer = with_crl_point(crl_server.url("/root.crl"))
    crl_server.put("/root.crl", make.crl(ROOT, (signer.cert.serial_number,)))
    error = refused(signer, CertPolicy(online_crl=True))
    assert error.status == "InvalidCertificate" and "no CRL from" in error.tech_info
    assert crl_server.requests == []
    assert "loopback, link-local and unspecified addresses are refused" in caplog.text


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("missing", "HTTP 404"),
        ("stale", "is stale since"),
        ("forged", "no CRL from"),
        ("too large", "larger than"),
        ("stalled", "no complete answer within"),
        ("garbage", "CRL from"),
        ("version", "not a valid CRL version"),
    ],
)
def test_a_crl_that_cannot_be_used_is_a_missing_one(
    crl_server: FirmwareHttpServer, caplog: pytest.LogCaptureFixture, fault: str, reason: str
) -> None:
    signer = with_crl_point(crl_server.url("/root.crl"))
    impostor = pki.issue("Manufacturer Root RSA", pki.rsa_key(2048, 3), ca=True)
    bodies: dict[str, Any] = {
        "stale": make.crl(ROOT, (), next_update=pki.NOW - 3 * pki.DAY),
        "forged": make.crl(impostor, ()),
        "too large": b"\x30" * (online.MAX_BYTES + 1),
        "stalled": make.crl(ROOT, ()),
        "garbage": b"not a CRL",
        "version": make.crl_of_version(make.crl(ROOT, (signer.cert.serial_number,)), 5),
    }
    if fault in bodies:
        crl_server.put("/root.crl", bodies[fault])
    chosen = ONLINE
    if fault == "stalled":
        crl_server.faults.stall_before_headers = True
        chosen = dataclasses.replace(ONLINE, online_timeout=2.0)
    error = refused(signer, chosen)
    assert error.status == "InvalidCertificate" and "crl_policy = refuse" in error.tech_info
    said = " ".join(r.getMessage() for r in caplog.records)
    assert reason in error.tech_info or reason in said
    warn = CertPolicy(online_crl=True, crl_policy="warn", online_hosts=LOOPBACK)
    assert check(signer, warn).root == ROOT.cert


def test_the_daemon_fetches_before_answering(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware, crl_server: FirmwareHttpServer
) -> None:
    """End to end: online_crl reaches the daemon; the fetched CRL revokes the signer."""
    signer = with_crl_point(crl_server.url("/root.crl"), rig.root)
    crl_server.put("/root.crl", make.crl(rig.root, (signer.cert.serial_number,)))
    charger.start(firmware={"online_crl": True, "online_timeout": 60})  # never the bound
    assert charger.update(firmware, 8, certificate=signer.pem) == "RevokedCertificate"
    assert "revoked" in charger.wait_event("InvalidFirmwareSigningCertificate")["tech_info"]
    assert [r.path for r in crl_server.requests] == ["/root.crl"]
