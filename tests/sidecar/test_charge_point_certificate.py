"""Profile 3's charge point certificate renewed over OCPP (white paper A02), in sidecar mode:
the key is made and kept on the charger, the CSR goes out in SignCertificate, the signed
certificate is checked and used for the connection; the stack sees none of it."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection

from agent.demo import pki as fwpki
from agent.demo.csms import TestCsms, _CentralSystemSide
from agent.demo.rig import AgentProcess, ChargerRig
from tests.integration.test_security_profiles import KEY, Pki, profile
from tests.peers.ocpp_rpc_csms import OcppRpcCsms
from tests.security.certfactory import der, sign
from tests.sidecar.conftest import Sidecar, Stack, make_csms, stop_csms

CP = "CP-TLS-1"


class _SigningSide(_CentralSystemSide):
    @on(Action.sign_certificate)
    def on_sign_certificate(self, **payload: Any) -> Any:
        self.csms._note(self.id, "SignCertificate", payload)
        return call_result.SignCertificate(status="Accepted")


class SigningCsms(TestCsms):
    """The test CSMS, answering SignCertificate and noting each connection's client cert."""

    side_class = _SigningSide

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer_certs: list[bytes | None] = []

    async def _handle(self, ws: ServerConnection) -> None:
        tls = ws.transport.get_extra_info("ssl_object")
        with self._changed:
            self.peer_certs.append(tls.getpeercert(binary_form=True) if tls else None)
        await super()._handle(ws)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def csms(pki: Pki, peer: str) -> Iterator[SigningCsms]:
    server: Any = make_csms(
        peer,
        pki=pki,
        client_certs="optional",  # profile 2 without, profile 3 with a certificate
        auth=lambda cp, pw: pw in (KEY, None),
        python_class=SigningCsms,
    )
    if isinstance(server, OcppRpcCsms):
        server.answers["SignCertificate"] = {"status": "Accepted"}
    yield server
    stop_csms(server)


@pytest.mark.both_peers
def test_a_key_made_on_the_charger_signed_by_the_cpo_ca_becomes_the_profile_3_certificate(
    tmp_path: Path, pki: Pki, csms: SigningCsms, agents: list[AgentProcess], stacks: list[Stack]
) -> None:
    """A02: the trigger needs CpoName (prerequisite), then is Accepted and SignCertificate
    carries a PKCS#10 CSR with O = CpoName (A02.FR.13) and CN = the identity (A00.FR.511); the
    key stays on the charger, 0600 (A02.FR.05). CertificateSigned from another CA or for
    another key → Rejected + InvalidChargePointCertificate (A02.FR.06/07); from the CSMS root's
    CA → Accepted. Profile 3 is then allowed (A05.FR.04) and the connection is made with that
    certificate, also after a restart. A renewal the CSMS refuses gives way to the previous
    certificate after its attempts (A02.FR.10: the old one kept as fallback)."""
    rig = ChargerRig(tmp_path, csms.url, charge_point_id=CP)
    sidecar = Sidecar(rig, csms, agents, stacks)
    agent = sidecar.start(csms=profile(2, csms.url, pki))
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"

    def trigger() -> str:
        message = call.ExtendedTriggerMessage(requested_message="SignChargePointCertificate")
        return str(csms.call(CP, message).status)

    def change(key: str, value: str) -> str:
        return str(csms.call(CP, call.ChangeConfiguration(key=key, value=value)).status)

    assert trigger() == "Rejected"  # no CpoName yet
    assert change("SecurityProfile", "3") == "Rejected"  # no charge point certificate yet
    assert change("CpoName", "Example CPO") == "Accepted"
    reply = csms.call(CP, call.GetConfiguration(key=["CpoName"]))
    assert reply.configuration_key == [
        {"key": "CpoName", "readonly": False, "value": "Example CPO"}
    ]

    assert trigger() == "Accepted"
    request = csms.wait_message("SignCertificate")[-1]
    csr = x509.load_pem_x509_csr(request.payload["csr"].encode())
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example CPO"
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP
    keys = list((rig.state / "certs" / "charge-point").glob("key-*.pem"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert all("PRIVATE KEY" not in f.text for f in csms.frames)
    secret_lines = [line for line in keys[0].read_text().splitlines() if "-----" not in line]

    stranger = fwpki.issue(CP, fwpki.ec_key("secp256r1", 77), pki.ca).pem  # another key
    for chain in (sign(csr, fwpki.Issued(pki.other_ca.cert, pki.other_ca.key)), stranger):
        assert csms.call(CP, call.CertificateSigned(certificate_chain=chain)).status == "Rejected"
    csms.wait_for(
        lambda: (
            [
                m.payload["type"]
                for m in csms.messages("SecurityEventNotification")
                if m.payload["type"] == "InvalidChargePointCertificate"
            ]
            == ["InvalidChargePointCertificate"] * 2
        )
    )

    leaf = sign(csr, pki.ca)
    assert csms.call(CP, call.CertificateSigned(certificate_chain=leaf)).status == "Accepted"
    assert change("SecurityProfile", "3") == "Accepted"
    csms.wait_for(lambda: csms.peer_certs[-1] == der(leaf), 30, "a profile 3 connection")
    agent.wait_log("connected with security profile 3")

    agent.stop()
    seen = len(csms.peer_certs)
    agent = sidecar.restart()
    csms.wait_for(lambda: len(csms.peer_certs) > seen, 30, "the restarted agent")
    assert csms.peer_certs[-1] == der(leaf)
    stack = sidecar.stack()  # its BootNotification is the agent's registration too
    assert stack.boot().status == "Accepted"

    # A renewal the CSMS does not take: its CA is a CSMS root the agent was given, but the
    # CSMS does not trust it for clients. After its attempts the previous pair is back.
    other_root = call.InstallCertificate(
        certificate_type="CentralSystemRootCertificate", certificate=pki.other_ca.pem
    )
    assert csms.call(CP, other_root).status == "Accepted"
    assert trigger() == "Accepted"
    csr = x509.load_pem_x509_csr(
        csms.wait_message("SignCertificate", 2)[-1].payload["csr"].encode()
    )
    renewed = sign(csr, fwpki.Issued(pki.other_ca.cert, pki.other_ca.key))
    seen = len(csms.peer_certs)
    assert csms.call(CP, call.CertificateSigned(certificate_chain=renewed)).status == "Accepted"
    agent.wait_log("back to the previous one (A02.FR.10)", 60)
    csms.wait_for(lambda: len(csms.peer_certs) > seen, 30, "the agent back with the old pair")
    assert csms.peer_certs[seen:] == [der(leaf)]
    csms.wait_for(
        lambda: any(
            "back to the previous one" in (m.payload.get("tech_info") or "")
            for m in csms.messages("SecurityEventNotification")
        )
    )
    log = "\n".join(a.log for a in agents)
    assert "PRIVATE KEY" not in log and not any(line in log for line in secret_lines)
    assert not any(
        f'"{word}"' in text
        for word in ("SignChargePointCertificate", "CertificateSigned", "CpoName")
        for text in stack.texts("in")
    )
