"""Direct 2.x mode: a new security profile through a network profile (B09, B10, A05).

SetNetworkProfile, NetworkConfigurationPriority and Reset move the agent from profile 1 to a
profile 2 CSMS over real TLS with generated certificates; one that cannot connect falls back.
The real agent against the `ocpp` library's 2.0.1 CSMS, which checks HTTP Basic auth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.demo.csms import Csms2x
from tests.integration.test_security_profiles import Pki
from tests.v201.test_security_profile_direct import (
    KEY,
    PRIORITY,
    PROFILE,
    Passwords,
    closed_port,
    events,
    get,
    network_profile,
    pki,
    reset,
    set_,
    set_network_profile,
    start_agent,
    start_csms,
)

__all__ = ["pki"]  # the fixture shared with the password tests


def test_A05_B10_profile_1_to_2_through_a_network_profile_and_reset(
    tmp_path: Path, run_agent: Any, servers: list[Csms2x], pki: Pki
) -> None:
    """B09: SetNetworkProfile stores a wss:// profile 2 in slot 1; B10/A05: with
    NetworkConfigurationPriority "1,0" a Reset is Accepted and the agent connects to that CSMS
    over TLS (the generated CA, the hostname checked) with Basic auth, registers there first
    (BootNotification RemoteReset) and reports the change; SecurityProfile reads 2, and a
    restart keeps it. Without a change to apply, Reset is Rejected."""
    passwords = Passwords(KEY)
    old = start_csms(servers, "2.0.1", auth=passwords)
    new = start_csms(servers, "2.0.1", auth=passwords, ssl_context=pki.server_context(pki.server))
    agent = start_agent(tmp_path, run_agent, old.url, "2.0.1", ca_file=str(pki.dir / "ca.pem"))
    old.wait_message("BootNotification")

    assert reset(old)["status"] == "Rejected"  # nothing to apply: the charger is not reset
    assert set_network_profile(old, 1, network_profile(new.url, 2)) == {"status": "Accepted"}
    assert set_(old, PRIORITY, "1,0")["attributeStatus"] == "Accepted"
    assert [(r["attributeStatus"], r.get("attributeValue")) for r in get(old, PRIORITY)] == [
        ("Accepted", "1,0")
    ]
    assert reset(old) == {"status": "Accepted"}

    boot = new.wait_message("BootNotification", timeout=30)[0]
    assert boot.payload["reason"] == "RemoteReset"
    assert new.url.startswith("wss://") and passwords.seen[-1] == KEY
    [profile] = get(new, PROFILE)
    assert (profile["attributeStatus"], profile["attributeValue"]) == ("Accepted", "2")
    event = new.wait_for(lambda: events(new))[0]
    assert event["type"] == "ReconfigurationOfSecurityParameters"
    assert event["tech_info"] == "network profile 1: SecurityProfile 1 -> 2"

    agent.stop()
    boots = len(new.messages("BootNotification"))
    agent = run_agent(agent.config)
    new.wait_message("BootNotification", count=boots + 1, timeout=30)
    assert "cannot connect" not in agent.log


def test_A05_an_unreachable_new_profile_falls_back_and_says_so(
    tmp_path: Path, run_agent: Any, servers: list[Csms2x], pki: Pki
) -> None:
    """A05 (1.6's A05.FR.08 fallback, B10): the first profile of the priority cannot connect
    (nothing listens there): after 3 attempts the agent is back on the previous CSMS and
    profile, registers there again and sends ReconfigurationOfSecurityParameters saying so."""
    passwords = Passwords(KEY)
    csms = start_csms(servers, "2.0.1", auth=passwords)
    agent = start_agent(tmp_path, run_agent, csms.url, "2.0.1", ca_file=str(pki.dir / "ca.pem"))
    csms.wait_message("BootNotification")
    nowhere = f"wss://localhost:{closed_port()}/ocpp"
    assert set_network_profile(csms, 2, network_profile(nowhere, 2))["status"] == "Accepted"
    assert set_(csms, PRIORITY, "2")["attributeStatus"] == "Accepted"
    assert reset(csms) == {"status": "Accepted"}

    boots = csms.wait_message("BootNotification", count=2, timeout=60)
    assert boots[1].payload["reason"] == "RemoteReset"
    fell_back = csms.wait_for(
        lambda: [e for e in events(csms) if "back to profile 1" in e.get("tech_info", "")]
    )[0]
    assert fell_back["type"] == "ReconfigurationOfSecurityParameters"
    assert fell_back["tech_info"] == "SecurityProfile 2: no connection; back to profile 1"
    assert agent.log.count(f"cannot connect to {nowhere}") == 3
    [profile] = get(csms, PROFILE)
    assert profile["attributeValue"] == "1"
