"""GetConfiguration in direct 1.6 mode has an item bound, the sidecar router's: at most
`GetConfigurationMaxKeys` (100) keys, which the agent reports. One more is CALLERROR
OccurenceConstraintViolation, 1.6's error for an array with too many items (OCPP-J 1.6 §4.2.3;
GetConfiguration.conf has no status to refuse with). Real agent, real CSMS (`ocpp`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.ocpp.v16 import GET_CONFIGURATION_MAX_KEYS
from agent.sidecar import router
from tests.conftest import agent_config

CP = "CP-TEST-1"


def get_configuration(csms: TestCsms, unique_id: str, keys: list[str]) -> list[Any]:
    frame = [2, unique_id, "GetConfiguration", {"key": keys}]
    csms.send_raw(CP, json.dumps(frame))
    return csms.answer_to(unique_id)


def test_get_configuration_keys_are_bounded_and_the_bound_is_reported(
    tmp_path: Path, csms: TestCsms, run_agent: Any
) -> None:
    assert router.GET_CONFIGURATION_MAX_KEYS == GET_CONFIGURATION_MAX_KEYS == 100
    run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")

    too_many = [f"Key{n}" for n in range(GET_CONFIGURATION_MAX_KEYS + 1)]
    answer = get_configuration(csms, "over", too_many)
    assert answer[:3] == [4, "over", "OccurenceConstraintViolation"], answer

    at_bound = ["getconfigurationmaxkeys", *too_many[: GET_CONFIGURATION_MAX_KEYS - 1]]
    answer = get_configuration(csms, "at", at_bound)
    assert answer[:2] == [3, "at"], answer
    assert answer[2]["configurationKey"] == [
        {"key": "GetConfigurationMaxKeys", "readonly": True, "value": "100"}
    ]
    assert answer[2]["unknownKey"] == too_many[: GET_CONFIGURATION_MAX_KEYS - 1]

    every = csms.call(CP, call.GetConfiguration())
    keys = {item["key"]: item for item in every.configuration_key}
    assert keys["GetConfigurationMaxKeys"]["value"] == "100"
    assert "SecurityProfile" in keys
    changed = csms.call(CP, call.ChangeConfiguration(key="GetConfigurationMaxKeys", value="5"))
    assert changed.status == "Rejected"
