"""What the numbers were measured on: CPU, cores, kernel, and the disk under the work dir."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _disk(path: Path) -> dict[str, Any]:
    """Device, filesystem and, for a block device, its model and scheduler."""
    info: dict[str, Any] = {}
    try:
        done = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        source, fstype, options = [*done.stdout.split(), "", "", ""][:3]
        info.update(source=source, fstype=fstype, options=options)
    except (OSError, subprocess.CalledProcessError):
        pass
    device = os.stat(path).st_dev
    sysfs = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    try:
        block = sysfs.resolve()
        disk = block if (block / "queue").exists() else block.parent
        info["block_device"] = disk.name
        for key, rel in (
            ("model", "device/model"),
            ("rotational", "queue/rotational"),
            ("scheduler", "queue/scheduler"),
        ):
            with_value = disk / rel
            if with_value.exists():
                info[key] = with_value.read_text().strip()
        size = disk / "size"
        if size.exists():
            info["size_gib"] = round(int(size.read_text()) * 512 / (1 << 30), 1)
    except OSError:
        pass
    usage = shutil.disk_usage(path)
    info["free_gib"] = round(usage.free / (1 << 30), 1)
    return info


def _version(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "missing"
    return (
        (done.stdout or done.stderr).splitlines()[0].strip() if done.stdout or done.stderr else ""
    )


def describe(workdir: Path) -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(memory / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "disk": _disk(workdir),
        "tools": {
            "curl": _version("curl", "--version"),
            "openssl": _version("openssl", "version"),
            "dd": _version("dd", "--version"),
        },
    }
