"""What differs between the OCPP versions the session speaks, in one value per version.

The session, the outbox and the firmware core are the same for 1.6, 2.0.1 and 2.1; a `Dialect`
holds the few things that are not: the websocket subprotocol, the payload type of each action,
the name of the firmware status notification, the answer to an action nobody routed, the
spelling of the CALLERROR codes, the 2.x payload types the adapter builds (2.1 widens some
limits) and whether the 2.1 frames (CALLRESULTERROR, SEND) exist. No code outside this module
and the per-version adapters asks which version it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from agent.ocpp import v16, v21, v201
from agent.ocpp.errors import NotImplementedAction, NotSupported, OcppError


@dataclasses.dataclass(frozen=True)
class Dialect:
    version: str  # the `[csms] ocpp_version` value
    subprotocol: str
    incoming: Mapping[str, type[Any]]  # payload type of each CALL the CSMS may send us
    responses: Mapping[str, type[Any]]  # payload type of the answer to each CALL we send
    status_action: str  # the firmware status notification's action name
    unhandled: Callable[[str], OcppError]  # the CALLERROR for an action nobody routed
    rpc_code: Callable[[str], str]  # a CALLERROR code in this version's spelling
    clean: Callable[[Any], Any]  # an incoming payload before validation
    payloads: v201.Payloads | None = None  # 2.x: the types the adapter builds (None: 1.6)
    ocpp21_frames: bool = False  # CALLRESULTERROR (5) and SEND (6) are message types


def _v16_unhandled(action: str) -> OcppError:
    if action == v16.Action.UPDATE_FIRMWARE:
        # L01.FR.20: the legacy, unsigned update is refused and no update starts.
        return NotSupported("UpdateFirmware is not supported; use SignedUpdateFirmware")
    if action in v16.OTHER_KNOWN_ACTIONS or action in v16.Action.__members__.values():
        return NotSupported(f"{action} is not supported by this charge point")
    return NotImplementedAction(f"unknown action {action!r}")


def _same(value: Any) -> Any:
    return value


V16 = Dialect(
    version="1.6",
    subprotocol="ocpp1.6",
    incoming={action.value: kind for action, kind in v16.INCOMING_REQUESTS.items()},
    responses={action.value: kind for action, kind in v16.RESPONSES.items()},
    status_action=v16.Action.SIGNED_FIRMWARE_STATUS_NOTIFICATION,
    unhandled=_v16_unhandled,
    rpc_code=_same,
    clean=_same,
)

V201 = Dialect(
    version="2.0.1",
    subprotocol=v201.SUBPROTOCOL,
    incoming=v201.INCOMING_REQUESTS,
    responses=v201.RESPONSES,
    status_action=v201.Action.FIRMWARE_STATUS_NOTIFICATION,
    unhandled=v201.unhandled,
    rpc_code=v201.rpc_code,
    clean=v201.strip_custom_data,
    payloads=v201.PAYLOADS,
)

V21 = Dialect(
    version="2.1",
    subprotocol=v21.SUBPROTOCOL,
    incoming=v21.INCOMING_REQUESTS,
    responses=v21.RESPONSES,
    status_action=v201.Action.FIRMWARE_STATUS_NOTIFICATION,
    unhandled=v201.unhandled,
    rpc_code=v201.rpc_code,  # 2.1 spells the codes as 2.0.1 does
    clean=v201.strip_custom_data,
    payloads=v21.PAYLOADS,
    ocpp21_frames=True,
)

DIALECTS = {d.version: d for d in (V16, V201, V21)}
VERSIONS = tuple(DIALECTS)
