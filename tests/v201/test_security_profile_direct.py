"""Direct 2.x mode: the CSMS connection's password and security profile are the agent's.

A01 (BasicAuthPassword), B09 (SetNetworkProfile), B10 and A05 (a new profile through
NetworkConfigurationPriority and Reset, with the fallback to the previous one). The real agent
against the `ocpp` library's 2.0.1/2.1 CSMS, which checks HTTP Basic auth and, for profile 2,
serves real TLS with generated certificates; CALLs are sent raw so that the agent judges them.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from agent.demo.csms import Csms2x
from agent.demo.rig import AgentProcess
from tests.conftest import agent_config
from tests.integration.test_security_profiles import Pki

CP = "CP-TEST-1"
KEY_HEX = "00112233445566778899AABBCCDDEEFF"  # agent.toml's: 16 bytes, the password is these
KEY = bytes.fromhex(KEY_HEX)
NEW_PASSWORD = "Fresh-pass_word:2026|ok"  # 23 characters of the passwordString set


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


class Passwords:
    """The CSMS's Basic auth check: which passwords it takes, and each one it was shown."""

    def __init__(self, *accepted: bytes) -> None:
        self.accepted = set(accepted)
        self.seen: list[bytes | None] = []

    def __call__(self, charge_point_id: str, password: bytes | None) -> bool:
        self.seen.append(password)
        return password in self.accepted  # the CSMS checked the user is the path's id


def start_csms(servers: list[Csms2x], version: str, **options: Any) -> Csms2x:
    server = Csms2x(version, **options).start()
    servers.append(server)
    return server


def raw(csms: Csms2x, action: str, payload: dict[str, Any]) -> list[Any]:
    """Send a CALL as is; return the agent's answer frame."""
    unique_id = f"raw-{time.monotonic_ns()}"
    csms.send_raw(CP, json.dumps([2, unique_id, action, payload]))
    return csms.answer_to(unique_id)


def variable(component: str, name: str, value: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"component": {"name": component}, "variable": {"name": name}}
    if value is not None:
        entry["attributeValue"] = value
    return entry


PASSWORD = ("SecurityCtrlr", "BasicAuthPassword")
PROFILE = ("SecurityCtrlr", "SecurityProfile")
PRIORITY = ("OCPPCommCtrlr", "NetworkConfigurationPriority")


def get(csms: Csms2x, *names: tuple[str, str]) -> list[dict[str, Any]]:
    answer = raw(csms, "GetVariables", {"getVariableData": [variable(*n) for n in names]})
    assert answer[0] == 3, answer
    return list(answer[2]["getVariableResult"])


def set_(csms: Csms2x, name: tuple[str, str], value: str) -> dict[str, Any]:
    answer = raw(csms, "SetVariables", {"setVariableData": [variable(*name, value)]})
    assert answer[0] == 3, answer
    result: dict[str, Any] = answer[2]["setVariableResult"][0]
    return result


def network_profile(url: str, profile: int, version: str = "2.0.1", **extra: Any) -> dict:
    data = {
        "ocppTransport": "JSON",
        "ocppCsmsUrl": url,
        "messageTimeout": 5,
        "securityProfile": profile,
        "ocppInterface": "Wired0",
        **extra,
    }
    if version == "2.0.1":
        data.setdefault("ocppVersion", "OCPP20")
    return data


def set_network_profile(csms: Csms2x, slot: int, data: dict[str, Any]) -> dict[str, Any]:
    answer = raw(csms, "SetNetworkProfile", {"configurationSlot": slot, "connectionData": data})
    assert answer[0] == 3, answer
    result: dict[str, Any] = answer[2]
    return result


def reset(csms: Csms2x) -> dict[str, Any]:
    answer = raw(csms, "Reset", {"type": "Immediate"})
    assert answer[0] == 3, answer
    result: dict[str, Any] = answer[2]
    return result


def events(csms: Csms2x) -> list[dict[str, Any]]:
    return [m.payload for m in csms.messages("SecurityEventNotification")]


