"""OCPP 2.1 fixtures: the 2.0.1 rig and station verbs with `ocpp_version = "2.1"`, and the
`ocpp` library's v21 side as CSMS (every CALL the agent sends checked against the 2.1 schemas)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent.demo.csms import Csms2x
from agent.demo.rig import AgentProcess, ChargerRig
from tests.v201 import conftest as v201

# The e2e rig, firmware server and image, and the direct tests' CSMSs, as 2.0.1 uses them.
fileserver, firmware, rig, servers = v201.fileserver, v201.firmware, v201.rig, v201.servers


@pytest.fixture
def csms() -> Iterator[Csms2x]:
    server = Csms2x("2.1").start()
    yield server
    server.stop()
    assert server.schema_violations == [], "the agent sent messages that violate the schemas"


class Station(v201.Station):
    """The 2.0.1 station's verbs, speaking 2.1. Its requests are the library's 2.0.1 types,
    which the v21 side validates against the 2.1 schemas before sending (same fields)."""

    def start(self, env: dict[str, str] | None = None, **config: Any) -> AgentProcess:
        config["csms"] = {"ocpp_version": "2.1", **config.get("csms", {})}
        return super().start(env, **config)


@pytest.fixture
def station(rig: ChargerRig, csms: Csms2x, agents: list[AgentProcess]) -> Station:
    return Station(rig, csms, agents)
