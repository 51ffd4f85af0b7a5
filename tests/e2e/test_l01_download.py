"""L01 end to end: the download, seen from the firmware server.

CP §2.6: `retries` counts the attempts *after* the first (retries + 1 in all), `retryInterval`
seconds apart, a `Downloading` per attempt and one `DownloadFailed` after the last (2.0.1
L01.FR.30). Resume uses Range + If-Range from the durable offset. HTTP errors, a stall and a
truncated body are download failures, never `InvalidSignature`, and the slot is never armed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel
from tests.e2e.conftest import HAPPY, IMAGE, Charger, wait_until


def assert_failed_cleanly(charger: Charger, rig: ChargerRig) -> None:
    """A download failure is DownloadFailed, once; no InvalidSignature, nothing armed."""
    assert charger.statuses().count("DownloadFailed") == 1
    assert "InvalidSignature" not in charger.statuses()
    assert "InvalidFirmwareSignature" not in charger.events()
    env = filemodel.load_env(rig.env)
    assert env["primary"] == "A" and env["trial"] is None, env
    assert not rig.reboot_marker.exists()


def test_retries_are_counted_and_spaced_at_the_server(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """§2.6: retries=2 → exactly 3 requests, ≥ retryInterval apart, a Downloading per attempt,
    one DownloadFailed after the last."""
    fileserver.faults.statuses = [500, 500, 500, 500]
    charger.start()
    assert charger.update(firmware, 21, retries=2, retry_interval=1) == "Accepted"
    charger.wait_status("DownloadFailed")
    charger.assert_coherent(21, ["Downloading"] * 3 + ["DownloadFailed"])
    times = [r.at for r in fileserver.requests]
    assert len(times) == 3
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times)), times
    assert fileserver.faults.statuses == [500]  # the fourth answer was never asked for
    assert "HTTP 500" in charger.job()["error"]
    assert_failed_cleanly(charger, rig)
    charger.assert_triggers("DownloadFailed", 21)  # L01.FR.29


def test_no_retries_means_exactly_one_attempt(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """§2.6: retries=0 → one attempt, not none and not two."""
    fileserver.faults.statuses = [500, 500]
    charger.start()
    assert charger.update(firmware, 22, retries=0, retry_interval=0) == "Accepted"
    charger.wait_status("DownloadFailed")
    charger.assert_coherent(22, ["Downloading", "DownloadFailed"])
    assert len(fileserver.requests) == 1 and fileserver.faults.statuses == [500]
    assert_failed_cleanly(charger, rig)


def test_absent_retries_take_the_configured_default(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """§2.6: no `retries`/`retryInterval` in the request → firmware.default_retries (+ 1
    attempts) and default_retry_interval from the config."""
    fileserver.faults.statuses = [503, 503, 503]
    charger.start(firmware={"default_retries": 1, "default_retry_interval": 1})
    assert charger.update(firmware, 23) == "Accepted"
    charger.wait_status("DownloadFailed")
    charger.assert_coherent(23, ["Downloading", "Downloading", "DownloadFailed"])
    first, second = fileserver.requests
    assert second.at - first.at >= 0.9
    assert_failed_cleanly(charger, rig)


def test_a_cut_download_resumes_with_range_and_if_range(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """Resume: the retry asks `Range: bytes=N-` with the ETag in `If-Range`, N being what
    arrived; the server sends the image once in total, not twice."""
    cut = 600 * 1024
    fileserver.faults.cut_after = cut  # the resumed rest (448 KiB) is shorter: it completes
    agent = charger.start()
    assert charger.update(firmware, 24, retries=1, retry_interval=0) == "Accepted"
    rig.wait_reboot_request(agent)
    first, second = fileserver.requests
    assert first.header("Range") is None and first.sent == cut
    assert second.header("Range") == f"bytes={cut}-"
    assert second.header("If-Range") == fileserver.files["/fw/2.0.bin"].etag
    assert second.status == 206
    assert fileserver.sent() == len(IMAGE)
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE
    charger.assert_coherent(24, ["Downloading", *HAPPY])


def test_a_file_changed_between_attempts_is_fetched_again_from_the_start(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer
):
    """If-Range: the file changed after the cut → the server sends all of the new one (200),
    the agent starts over instead of splicing two versions (which would fail the signature)."""
    fileserver.put("/fw/3.0.bin", IMAGE)
    old_etag = fileserver.files["/fw/3.0.bin"].etag
    new_image = IMAGE[::-1]
    new = Firmware(fileserver.url("/fw/3.0.bin"), new_image, rig.sign(new_image))
    fileserver.faults.cut_after = 600 * 1024
    agent = charger.start()
    assert charger.update(new, 25, retries=1, retry_interval=1) == "Accepted"
    wait_until(lambda: fileserver.requests and fileserver.requests[0].sent, 10, "the first cut")
    fileserver.faults.cut_after = None
    fileserver.put("/fw/3.0.bin", new_image)  # a new ETag
    rig.wait_reboot_request(agent)
    _, second = fileserver.requests
    assert second.header("If-Range") == old_etag
    assert second.status == 200 and second.sent == len(new_image)
    assert rig.slots["B"].read_bytes()[: len(new_image)] == new_image
    charger.assert_coherent(25, ["Downloading", *HAPPY])


FAILURES: dict[str, tuple[Callable[[FirmwareHttpServer], None], str]] = {
    "404": (lambda s: s.faults.statuses.append(404), "HTTP 404"),
    "500": (lambda s: s.faults.statuses.append(500), "HTTP 500"),
    "stall in the body": (
        lambda s: setattr(s.faults, "stall_after", len(IMAGE) // 2),
        "stall timeout",
    ),
    "stall before the headers": (
        lambda s: setattr(s.faults, "stall_before_headers", True),
        "stall timeout",
    ),
    "truncated": (lambda s: setattr(s.faults, "cut_after", len(IMAGE) // 2), "transfer ended"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_transfer_failure_is_download_failed_never_invalid_signature(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware, case
):
    """2.0.1 L01.FR.30: 404, 500, a stall (firmware.stall_timeout) and a truncated body end in
    DownloadFailed with the reason in the job; the half-written slot is not verified or armed."""
    inject, reason = FAILURES[case]
    inject(fileserver)
    charger.start(firmware={"stall_timeout": 1})
    assert charger.update(firmware, 26, retries=0) == "Accepted"
    charger.wait_status("DownloadFailed")
    charger.assert_coherent(26, ["Downloading", "DownloadFailed"])
    assert reason in charger.job()["error"]
    assert len(fileserver.requests) == 1
    assert_failed_cleanly(charger, rig)


def test_a_url_outside_allowed_hosts_fails_at_once_and_fetches_nothing(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """`[firmware] allowed_hosts`: a CSMS cannot make the charger fetch from another host. One
    DownloadFailed, no retries (retrying cannot change the host), nothing sent to the server."""
    charger.start(firmware={"allowed_hosts": ["firmware.example.com"]})
    assert charger.update(firmware, 27, retries=3, retry_interval=1) == "Accepted"
    charger.wait_status("DownloadFailed")
    charger.assert_coherent(27, ["Downloading", "DownloadFailed"])
    assert "allowed_hosts" in charger.job()["error"]
    assert fileserver.requests == []
    assert_failed_cleanly(charger, rig)
