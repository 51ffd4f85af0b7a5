"""The router's GetConfiguration merge at the edges, with the real Session, Outbox and
security handlers on real files, the two links as lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import CsmsConfig
from agent.firmware.reporting import Reporter
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Session
from agent.security.certstore import CSMS_ROOT, MANUFACTURER_ROOT, CertStore
from agent.security.cpcert import ChargePointCertificate
from agent.security.credentials import ConnectionSettings
from agent.security.handlers import SecurityHandlers
from agent.sidecar.router import Router


class Links:
    def __init__(self, tmp_path: Path) -> None:
        self.csms: list[str] = []
        self.stack: list[str] = []
        outbox = Outbox(tmp_path / "outbox.json")
        session = Session(outbox, lambda: pytest.fail("no own boot"), own_registration=False)
        store = CertStore(tmp_path / "certs", {CSMS_ROOT: None, MANUFACTURER_ROOT: None})
        store.load()
        cpcert = ChargePointCertificate(tmp_path / "cp", "SN-1")
        cpcert.load()
        settings = ConnectionSettings(
            CsmsConfig("ws://127.0.0.1:9/ocpp", "CP-1", 0),
            tmp_path,
            csms_roots=store.csms_roots_file,
            client_certificate=cpcert.current,
        )
        security = SecurityHandlers(
            settings,
            store,
            Reporter(outbox),
            reconnect=lambda: None,
            peer_certificate=lambda: None,
            charge_point_certificate=cpcert,
        )
        security.register(session)
        self.router = Router(
            session, self.csms.append, self.stack.append, lambda: None, security=security
        )
        self.router.csms_connected()

    def ask(self, unique_id: str, keys: list[str] | None) -> None:
        payload = {} if keys is None else {"key": keys}
        self.router.from_csms(json.dumps([2, unique_id, "GetConfiguration", payload]))

    def last_csms(self) -> list[Any]:
        return json.loads(self.csms[-1])


def test_with_the_stack_away_only_the_agents_own_keys_are_answered(tmp_path: Path) -> None:
    links = Links(tmp_path)
    links.ask("g1", ["SecurityProfile"])
    assert links.last_csms() == [
        3,
        "g1",
        {"configurationKey": [{"key": "SecurityProfile", "readonly": False, "value": "0"}]},
    ]
    links.ask("g2", ["SecurityProfile", "HeartbeatInterval"])
    assert links.last_csms()[:3] == [4, "g2", "InternalError"]
    assert links.stack == []


def test_the_stacks_error_or_malformed_answer_passes_and_a_stack_leaving_clears(
    tmp_path: Path,
) -> None:
    links = Links(tmp_path)
    links.router.stack_connected()
    links.ask("g1", ["HeartbeatInterval", "authorizationKEY"])
    assert json.loads(links.stack[-1]) == [
        2,
        "g1",
        "GetConfiguration",
        {"key": ["HeartbeatInterval"]},
    ]
    error = '[4,"g1","InternalError","busy",{}]'
    links.router.from_stack(error)
    assert links.csms[-1] == error

    links.ask("g2", None)
    links.router.from_stack('[3,"g2",{"configurationKey":"nonsense"}]')
    assert links.csms[-1] == '[3,"g2",{"configurationKey":"nonsense"}]'

    links.ask("g3", None)
    links.router.stack_disconnected()
    assert links.last_csms()[:3] == [4, "g3", "InternalError"]
    links.router.stack_connected()
    links.router.from_stack('[3,"g3",{}]')  # late: forwarded as an unknown answer, no merge
    assert links.csms[-1] == '[3,"g3",{}]'
