"""Sidecar mode owns the connection it holds: the AuthorizationKey and SecurityProfile keys
(white paper A01, A05), and the agent's keys in the stack's GetConfiguration answer. A real
stack (the `ocpp` library's 1.6 ChargePoint) behind the agent, a real CSMS in front."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, ChargerRig
from agent.security.certstore import hash_data
from tests.integration.test_security_profiles import Pki
from tests.sidecar.conftest import Sidecar, Stack, free_port, make_csms, stop_csms

KEY1_HEX = "00112233445566778899AABBCCDDEEFF"  # 16 bytes
KEY2_HEX = "F0E1D2C3B4A5968778695A4B3C2D1E0F00FFEE11"  # 20 bytes, several not printable
KEY1, KEY2 = bytes.fromhex(KEY1_HEX), bytes.fromhex(KEY2_HEX)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def servers() -> Iterator[list[TestCsms]]:
    made: list[TestCsms] = []
    yield made
    for server in made:
        stop_csms(server)


def secrets_in(text: str, cp: str, *keys: bytes) -> list[str]:
    """Every form a key could leak in: hex either case, raw, the Basic header's base64."""
    found = []
    for key in keys:
        forms = [key.hex(), key.hex().upper(), base64.b64encode(f"{cp}:".encode() + key).decode()]
        forms += [key.decode("latin-1")]
        found += [form for form in forms if form in text]
    return found


def stack_saw(stack: Stack, action: str) -> bool:
    return any(f'"{action}"' in text for text in stack.texts("in"))


def reconnected(stack: Stack) -> None:
    """The agent dropped the stack with its CSMS link (A01 step 3): it comes back."""
    from tests.e2e.conftest import wait_until

    wait_until(lambda: not stack.connected, 30, "the stack's link to drop")
    stack.connect()


def security_events(csms: TestCsms) -> list[dict[str, Any]]:
    return [m.payload for m in csms.messages("SecurityEventNotification")]


@pytest.mark.both_peers
def test_authorization_key_set_over_ocpp_is_used_at_once_and_after_a_restart_never_logged(
    tmp_path: Path,
    peer: str,
    servers: list[TestCsms],
    agents: list[AgentProcess],
    stacks: list[Stack],
) -> None:
    """A01: ChangeConfiguration(AuthorizationKey) is the agent's: Accepted, saved, the link
    dropped and made again with the new password (the hex-decoded bytes, TC_085_CS); a key
    that is not 16-20 bytes of hex is Rejected (A00.FR.205); ReconfigurationOfSecurityParameters
    is sent (A01.FR.11); no key appears in any log line (A01.FR.12); the stack never sees it."""
    accepted = {KEY1}
    seen: list[bytes | None] = []
    csms = make_csms(peer, auth=lambda cp, pw: bool(seen.append(pw)) or pw in accepted)
    servers.append(csms)
    rig = ChargerRig(tmp_path, csms.url)
    cp = rig.charge_point_id
    sidecar = Sidecar(rig, csms, agents, stacks)
    agent = sidecar.start(csms={"security_profile": 1, "authorization_key": KEY1_HEX})
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"

    for bad in ("ZZ" * 16, "00" * 15, "00" * 21, "0" * 33, "", KEY2_HEX + " "):
        reply = csms.call(cp, call.ChangeConfiguration(key="AuthorizationKey", value=bad))
        assert reply.status == "Rejected", bad
    assert csms.connected(cp) and seen[-1] == KEY1  # nothing changed, no reconnect

    connections = csms.connections
    accepted.add(KEY2)
    reply = csms.call(cp, call.ChangeConfiguration(key="authorizationkey", value=KEY2_HEX))
    assert reply.status == "Accepted"
    accepted.discard(KEY1)  # A01.FR.03: the CSMS no longer takes the old one
    csms.wait_for(lambda: csms.connections > connections and csms.connected(cp), 30, "reconnect")
    assert seen[-1] == KEY2
    reconnected(stack)
    assert stack.boot().status == "Accepted"
    event = csms.wait_for(
        lambda: [e for e in security_events(csms) if e["type"].startswith("Reconfiguration")]
    )[0]
    assert event["tech_info"] == "AuthorizationKey changed"

    key_file = rig.state / "authorization_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert bytes.fromhex(key_file.read_text()) == KEY2
    assert KEY2_HEX.lower() not in (rig.state / "connection.json").read_text().lower()

    agent.stop()
    connections = csms.connections
    agent = sidecar.restart()
    csms.wait_for(lambda: csms.connections > connections and csms.connected(cp), 30, "restart")
    assert seen[-1] == KEY2  # the saved key, not agent.toml's
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"

    assert all(s.texts("in") and not stack_saw(s, "ChangeConfiguration") for s in stacks)
    log = "\n".join(a.log for a in agents)
    assert "AuthorizationKey" in log  # the change is in the log ...
    assert secrets_in(log, cp, KEY1, KEY2) == []  # ... the keys never are


