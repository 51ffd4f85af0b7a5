"""Which time to believe when checking certificate validity.

Many charger controllers (a Raspberry Pi among them) have no battery-backed RTC and boot with a
clock far in the past until NTP or the CSMS sets it. A certificate check against such a clock
would call every certificate "not yet valid". The rule: the system clock is plausible when it is
not earlier than the agent's own release date (`agent.RELEASE_DATE`); otherwise the CSMS time
from the last BootNotification/Heartbeat (kept as an offset to the system clock) is used. If
neither is available there is no trustworthy time and the caller must refuse rather than guess.
Every reading says which clock decided, so techInfo and the log can tell.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import threading
import time
from collections.abc import Callable

from agent import RELEASE_DATE
from agent.firmware.errors import UntrustedTime


class ClockSource(enum.StrEnum):
    SYSTEM = "system clock"
    CSMS = "CSMS time"


@dataclasses.dataclass(frozen=True)
class ClockReading:
    now: datetime.datetime  # timezone-aware UTC
    source: ClockSource


class CsmsTimeOffset:
    """The CSMS's idea of the time as an offset to the system clock (thread-safe).

    The OCPP session calls `record()` with `currentTime` from BootNotification.conf and
    `Heartbeat.conf`; `TrustedClock` calls the object to get the offset (None until recorded).
    """

    def __init__(self, system: Callable[[], float] = time.time) -> None:
        self._system = system
        self._offset: float | None = None
        self._lock = threading.Lock()

    def record(self, csms_time: datetime.datetime) -> None:
        if csms_time.tzinfo is None:
            raise ValueError("CSMS time must be timezone-aware")
        with self._lock:
            self._offset = csms_time.timestamp() - self._system()

    def __call__(self) -> float | None:
        with self._lock:
            return self._offset


class TrustedClock:
    """System time when plausible, else CSMS-derived time; raises `UntrustedTime` otherwise."""

    def __init__(
        self,
        csms_offset: Callable[[], float | None] = lambda: None,
        *,
        system: Callable[[], float] = time.time,
        not_before: datetime.datetime = RELEASE_DATE,
    ) -> None:
        self._csms_offset = csms_offset
        self._system = system
        self._not_before = not_before.timestamp()

    def read(self) -> ClockReading:
        system_now = self._system()
        if system_now >= self._not_before:
            return ClockReading(_utc(system_now), ClockSource.SYSTEM)
        offset = self._csms_offset()
        if offset is not None:
            return ClockReading(_utc(system_now + offset), ClockSource.CSMS)
        raise UntrustedTime(
            "no trustworthy time: system clock is earlier than the agent's release date "
            "and no CSMS time is known yet"
        )


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
