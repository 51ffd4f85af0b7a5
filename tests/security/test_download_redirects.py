"""A firmware server that abuses redirects: a huge or endless redirect body, redirect chains,
credentials in the URL.

requests reads a redirect's body into memory before it follows it (to reuse the connection),
even with `allow_redirects=False`: a 302 with a 256 MiB body took the daemon from 29 MiB to
545 MiB, an endless one grew without bound. The fetcher now follows redirects itself and
never reads their bodies; the daemon's peak RSS (VmHWM, /proc) is measured during the attack.
L01.FR.04-.07 (download, DownloadFailed), security §2.4 (credentials).
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.firmware.errors import ServerRefused
from agent.firmware.fetch import Fetcher, FetchSettings
from tests.e2e.conftest import HAPPY, IMAGE
from tests.security.hostile_net import Peer, RawServer, peak_rss_mib

RSS_BOUND_MIB = 100  # an update peaks at ~45 MiB; a 256 MiB body read would pass this
MIB = 1 << 20
LOCAL = ("127.0.0.1",)


class BodySender:
    """A handler: 302 to `location` with a body of `size` bytes (None: endless, until the
    client hangs up); counts what it managed to write."""

    def __init__(self, location: str, size: int | None) -> None:
        self.location, self.size = location, size
        self.written = 0
        self.hung_up = threading.Event()

    def __call__(self, peer: Peer) -> None:
        peer.read_head()
        length = f"Content-Length: {self.size}\r\n" if self.size is not None else ""
        head = f"HTTP/1.1 302 Found\r\nLocation: {self.location}\r\n{length}Connection: close\r\n"
        peer.send(head.encode() + b"\r\n")
        block = b"r" * MIB
        try:
            while self.size is None or self.written < self.size:
                peer.send(block)
                self.written += len(block)
        except OSError:
            self.hung_up.set()


@pytest.mark.parametrize("size", [256 * MIB, None], ids=["256MiB", "endless"])
def test_a_redirect_body_is_never_read_by_the_daemon(
    tmp_path: Path, csms: TestCsms, run_agent, size: int | None
):
    rig = ChargerRig(tmp_path, csms.url)
    with FirmwareHttpServer() as files:
        files.put("/fw/2.0.bin", IMAGE)
        sender = BodySender(files.url("/fw/2.0.bin"), size)
        with RawServer(sender) as redirector:
            url = f"http://127.0.0.1:{redirector.port}/fw/2.0.bin"
            firmware = Firmware(url, IMAGE, rig.sign(IMAGE))
            agent = run_agent(rig.config())
            csms.wait_message("BootNotification")
            request = call.SignedUpdateFirmware(**rig.request(firmware, 4001))
            assert csms.call(rig.charge_point_id, request).status == "Accepted"
            csms.wait_for(lambda: len(csms.statuses()) >= len(HAPPY), 120, "InstallRebooting")
            assert csms.statuses() == [(status, 4001) for status in HAPPY]
            assert sender.hung_up.wait(30), "the daemon kept reading the redirect's body"
            peak = peak_rss_mib(agent.proc.pid)
    assert peak < RSS_BOUND_MIB, f"peak RSS {peak:.0f} MiB"
    # What reached the daemon's side at all: the kernel's buffers, not the whole body.
    assert sender.written < 64 * MIB


def test_a_redirect_chain_longer_than_five_fails_without_following_further():
    image = IMAGE
    with FirmwareHttpServer() as server:
        for hop in range(7):
            server.redirect(f"/hop{hop}", server.url(f"/hop{hop + 1}"))
        server.put("/hop7", image)
        with Fetcher(FetchSettings(allowed_hosts=LOCAL)) as fetcher:
            with pytest.raises(ServerRefused, match="more than 5 redirects"):
                fetcher.open(server.url("/hop0"))
            assert [r.path for r in server.requests] == [f"/hop{n}" for n in range(6)]
            with fetcher.open(server.url("/hop2")) as transfer:  # five hops: followed
                assert b"".join(transfer.chunks()) == image


def test_credentials_never_follow_a_redirect():
    """The URL's user:password goes to the URL's server only; not to the redirect target,
    even on the same host, and a target's own user:password is dropped too."""
    image = IMAGE
    with FirmwareHttpServer() as server:
        server.put("/fw.bin", image)
        server.redirect("/start", server.url("/next", userinfo="evil:creds@"))
        server.redirect("/next", server.url("/fw.bin"))
        with Fetcher(FetchSettings(allowed_hosts=LOCAL)) as fetcher:
            url = server.url("/start", userinfo="fw-user:s3cret@")
            with fetcher.open(url) as transfer:
                assert b"".join(transfer.chunks()) == image
    sent = {r.path: r.header("Authorization") for r in server.requests}
    assert sent["/start"] == "Basic " + base64.b64encode(b"fw-user:s3cret").decode()
    assert sent["/next"] is None and sent["/fw.bin"] is None
