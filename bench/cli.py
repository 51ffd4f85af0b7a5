"""`python -m bench`: every size, every repetition, the contenders in rotating order."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from bench import machine, report
from bench.contenders import CONTENDERS, Bench, Image

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SIZES = "64M,1G"
DEFAULT_REPS = 5  # the benchmark VM's disk is noisy: the median of 5 rather than of 3
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = UNITS.get(text[-1:], 1)
    number = int(text[:-1] if text[-1:] in UNITS else text)
    size = number * factor
    if size <= 0 or size % (1 << 20):
        raise argparse.ArgumentTypeError(f"{text}: sizes are whole MiB (dd counts 1M blocks)")
    return size


def needed_disk(sizes: Sequence[int]) -> int:
    """The peers hold the download and the slot at once; the agent the slot and state."""
    return 2 * max(sizes) + (256 << 20)


def run_bench(
    sizes: Sequence[int],
    reps: int,
    workdir: Path,
    contenders: Sequence[str] = CONTENDERS,
    progress: bool = True,
    ping_interval: float | None = None,
    checkpoint_bytes: int | None = None,
) -> dict[str, Any]:
    """Measure; return the JSON document (without writing it)."""
    free = shutil.disk_usage(workdir).free
    if free < needed_disk(sizes):
        raise SystemExit(
            f"bench: {workdir} has {free >> 20} MiB free, needs {needed_disk(sizes) >> 20} MiB"
        )
    started = time.time()
    document: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(workdir),
        "settings": {
            "sizes": [report.size_label(s) for s in sizes],
            "repetitions": reps,
            "contenders": list(contenders),
            "workdir": str(workdir),
            "order": "rotated by one contender each repetition",
        },
        "sizes": [],
    }
    csms = TestCsms().start()
    try:
        with (
            FirmwareHttpServer() as server,
            tempfile.TemporaryDirectory(prefix="fw-bench-", dir=workdir) as scratch,
        ):
            bench = Bench(Path(scratch), csms, server)
            if ping_interval is not None:
                bench.ping_interval = ping_interval
            if checkpoint_bytes is not None:
                bench.checkpoint_bytes = checkpoint_bytes
            document["settings"]["agent_ping_interval"] = bench.ping_interval
            document["settings"]["agent_checkpoint_bytes"] = bench.checkpoint_bytes
            for size in sizes:
                document["sizes"].append(_one_size(bench, server, size, reps, contenders, progress))
    finally:
        csms.stop()
    document["rss_growth"] = report.rss_growth(document["sizes"])
    document["wall_seconds"] = round(time.time() - started, 1)
    return document


def _one_size(
    bench: Bench,
    server: FirmwareHttpServer,
    size: int,
    reps: int,
    contenders: Sequence[str],
    progress: bool,
) -> dict[str, Any]:
    image = Image.random(size)
    server.put(image.path, image.data)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in contenders}
    try:
        for rep in range(reps):
            shift = rep % len(contenders)
            for kind in [*contenders[shift:], *contenders[:shift]]:
                result = bench.run(kind, image)
                result["repetition"] = rep + 1
                runs[kind].append(result)
                if progress:
                    print(
                        f"  {report.size_label(size):>5} rep {rep + 1}/{reps} {kind:<7} "
                        f"{result['seconds']:8.3f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        del server.files[image.path]
    return report.summarise(size, runs)


def write(document: dict[str, Any], out: Path | None) -> Path:
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
        out = RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"comma-separated image sizes in whole MiB, e.g. 64M,1G (default {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--reps", type=int, default=DEFAULT_REPS, help=f"repetitions (default {DEFAULT_REPS})"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"subset of {','.join(CONTENDERS)} (default: all)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp"),
        help="where slots and downloads go: the disk being measured (default /var/tmp)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        help="the agent's csms.ping_interval (default: the product's default; 0 shows the "
        "busy main loop of a daemon with pings off)",
    )
    parser.add_argument(
        "--checkpoint-bytes",
        type=parse_size,
        help="the agent's firmware.checkpoint_bytes (default: the product's default)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/<date>.json)")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown or args.reps < 1 or not sizes:
        parser.error(f"bad --contenders/--reps/--sizes ({', '.join(sorted(unknown))})")
    logging.basicConfig(level=logging.WARNING)
    document = run_bench(
        sizes,
        args.reps,
        args.workdir,
        contenders,
        ping_interval=args.ping_interval,
        checkpoint_bytes=args.checkpoint_bytes,
    )
    path = write(document, args.out)
    info = document["machine"]
    print(
        f"\n{document['date']}  {info['cpu_model']}, {info['nproc']} CPUs, "
        f"kernel {info['kernel']}, disk {info['disk'].get('source')} "
        f"({info['disk'].get('fstype')})\n"
    )
    print(report.table(document))
    print(f"\nJSON: {path}  ({document['wall_seconds']} s)")
    return 0
