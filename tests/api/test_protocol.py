"""The API's request parsing and start_update's parameters (pure: no socket, no agent)."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.api import protocol
from agent.api.protocol import ApiError

PARAMS = {
    "request_id": 7,
    "location": "https://fw.example/2.0.bin",
    "retrieve_date_time": "2026-11-30T00:00:00Z",
    "signing_certificate": "-----BEGIN CERTIFICATE-----\n...",
    "signature": "c2lnbmF0dXJl",
}


def test_start_update_params_become_the_cores_request() -> None:
    request = protocol.update_request(
        {**PARAMS, "install_date_time": "2026-11-30T01:00:00Z", "retries": 0, "retry_interval": 5}
    )
    assert request.request_id == 7
    assert request.firmware.location == PARAMS["location"]
    assert request.firmware.retrieve_date_time == datetime.datetime(
        2026, 11, 30, tzinfo=datetime.UTC
    )
    assert request.firmware.install_date_time == datetime.datetime(
        2026, 11, 30, 1, tzinfo=datetime.UTC
    )
    assert (request.retries, request.retry_interval) == (0, 5)  # 0 retries: one attempt


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"location": None}, "location: required field missing"),
        ({"location": "x" * 513}, "location: longer than 512 characters"),
        ({"signature": "s" * 801}, "signature: longer than 800 characters"),
        ({"retrieve_date_time": "yesterday"}, "retrieve_date_time: 'yesterday' is not"),
        ({"request_id": "7"}, "request_id: expected an integer"),
        ({"retries": -1}, "retries: must not be negative"),
        ({"firmware": {}}, "unknown parameter(s) ['firmware']"),
    ],
)
def test_bad_start_update_params_name_the_parameter(change: dict, message: str) -> None:
    params = {k: v for k, v in {**PARAMS, **change}.items() if v is not None}
    with pytest.raises(ApiError) as refused:
        protocol.update_request(params)
    assert refused.value.code == protocol.BAD_PARAMS
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"\xff\n", protocol.BAD_JSON),
        (b"[" * 60000 + b"\n", protocol.BAD_JSON),  # nested past the parser's recursion
        (b"[1, 2]\n", protocol.BAD_REQUEST),
        (b'{"id": true, "method": "hello"}\n', protocol.BAD_REQUEST),
        (b'{"id": 1, "method": "hello", "params": []}\n', protocol.BAD_REQUEST),
        (b'{"id": 1, "method": "hello", "extra": 1}\n', protocol.BAD_REQUEST),
    ],
)
def test_malformed_lines(line: bytes, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        protocol.parse_request(line)
    assert refused.value.code == code


def test_a_request_without_params_has_none() -> None:
    request = protocol.parse_request(b'{"id": "a", "method": "get_status"}\n')
    assert (request.id, request.method, request.params) == ("a", "get_status", {})


@given(st.binary(max_size=2048))
@settings(max_examples=200, deadline=None)
def test_any_line_is_a_request_or_an_api_error(line: bytes) -> None:
    """Whatever a peer sends, the parser answers with an error code, never an exception."""
    try:
        protocol.parse_request(line)
    except ApiError as exc:
        assert exc.code in (protocol.BAD_JSON, protocol.BAD_REQUEST)
    protocol.request_id_of(line)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from([*PARAMS, "retries", "install_date_time", "x"]), JSON))
@settings(max_examples=200, deadline=None)
def test_any_start_update_params_are_a_request_or_bad_params(params: dict) -> None:
    try:
        protocol.update_request(params)
    except ApiError as exc:
        assert exc.code == protocol.BAD_PARAMS
