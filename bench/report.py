"""Medians, spreads, ratios and the issue's targets; the table printed at the end."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

MiB = 1 << 20

# Issue 3, "Benchmark (not a test)".
TARGET_VS_FLOOR = 1.25
TARGET_VS_PEERS = 0.6
TARGET_RSS_KIB = 48 * 1024
TARGET_RSS_GROWTH_KIB = 4 * 1024  # "not growing with image size": at most this between sizes
TARGET_EXTRA_DISK = 1 * MiB  # the job's state files only; no copy of the image
REFETCH_SHARE, REFETCH_SLACK = 0.10, 4 * MiB


def size_label(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def spread(values: Sequence[float]) -> dict[str, float]:
    median = statistics.median(values)
    return {
        "median": round(median, 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "spread_pct": round(100 * (max(values) - min(values)) / median, 1) if median else 0.0,
    }


def summarise(size: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per contender: the runs and their time statistics; then the per-size targets."""
    out: dict[str, Any] = {"size_bytes": size, "contenders": {}}
    for kind, results in runs.items():
        if not results:
            continue
        entry: dict[str, Any] = {
            "runs": results,
            "seconds": spread([r["seconds"] for r in results]),
        }
        entry["mib_per_s"] = round(size / MiB / entry["seconds"]["median"], 1)
        if kind in ("agent", "resume"):
            entry["peak_rss_kib_max"] = max(r["peak_rss_kib"] for r in results)
            entry["extra_disk_bytes_max"] = max(r["extra_disk_bytes"] for r in results)
            entry["staging_copies_max"] = max(r["staging_copies"] for r in results)
            entry["read_back"] = sorted({r["read_back"] for r in results})
        if kind == "resume":
            entry["refetched_bytes_max"] = max(r["refetched_bytes"] for r in results)
        out["contenders"][kind] = entry
    out["targets"] = _targets(size, out["contenders"])
    return out


def _check(name: str, value: float | None, limit: float, unit: str = "") -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"target": name, "value": value, "limit": limit, "unit": unit, "pass": ok}


def _targets(size: int, contenders: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    agent = contenders.get("agent")
    if agent is None:
        return checks
    median = agent["seconds"]["median"]
    if "floor" in contenders:
        ratio = round(median / contenders["floor"]["seconds"]["median"], 2)
        checks.append(_check("agent / floor (incl. read-back)", ratio, TARGET_VS_FLOOR, "x"))
    if "peers" in contenders:
        ratio = round(median / contenders["peers"]["seconds"]["median"], 2)
        checks.append(_check("agent / peers' pipeline", ratio, TARGET_VS_PEERS, "x"))
    rss = max(agent["peak_rss_kib_max"], contenders.get("resume", agent)["peak_rss_kib_max"])
    checks.append(_check("peak RSS", rss, TARGET_RSS_KIB, "KiB"))
    extra = agent["extra_disk_bytes_max"]
    checks.append(_check("extra disk", extra, TARGET_EXTRA_DISK, "B"))
    checks.append(_check("staging copies", agent["staging_copies_max"], 0))
    if "resume" in contenders:
        limit = int(REFETCH_SHARE * size + REFETCH_SLACK)
        refetched = contenders["resume"]["refetched_bytes_max"]
        checks.append(_check("refetched after a cut at 90%", refetched, limit, "B"))
    return checks


def context(contenders: dict[str, Any]) -> list[str]:
    """Ratios that are not targets but explain them: what the read-back costs the disk."""
    medians = {kind: c["seconds"]["median"] for kind, c in contenders.items()}
    lines = []
    if "floor_rw" in medians and "floor" in medians and medians["floor"]:
        lines.append(
            f"disk write + O_DIRECT read-back / write alone: "
            f"{medians['floor_rw'] / medians['floor']:.2f}x"
        )
    if "floor_rw" in medians and "agent" in medians and medians["floor_rw"]:
        lines.append(
            f"agent / disk write + read-back: {medians['agent'] / medians['floor_rw']:.2f}x"
        )
    return lines


def rss_growth(sizes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Peak RSS of the largest image minus that of the smallest."""
    with_agent = [s for s in sizes if "agent" in s["contenders"]]
    if len(with_agent) < 2:
        return None
    small, large = with_agent[0], with_agent[-1]
    growth = (
        large["contenders"]["agent"]["peak_rss_kib_max"]
        - small["contenders"]["agent"]["peak_rss_kib_max"]
    )
    return _check(
        f"peak RSS growth {size_label(small['size_bytes'])} -> {size_label(large['size_bytes'])}",
        growth,
        TARGET_RSS_GROWTH_KIB,
        "KiB",
    )


def table(document: dict[str, Any]) -> str:
    lines = []
    head = f"{'size':>5}  {'contender':<8} {'median s':>9} {'min-max s':>15} {'spread':>7} "
    head += f"{'MiB/s':>7}  {'peak RSS':>9}  notes"
    lines.append(head)
    lines.append("-" * len(head))
    for entry in document["sizes"]:
        label = size_label(entry["size_bytes"])
        for kind, c in entry["contenders"].items():
            s = c["seconds"]
            rss = f"{c['peak_rss_kib_max'] / 1024:.1f} MiB" if "peak_rss_kib_max" in c else ""
            notes = _notes(kind, c)
            lines.append(
                f"{label:>5}  {kind:<8} {s['median']:>9.3f} "
                f"{s['min']:>7.3f}-{s['max']:<7.3f} {s['spread_pct']:>6.1f}% "
                f"{c['mib_per_s']:>7.1f}  {rss:>9}  {notes}"
            )
        lines.append("")
    lines.append("targets (issue 3):")
    for entry in document["sizes"]:
        label = size_label(entry["size_bytes"])
        for check in entry["targets"]:
            lines.append(f"  {label:>5}  {_check_line(check)}")
    if document.get("rss_growth"):
        lines.append(f"  {'all':>5}  {_check_line(document['rss_growth'])}")
    explained = [
        f"  {size_label(entry['size_bytes']):>5}  {line}"
        for entry in document["sizes"]
        for line in context(entry["contenders"])
    ]
    if explained:
        lines.append("context (not targets):")
        lines.extend(explained)
    return "\n".join(lines)


def _notes(kind: str, c: dict[str, Any]) -> str:
    first = c["runs"][0]
    if kind == "agent":
        return (
            f"read-back {'/'.join(c['read_back'])}, extra disk {c['extra_disk_bytes_max']} B, "
            f"staging copies {c['staging_copies_max']}"
        )
    if kind == "resume":
        return f"refetched {c['refetched_bytes_max']} B after a cut at {first['cut_after']} B"
    if kind == "floor_rw":
        phases = ", ".join(f"{k} {v:.2f}" for k, v in first["phases_s"].items())
        return f"first run: {phases}"
    if kind == "peers":
        phases = ", ".join(f"{k} {v:.2f}" for k, v in first["phases_s"].items())
        return f"first run: {phases}; extra disk {first['extra_disk_bytes']} B"
    return ""


def _check_line(check: dict[str, Any]) -> str:
    verdict = "PASS" if check["pass"] else "MISS"
    value, limit, unit = check["value"], check["limit"], check["unit"]
    text = f"{verdict}  {check['target']}: {value}{unit} (target <= {limit}{unit})"
    if not check["pass"] and isinstance(value, int | float) and limit:
        text += f", over by {100 * (value - limit) / limit:.0f}%"
    return text
