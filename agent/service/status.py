"""The daemon's published status (`ocpp-fw-agent status`), a JSON file in the state dir.

The daemon rewrites it atomically when something a person would want to see changes, at most
once a second for progress; `status` reads it and checks that the writer is still alive.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any

from agent.durable import StateFileError, atomic_write_json, read_json

FILENAME = "status.json"
JOB_FILE = "job.json"  # agent.firmware.job's file, read here without importing the updater


def publish(state_dir: Path, status: dict[str, Any]) -> None:
    document = {"version": 1, "pid": os.getpid(), "updated": time.time(), **status}
    atomic_write_json(state_dir / FILENAME, document, mode=0o644, update_step=False)


def read(state_dir: Path) -> dict[str, Any]:
    """The last published status, with `running` telling whether the daemon is still alive,
    and the last finished update (`last_update`) from the saved job."""
    try:
        document = read_json(state_dir / FILENAME, version=1)
    except StateFileError as exc:
        document = {"running": False, "error": str(exc)}
    else:
        if document is None:
            document = {"running": False, "error": f"no status in {state_dir} (daemon never ran?)"}
        else:
            document["running"] = _alive(document.get("pid"))
    last = last_update(state_dir)
    if last:
        document["last_update"] = last
    return document


def last_update(state_dir: Path) -> dict[str, Any] | None:
    """The last finished update from the saved job (read only): outcome, slot, when.

    Read here rather than published, so `status` tells it even when the daemon is stopped."""
    try:
        document = read_json(state_dir / JOB_FILE)
    except (StateFileError, OSError):
        return None
    job = document.get("job") if document else None
    if not isinstance(job, dict) or job.get("phase") != "finished" or not job.get("outcome"):
        return None
    history = job.get("history") or []
    when = history[-1][2] if history and len(history[-1]) > 2 else None
    out = {"request_id": job.get("request_id"), "outcome": job["outcome"]}
    slot = job.get("target") if job["outcome"] == "Installed" else job.get("source")
    out["slot"] = slot
    if isinstance(when, int | float):
        out["when"] = _utc(when)
    if job.get("error"):
        out["error"] = job["error"]
    return out


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _outcome_line(last: dict[str, Any]) -> str:
    """`request 2: Installed, committed slot B at 2026-11-29 21:30:00 UTC`."""
    when = f" at {last['when']}" if last.get("when") else ""
    if last["outcome"] == "Installed":
        return f"request {last['request_id']}: Installed, committed slot {last['slot']}{when}"
    running = f", slot {last['slot']} kept" if last.get("slot") else ""
    return f"request {last['request_id']}: {last['outcome']}{when}{running}"


def human(document: dict[str, Any]) -> str:
    """A few lines for a person at the charger's console."""
    last = document.get("last_update")
    if "error" in document and not document.get("running"):
        lines = [f"not running: {document['error']}"]
        if last:
            lines.append(f"last update:  {_outcome_line(last)}")
        return "\n".join(lines)
    lines = [
        f"daemon:       {'running' if document['running'] else 'not running'} "
        f"(pid {document.get('pid')})",
        f"csms:         {document.get('connection', '?')}, "
        f"registration {document.get('registration', '?')}",
        f"queued:       {document.get('queued', 0)} message(s)",
    ]
    if document.get("connection_error") and document.get("connection") != "connected":
        lines.append(f"last error:   {document['connection_error']}")
    job = document.get("job")
    if (
        job
        and job.get("phase") == "finished"
        and last
        and last["request_id"] == job.get("request_id")
    ):
        lines.append(f"update:       {_outcome_line(last)}")
        if job.get("error"):
            lines.append(f"reason:       {job['error']}")
    elif job:
        outcome = f", {job['outcome']}" if job.get("outcome") else ""
        lines.append(f"update:       request {job.get('request_id')}: {job.get('phase')}{outcome}")
        if job.get("waiting_for"):
            lines.append(f"waiting for:  {job['waiting_for']}")
        done, total = job.get("bytes_done"), job.get("bytes_total")
        if done is not None:
            size = f"{done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")
            speed, eta = job.get("speed"), job.get("eta")
            extra = f", {speed / 1e6:.2f} MB/s" if speed else ""
            extra += f", ETA {eta:.0f} s" if eta is not None else ""
            lines.append(f"progress:     {size}{extra}")
        if job.get("error"):
            lines.append(f"last error:   {job['error']}")
    else:
        lines.append("update:       none")
    if document.get("revocation"):
        lines.append(f"revocation:   {document['revocation']}")
    problems = document.get("problems")
    if problems:
        lines.extend(f"problem:      {p}" for p in problems)
    return "\n".join(lines)
