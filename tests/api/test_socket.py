"""The socket's guards: its mode and group, peer credentials (tests run as root, so the other
peers are made with setpriv), the line limit, the client limit, malformed requests."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from typing import Any

import pytest

from tests.api.client import ApiCallError, ApiClient, Closed
from tests.api.conftest import (
    GROUP,
    MEMBER_UID,
    ApiCharger,
    as_uid,
    client_script,
    env_for_other_uid,
    wait_for,
)

MAX_LINE = 65536  # README: at most 65536 bytes a line with its newline


def hello_as(charger: ApiCharger, prefix: list[str]) -> dict[str, Any]:
    """The README's client run under `prefix` (another uid): what hello gave."""
    done = subprocess.run(
        [*prefix, sys.executable, client_script(), str(charger.socket)],
        capture_output=True,
        text=True,
        env=env_for_other_uid(),
        check=False,  # a refused connect exits 1, after printing what happened
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_only_root_and_the_group_get_in_and_every_peer_is_logged(charger: ApiCharger) -> None:
    agent = charger.start()
    info = os.stat(charger.socket)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (0, GROUP)

    # Not in the group: the socket's mode keeps it out (EACCES from connect).
    assert hello_as(charger, as_uid(MEMBER_UID)) == {"connect_error": "Permission denied"}

    # Past the file mode (CAP_DAC_OVERRIDE), still not in the group: the agent's own check
    # (SO_PEERCRED / SO_PEERGROUPS) refuses it with a clear error, and logs it.
    refused = hello_as(charger, as_uid(MEMBER_UID, dac_override=True))
    assert refused["error"] == "forbidden", refused
    assert f"uid {MEMBER_UID} is not root and not in group {GROUP}" in refused["message"]
    agent.wait_log("refused client pid")
    assert f"uid {MEMBER_UID} gid {MEMBER_UID}: not root and not in group {GROUP}" in agent.log

    # A member of the group (a supplementary group, as a service user would be) gets in.
    admitted = hello_as(charger, as_uid(MEMBER_UID, groups=[GROUP]))
    assert admitted["result"]["api"] == 1
    assert f"uid {MEMBER_UID} gid {MEMBER_UID})" in agent.log  # its connection, logged

    client = charger.connect()  # root
    assert client.call("get_boot_reason") == {"boot_reason": "PowerUp"}
    charger.stop()


def test_an_oversized_line_too_many_clients_and_malformed_requests(
    charger: ApiCharger,
) -> None:
    agent = charger.start(max_clients=2)
    first, second = charger.connect(), charger.connect()

    # A third connection is refused while two are open.
    third = charger.connect(hello=False)
    reply = third.reply()
    assert reply["error"]["code"] == "busy", reply
    with pytest.raises(Closed):
        third.reply()
    agent.wait_log("refused client")

    # Malformed requests are answered, the connection stays.
    first.send_line(b"{not json\n")
    assert first.reply()["error"]["code"] == "bad_json"
    first.send_line(b'{"id": 5, "params": {}}\n')
    assert first.reply() == {
        "id": 5,
        "error": {"code": "bad_request", "message": "method: expected a string"},
    }
    for method, params, code in [
        ("reboot_now", {}, "unknown_method"),
        ("ack", {"seq": "one"}, "bad_params"),
        ("start_update", {"request_id": 1}, "bad_params"),
        ("allow_installation", {}, "no_update"),
        ("cancel", {}, "bad_params"),
        ("cancel", {"request_id": 9}, "no_update"),
    ]:
        with pytest.raises(ApiCallError) as refused:
            first.call(method, **params)
        assert refused.value.code == code, (method, refused.value)
    assert first.call("get_status") == {"status": "Idle"}

    # A line over the limit: one error, then the connection is closed.
    second.send_line(b"x" * MAX_LINE)
    reply = second.reply()
    assert reply["error"]["code"] == "line_too_long"
    with pytest.raises(Closed):
        second.reply()

    # Its place is free again: a new client gets in (once the agent saw the close).
    def admitted() -> ApiClient | None:
        client = charger.connect(hello=False)
        try:
            client.hello()
        except (ApiCallError, Closed):
            return None
        return client

    assert wait_for(admitted, "a free place") is not None
    charger.stop()
