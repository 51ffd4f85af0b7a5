"""The slot contract, run against every backend with its bootloader simulator.

Each mutation is checked for its post-condition (by the backend itself, and here), and for
idempotence: doing it twice leaves the whole env exactly as once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from slot_rigs import Rig

from agent import config
from agent.slots import BACKENDS, describe, load_backend
from agent.slots.base import BackendConfigError, BackendError, SlotHealth


def twice(rig: Rig, action: Callable[[], None]) -> str:
    """Run `action` twice; the env after the second run must equal the env after the first."""
    action()
    once = rig.env_text()
    action()
    assert rig.env_text() == once, "mutation is not idempotent"
    return once


def reboot(rig: Rig) -> str:
    """A reboot by the daemon, carrying the backend's reboot argument."""
    return rig.power_on(rig.backend.reboot_argument())


def routine_boot(rig: Rig, argument: str | None) -> str:
    """A power-on outside a trial, followed by the daemon's per-boot confirm where needed."""
    booted = rig.power_on(argument)
    if booted and rig.backend.capabilities().confirm_each_boot:
        rig.backend.commit(booted)
    return booted


def start_trial(rig: Rig) -> None:
    backend = rig.backend
    twice(rig, lambda: backend.mark_bad("B"))
    twice(rig, lambda: backend.arm_trial("B"))
    assert reboot(rig) == "B"


def test_fresh_device_observed(rig: Rig) -> None:
    obs = rig.backend.observe()
    assert (obs.booted, obs.primary, obs.trial_active) == ("A", "A", False)
    assert obs.health == {"A": SlotHealth.GOOD, "B": SlotHealth.GOOD}
    assert rig.backend.self_check() == []
    assert rig.backend.reboot_argument() is None


def test_update_commit_flow(rig: Rig) -> None:
    backend = rig.backend
    twice(rig, lambda: backend.mark_bad("B"))
    obs = backend.observe()
    assert (obs.health["B"], obs.primary, obs.booted) == (SlotHealth.BAD, "A", "A")

    twice(rig, lambda: backend.arm_trial("B"))
    obs = backend.observe()
    assert (obs.health["B"], obs.primary, obs.trial_active) == (SlotHealth.TRIAL, "A", False)

    assert reboot(rig) == "B"
    obs = backend.observe()
    assert (obs.booted, obs.primary, obs.trial_active) == ("B", "A", True)
    assert obs.health["B"] == SlotHealth.TRIAL

    twice(rig, lambda: backend.commit("B"))
    obs = backend.observe()
    assert (obs.primary, obs.trial_active, obs.health["B"]) == ("B", False, SlotHealth.GOOD)

    for _ in range(3):  # committed: B stays, across daemon reboots and plain resets
        assert routine_boot(rig, backend.reboot_argument()) == "B"
        obs = backend.observe()
        assert (obs.booted, obs.primary, obs.trial_active) == ("B", "B", False)
        assert routine_boot(rig, None) == "B"


def test_trial_without_commit_falls_back(rig: Rig) -> None:
    backend = rig.backend
    start_trial(rig)
    booted = "B"
    for _ in range(backend.capabilities().trial_attempts):  # reset / hang: no reboot argument
        booted = rig.power_on(None)
        if booted == "A":
            break
    assert booted == "A"
    obs = backend.observe()
    assert (obs.booted, obs.trial_active) == ("A", False)
    assert obs.health["B"] != SlotHealth.GOOD
    twice(rig, lambda: backend.mark_bad("B"))  # the daemon's rollback handling
    if backend.capabilities().confirm_each_boot:
        backend.commit("A")
    obs = backend.observe()
    assert (obs.primary, obs.health["B"]) == ("A", SlotHealth.BAD)
    assert reboot(rig) == "A"


def test_abandon_trial(rig: Rig) -> None:
    backend = rig.backend
    start_trial(rig)
    twice(rig, lambda: backend.abandon_trial("B"))
    obs = backend.observe()
    assert (obs.primary, obs.health["B"]) == ("A", SlotHealth.BAD)
    assert backend.reboot_argument() is None
    assert routine_boot(rig, backend.reboot_argument()) == "A"
    assert routine_boot(rig, None) == "A"


def test_bad_slot_is_never_booted(rig: Rig) -> None:
    rig.backend.mark_bad("B")
    for _ in range(4):
        assert routine_boot(rig, None) == "A"


@pytest.mark.parametrize(
    ("verb", "slot", "message"),
    [
        ("commit", "B", "refusing to commit B"),
        ("arm_trial", "A", "refusing to arm a trial of the running slot"),
        ("mark_bad", "A", "refusing to mark the running slot"),
        ("mark_bad", "C", "unknown slot"),
    ],
)
def test_refusals(rig: Rig, verb: str, slot: str, message: str) -> None:
    before = rig.env_text()
    with pytest.raises(BackendError, match=message):
        getattr(rig.backend, verb)(slot)
    assert rig.env_text() == before


def test_dropped_write_is_detected(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = rig.backend
    steps: dict[str, Callable[[], None]] = {
        "mark_bad": lambda: None,
        "arm_trial": lambda: backend.mark_bad("B"),
        "commit": lambda: start_trial(rig),
    }
    for op in rig.drop_ops:
        steps[op]()
        before = rig.env_text()
        with monkeypatch.context() as mp:
            dropping = rig.dropping(mp)
            with pytest.raises(BackendError, match=r"not in effect|read back differs") as info:
                getattr(dropping, op)("B")
        assert info.value.op in (op, None)
        if rig.drop_keeps_env:
            assert rig.env_text() == before


def test_describe(rig: Rig) -> None:
    out = describe(rig.backend)
    assert out["backend"] == rig.backend.name
    assert (out["booted"], out["primary"], out["problems"]) == ("A", "A", [])
    assert out["health"] == {"A": "good", "B": "good"}
    assert set(out["slots"]) == {"A", "B"} and out["raw"]


def test_loader_and_config_refuse_anything_but_a_pair(tmp_path: Path) -> None:
    """The configuration and the loader use the one rule (agent/slots/pair.py) and its words."""
    one = {"A": tmp_path / "A.img"}
    for name in BACKENDS:
        with pytest.raises(BackendConfigError, match=rf"'{name}': expected exactly two slots"):
            load_backend(name, one, {}, state_dir=tmp_path)
    source = tmp_path / "agent.toml"
    source.write_text('[slots]\ndevices = { A = "/dev/null" }\n')
    with pytest.raises(config.ConfigError, match=r"\[slots\] devices: expected exactly two"):
        config.load(source)


def test_backend_and_observation_refuse_anything_but_a_pair(rig: Rig, tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError, match=r"expected exactly two slots, got \['A'\]"):
        type(rig.backend)({"A": tmp_path / "A.img"}, {}, tmp_path)
    obs = rig.backend.observe()
    three = dataclasses.replace(obs, health={**obs.health, "C": SlotHealth.GOOD})
    with pytest.raises(BackendError, match=r"expected exactly two slots, got \['A', 'B', 'C'\]"):
        three.other_than("A")
