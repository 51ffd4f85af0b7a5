"""`[csms] mode = "sidecar"` with each OCPP version: the stack speaks what the CSMS does."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config

BASE = {
    "csms": {"url": "ws://127.0.0.1:9/ocpp", "charge_point_id": "CP-1", "security_profile": 0},
    "identity": {"vendor": "V", "model": "M"},
}


@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
def test_sidecar_mode_is_accepted_with_every_ocpp_version(version: str) -> None:
    raw = {name: dict(values) for name, values in BASE.items()}
    raw["csms"].update(mode="sidecar", ocpp_version=version)
    loaded = config.parse(raw, Path("agent.toml"))
    assert (loaded.csms.mode, loaded.csms.ocpp_version) == ("sidecar", version)
