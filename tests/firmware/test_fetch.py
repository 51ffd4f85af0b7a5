"""Downloads against real servers on 127.0.0.1: resume, faults, TLS, FTP, cancel."""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from pathlib import Path

import pytest

from agent.config import FirmwareConfig
from agent.demo.fileserver import STALL_LIMIT
from agent.demo.waiting import deadline
from agent.firmware.errors import (
    ConnectFailed,
    DownloadCancelled,
    DownloadError,
    HostNotAllowed,
    LengthMismatch,
    RestartRequired,
    ServerRefused,
    Stalled,
    TlsFailed,
    Truncated,
    UnsupportedScheme,
)
from agent.firmware.fetch import Fetcher, FetchSettings, ResumeFrom, attempts, redact_url
from agent.firmware.fetch_base import host_matches, tls_context
from tests.e2e.conftest import wait_until
from tests.firmware.conftest import FTP_PASSWORD, FTP_USER
from tests.firmware.fwservers import FirmwareFtpServer, FirmwareHttpServer

LOCAL = ("127.0.0.1", "localhost")  # the test servers' loopback, refused unless named


def fetch_all(fetcher: Fetcher, url: str, resume: ResumeFrom | None = None) -> tuple[bytes, object]:
    with fetcher.open(url, resume=resume) as transfer:
        return b"".join(transfer.chunks()), transfer.info


def test_attempts_are_retries_plus_one():
    """Issue #3 / §2.6: retries counts the tries after the first; always one attempt."""
    assert attempts(None, 3) == 4
    assert attempts(0, 3) == 1
    assert attempts(2, 3) == 3
    assert attempts(-5, 3) == 1


