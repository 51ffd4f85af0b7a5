"""A02 in direct 2.0.1: `SecurityCtrlr.OrganizationName` is the agent's variable, the O= of
the charging station certificate's CSR (1.6's CpoName, the same saved value).

The agent as a process against the `ocpp` library's 2.0.1 CSMS, which checks every frame
against the official schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.demo.rig import AgentProcess
from agent.security.cpcert import ChargePointCertificate
from tests.integration.test_security_profiles import CP
from tests.v201.test_certificates_direct import CertCsms, serve, start

ORGANIZATION = "Example Charging Operator"


def organization(value: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "component": {"name": "SecurityCtrlr"},
        "variable": {"name": "OrganizationName"},
    }
    return data if value is None else {**data, "attribute_value": value}


def test_A02_organization_name_set_over_ocpp_is_the_csrs_organization(
    tmp_path: Path, servers: list[CertCsms], agents: list[AgentProcess]
) -> None:
    """Without an organization name the trigger is Rejected (A02 prerequisite); GetVariables
    reads it empty. SetVariables of one longer than 64 characters (X.520) → Rejected
    InvalidValue; of a good one → Accepted, ReconfigurationOfSecurityParameters, read back,
    saved as 1.6's CpoName is. Then TriggerMessage SignChargingStationCertificate → Accepted
    and the CSR in SignCertificate has O = that name (A02.FR.13)."""
    csms = serve(servers)
    start(tmp_path, agents, {"url": csms.url, "charge_point_id": CP})
    csms.wait_message("BootNotification")

    trigger = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert trigger.status == "Rejected"
    read = csms.send("GetVariables", get_variable_data=[organization()]).get_variable_result
    assert [(r["attribute_status"], r["attribute_value"]) for r in read] == [("Accepted", "")]

    long = csms.send("SetVariables", set_variable_data=[organization("x" * 65)])
    result = long.set_variable_result[0]
    assert result["attribute_status"] == "Rejected"
    assert result["attribute_status_info"]["reason_code"] == "InvalidValue"

    done = csms.send("SetVariables", set_variable_data=[organization(ORGANIZATION)])
    assert done.set_variable_result[0]["attribute_status"] == "Accepted"
    csms.wait_for(
        lambda: csms.events("ReconfigurationOfSecurityParameters"), what="the change reported"
    )
    read = csms.send("GetVariables", get_variable_data=[organization()]).get_variable_result
    assert read[0]["attribute_value"] == ORGANIZATION
    saved = ChargePointCertificate(tmp_path / "state" / "certs" / "charge-point", CP)
    saved.load()
    assert saved.cpo_name == ORGANIZATION

    trigger = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert trigger.status == "Accepted"
    request = csms.wait_message("SignCertificate")[-1].payload
    csr = x509.load_pem_x509_csr(request["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORGANIZATION
