"""Security events that report a change already made (A04): their write may fail, the change
stays.

`Reporter.security_event` appends to the outbox and raises `StateWriteError` on ENOSPC/EIO. A
caller that lets it through after committing a change would answer Rejected (or CALLERROR) for
a change that was applied, or skip what must follow it (a reconnect with the new password, a
new network profile): a lock-out. The event is only a report: its failure is logged.
"""

from __future__ import annotations

import logging

from agent.durable import StateWriteError
from agent.firmware.reporting import Reporter

LOG = logging.getLogger(__name__)


def report(reporter: Reporter, event: str, why: str) -> None:
    """Queue the security event `event`; a failed write is logged, never raised."""
    try:
        reporter.security_event(event, why)
    except StateWriteError as exc:
        LOG.error("security event %s not queued (the change stands): %s", event, exc)
