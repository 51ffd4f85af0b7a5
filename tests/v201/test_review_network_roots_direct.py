"""Direct 2.0.1: a network profile's TLS connection trusts the CSMS roots the CSMS installed
(review finding 1), with the real agent process against the `ocpp` library's CSMS over real TLS.
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
    get,
    network_profile,
    pki,
    raw,
    reset,
    set_,
    set_network_profile,
    start_agent,
    start_csms,
)

__all__ = ["pki"]  # the fixture shared with the password tests


def test_A05_B10_M05_a_network_profile_uses_the_installed_csms_root(
    tmp_path: Path, run_agent: Any, servers: list[Csms2x], pki: Pki
) -> None:
    """Profile 1 without [csms] ca_file: M05 InstallCertificate(CSMSRootCertificate) gives
    the root (A05.FR.03), B09 a wss:// profile 2 in slot 1, B10 priority "1,0" and Reset:
    the agent connects to the CSMS whose server certificate that root signed, over TLS.
    (It loaded cafile None before: every attempt failed, then the fallback.)"""
    passwords = Passwords(KEY)
    old = start_csms(servers, "2.0.1", auth=passwords)
    new = start_csms(servers, "2.0.1", auth=passwords, ssl_context=pki.server_context(pki.server))
    agent = start_agent(tmp_path, run_agent, old.url, "2.0.1")
    old.wait_message("BootNotification")

    install = {"certificateType": "CSMSRootCertificate", "certificate": pki.ca.pem}
    assert raw(old, "InstallCertificate", install)[2] == {"status": "Accepted"}
    assert set_network_profile(old, 1, network_profile(new.url, 2)) == {"status": "Accepted"}
    assert set_(old, PRIORITY, "1,0")["attributeStatus"] == "Accepted"
    assert reset(old) == {"status": "Accepted"}

    boot = new.wait_message("BootNotification", timeout=60)[0]
    assert boot.payload["reason"] == "RemoteReset"
    assert new.url.startswith("wss://")
    [profile] = get(new, PROFILE)
    assert profile["attributeValue"] == "2"
    assert "back to profile 1" not in agent.log
