"""The CSMS names the download URL: it must not make the charger reach this machine's own
services or its link (blind SSRF: a local admin API, a cloud metadata service at
169.254.169.254). Loopback, link-local and unspecified addresses are refused unless
`[firmware] allowed_hosts` names the host or the address, checked on the address the name
resolves to, for the request and for every redirect, and the connection goes to exactly the
address that was checked. A refused URL sends nothing to its host: one DownloadFailed, not
retried (L01.FR.04-.07).

Where a test needs a name to resolve to a chosen address, it replaces `socket.getaddrinfo`
for that one name: no DNS server can be pointed at from inside one test process.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.firmware.errors import ConnectFailed, HostNotAllowed
from agent.firmware.fetch import Fetcher, FetchSettings
from tests.e2e.conftest import IMAGE
from tests.security.hostile_net import RawServer, record_all

REAL_GETADDRINFO = socket.getaddrinfo


def resolve(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Make each name in `answers` resolve to its addresses, one per lookup in turn (the last
    repeats); returns the names looked up, in order."""
    looked_up: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        turn = min(looked_up.count(host), len(answers[host]) - 1)
        looked_up.append(host)
        address = answers[host][turn]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.mark.parametrize("scheme", ["http", "https", "ftp", "ftps"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_refused_by_default_and_never_contacted(host: str, scheme: str):
    with RawServer(record_all) as service, Fetcher(FetchSettings()) as fetcher:
        with pytest.raises(HostNotAllowed, match="loopback, link-local") as caught:
            fetcher.open(f"{scheme}://{host}:{service.port}/admin/reset")
        assert "127.0.0.1" in caught.value.message
        assert (caught.value.status, caught.value.retryable) == ("DownloadFailed", False)
    assert service.connections == 0


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "0.0.0.0", "127.8.9.10", "::1", "fe80::1", "::", "::ffff:127.0.0.1"],
)
def test_link_local_unspecified_and_mapped_loopback_are_refused(monkeypatch, address: str):
    resolve(monkeypatch, {"metadata.example": [address]})
    with Fetcher(FetchSettings(connect_timeout=1)) as fetcher, pytest.raises(HostNotAllowed):
        fetcher.open("http://metadata.example/latest/meta-data/")


def test_a_public_address_is_not_affected(monkeypatch):
    """192.0.2.1 (TEST-NET-1) is neither: it is connected to (and fails to answer)."""
    resolve(monkeypatch, {"fw.example": ["192.0.2.1"]})
    with Fetcher(FetchSettings(connect_timeout=0.5)) as fetcher, pytest.raises(ConnectFailed):
        fetcher.open("http://fw.example/fw.bin")


def test_naming_the_host_or_the_address_allows_it():
    with FirmwareHttpServer() as server:
        server.put("/fw.bin", IMAGE)
        for allowed in (("127.0.0.1",), ("localhost",)):
            with (
                Fetcher(FetchSettings(allowed_hosts=allowed)) as fetcher,
                fetcher.open(server.url("/fw.bin", host=allowed[0])) as transfer,
            ):
                assert b"".join(transfer.chunks()) == IMAGE


def test_a_wildcard_does_not_unlock_an_internal_address(monkeypatch):
    """`*.cdn.example` allows names under it, not whatever they resolve to."""
    with RawServer(record_all, host="127.0.0.2") as service:
        resolve(monkeypatch, {"fw.cdn.example": ["127.0.0.2"]})
        settings = FetchSettings(allowed_hosts=("*.cdn.example",))
        with Fetcher(settings) as fetcher, pytest.raises(HostNotAllowed, match=r"127\.0\.0\.2"):
            fetcher.open(f"http://fw.cdn.example:{service.port}/fw.bin")
    assert service.connections == 0


def test_a_redirect_to_an_internal_address_is_refused_before_it_is_sent(monkeypatch):
    with RawServer(record_all, host="127.0.0.2") as service, FirmwareHttpServer() as origin:
        resolve(monkeypatch, {"fw.cdn.example": ["127.0.0.2"]})
        origin.redirect("/fw.bin", f"http://fw.cdn.example:{service.port}/fw.bin")
        settings = FetchSettings(allowed_hosts=("127.0.0.1", "*.cdn.example"))
        with Fetcher(settings) as fetcher, pytest.raises(HostNotAllowed, match=r"127\.0\.0\.2"):
            fetcher.open(origin.url("/fw.bin"))
        assert [r.status for r in origin.requests] == [302]
    assert service.connections == 0


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected(monkeypatch):
    """DNS rebinding: the first answer is public, every later one loopback. The connection
    goes to the first (checked) answer; the loopback service hears nothing."""
    with RawServer(record_all, host="127.0.0.2") as service:
        looked_up = resolve(monkeypatch, {"rebind.example": ["192.0.2.1", "127.0.0.2"]})
        with Fetcher(FetchSettings(connect_timeout=0.5)) as fetcher, pytest.raises(ConnectFailed):
            fetcher.open(f"http://rebind.example:{service.port}/fw.bin")
    assert looked_up == ["rebind.example"]
    assert service.connections == 0


def test_the_daemon_refuses_a_loopback_url_once_and_sends_nothing(
    tmp_path: Path, csms: TestCsms, run_agent
):
    """With the default (empty) allowed_hosts: DownloadFailed after one Downloading, no retry
    (retries=3 asked), the reason in the log, no connection to the service."""
    rig = ChargerRig(tmp_path, csms.url)
    with RawServer(record_all) as service:
        url = f"http://127.0.0.1:{service.port}/admin/reset"
        agent = run_agent(rig.config(firmware={"allowed_hosts": []}))
        csms.wait_message("BootNotification")
        request = rig.request(Firmware(url, IMAGE, rig.sign(IMAGE)), 5001, retries=3)
        assert csms.call(rig.charge_point_id, call.SignedUpdateFirmware(**request)).status == (
            "Accepted"
        )
        csms.wait_for(lambda: len(csms.statuses()) >= 2, 60, "DownloadFailed")
        agent.wait_log("loopback, link-local and unspecified addresses are refused")
    assert csms.statuses() == [("Downloading", 5001), ("DownloadFailed", 5001)]
    assert service.connections == 0
