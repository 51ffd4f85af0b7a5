"""Hardening of the local API against its own group (any member may connect): what a host
may move, hold or keep, bounded. The agent is a real process in API mode behind its Unix
socket, except where the server's own bound is the subject."""

from __future__ import annotations

import datetime

import pytest

from agent import RELEASE_DATE
from agent.firmware.clock import MAX_AHEAD, CsmsTimeOffset, TrustedClock
from tests.api.client import ApiCallError
from tests.api.conftest import ApiCharger, wait_for


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- boot_accepted.csms_time: the trusted clock's offset is bounded --------------------------


def test_boot_accepted_refuses_a_csms_time_that_cannot_be_right(charger: ApiCharger) -> None:
    """A time before the release date or past MAX_AHEAD is answered bad_params and logged;
    a plausible one far from the system clock is taken, and the jump is logged."""
    agent = charger.start()
    client = charger.connect()
    now = datetime.datetime.now(datetime.UTC)

    early = rfc3339(RELEASE_DATE - datetime.timedelta(days=400))
    with pytest.raises(ApiCallError) as refused:
        client.call("boot_accepted", csms_time=early)
    assert refused.value.code == "bad_params"
    assert "before the agent's release date" in str(refused.value)
    assert "nothing was recorded" in str(refused.value)

    late = rfc3339(now + MAX_AHEAD + datetime.timedelta(days=30))
    with pytest.raises(ApiCallError) as refused:
        client.call("boot_accepted", csms_time=late)
    assert refused.value.code == "bad_params" and "years after" in str(refused.value)
    wait_for(lambda: agent.log.count("boot_accepted csms_time refused") == 2, "the refusals")
    assert "the host's BootNotification was accepted" not in agent.log  # nothing happened

    far = rfc3339(now + datetime.timedelta(days=3 * 365))
    assert client.call("boot_accepted", csms_time=far) == {}
    wait_for(lambda: "from the system clock" in agent.log, "the jump's log line")
    assert f"csms_time {far} is +3.0 years from the system clock" in agent.log
    assert client.call("boot_accepted", csms_time=rfc3339(now)) == {}
    wait_for(lambda: "from the last CSMS time" in agent.log, "the jump back's log line")


def test_a_refused_csms_time_leaves_the_trusted_clock_where_it_was() -> None:
    """A charger whose system clock is before the release date (no RTC) checks certificates
    by the CSMS time: a refused one does not move it."""
    system = (RELEASE_DATE - datetime.timedelta(days=20000)).timestamp()  # 1972-ish
    offset = CsmsTimeOffset(system=lambda: system)
    clock = TrustedClock(offset, system=lambda: system)
    good = RELEASE_DATE + datetime.timedelta(days=10)
    assert offset.propose(good, "test") is None
    assert clock.read().now == good
    for wrong in (RELEASE_DATE - datetime.timedelta(days=1), good + MAX_AHEAD):
        assert offset.propose(wrong, "test") is not None
        assert clock.read().now == good
