"""Boot-slot backends: one module per bootloader, all implementing `base.BootBackend`.

`load_backend(name, devices, options)` builds the backend named in `[slots] backend` from the
`[slots] devices` table and the free-form `[slots.options]` table; unknown backends and unknown
or invalid options raise `BackendConfigError` (a ValueError) naming the backend and the key.
`describe(backend)` is what `ocpp-fw-agent slots` prints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from agent.slots.base import BackendOptions, BootBackend
from agent.slots.errors import BackendConfigError, BackendError
from agent.slots.filemodel import FileModelBackend
from agent.slots.grub import GrubBackend
from agent.slots.pair import DEFAULT_STATE_DIR
from agent.slots.rauc import RaucBackend
from agent.slots.tryboot import TrybootBackend
from agent.slots.uboot import UBootBackend

Factory = Callable[[Mapping[str, Path], BackendOptions, Path], BootBackend]

BACKENDS: Final[Mapping[str, Factory]] = {
    "file": FileModelBackend,
    "uboot": UBootBackend,
    "grub": GrubBackend,
    "rpi-tryboot": TrybootBackend,
    "rauc": RaucBackend,
}


def load_backend(
    name: str,
    devices: Mapping[str, Path],
    options: Mapping[str, Any],
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
) -> BootBackend:
    """The configured backend. Touches no files or tools (run `self_check()` for that).

    `state_dir` is where backends that keep an agent-side record (file, rpi-tryboot, rauc) put
    it unless an option names the path. Raises BackendConfigError (a ValueError).
    """
    factory = BACKENDS.get(name)
    if factory is None:
        raise BackendConfigError(
            f"unknown slots backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}"
        )
    return factory({str(k): Path(v) for k, v in devices.items()}, dict(options), Path(state_dir))


def describe(backend: BootBackend) -> dict[str, Any]:
    """What the backend sees, as plain JSON-able data: never raises for a backend failure."""
    out: dict[str, Any] = {
        "backend": backend.name,
        "slots": {name: str(device) for name, device in backend.slots.items()},
        "capabilities": dataclasses.asdict(backend.capabilities()),
    }
    try:
        obs = backend.observe()
    except BackendError as exc:
        out["error"] = str(exc)
    else:
        out.update(
            booted=obs.booted,
            primary=obs.primary,
            trial_active=obs.trial_active,
            attempts_left=obs.attempts_left,
            health={slot: str(health) for slot, health in obs.health.items()},
            raw=dict(obs.raw),
        )
    out["reboot_argument"] = _safe(backend.reboot_argument)
    out["problems"] = _safe(backend.self_check) or []
    return out


def human(document: Mapping[str, Any]) -> str:
    """`describe()` for a person: one line per slot, then every problem."""
    lines = [f"backend:   {document['backend']}"]
    if document.get("error"):
        lines.append(f"error:     {document['error']}")
    health = document.get("health", {})
    for name, device in document["slots"].items():
        roles = [
            role
            for role, key in (("booted", "booted"), ("primary", "primary"))
            if document.get(key) == name
        ]
        extra = f" ({', '.join(roles)})" if roles else ""
        lines.append(f"slot {name}:    {device}  {health.get(name, '?')}{extra}")
    if "trial_active" in document:
        trial = "active (this boot is on trial)" if document["trial_active"] else "none active"
        if document.get("attempts_left") is not None:
            trial += f", attempts left {document['attempts_left']}"
        lines.append(f"trial:     {trial}")
    if document.get("reboot_argument"):
        lines.append(f"reboot:    with argument {document['reboot_argument']!r}")
    problems = document.get("problems") or []
    lines.extend(f"problem:   {problem}" for problem in problems)
    if not problems and not document.get("error"):
        lines.append("no problems")
    return "\n".join(lines)


def _safe(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except BackendError as exc:
        return f"error: {exc}"


__all__ = [
    "BACKENDS",
    "BackendConfigError",
    "BackendError",
    "BootBackend",
    "describe",
    "human",
    "load_backend",
]