def start_agent(
    tmp_path: Path, run_agent: Any, url: str, version: str, **csms: Any
) -> AgentProcess:
    config = agent_config(
        tmp_path,
        url,
        csms={
            "ocpp_version": version,
            "security_profile": 1,
            "authorization_key": KEY_HEX,
            **csms,
        },
    )
    agent: AgentProcess = run_agent(config)
    return agent


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_A01_new_password_is_used_at_once_never_returned_never_logged(
    tmp_path: Path, run_agent: Any, servers: list[Csms2x]
) -> None:
    """A01: SetVariables(SecurityCtrlr.BasicAuthPassword) is Accepted for a passwordString
    of 16-40 characters (A00.FR.205) and Rejected otherwise; the connection is made again with
    it (the CSMS checks Basic auth, which no longer takes the old one), also after a restart;
    ReconfigurationOfSecurityParameters is sent (A01.FR.11); GetVariables answers Rejected and
    the report has no value (WriteOnly); the password is in no log line (A01.FR.12). (2.1's
    SetVariables is the same code path; its network profile is covered below.)"""
    version = "2.0.1"
    passwords = Passwords(KEY)
    csms = start_csms(servers, version, auth=passwords)
    agent = start_agent(tmp_path, run_agent, csms.url, version)
    csms.wait_message("BootNotification")

    for bad in ("short-password1", "x" * 41, "sixteen-chars-ok!", "sixteen chars ok"):
        result = set_(csms, PASSWORD, bad)
        assert result["attributeStatus"] == "Rejected", bad
        assert result["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
    assert passwords.seen == [KEY] and csms.connected(CP)  # nothing changed

    connections = csms.connections
    passwords.accepted = {KEY, NEW_PASSWORD.encode()}
    assert set_(csms, PASSWORD, NEW_PASSWORD)["attributeStatus"] == "Accepted"
    passwords.accepted = {NEW_PASSWORD.encode()}  # the CSMS no longer takes the old one
    csms.wait_for(lambda: csms.connections > connections and csms.connected(CP), 30, "reconnect")
    assert passwords.seen[-1] == NEW_PASSWORD.encode()
    header = csms.request_headers[-1]["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")) == f"{CP}:{NEW_PASSWORD}".encode()
    event = csms.wait_for(
        lambda: [e for e in events(csms) if e["type"] == "ReconfigurationOfSecurityParameters"]
    )[0]
    assert event["tech_info"] == "BasicAuthPassword changed"

    [read] = get(csms, PASSWORD)
    assert read["attributeStatus"] == "Rejected" and "attributeValue" not in read
    answer = raw(csms, "GetBaseReport", {"requestId": 5, "reportBase": "FullInventory"})
    assert answer[2]["status"] == "Accepted"
    report = csms.wait_message("NotifyReport")[0].payload
    [entry] = [d for d in report["report_data"] if d["variable"]["name"] == "BasicAuthPassword"]
    assert entry["variable_attribute"][0]["mutability"] == "WriteOnly"
    assert "value" not in entry["variable_attribute"][0]

    agent.stop()
    connections = csms.connections
    agent = run_agent(agent.config)
    csms.wait_for(lambda: csms.connections > connections and csms.connected(CP), 30, "restart")
    assert passwords.seen[-1] == NEW_PASSWORD.encode()  # the saved one, not agent.toml's
    for text in [agent.log] + [p.read_text("utf-8", "replace") for p in tmp_path.glob("*.log")]:
        assert NEW_PASSWORD not in text
        assert base64.b64encode(f"{CP}:{NEW_PASSWORD}".encode()).decode() not in text
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file() and path.name != "authorization_key":
            assert NEW_PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_B09_refused_network_profiles_change_nothing(
    tmp_path: Path, run_agent: Any, servers: list[Csms2x], pki: Pki, version: str
) -> None:
    """B09/A05: a lower securityProfile than the one in use (no downgrade over OCPP), a URL
    whose scheme does not fit the profile, profile 2 without a CSMS root, an APN, slot 0
    (agent.toml's) are Rejected with statusInfo; a priority naming an empty slot is Rejected;
    Reset then has nothing to apply."""
    csms = start_csms(servers, version, auth=Passwords(KEY))
    start_agent(tmp_path, run_agent, csms.url, version)
    csms.wait_message("BootNotification")
    tls = "wss://localhost:1/ocpp"
    apn = {"apn": {"apn": "internet", "apnAuthentication": "NONE"}}
    refused = [
        (1, network_profile(csms.url, 0, version), "InvalidValue", "lower than 1"),
        (1, network_profile("ws://localhost:1/ocpp", 2, version), "InvalidValue", "root"),
        (1, network_profile(tls, 1, version), "InvalidURL", "uses ws://"),
        (1, network_profile(csms.url, 1, version, **apn), "UnsupportedParam", "apn"),
        (0, network_profile(csms.url, 1, version), "InvalidValue", "configured"),
    ]
    if version == "2.1":
        refused.append(
            (1, network_profile(csms.url, 1, version, identity="OTHER"), "UnsupportedParam", "")
        )
    for slot, data, code, words in refused:
        answer = set_network_profile(csms, slot, data)
        assert answer["status"] == "Rejected", data
        assert answer["statusInfo"]["reasonCode"] == code, answer
        assert words in answer["statusInfo"].get("additionalInfo", ""), answer
    result = set_(csms, PRIORITY, "1,0")
    assert result["attributeStatus"] == "Rejected"
    assert [r.get("attributeValue") for r in get(csms, PRIORITY, PROFILE)] == ["0", "1"]
    assert reset(csms)["status"] == "Rejected"
    assert csms.connections == 1
