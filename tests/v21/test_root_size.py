"""M05 by version: the longest root InstallCertificate may carry is the version's schema's
(`certificate` maxLength 5500 in 2.0.1, 10000 in 2.1), not one store-wide constant.

The agent as a process in direct mode against the `ocpp` library's CSMS of each version (which
checks the frames it sends and receives against that version's schemas; `raw` sends past
them, as a CSMS that ignores the bound would).
"""

from __future__ import annotations

from pathlib import Path

from agent.demo import pki
from agent.demo.rig import AgentProcess
from tests.integration.test_security_profiles import CP
from tests.v201.test_certificates_direct import CSMS_ROOT, CertCsms, hash_of, listed, serve, start


def long_root(names: int, n: int) -> pki.Issued:
    """A CA padded by subjectAltNames: about 70 PEM characters per name."""
    sans = [f"csms-{i:03d}.charging-operator.example-backend.invalid" for i in range(names)]
    return pki.issue(f"CPO Root {n} with many names", pki.rsa_key(2048, n), ca=True, sans=sans)


def install(csms: CertCsms, pem: str) -> tuple[str, str | None]:
    """(status, reasonCode) past the CSMS library's own schema check."""
    answer = csms.raw("InstallCertificate", {"certificateType": CSMS_ROOT, "certificate": pem})
    assert answer[0] == 3, answer
    return answer[2]["status"], (answer[2].get("statusInfo") or {}).get("reasonCode")


def test_M05_a_21_root_may_be_longer_than_5500_characters(
    tmp_path: Path, servers: list[CertCsms], agents: list[AgentProcess]
) -> None:
    """2.1: a CSMS root of 6000-10000 characters → Accepted (M05, the 2.1 schema's maxLength
    10000) and listed by M03; one of more than 10000 → Rejected `TooLargeElement`
    (M05.FR.06)."""
    wide, too_wide = long_root(80, 321), long_root(150, 322)
    assert 6000 < len(wide.pem) <= 10000 < len(too_wide.pem)
    csms = serve(servers, "2.1")
    start(tmp_path, agents, {"url": csms.url, "charge_point_id": CP, "ocpp_version": "2.1"})
    csms.wait_message("BootNotification")

    answer = csms.send("InstallCertificate", certificate_type=CSMS_ROOT, certificate=wide.pem)
    assert answer.status == "Accepted"
    assert listed(csms, CSMS_ROOT) == [(CSMS_ROOT, hash_of(wide))]
    assert install(csms, too_wide.pem) == ("Rejected", "TooLargeElement")


def test_M05_a_201_root_stays_within_5500_characters(
    tmp_path: Path, servers: list[CertCsms], agents: list[AgentProcess]
) -> None:
    """2.0.1: the same 6000-character root is Rejected `TooLargeElement` (its schema's
    maxLength 5500; M05.FR.06), and nothing is listed."""
    wide = long_root(80, 321)
    csms = serve(servers)
    start(tmp_path, agents, {"url": csms.url, "charge_point_id": CP})
    csms.wait_message("BootNotification")

    assert install(csms, wide.pem) == ("Rejected", "TooLargeElement")
    assert listed(csms, CSMS_ROOT) == []
