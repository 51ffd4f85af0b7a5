"""A02 in sidecar 2.0.1: `SecurityCtrlr.OrganizationName` is the agent's (the O= of the
charging station certificate it requests), never the stack's, alone or beside the stack's
variables in one GetVariables.

The agent as a process, the `ocpp` library's 2.0.1 stack behind it and 2.0.1 CSMS in front.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.security.cpcert import ChargePointCertificate
from tests.sidecar2x.conftest import Sidecar2x
from tests.sidecar2x.test_certificates2x import ready, triggered_sign_request

ORGANIZATION = "Example Charging Operator"
NAME = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"}}


def test_A02_organization_name_set_through_the_agent_is_the_csrs_organization(
    sidecar201: Sidecar2x,
) -> None:
    """SetVariables OrganizationName → Accepted by the agent (the stack never sees it), saved
    as 1.6's CpoName; a GetVariables of it and a stack variable → one answer, the name from
    the agent; TriggerMessage SignChargingStationCertificate → the CSR's O = the name
    (A02.FR.13)."""
    csms, stack = ready(sidecar201)
    trigger = csms.send("TriggerMessage", requested_message="SignChargingStationCertificate")
    assert trigger.status == "Rejected"  # no organization name yet

    done = csms.send("SetVariables", set_variable_data=[{**NAME, "attribute_value": ORGANIZATION}])
    assert done.set_variable_result[0]["attribute_status"] == "Accepted"
    saved = ChargePointCertificate(sidecar201.rig.state / "certs" / "charge-point", "SN-1")
    saved.load()
    assert saved.cpo_name == ORGANIZATION

    other = {"component": {"name": "ClockCtrlr"}, "variable": {"name": "TimeSource"}}
    read = csms.send("GetVariables", get_variable_data=[NAME, other]).get_variable_result
    assert [r["attribute_value"] for r in read] == [ORGANIZATION, "stack's"]

    request = triggered_sign_request(sidecar201, csms)
    csr = x509.load_pem_x509_csr(request["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORGANIZATION
    assert "SetVariables" not in stack.handled
    assert not any('OrganizationName", "attributeValue' in t for t in stack.texts("in"))
