"""Watches the agent process through /proc while it updates: memory, CPU, files it writes.

Sampled every `interval` seconds in a thread: VmRSS/VmHWM, user+system CPU, every regular file
the process holds open for writing (with the largest size seen), and the space allocated in the
agent's state dir. That is how "extra disk" is measured: a staging copy of the image would show
up as a large written file other than the slot, or as a growing state dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def allocated(path: Path) -> int:
    """Bytes allocated on disk under `path` (a file or a directory tree)."""
    try:
        if path.is_file():
            return path.stat().st_blocks * 512
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
        return total
    except OSError:
        return 0


def status_kib(pid: int, field: str) -> int | None:
    """A `VmXxx:` line of /proc/<pid>/status, in KiB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


def written_files(pid: int) -> dict[str, int]:
    """Regular files `pid` holds open for writing -> their allocated size now."""
    found: dict[str, int] = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if not target.startswith("/"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as info:
                flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
            if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
                continue
            stat = os.stat(target)
        except (OSError, StopIteration, ValueError):
            continue
        if os.path.isfile(target):
            found[target] = stat.st_blocks * 512
    return found


@dataclasses.dataclass
class Watched:
    rss_start_kib: int = 0
    rss_max_kib: int = 0
    hwm_kib: int = 0  # VmHWM at the end: the process's peak, start-up included
    cpu_s: float = 0.0  # CPU the process used while watched
    state_growth_peak: int = 0  # bytes allocated in the state dir above the start
    files: dict[str, int] = dataclasses.field(default_factory=dict)  # written -> peak bytes
    samples: int = 0


class ProcWatch:
    def __init__(self, pid: int, state_dir: Path, interval: float = 0.05) -> None:
        self.pid = pid
        self.state_dir = state_dir
        self.interval = interval
        self.result = Watched()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-procwatch", daemon=True)
        self._cpu0 = 0.0
        self._state0 = 0

    def start(self) -> ProcWatch:
        self.result.rss_start_kib = status_kib(self.pid, "VmRSS") or 0
        self._cpu0 = cpu_seconds(self.pid) or 0.0
        self._state0 = allocated(self.state_dir)
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        result = self.result
        rss = status_kib(self.pid, "VmRSS")
        if rss is not None:
            result.rss_max_kib = max(result.rss_max_kib, rss)
        for path, size in written_files(self.pid).items():
            result.files[path] = max(result.files.get(path, 0), size)
        growth = allocated(self.state_dir) - self._state0
        result.state_growth_peak = max(result.state_growth_peak, growth)
        result.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> Watched:
        """Stop sampling; the process must still be alive for VmHWM and CPU."""
        self._stop.set()
        self._thread.join()
        self._sample()
        self.result.hwm_kib = status_kib(self.pid, "VmHWM") or 0
        cpu = cpu_seconds(self.pid)
        self.result.cpu_s = round((cpu or 0.0) - self._cpu0, 3)
        return self.result
