"""Structured log fields (journal fields when logging goes to journald).

Passed with `logging`'s `extra=`; the journal handler in `service.systemd` turns them into
REQUEST_ID=, PHASE=, ... fields. Kept apart so the protocol and firmware layers can tag their
log lines without importing the service layer."""

from __future__ import annotations

from typing import Any


def fields(**values: Any) -> dict[str, Any]:
    """Journal fields for `extra=`: upper-case names, None values left out."""
    return {key.upper(): value for key, value in values.items() if value is not None}