def test_full_download(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"))
    assert data == image
    assert (info.start, info.length, info.total, info.restarted) == (
        0,
        len(image),
        len(image),
        False,
    )
    request = http_server.requests[0]
    assert request.header("Range") is None
    assert request.header("Accept-Encoding") == "identity"


def test_resume_sends_range_and_if_range_with_etag(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    etag = http_server.files["/fw.bin"].etag
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"), ResumeFrom(400_000, etag))
    assert data == image[400_000:]
    assert (info.start, info.total, info.restarted) == (400_000, len(image), False)
    request = http_server.requests[0]
    assert request.header("Range") == "bytes=400000-"
    assert request.header("If-Range") == etag
    assert http_server.sent() == len(image) - 400_000


def test_weak_etag_falls_back_to_last_modified(fetcher, http_server, image):
    http_server.put("/fw.bin", image, etag='W/"weak"')
    with fetcher.open(http_server.url("/fw.bin")) as transfer:
        validator = transfer.info.validator
    assert validator == http_server.files["/fw.bin"].last_modified
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"), ResumeFrom(1000, validator))
    assert info.start == 1000 and data == image[1000:]
    assert http_server.requests[-1].header("If-Range") == validator


def test_no_validator_means_no_resume(fetcher, http_server, image):
    """Without ETag or Last-Modified a resume could splice two versions: start over."""
    http_server.put("/fw.bin", image, etag=None, last_modified=None)
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"), ResumeFrom(1000, None))
    assert info.validator is None and info.restarted and info.start == 0
    assert data == image
    assert http_server.requests[0].header("Range") is None


def test_server_ignoring_range_restarts_from_zero(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    http_server.faults.ignore_range = True
    etag = http_server.files["/fw.bin"].etag
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"), ResumeFrom(5000, etag))
    assert info.restarted and info.start == 0 and data == image


def test_changed_file_restarts_from_zero(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    old = http_server.files["/fw.bin"].etag
    http_server.put("/fw.bin", image[::-1])
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"), ResumeFrom(5000, old))
    assert info.restarted and data == image[::-1]
    assert http_server.requests[0].status == 200


def test_server_ignoring_if_range_is_caught(fetcher, http_server, image):
    """A 206 carrying a different ETag belongs to another file version."""
    http_server.put("/fw.bin", image)
    old = http_server.files["/fw.bin"].etag
    http_server.put("/fw.bin", image[::-1])
    http_server.faults.ignore_if_range = True
    with pytest.raises(RestartRequired):
        fetcher.open(http_server.url("/fw.bin"), resume=ResumeFrom(5000, old))


def test_content_range_must_start_at_offset(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    http_server.faults.shift_range = 10
    etag = http_server.files["/fw.bin"].etag
    with pytest.raises(LengthMismatch, match="asked for bytes from 5000"):
        fetcher.open(http_server.url("/fw.bin"), resume=ResumeFrom(5000, etag))


def test_everything_already_received(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    etag = http_server.files["/fw.bin"].etag
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"), ResumeFrom(len(image), etag))
    assert data == b"" and info.start == len(image) and info.length == 0


@pytest.mark.parametrize("code", [404, 500, 503])
def test_http_errors_are_download_errors(fetcher, http_server, image, code):
    """A 4xx/5xx is DownloadFailed, never InvalidSignature (chargepoint-peers §7.9)."""
    http_server.put("/fw.bin", image)
    http_server.faults.statuses = [code]
    with pytest.raises(ServerRefused) as caught:
        fetcher.open(http_server.url("/fw.bin"))
    assert caught.value.code == code
    assert caught.value.status == "DownloadFailed"
    assert f"HTTP {code}" in caught.value.message


def test_missing_file_is_404(fetcher, http_server):
    with pytest.raises(ServerRefused) as caught:
        fetcher.open(http_server.url("/nothing"))
    assert caught.value.code == 404


def test_truncated_body(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    http_server.faults.cut_after = 300_000
    received = bytearray()
    with pytest.raises(Truncated) as caught, fetcher.open(http_server.url("/fw.bin")) as transfer:
        for chunk in transfer.chunks():
            received += chunk
    assert bytes(received) == image[:300_000]  # every byte before the cut is delivered
    assert f"300000 of {len(image)}" in caught.value.message


def test_stall(http_server, image):
    """`stall_timeout` (not the connect timeout, not the server giving up) ends a transfer that
    stops sending: the server holds the connection for STALL_LIMIT seconds and then closes it,
    which would be Truncated; the connect timeout is longer than that, so only the stall timeout
    can turn the silence into Stalled, and the server sees the client hang up mid-stall."""
    http_server.put("/fw.bin", image)
    http_server.faults.stall_after = 100_000
    settings = FetchSettings(
        allowed_hosts=LOCAL, connect_timeout=3 * STALL_LIMIT, stall_timeout=0.3
    )
    with Fetcher(settings) as fetcher, fetcher.open(http_server.url("/fw.bin")) as transfer:
        with pytest.raises(Stalled):
            for _ in transfer.chunks():
                pass
        served = http_server.requests[0]
        wait_until(lambda: served.closed_at, STALL_LIMIT, "the client to hang up on the stall")


def test_content_encoding_is_refused(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    http_server.faults.content_encoding = "gzip"
    with pytest.raises(DownloadError, match="Content-Encoding gzip"):
        fetcher.open(http_server.url("/fw.bin"))


def test_unknown_length_reads_to_close(fetcher, http_server, image):
    http_server.put("/fw.bin", image)
    http_server.faults.no_length = True
    data, info = fetch_all(fetcher, http_server.url("/fw.bin"))
    assert data == image and info.total is None


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://example.org/fw", "sftp://h/fw", "no-scheme"]
)
def test_other_schemes_are_refused(fetcher, url):
    with pytest.raises(UnsupportedScheme) as caught:
        fetcher.open(url)
    assert not caught.value.retryable
    assert "not supported" in caught.value.message


def test_scheme_not_allowed_by_config(http_server, image):
    http_server.put("/fw.bin", image)
    settings = FetchSettings(allowed_hosts=LOCAL, allowed_schemes=("https",))
    with Fetcher(settings) as fetcher, pytest.raises(UnsupportedScheme, match="allowed: https"):
        fetcher.open(http_server.url("/fw.bin"))


def test_connection_refused(fetcher):
    with pytest.raises(ConnectFailed):
        fetcher.open("http://127.0.0.1:9/fw.bin")


def test_credentials_never_appear(fetcher, http_server, caplog):
    caplog.set_level("DEBUG")
    url = http_server.url("/secret-missing", userinfo="user:hunter2@")
    with pytest.raises(ServerRefused) as caught:
        fetcher.open(url)
    assert "hunter2" not in caught.value.message
    assert "hunter2" not in caplog.text
    assert redact_url("ftp://u:pw@host:21/a/b?token=x") == "ftp://host:21/a/b"


# --- TLS --------------------------------------------------------------------------------------


def test_https_with_extra_ca(https_server, tls_pki, image):
    https_server.put("/fw.bin", image)
    with Fetcher(FetchSettings(allowed_hosts=LOCAL, ca_file=tls_pki["ca"])) as fetcher:
        data, _ = fetch_all(fetcher, https_server.url("/fw.bin", host="localhost"))
    assert data == image


def test_extra_ca_is_added_to_the_system_store(tls_pki):
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    combined = tls_context(tls_pki["ca"]).cert_store_stats()["x509_ca"]
    assert combined == system + 1


def test_https_without_the_ca_fails_verification(https_server, image):
    https_server.put("/fw.bin", image)
    with Fetcher(FetchSettings(allowed_hosts=LOCAL)) as fetcher, pytest.raises(TlsFailed) as caught:
        fetcher.open(https_server.url("/fw.bin", host="localhost"))
    assert caught.value.status == "DownloadFailed"


def test_https_hostname_is_checked(https_server, tls_pki, image):
    https_server.put("/fw.bin", image)
    with (
        Fetcher(FetchSettings(allowed_hosts=LOCAL, ca_file=tls_pki["ca"])) as fetcher,
        pytest.raises(TlsFailed),
    ):
        fetcher.open(https_server.url("/fw.bin", host="127.0.0.1"))


def test_https_to_an_ip_address_with_ip_san(tls_pki, image):
    """urllib3 1.26 sends no SNI for IPs; the name must still be matched (and work)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_pki["ip_cert"], tls_pki["ip_key"])
    with FirmwareHttpServer(tls=context) as server:
        server.put("/fw.bin", image)
        with Fetcher(FetchSettings(allowed_hosts=LOCAL, ca_file=tls_pki["ca"])) as fetcher:
            data, _ = fetch_all(fetcher, server.url("/fw.bin", host="127.0.0.1"))
            assert data == image
            with pytest.raises(TlsFailed):
                fetcher.open(server.url("/fw.bin", host="localhost"))


def test_redirect_to_disallowed_scheme_is_refused_before_it_is_sent(
    http_server, https_server, tls_pki, image
):
    https_server.redirect("/fw.bin", http_server.url("/fw.bin"))
    http_server.put("/fw.bin", image)
    settings = FetchSettings(allowed_hosts=LOCAL, ca_file=tls_pki["ca"], allowed_schemes=("https",))
    with Fetcher(settings) as fetcher, pytest.raises(UnsupportedScheme) as caught:
        fetcher.open(https_server.url("/fw.bin", host="localhost"))
    assert f"'http' of {http_server.url('/fw.bin')} is not allowed" in caught.value.message
    assert http_server.requests == []


@pytest.mark.parametrize(
    ("host", "pattern", "allowed"),
    [
        ("fw.example.com", "fw.example.com", True),
        ("FW.Example.COM", "fw.example.com", True),
        ("fw.example.com.", "fw.example.com", True),
        ("eu.cdn.example.com", "*.cdn.example.com", True),
        ("a.b.cdn.example.com", "*.cdn.example.com", True),
        ("cdn.example.com", "*.cdn.example.com", False),  # the domain itself is not below it
        ("evilcdn.example.com", "*.cdn.example.com", False),
        ("fw.example.com.evil.net", "fw.example.com", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "::1", True),
    ],
)
def test_host_patterns(host: str, pattern: str, allowed: bool):
    assert host_matches(host, pattern) is allowed


def test_a_host_outside_allowed_hosts_is_never_contacted(http_server, image):
    http_server.put("/fw.bin", image)
    settings = FetchSettings(allowed_hosts=("fw.example.com",))
    with Fetcher(settings) as fetcher, pytest.raises(HostNotAllowed) as caught:
        fetcher.open(http_server.url("/fw.bin"))
    assert "'127.0.0.1'" in caught.value.message and "allowed_hosts" in caught.value.message
    assert (caught.value.status, caught.value.retryable) == ("DownloadFailed", False)
    assert http_server.requests == []


def test_a_redirect_to_a_host_outside_allowed_hosts_is_refused_before_it_is_sent(image):
    with FirmwareHttpServer() as origin, FirmwareHttpServer() as elsewhere:
        elsewhere.put("/fw.bin", image)
        origin.redirect("/fw.bin", elsewhere.url("/fw.bin", host="localhost"))
        settings = FetchSettings(allowed_hosts=("127.0.0.1",))
        with Fetcher(settings) as fetcher:
            with pytest.raises(HostNotAllowed, match="'localhost'"):
                fetcher.open(origin.url("/fw.bin"))
            assert [r.status for r in origin.requests] == [302]
            assert elsewhere.requests == []  # nothing was sent to the redirect target
            origin.redirect("/fw.bin", elsewhere.url("/fw.bin"))  # an allowed host: followed
            data, _ = fetch_all(fetcher, origin.url("/fw.bin"))
    assert data == image


def test_redirect_from_http_to_https_trusts_the_configured_ca(
    http_server, https_server, tls_pki, image
):
    """The https adapter is built lazily; a redirect must still land on it, not on requests'
    default adapter (which would not know the extra CA and fail verification)."""
    https_server.put("/fw.bin", image)
    http_server.redirect("/fw.bin", https_server.url("/fw.bin", host="localhost"))
    with Fetcher(FetchSettings(allowed_hosts=LOCAL, ca_file=tls_pki["ca"])) as fetcher:
        data, _ = fetch_all(fetcher, http_server.url("/fw.bin"))
    assert data == image
    with Fetcher(FetchSettings(allowed_hosts=LOCAL)) as fetcher, pytest.raises(TlsFailed):
        fetcher.open(http_server.url("/fw.bin"))  # and verification stays on


def test_plain_http_does_not_load_a_trust_store(http_server, image, monkeypatch):
    """Loading the system CA store costs ~20 ms of CPU per context; http needs none."""
    import agent.firmware.fetch as fetch_module

    built: list[bool] = []
    real = fetch_module.tls_context

    def counting(*args, **kwargs):
        built.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(fetch_module, "tls_context", counting)
    http_server.put("/fw.bin", image)
    with Fetcher(FetchSettings(allowed_hosts=LOCAL)) as fetcher:
        data, _ = fetch_all(fetcher, http_server.url("/fw.bin"))
        assert (data == image, built) == (True, [])


def test_an_unreadable_ca_file_is_a_tls_failure(https_server, tmp_path, image):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    https_server.put("/fw.bin", image)
    with (
        Fetcher(FetchSettings(allowed_hosts=LOCAL, ca_file=bogus)) as fetcher,
        pytest.raises(TlsFailed) as caught,
    ):
        fetcher.open(https_server.url("/fw.bin", host="localhost"))
    assert "cannot load the CA file" in caught.value.message


# --- cancel -----------------------------------------------------------------------------------


def run_in_thread(target) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("where", ["headers", "body"])
def test_cancel_interrupts_a_blocked_transfer(http_server, image, where):
    """Issue #3 / L01.FR.26: a cancel ends a transfer whose server has gone silent. Without it the
    transfer would end only when the server gives up (STALL_LIMIT, well before the 30 s
    timeouts here) and then as a download error, not DownloadCancelled; a stalled body's
    connection is shut by the agent while the server still holds it, after only the bytes sent
    before the stall."""
    http_server.put("/fw.bin", image)
    if where == "headers":
        http_server.faults.stall_before_headers = True
    else:
        http_server.faults.stall_after = 100_000
    cancel = threading.Event()
    settings = FetchSettings(allowed_hosts=LOCAL, connect_timeout=30, stall_timeout=30)
    received: list[int] = []
    with Fetcher(settings) as fetcher:

        def download() -> None:
            with fetcher.open(http_server.url("/fw.bin"), cancel=cancel) as transfer:
                for chunk in transfer.chunks():
                    received.append(len(chunk))

        thread, outcome = run_in_thread(download)
        assert http_server.stalled.wait(deadline(10))
        cancel.set()
        thread.join(3 * STALL_LIMIT)
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), DownloadCancelled), outcome
        served = http_server.requests[0]
        if where == "body":
            wait_until(lambda: served.closed_at, STALL_LIMIT, "the agent to shut the connection")
            assert sum(received) <= served.sent == 100_000
        else:
            assert received == []


# --- the download speed limit -----------------------------------------------------------------


def test_settings_follow_the_firmware_config():
    firmware = FirmwareConfig(
        connect_timeout=7, stall_timeout=9, allowed_schemes=("https",),
        allowed_hosts=("fw.example.com",), max_download_rate=123_456,
    )  # fmt: skip
    settings = FetchSettings.from_config(firmware)
    assert (settings.connect_timeout, settings.stall_timeout) == (7, 9)
    assert (settings.allowed_schemes, settings.allowed_hosts) == (("https",), ("fw.example.com",))
    assert settings.max_rate == 123_456


def test_a_speed_limit_holds_the_average_rate(http_server, image):
    """`[firmware] max_download_rate`: 1 MiB at 1 MiB/s takes at least about a second however
    fast the link (a lower bound: a slow machine only makes it longer), and arrives intact."""
    http_server.put("/fw.bin", image)
    rate = 1 << 20
    with Fetcher(FetchSettings(allowed_hosts=LOCAL, max_rate=rate)) as fetcher:
        started = time.monotonic()
        data, _ = fetch_all(fetcher, http_server.url("/fw.bin"))
        elapsed = time.monotonic() - started
    assert data == image
    assert elapsed >= 0.9 * len(image) / rate, elapsed


def test_unlimited_is_not_throttled_and_limited_reads_small_pieces(http_server, image):
    """The throttle's pieces are small (an eighth of a second's worth, at least 16 KiB), so its
    pauses are short; without a limit the configured chunk size applies."""
    http_server.put("/fw.bin", image)
    sizes: dict[int, set[int]] = {}
    for rate in (0, 512 * 1024):
        with (
            Fetcher(FetchSettings(allowed_hosts=LOCAL, max_rate=rate)) as fetcher,
            fetcher.open(http_server.url("/fw.bin")) as transfer,
        ):
            sizes[rate] = {len(chunk) for chunk in transfer.chunks()}
    assert max(sizes[0]) == FetchSettings(allowed_hosts=LOCAL).chunk_size
    assert max(sizes[512 * 1024]) == 64 * 1024


def test_cancel_stops_a_throttled_transfer(http_server, image):
    """A throttled reader sleeps on the stop event, and a cancel ends the transfer part way: at
    64 KiB/s the 1 MiB image would take 16 s, so a transfer that ignored the cancel would
    deliver all of it and return instead of raising DownloadCancelled."""
    http_server.put("/fw.bin", image)
    cancel = threading.Event()
    first = threading.Event()
    received: list[int] = []
    with Fetcher(FetchSettings(allowed_hosts=LOCAL, max_rate=64 * 1024)) as fetcher:

        def download() -> None:
            with fetcher.open(http_server.url("/fw.bin"), cancel=cancel) as transfer:
                for chunk in transfer.chunks():
                    received.append(len(chunk))
                    first.set()

        thread, outcome = run_in_thread(download)
        assert first.wait(deadline(30))
        cancel.set()
        thread.join(60)
        assert not thread.is_alive()
    assert isinstance(outcome.get("error"), DownloadCancelled), outcome
    assert 0 < sum(received) < len(image)


# --- FTP --------------------------------------------------------------------------------------


def ftp_url(server: FirmwareFtpServer, path: str = "/fw.bin", password: str = FTP_PASSWORD) -> str:
    from urllib.parse import quote

    return (
        f"ftp://{quote(FTP_USER, safe='')}:{quote(password, safe='')}@127.0.0.1:{server.port}{path}"
    )


def test_ftp_download_and_rest_resume(fetcher, ftp_server, ftp_root: Path, image):
    (ftp_root / "fw.bin").write_bytes(image)
    data, info = fetch_all(fetcher, ftp_url(ftp_server))
    assert data == image and info.total == len(image) and info.validator
    data, again = fetch_all(fetcher, ftp_url(ftp_server), ResumeFrom(700_000, info.validator))
    assert data == image[700_000:]
    assert again.start == 700_000 and not again.restarted
    assert ftp_server.rest == [700_000]


def test_ftp_changed_file_restarts(fetcher, ftp_server, ftp_root: Path, image):
    (ftp_root / "fw.bin").write_bytes(image)
    data, info = fetch_all(fetcher, ftp_url(ftp_server), ResumeFrom(10, "size=1;mdtm=1"))
    assert info.restarted and info.start == 0 and data == image
    assert ftp_server.rest == []


def test_ftp_cut_transfer_is_truncated(fetcher, ftp_server, ftp_root: Path, image):
    (ftp_root / "fw.bin").write_bytes(image)
    ftp_server.cut_after = 200_000
    with pytest.raises(Truncated), fetcher.open(ftp_url(ftp_server)) as transfer:
        for _ in transfer.chunks():
            pass


def test_ftp_wrong_password_and_missing_file(fetcher, ftp_server, ftp_root: Path):
    with pytest.raises(ServerRefused) as caught:
        fetcher.open(ftp_url(ftp_server, password="wrong-secret"))
    assert caught.value.code == 530
    assert "wrong-secret" not in caught.value.message
    with pytest.raises(ServerRefused) as caught:
        fetcher.open(ftp_url(ftp_server, path="/missing.bin"))
    assert caught.value.code == 550
    assert FTP_PASSWORD not in caught.value.message


def test_ftps_with_extra_ca(tls_pki, ftp_root: Path, image):
    pytest.importorskip("OpenSSL", reason="pyftpdlib's FTPS server needs pyOpenSSL")
    (ftp_root / "fw.bin").write_bytes(image)
    with FirmwareFtpServer(
        ftp_root, FTP_USER, FTP_PASSWORD, (tls_pki["cert"], tls_pki["key"])
    ) as s:
        url = ftp_url(s).replace("ftp://", "ftps://").replace("127.0.0.1", "localhost")
        with Fetcher(
            FetchSettings(allowed_hosts=LOCAL, ca_file=tls_pki["ca"], stall_timeout=5)
        ) as fetcher:
            data, _ = fetch_all(fetcher, url)
        assert data == image
        with (
            Fetcher(FetchSettings(allowed_hosts=LOCAL, stall_timeout=5)) as fetcher,
            pytest.raises(TlsFailed),
        ):
            fetcher.open(url)


def test_digest_helper_sanity(image):
    assert hashlib.sha256(image).digest() != hashlib.sha256(image[:-1]).digest()
