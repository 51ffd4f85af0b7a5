"""The benchmark's machinery on a 1 MiB image, once: every field the report relies on is there.

Not a timing test (nothing here asserts a speed); it keeps `make bench` from rotting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import cli, report
from bench.contenders import CONTENDERS

AGENT_FIELDS = {
    "seconds",
    "phases_s",
    "peak_rss_kib",
    "rss_before_request_kib",
    "rss_max_sampled_kib",
    "cpu_s",
    "extra_disk_bytes",
    "staging_copies",
    "files_written",
    "read_back",
    "served_bytes",
    "requests",
    "repetition",
}


def test_one_tiny_run_writes_every_field(tmp_path: Path):
    # The peers' pipeline needs curl and openssl (`make bench` installs them).
    tools = all(shutil.which(tool) for tool in ("curl", "openssl"))
    contenders = CONTENDERS if tools else tuple(c for c in CONTENDERS if c != "peers")
    document = cli.run_bench([1 << 20], 1, tmp_path, contenders, progress=False)
    path = cli.write(document, tmp_path / "out.json")
    loaded = json.loads(path.read_text())
    assert cli.parse_size("64M") == 64 << 20 and cli.parse_size("1G") == 1 << 30

    assert {"date", "machine", "settings", "sizes", "rss_growth", "wall_seconds"} <= set(loaded)
    assert {"nproc", "cpu_model", "kernel", "disk", "tools"} <= set(loaded["machine"])
    (entry,) = loaded["sizes"]
    assert entry["size_bytes"] == 1 << 20
    assert set(entry["contenders"]) == set(contenders)
    for kind, c in entry["contenders"].items():
        assert {"median", "min", "max", "spread_pct"} <= set(c["seconds"]), kind
        assert c["mib_per_s"] > 0 and len(c["runs"]) == 1
    agent = entry["contenders"]["agent"]
    assert set(agent["runs"][0]) >= AGENT_FIELDS
    assert agent["read_back"] in (["O_DIRECT"], ["fsync + fadvise(DONTNEED)"])
    assert agent["staging_copies_max"] == 0
    assert agent["runs"][0]["served_bytes"] == 1 << 20
    resume = entry["contenders"]["resume"]["runs"][0]
    assert {"cut_after", "refetched_bytes"} <= set(resume)
    assert resume["refetched_bytes"] == resume["served_bytes"] - (1 << 20) >= 0
    floor_rw = entry["contenders"]["floor_rw"]["runs"][0]
    assert set(floor_rw["phases_s"]) == {"write", "read"}
    assert floor_rw["seconds"] >= floor_rw["phases_s"]["read"]
    assert "agent / disk write + read-back" in report.table(loaded)
    targets = {t["target"] for t in entry["targets"]}
    assert {"peak RSS", "extra disk", "staging copies", "refetched after a cut at 90%"} <= targets
    assert "agent / floor (incl. read-back)" in targets
    if tools:
        assert "agent / peers' pipeline" in targets
        assert set(entry["contenders"]["peers"]["runs"][0]["phases_s"]) == {
            "curl",
            "openssl",
            "dd",
        }
    for check in entry["targets"]:
        assert {"value", "limit", "pass"} <= set(check)
    assert "agent" in report.table(loaded)
    assert not list(tmp_path.glob("fw-bench-*")), "scratch dir left behind"
