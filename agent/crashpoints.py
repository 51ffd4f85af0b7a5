"""Test-only power-cut points: every durable step of an update can be made the last one.

Each durable step (a state file replaced, the slot fsynced, a bootloader environment written,
the reboot about to run) calls `reached(name)`. Normally that does nothing. The crash-point
tests set `OCPP_FW_AGENT_TEST_CRASH_AT=k` to make the process kill itself with SIGKILL right
after its k-th step (as a power cut would leave it: what was fsynced is there, nothing else ran),
or, given a step's name instead of a number, after the first step of that name; and
`OCPP_FW_AGENT_TEST_CRASH_LOG=file` to list the steps of a run, so that every k is tried.
The process writes the step it dies at to `<CRASH_LOG>.last` first, so a test can prove the
cut came exactly where it asked.

`hold(name, cancel)` makes a step slow on demand: with `OCPP_FW_AGENT_TEST_HOLD=name:FILE` the
step creates FILE and waits while FILE exists, or until `cancel` is set. The cancel tests use
it to catch a job inside its read-back or its arming, as a slow medium or bootloader would.
"""

from __future__ import annotations

import os
import signal
import threading

CRASH_AT_ENV = "OCPP_FW_AGENT_TEST_CRASH_AT"
CRASH_LOG_ENV = "OCPP_FW_AGENT_TEST_CRASH_LOG"
HOLD_ENV = "OCPP_FW_AGENT_TEST_HOLD"

_crash_spec = os.environ.get(CRASH_AT_ENV, "0") or "0"
_crash_at = int(_crash_spec) if _crash_spec.isdigit() else -1  # -1: by name
_crash_name = _crash_spec if _crash_at == -1 else None
_log = os.environ.get(CRASH_LOG_ENV)
_count = 0
_lock = threading.Lock()
_held: set[str] = set()


def reached(step: str) -> None:
    """A durable step is complete. Dies here when the test asked for this step."""
    if not _crash_at and not _log:
        return
    global _count
    with _lock:
        _count += 1
        if _log:
            with open(_log, "a", encoding="utf-8") as log:
                log.write(f"{_count} {step}\n")
        if _count == _crash_at or step == _crash_name:
            if _log:
                with open(_log + ".last", "w", encoding="utf-8") as last:
                    last.write(f"{_count} {step}\n")
                    last.flush()
                    os.fsync(last.fileno())
            os.kill(os.getpid(), signal.SIGKILL)


def hold(step: str, cancel: threading.Event) -> None:
    """Wait here while the test's hold file exists (or until cancelled), if it asked."""
    spec = os.environ.get(HOLD_ENV)
    if not spec:
        return
    name, _, path = spec.partition(":")
    if name != step or not path or step in _held:
        return
    _held.add(step)  # once per process
    with open(path, "a", encoding="utf-8"):
        pass
    while os.path.exists(path) and not cancel.wait(0.05):
        pass
