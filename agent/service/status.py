"""The daemon's published status (`ocpp-fw-agent status`), a JSON file in the state dir.

The daemon rewrites it atomically when something a person would want to see changes, at most
once a second for progress; `status` reads it and checks that the writer is still alive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from agent.durable import StateFileError, atomic_write_json, read_json

FILENAME = "status.json"


def publish(state_dir: Path, status: dict[str, Any]) -> None:
    document = {"version": 1, "pid": os.getpid(), "updated": time.time(), **status}
    atomic_write_json(state_dir / FILENAME, document, mode=0o644, update_step=False)


def read(state_dir: Path) -> dict[str, Any]:
    """The last published status, with `running` telling whether the daemon is still alive."""
    try:
        document = read_json(state_dir / FILENAME, version=1)
    except StateFileError as exc:
        return {"running": False, "error": str(exc)}
    if document is None:
        return {"running": False, "error": f"no status in {state_dir} (daemon never ran?)"}
    document["running"] = _alive(document.get("pid"))
    return document


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


def human(document: dict[str, Any]) -> str:
    """A few lines for a person at the charger's console."""
    if "error" in document and not document.get("running"):
        return f"not running: {document['error']}"
    lines = [
        f"daemon:       {'running' if document['running'] else 'not running'} "
        f"(pid {document.get('pid')})",
        f"csms:         {document.get('connection', '?')}, "
        f"registration {document.get('registration', '?')}",
        f"queued:       {document.get('queued', 0)} message(s)",
    ]
    job = document.get("job")
    if job:
        lines.append(f"update:       request {job.get('request_id')}: {job.get('phase')}")
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
