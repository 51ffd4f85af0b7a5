"""Sidecar mode keeps the configured security profile on the CSMS side (profiles 2 and 3,
real TLS with generated certificates), while the stack talks plain ws:// on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, ChargerRig
from tests.integration.test_security_profiles import KEY, Pki, profile
from tests.sidecar.conftest import Sidecar, Stack, make_csms, stop_csms


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=[2, 3])
def tls_csms(request: Any, pki: Pki, peer: str) -> Iterator[tuple[int, TestCsms]]:
    number = request.param
    passwords: list[bytes | None] = []
    server = make_csms(
        peer,
        pki=pki,
        client_certs="required" if number == 3 else "none",
        auth=(lambda cp, password: passwords.append(password) or password == KEY)
        if number == 2
        else None,
    )
    yield number, server
    stop_csms(server)


@pytest.mark.both_peers
def test_the_stack_reaches_a_tls_csms_through_the_agent(
    tmp_path: Path,
    pki: Pki,
    tls_csms: tuple[int, TestCsms],
    agents: list[AgentProcess],
    stacks: list[Stack],
) -> None:
    number, csms = tls_csms
    rig = ChargerRig(tmp_path, csms.url, charge_point_id="CP-TLS-1")
    sidecar = Sidecar(rig, csms, agents, stacks)
    sidecar.start(csms=profile(number, csms.url, pki))
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"
    stack.call(call.Heartbeat())
    texts = [f.text for f in csms.frames if f.direction == "in"]
    assert texts == stack.texts("out")
    assert csms.url.startswith("wss://")
