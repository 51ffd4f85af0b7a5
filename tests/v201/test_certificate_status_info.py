"""Direct 2.0.1: a refused certificate answer says why in `statusInfo`, a standard reasonCode
and fixed words (never the log's reason, which may name configuration or local files).

The agent as a process against the `ocpp` library's 2.0.1 CSMS, which checks every answer
against the official schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.demo import pki as fwpki
from agent.demo.rig import AgentProcess
from tests.integration.test_security_profiles import CP
from tests.v201.test_certificates_direct import (
    CSMS_ROOT,
    MANUFACTURER,
    CertCsms,
    hash_of,
    serve,
    start,
)


def info(answer: Any) -> tuple[str, str]:
    """(reasonCode, additionalInfo) of an answer, which must be short and name no path."""
    status_info = answer.status_info
    assert status_info is not None, answer
    text = status_info["additional_info"]
    assert 0 < len(text) <= 120 and "/" not in text and "[" not in text, text
    return status_info["reason_code"], text


def test_M05_M04_A02_refusals_carry_a_reason_code_and_public_words(
    tmp_path: Path, servers: list[CertCsms], agents: list[AgentProcess]
) -> None:
    """M05: a leaf as CSMSRootCertificate → Rejected `InvalidCertificate` (M05.FR.06); a
    ManufacturerRootCertificate (the integrator's by default) → Rejected `NotEnabled`, and
    without the `[firmware]` setting's name; a V2G root in direct mode → `UnsupportedRequest`.
    M04: deleting the configured manufacturer root → Failed `NotEnabled`. A02: the trigger
    without an organization name → Rejected `MissingDevModelInfo`; a CertificateSigned with no
    request waiting → Rejected `InvalidMessageSeq`. An accepted answer has no statusInfo."""
    csms = serve(servers)
    rig_root = start(tmp_path, agents, {"url": csms.url, "charge_point_id": CP}).root
    csms.wait_message("BootNotification")
    leaf = fwpki.issue("a leaf", fwpki.rsa_key(2048, 301), rig_root)
    vendor = fwpki.issue("CSMS's own CA", fwpki.rsa_key(2048, 302), ca=True)

    answer = csms.send("InstallCertificate", certificate_type=CSMS_ROOT, certificate=leaf.pem)
    assert answer.status == "Rejected"
    assert info(answer) == ("InvalidCertificate", "not a CA that may sign certificates")
    answer = csms.send("InstallCertificate", certificate_type=MANUFACTURER, certificate=vendor.pem)
    assert answer.status == "Rejected"
    assert info(answer)[0] == "NotEnabled"
    answer = csms.send(
        "InstallCertificate", certificate_type="V2GRootCertificate", certificate=vendor.pem
    )
    assert answer.status == "Rejected" and info(answer)[0] == "UnsupportedRequest"
    answer = csms.send("DeleteCertificate", certificate_hash_data=hash_of(rig_root))
    assert answer.status == "Failed" and info(answer)[0] == "NotEnabled"

    answer = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert answer.status == "Rejected"
    assert info(answer) == ("MissingDevModelInfo", "SecurityCtrlr.OrganizationName is not set")
    answer = csms.send("CertificateSigned", certificate_chain=leaf.pem)
    assert answer.status == "Rejected"
    assert info(answer) == ("InvalidMessageSeq", "no certificate was requested")

    answer = csms.send("InstallCertificate", certificate_type=CSMS_ROOT, certificate=vendor.pem)
    assert answer.status == "Accepted" and answer.status_info is None