@pytest.mark.both_peers
def test_get_configuration_merges_the_agents_keys_into_the_stacks_answer(
    sidecar: Sidecar, csms: TestCsms
) -> None:
    """GetConfiguration goes to the stack; the agent's keys (SecurityProfile, the write-only
    AuthorizationKey without a value, WP §7.2) replace whatever the stack says about them; a
    request naming only the agent's keys never reaches the stack; ChangeConfiguration of the
    stack's keys goes to the stack, of a read-only agent key is Rejected by the agent."""
    cp = sidecar.rig.charge_point_id
    sidecar.start()
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"

    reply = csms.call(cp, call.GetConfiguration())
    keys = {kv["key"]: kv for kv in reply.configuration_key}
    assert keys["HeartbeatInterval"]["value"] == "300"  # the stack's
    assert keys["SecurityProfile"] == {"key": "SecurityProfile", "readonly": False, "value": "0"}
    assert keys["AuthorizationKey"] == {"key": "AuthorizationKey", "readonly": False}
    assert keys["CertificateStoreMaxLength"]["readonly"] is True
    assert keys["AdditionalRootCertificateCheck"]["value"] == "false"
    assert len(reply.configuration_key) == len(keys)  # each key once
    assert all("stack-leaks-this" not in f.text for f in csms.frames)
    assert stack.remote[-1] == ("get_configuration", {"key": None})

    asked = len(stack.remote)
    reply = csms.call(cp, call.GetConfiguration(key=["securityprofile", "AuthorizationKey"]))
    assert [kv["key"] for kv in reply.configuration_key] == ["SecurityProfile", "AuthorizationKey"]
    assert len(stack.remote) == asked  # the stack was not asked

    reply = csms.call(cp, call.GetConfiguration(key=["HeartbeatInterval", "SecurityProfile", "X"]))
    assert stack.remote[-1] == ("get_configuration", {"key": ["HeartbeatInterval", "X"]})
    assert [kv["key"] for kv in reply.configuration_key] == ["HeartbeatInterval", "SecurityProfile"]
    assert reply.unknown_key == ["X"]

    reply = csms.call(cp, call.ChangeConfiguration(key="HeartbeatInterval", value="60"))
    assert reply.status == "Accepted"
    assert stack.remote[-1] == ("change_configuration", {"key": "HeartbeatInterval", "value": "60"})
    reply = csms.call(cp, call.ChangeConfiguration(key="CertificateStoreMaxLength", value="99"))
    assert reply.status == "Rejected"
    assert stack.remote[-1][1]["key"] == "HeartbeatInterval"


def test_security_profile_goes_only_up_with_its_prerequisites_falls_back_then_holds(
    tmp_path: Path,
    pki: Pki,
    peer: str,
    servers: list[TestCsms],
    agents: list[AgentProcess],
    stacks: list[Stack],
) -> None:
    """A05: lower or equal → Rejected (A05.FR.01); 2 without a CentralSystemRootCertificate →
    Rejected (A05.FR.03); 3 without a client certificate → Rejected (A05.FR.04). With the root
    installed, 2 is Accepted and the agent reconnects with it (A05.FR.05-07); the TLS CSMS not
    reachable, it falls back to profile 1 (A05.FR.08) and says so; once reachable, profile 2
    holds, across a restart; the root verifying it cannot be deleted (M04.FR.06)."""
    plain = make_csms(peer, auth=lambda cp, pw: pw == KEY1)
    servers.append(plain)
    tls_port = free_port()
    rig = ChargerRig(tmp_path, plain.url, charge_point_id="CP-UP-1")
    cp = rig.charge_point_id
    sidecar = Sidecar(rig, plain, agents, stacks)
    tls_url = f"wss://localhost:{tls_port}/ocpp"
    agent = sidecar.start(
        csms={"security_profile": 1, "authorization_key": KEY1_HEX, "tls_url": tls_url}
    )
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"

    def change(server: TestCsms, value: str) -> str:
        reply = server.call(cp, call.ChangeConfiguration(key="SecurityProfile", value=value))
        return str(reply.status)

    assert [change(plain, v) for v in ("1", "0", "2", "3", "two", "4")] == ["Rejected"] * 6
    reply = plain.call(
        cp,
        call.InstallCertificate(
            certificate_type="CentralSystemRootCertificate", certificate=pki.ca.pem
        ),
    )
    assert reply.status == "Accepted"
    assert change(plain, "3") == "Rejected"  # still no charge point certificate

    connections = plain.connections
    assert change(plain, "2") == "Accepted"
    agent.wait_log("back to profile 1 (A05.FR.08)", 60)
    plain.wait_for(lambda: plain.connections > connections and plain.connected(cp), 30)
    reconnected(stack)
    reply = plain.call(cp, call.GetConfiguration(key=["SecurityProfile"]))
    assert reply.configuration_key[0]["value"] == "1"
    status = rig.state / "status.json"
    plain.wait_for(lambda: json.loads(status.read_text()).get("security_profile") == 1)
    plain.wait_for(
        lambda: any(
            "back to profile 1" in (e.get("tech_info") or "") for e in security_events(plain)
        )
    )

    tls = make_csms(peer, pki=pki, auth=lambda cp, pw: pw == KEY1, port=tls_port)
    servers.append(tls)
    assert change(plain, "2") == "Accepted"
    tls.wait_for(lambda: tls.connected(cp), 30, "the agent on the TLS CSMS")
    reconnected(stack)
    assert stack.boot().status == "Accepted"
    assert tls.messages("BootNotification")[-1].payload["charge_point_vendor"] == "StackVendor"
    assert (
        tls.call(cp, call.GetConfiguration(key=["SecurityProfile"])).configuration_key[0]["value"]
        == "2"
    )

    root = hash_data(pki.ca.cert)
    hashes = {
        "hash_algorithm": "SHA256",
        "issuer_name_hash": root["issuerNameHash"],
        "issuer_key_hash": root["issuerKeyHash"],
        "serial_number": root["serialNumber"],
    }
    assert tls.call(cp, call.DeleteCertificate(certificate_hash_data=hashes)).status == "Failed"

    agent.stop()
    connections = tls.connections
    agent = sidecar.restart()
    tls.wait_for(lambda: tls.connections > connections, 30, "the agent back on the TLS CSMS")
    assert json.loads((rig.state / "connection.json").read_text())["profile"] == 2
    tls.wait_for(lambda: json.loads(status.read_text()).get("security_profile") == 2, 30)
    assert not stack_saw(stack, "ChangeConfiguration") and not stack_saw(stack, "Certificate")
