"""Which time to believe when checking certificate validity.

Many charger controllers (a Raspberry Pi among them) have no battery-backed RTC and boot with a
clock far in the past until NTP or the CSMS sets it. A certificate check against such a clock
would call every certificate "not yet valid". The rule: the system clock is plausible when it is
not earlier than the agent's own release date (`agent.RELEASE_DATE`); otherwise the CSMS time
from the last BootNotification/Heartbeat (kept as an offset to the system clock) is used. If
neither is available there is no trustworthy time and the caller must refuse rather than guess.
Every reading says which clock decided, so techInfo and the log can tell.

A CSMS time that cannot be right is not taken (`CsmsTimeOffset.propose`, the local API's
`boot_accepted`, which any member of the API's group may call): one before the release date
(no CSMS can be earlier than the software it talks to; believed, it would make a certificate
that expired before the release look valid), or more than `MAX_AHEAD` after the later of the
system clock and the release date (a certificate not yet valid, or every certificate expired).
A believed time that moves the offset by more than `LARGE_JUMP` is logged.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import threading
import time
from collections.abc import Callable

from agent import RELEASE_DATE
from agent.firmware.errors import UntrustedTime

LOG = logging.getLogger(__name__)
MAX_AHEAD = datetime.timedelta(days=20 * 365)  # a charger's service life, and then some
LARGE_JUMP = 3600.0  # seconds: an offset that moves more is logged


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

    def propose(
        self,
        csms_time: datetime.datetime,
        source: str,
        *,
        not_before: datetime.datetime = RELEASE_DATE,
    ) -> str | None:
        """Record `csms_time` unless it cannot be right; then return why (nothing changes).
        `source` names who sent it, for the log."""
        system_now = self._system()
        problem = implausible(csms_time, system_now, not_before)
        if problem is not None:
            LOG.warning("trusted clock: %s refused: %s", source, problem)
            return problem
        with self._lock:
            before = self._offset
            self._offset = csms_time.timestamp() - system_now
            moved = self._offset - (before if before is not None else 0.0)
        if abs(moved) > LARGE_JUMP:
            what = "the last CSMS time" if before is not None else "the system clock"
            LOG.warning(
                "trusted clock: %s %s is %s from %s (used for certificate checks while the "
                "system clock is before %s)",
                source,
                _text(csms_time),
                _span(moved),
                what,
                not_before.date(),
            )
        return None

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


def implausible(
    csms_time: datetime.datetime, system_now: float, not_before: datetime.datetime = RELEASE_DATE
) -> str | None:
    """Why a CSMS time cannot be right (None: it may be)."""
    if csms_time.tzinfo is None:
        return "the time has no UTC offset"
    if csms_time < not_before:
        return f"{_text(csms_time)} is before the agent's release date {not_before.date()}"
    ceiling = max(_utc(system_now), not_before) + MAX_AHEAD
    if csms_time > ceiling:
        return (
            f"{_text(csms_time)} is more than {MAX_AHEAD.days // 365} years after the system "
            f"clock (or the release date, if later): after {_text(ceiling)}"
        )
    return None


def _text(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    value = abs(seconds)
    if value >= 2 * 86400 * 365:
        return f"{sign}{value / (86400 * 365.25):.1f} years"
    if value >= 2 * 86400:
        return f"{sign}{value / 86400:.1f} days"
    return f"{sign}{value / 3600:.1f} hours"


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
