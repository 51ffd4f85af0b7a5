"""Property-based fuzzing of HTTP responses against the real fetcher over a real socket.

A firmware server (or whatever answers on its address) may send anything: status lines,
headers, chunking and lengths, well-formed or not. Properties: the fetcher never raises
anything but a FirmwareError (DownloadError for every transfer failure, never a signature
status); it never hangs (the server sends, then closes or holds the line, and a held line is
ended by the fetcher itself: the stall timeout ends every wait); and for the responses whose
meaning is clear, the outcome is exactly the right one: the body, or ServerRefused, Truncated,
LengthMismatch.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.firmware.errors import (
    DownloadError,
    FirmwareError,
    LengthMismatch,
    ServerRefused,
    Stalled,
    Truncated,
)
from agent.firmware.fetch import Fetcher, FetchSettings
from tests.security.hostile_net import Peer, RawServer, wait_until

STALL = 0.5
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


HOLD_LIMIT = 60.0  # a held line is let go after this long if the fetcher never hangs up


class Script:
    """What the server says next: raw bytes, then close (or hold the line until the client
    hangs up, noting whether it did before HOLD_LIMIT)."""

    def __init__(self) -> None:
        self.response = b""
        self.hold = False
        self.lock = threading.Lock()
        self.client_left: list[bool] = []  # one per held line: True if the client hung up

    def __call__(self, peer: Peer) -> None:
        with self.lock:
            response, hold = self.response, self.hold
        peer.read_head()
        peer.send(response)
        if hold:
            left = client_leaves(peer)
            with self.lock:
                self.client_left.append(left)


def client_leaves(peer: Peer) -> bool:
    """Wait for the client to close the connection; False if HOLD_LIMIT passed first."""
    peer.sock.settimeout(HOLD_LIMIT)
    try:
        while peer.sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the client
    return True


@pytest.fixture(scope="module")
def server():
    script = Script()
    with RawServer(script) as raw:
        raw.script = script  # type: ignore[attr-defined]
        yield raw


def fetch(server: RawServer, response: bytes, hold: bool = False) -> bytes:
    """Fetch `response`. On a held line the fetcher must hang up by itself (the stall timeout
    ends every wait): a fetcher that waited for the server would still be there at HOLD_LIMIT."""
    script: Script = server.script  # type: ignore[attr-defined]
    with script.lock:
        script.response, script.hold = response, hold
        held_before = len(script.client_left)
    settings_ = FetchSettings(connect_timeout=5, stall_timeout=STALL, allowed_hosts=("127.0.0.1",))
    try:
        with (
            Fetcher(settings_) as fetcher,
            fetcher.open(f"http://127.0.0.1:{server.port}/fw.bin") as transfer,
        ):
            return b"".join(transfer.chunks())
    finally:
        if hold:
            wait_until(
                lambda: len(script.client_left) > held_before,
                HOLD_LIMIT + 30,
                "the held line to end",
            )
            assert script.client_left[held_before], "the fetcher waited for the server to let go"


tokens = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-0123456789"), min_size=1, max_size=20)
header_values = st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b)
bodies = st.binary(max_size=4096)


@FUZZ
@given(
    status_line=st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda v, c, r: v + b" " + c + b" " + r,
            st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/1.1\x00", b"ICY"]),
            st.one_of(st.integers(0, 999).map(lambda n: str(n).encode()), st.binary(max_size=5)),
            st.binary(max_size=20).filter(lambda b: b"\n" not in b),
        ),
    ),
    headers=st.lists(st.tuples(tokens, header_values), max_size=8),
    length=st.one_of(st.none(), st.integers(-5, 10_000).map(str), tokens),
    chunked=st.booleans(),
    body=bodies,
    hold=st.booleans(),
)
def test_any_response_ends_in_data_or_a_download_error(
    server, status_line, headers, length, chunked, body, hold
):
    head = status_line + b"\r\n"
    for key, value in headers:
        head += key.encode() + b": " + value + b"\r\n"
    if length is not None:
        head += b"Content-Length: " + length.encode() + b"\r\n"
    if chunked:
        head += b"Transfer-Encoding: chunked\r\n"
    try:
        fetch(server, head + b"\r\n" + body, hold)
    except FirmwareError as exc:
        assert isinstance(exc, DownloadError), repr(exc)
        assert exc.status == "DownloadFailed"


@FUZZ
@given(
    code=st.sampled_from([200, 204, 206, 300, 304, 400, 403, 404, 429, 500, 503]),
    body=bodies,
    announced=st.integers(0, 5000),
    hold=st.booleans(),
)
def test_clear_responses_have_exactly_the_right_outcome(server, code, body, announced, hold):
    head = f"HTTP/1.1 {code} X\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
    try:
        data = fetch(server, head.encode() + body, hold)
    except (ServerRefused, Truncated, Stalled, LengthMismatch) as exc:
        outcome: object = type(exc)
    else:
        outcome = data
    if code != 200:  # 206 answers a Range we did not send; the rest are refusals
        assert outcome in (ServerRefused, LengthMismatch)
        assert (outcome is LengthMismatch) == (code == 206)
    elif len(body) >= announced:
        assert outcome == body[:announced]  # bytes past Content-Length are not the file's
    else:  # the server closed (or held the line) short of what it announced
        assert outcome is (Stalled if hold else Truncated)


@FUZZ
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
    damage=st.sampled_from(["none", "size", "cut", "no-end"]),
)
def test_chunked_bodies(server, pieces, damage):
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    ending = b"0\r\n\r\n"
    if damage == "size" and pieces:
        encoded = b"zz\r\n" + encoded
    elif damage == "cut" and encoded:
        encoded = encoded[: len(encoded) // 2]
        ending = b""
    elif damage == "no-end":
        ending = b""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    try:
        data: object = fetch(server, head + encoded + ending)
    except DownloadError:
        data = DownloadError
    damaged = damage == "no-end" or (damage != "none" and bool(pieces))
    if damaged:  # a bad chunk size, a cut inside a chunk, no last chunk before the close
        assert data is DownloadError
    else:
        assert data == b"".join(pieces)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (1 << 20) + b"\r\n",  # one 1 MiB header line
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"b" * 60_000) for n in range(200)),
        b"HTTP/1.1 200 " + b"c" * (1 << 20),  # a status line that never ends
    ],
    ids=["long-line", "too-many-headers", "endless-status-line"],
)
def test_oversized_heads_are_refused(server, head):
    """http.client's limits (64 KiB a line, 100 headers) hold on both stacks: the head a
    server can make the charger hold is bounded, and the answer is a DownloadError."""
    with pytest.raises(DownloadError):
        fetch(server, head + b"\r\n\r\nbody")
