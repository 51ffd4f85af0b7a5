"""Crash-safe persistence for small state files (job, journal, outbox, schedules).

Every write goes to a temporary file in the same directory, is fsynced, renamed over the target
and the directory is fsynced, so after a power cut a reader sees either the old or the new
content, never a torn mix. JSON documents carry a format version; an unreadable or torn file is
reported as such so the caller can take its safe path instead of crashing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from agent import crashpoints


class StateFileError(Exception):
    """A state file exists but cannot be used (torn, not JSON, wrong format version)."""


class StateWriteError(OSError):
    """A state file could not be written durably (a full or read-only state dir). A reader
    still sees a whole document, most likely the old one; callers decide what that stops."""


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path, data: bytes, mode: int = 0o600, *, update_step: bool = True
) -> None:
    """Replace `path` with `data` atomically and durably (temp file, fsync, rename, fsync dir).

    `update_step`: this write is a step of the update's transaction (a crash point in tests);
    the published status, rewritten on a timer, is not."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateWriteError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if update_step:
        crashpoints.reached(f"write {path.name}")


def atomic_write_json(
    path: Path, document: dict[str, Any], mode: int = 0o600, *, update_step: bool = True
) -> None:
    """Write a JSON document atomically; keys are kept in insertion order for readable diffs."""
    data = json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
    atomic_write_bytes(path, data, mode, update_step=update_step)


def read_json(path: Path, version: int | None = None) -> dict[str, Any] | None:
    """Read a JSON document written by `atomic_write_json`.

    Returns None when the file does not exist. Raises StateFileError when it exists but is not
    a JSON object, or when `version` is given and the document's "version" differs.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise StateFileError(f"{path}: expected a JSON object")
    if version is not None and document.get("version") != version:
        raise StateFileError(
            f"{path}: format version {document.get('version')!r}, expected {version}"
        )
    return document
