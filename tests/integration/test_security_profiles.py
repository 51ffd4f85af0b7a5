"""Security profiles 1-3 against a real TLS CSMS with generated certificates (security §2)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from agent.demo import pki as fwpki
from agent.demo.csms import TestCsms
from tests.conftest import agent_config

CP = "CP-TLS-1"
KEY_HEX = "0001020304050607FFFFFFFFFFFFFFFF0A0B0C0D"  # 20 bytes, several not printable
KEY = bytes.fromhex(KEY_HEX)


class Pki:
    """A CSMS CA, a second unrelated CA, server certificates and a charge-point certificate."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = fwpki.issue("CSMS Root", fwpki.rsa_key(2048, 10), ca=True)
        self.other_ca = fwpki.issue("Other Root", fwpki.rsa_key(2048, 11), ca=True)
        server_key = fwpki.ec_key("secp256r1", 12)
        self.server = fwpki.issue("localhost", server_key, self.ca, sans=["localhost"])
        self.impostor = fwpki.issue("localhost", server_key, self.other_ca, sans=["localhost"])
        self.wrong_host = fwpki.issue("csms.example", server_key, self.ca, sans=["csms.example"])
        self.client = fwpki.issue("SN-0042", fwpki.ec_key("secp256r1", 13), self.ca)
        self.write("ca.pem", self.ca.pem.encode())
        self.write("client.pem", self.client.pem.encode())
        self.write("client.key", self.client.key_pem)

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path

    def server_context(self, cert: fwpki.Issued, require_client: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        chain = self.write(f"srv-{id(cert)}.pem", cert.pem.encode())
        key = self.write(f"srv-{id(cert)}.key", cert.key_pem)
        context.load_cert_chain(chain, key)
        if require_client:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.dir / "ca.pem"))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def serve(context: ssl.SSLContext | None = None, port: int = 0, **kw) -> TestCsms:
    return TestCsms(ssl_context=context, **kw).start(port)


def profile(n: int, url: str, pki: Pki, **extra) -> dict:
    csms = {"charge_point_id": CP, "security_profile": n, "url": url}
    if n in (1, 2):
        csms["authorization_key"] = KEY_HEX
    if n in (2, 3):
        csms["ca_file"] = str(pki.dir / "ca.pem")
    if n == 3:
        csms["client_cert"] = str(pki.dir / "client.pem")
        csms["client_key"] = str(pki.dir / "client.key")
    csms.update(extra)
    return csms


def test_profile_1_sends_basic_auth_with_the_hex_decoded_key(tmp_path, pki, run_agent):
    """A00.FR.202/205, OCTT TC_085_CS: the password is the decoded key bytes, not the hex text."""
    seen: list[bytes | None] = []
    server = serve(auth=lambda cp, password: seen.append(password) or password == KEY)
    try:
        run_agent(agent_config(tmp_path, server.url, csms=profile(1, server.url, pki)))
        server.wait_message("BootNotification")
        header = server.request_headers[0]["Authorization"]
        assert base64.b64decode(header.removeprefix("Basic ")) == CP.encode() + b":" + KEY
        assert seen == [KEY]
    finally:
        server.stop()


def test_wrong_password_never_connects_and_is_retried(tmp_path, pki, run_agent):
    server = serve(auth=lambda cp, password: False)
    try:
        run_agent(agent_config(tmp_path, server.url, csms=profile(1, server.url, pki)))
        server.wait_for(lambda: len(server.request_headers) >= 3, what="three attempts")
        assert server.connections == 0
    finally:
        server.stop()


def test_profile_2_connects_with_the_right_ca_and_hostname(tmp_path, pki, run_agent):
    server = serve(pki.server_context(pki.server), auth=lambda cp, password: password == KEY)
    try:
        agent = run_agent(agent_config(tmp_path, server.url, csms=profile(2, server.url, pki)))
        server.wait_message("BootNotification")
        assert agent.log.count("CSMS certificate rejected") == 0
        assert server.messages("SecurityEventNotification") == []
    finally:
        server.stop()


@pytest.mark.parametrize("cert_name", ["impostor", "wrong_host"])
def test_profile_2_refuses_a_bad_server_certificate_and_reports_it_later(
    tmp_path, pki, run_agent, cert_name
):
    """A00.FR.309/310: never connect; queue InvalidCentralSystemCertificate; send it once
    a trustworthy connection exists (A04.FR.02)."""
    bad = serve(pki.server_context(getattr(pki, cert_name)))
    port = bad.port
    try:
        agent = run_agent(agent_config(tmp_path, bad.url, csms=profile(2, bad.url, pki)))
        agent.wait_log("security event InvalidCentralSystemCertificate")
        assert bad.connections == 0 and bad.received == []
    finally:
        bad.stop()
    good = serve(pki.server_context(pki.server), port=port)
    try:
        events = good.wait_message("SecurityEventNotification", timeout=60)
        assert [e.payload["type"] for e in events] == ["InvalidCentralSystemCertificate"]
        assert good.messages("BootNotification")[0].at < events[0].at
    finally:
        good.stop()


def test_profile_3_presents_the_client_certificate(tmp_path, pki, run_agent):
    server = serve(pki.server_context(pki.server, require_client=True))
    try:
        run_agent(agent_config(tmp_path, server.url, csms=profile(3, server.url, pki)))
        server.wait_message("BootNotification")
        assert "Authorization" not in server.request_headers[0]
    finally:
        server.stop()


def test_without_a_client_certificate_a_profile_3_csms_refuses(tmp_path, pki, run_agent):
    server = serve(pki.server_context(pki.server, require_client=True))
    try:
        agent = run_agent(agent_config(tmp_path, server.url, csms=profile(2, server.url, pki)))
        agent.wait_log("cannot connect")
        assert server.connections == 0
    finally:
        server.stop()


def test_a_csms_that_refuses_the_subprotocol_is_a_failed_connection(tmp_path, run_agent):
    """OCPP-J §3.1.2: a handshake without `ocpp1.6` is not a usable connection."""
    server = TestCsms(subprotocols=[]).start()
    try:
        agent = run_agent(agent_config(tmp_path, server.url))
        agent.wait_log("cannot connect")
        assert server.received == []
    finally:
        server.stop()
