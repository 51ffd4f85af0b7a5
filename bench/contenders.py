"""The four measurements, each one run on a fresh, empty slot file on the benchmark's disk.

* `agent`: the real daemon (a ChargerRig process) updating through a real CSMS and firmware
  server; the time runs from the CALLRESULT `Accepted` to the CSMS receiving `InstallRebooting`,
  so it covers download + hash + write + fsyncs, signature check and the O_DIRECT read-back.
* `floor`: `dd if=/dev/zero of=<slot> bs=1M count=N conv=fsync`, what the disk alone costs.
* `floor_rw`: the same `dd`, then `dd if=<slot> of=/dev/null bs=1M iflag=direct`: what the disk
  alone costs for the two things the agent must do to it, write the image and read it back
  past the page cache. Not a target of the issue: it shows how much of the `floor` budget the
  read-back itself takes on this disk.
* `peers`: what EVerest and most peers do: `curl -o file`, `openssl dgst -sha256 -verify`,
  `dd if=file of=<slot> conv=fsync`, timed as one pipeline from the same server.
* `resume`: the agent again, with the server cutting the connection at 90 %: bytes served in
  total minus the image size is what the resume fetched twice.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from ocpp.v16 import call

from agent.config import CsmsConfig, FirmwareConfig
from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import AgentProcess, ChargerRig, Firmware
from agent.firmware.signature import sign_digest
from bench.procwatch import ProcWatch, allocated

MiB = 1 << 20
CONTENDERS = ("agent", "floor", "floor_rw", "peers", "resume")
CUT_AT = 0.9
SETTLE = 1.0  # seconds of quiet before each measurement
PHASES = ("Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting")


@dataclasses.dataclass(frozen=True)
class Image:
    path: str  # on the firmware server
    data: bytes
    digest: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @classmethod
    def random(cls, size: int) -> Image:
        data = os.urandom(size)  # incompressible, like a real image
        return cls(f"/fw/bench-{size}.bin", data, hashlib.sha256(data).digest())


class Bench:
    """One CSMS and one firmware server for the whole run; a fresh charger per measurement."""

    def __init__(self, workdir: Path, csms: TestCsms, server: FirmwareHttpServer) -> None:
        self.workdir = workdir
        self.csms = csms
        self.server = server
        self._count = 0
        self.ping_interval = _default(CsmsConfig, "ping_interval")
        self.checkpoint_bytes = _default(FirmwareConfig, "checkpoint_bytes")

    def _fresh_dir(self, kind: str) -> Path:
        self._count += 1
        path = self.workdir / f"{self._count:03d}-{kind}"
        path.mkdir(parents=True)
        os.sync()  # dirty pages of the previous measurement are not charged to this one
        time.sleep(SETTLE)  # nor, as far as can be, the write-back the host still does
        return path

    def run(self, kind: str, image: Image) -> dict[str, Any]:
        if kind == "agent":
            return self.agent(image)
        if kind == "floor":
            return self.floor(image)
        if kind == "floor_rw":
            return self.floor(image, read_back=True)
        if kind == "peers":
            return self.peers(image)
        if kind == "resume":
            return self.agent(image, cut_at=CUT_AT)
        raise ValueError(f"unknown contender {kind!r}")

    # --- the agent ----------------------------------------------------------------------------

    def agent(self, image: Image, cut_at: float | None = None) -> dict[str, Any]:
        base = self._fresh_dir("resume" if cut_at else "agent")
        cp = f"CP-BENCH-{self._count}"
        rig = ChargerRig(base, self.csms.url, cp, slot_size=2 * image.size + (64 << 20))
        config = rig.config(
            # The product's defaults where the rig has test settings. With the rig's
            # ping_interval = 0 the daemon's main loop never sleeps (daemon.py: next_ping
            # stays in the past when pings are off) and takes the GIL from the download.
            csms={"ping_interval": self.ping_interval},
            firmware={
                # the product's default cadence, not the rig's 1 MiB test setting
                "checkpoint_bytes": self.checkpoint_bytes,
                "default_retry_interval": 1,
            },
        )
        firmware = Firmware(
            self.server.url(image.path), b"", sign_digest(image.digest, rig.signer.key_pem)
        )
        agent = AgentProcess(config).start()
        assert agent.proc is not None
        served_before = len(self.server.requests)
        try:
            self.csms.wait_for(lambda: self._from(cp, "BootNotification"), 30, "boot")
            watch = ProcWatch(agent.proc.pid, rig.state).start()
            if cut_at is not None:
                self.server.faults.cut_after = int(image.size * cut_at)
            request = call.SignedUpdateFirmware(**rig.request(firmware, self._count))
            reply = self.csms.call(cp, request, timeout=30)
            accepted = time.monotonic()
            if reply.status != "Accepted":
                raise RuntimeError(f"agent answered {reply.status}:\n{agent.log}")
            timeout = 120 + image.size / (5 * MiB)
            rebooting = self.csms.wait_for(
                lambda: (
                    self._status(cp, "InstallRebooting")
                    or self._status(cp, *FAILURES)
                    or self._dead(agent)
                ),
                timeout,
                "InstallRebooting",
            )
            if rebooting.payload["status"] != "InstallRebooting":
                raise RuntimeError(f"update failed: {rebooting.payload}:\n{agent.log}")
            rig.wait_reboot_request(agent)
            watched = watch.stop()
        finally:
            self.server.faults.cut_after = None
            agent.stop()
        log = agent.log
        requests = self.server.requests[served_before:]
        served = sum(r.sent for r in requests)
        slot = rig.slots["B"]
        slot_size = slot.stat().st_size  # pre-allocated; InstallRebooting means it read back
        if slot_size < image.size:
            raise RuntimeError(f"slot B has {slot_size} bytes, the image {image.size}")
        times = {s: m.at for s in PHASES if (m := self._status(cp, s)) is not None}
        excluded = {str(slot), str(agent.log_path)}
        others = {p: n for p, n in watched.files.items() if p not in excluded}
        outside_state = {p: n for p, n in others.items() if not p.startswith(str(rig.state))}
        big = max(MiB, image.size // 2) if image.size > 2 * MiB else image.size // 2
        result: dict[str, Any] = {
            "seconds": round(times["InstallRebooting"] - accepted, 3),
            "phases_s": _phases(accepted, times),
            "peak_rss_kib": watched.hwm_kib,
            "rss_before_request_kib": watched.rss_start_kib,
            "rss_max_sampled_kib": watched.rss_max_kib,
            "cpu_s": watched.cpu_s,
            "extra_disk_bytes": watched.state_growth_peak + sum(outside_state.values()),
            "staging_copies": sum(1 for n in others.values() if n >= big),
            "files_written": sorted(others),
            "read_back": _read_back_method(log),
            "served_bytes": served,
            "requests": [
                {"status": r.status, "range": r.header("Range"), "sent": r.sent} for r in requests
            ],
        }
        if cut_at is not None:
            result["cut_after"] = int(image.size * cut_at)
            result["refetched_bytes"] = served - image.size
        shutil.rmtree(base)
        return result

    def _from(self, cp: str, action: str) -> list[Any]:
        return [m for m in self.csms.messages(action) if m.charge_point_id == cp]

    def _status(self, cp: str, *statuses: str) -> Any:
        for m in self._from(cp, "SignedFirmwareStatusNotification"):
            if m.payload["status"] in statuses:
                return m
        return None

    @staticmethod
    def _dead(agent: AgentProcess) -> None:
        if agent.proc is not None and agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited {agent.proc.returncode}:\n{agent.log}")

    # --- the floor and the peers --------------------------------------------------------------

    def floor(self, image: Image, read_back: bool = False) -> dict[str, Any]:
        base = self._fresh_dir("floor_rw" if read_back else "floor")
        slot = base / "B.img"
        count = -(-image.size // MiB)
        started = time.monotonic()
        _run("dd", "if=/dev/zero", f"of={slot}", "bs=1M", f"count={count}", "conv=fsync")
        written = time.monotonic()
        result: dict[str, Any] = {"seconds": round(written - started, 3)}
        if read_back:
            _run("dd", f"if={slot}", "of=/dev/null", "bs=1M", "iflag=direct")
            done = time.monotonic()
            phases = {"write": round(written - started, 3), "read": round(done - written, 3)}
            result = {"seconds": round(done - started, 3), "phases_s": phases}
        shutil.rmtree(base)
        return result

    def peers(self, image: Image) -> dict[str, Any]:
        base = self._fresh_dir("peers")
        rig_signer = ChargerRig(base / "pki", self.csms.url).signer
        public = rig_signer.cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (base / "pub.pem").write_bytes(public)
        signature = sign_digest(image.digest, rig_signer.key_pem)
        (base / "sig.bin").write_bytes(base64.b64decode(signature))
        download, slot = base / "download.bin", base / "B.img"
        url = self.server.url(image.path)
        steps: dict[str, float] = {}
        started = time.monotonic()
        _run("curl", "-sS", "--fail", "-o", str(download), url)
        steps["curl"] = time.monotonic()
        verified = _run(
            "openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss",
            "-sigopt", "rsa_pss_saltlen:auto", "-verify", str(base / "pub.pem"),
            "-signature", str(base / "sig.bin"), str(download),
        )  # fmt: skip
        steps["openssl"] = time.monotonic()
        _run("dd", f"if={download}", f"of={slot}", "bs=1M", "conv=fsync")
        steps["dd"] = time.monotonic()
        if "Verified OK" not in verified:
            raise RuntimeError(f"openssl did not verify the image: {verified}")
        if slot.stat().st_size != image.size:
            raise RuntimeError("dd wrote a slot of the wrong size")
        phases, last = {}, started
        for name, at in steps.items():
            phases[name] = round(at - last, 3)
            last = at
        extra = allocated(download)
        shutil.rmtree(base)
        return {
            "seconds": round(steps["dd"] - started, 3),
            "phases_s": phases,
            "extra_disk_bytes": extra,  # the downloaded copy next to the slot
        }


FAILURES = (
    "DownloadFailed",
    "InvalidSignature",
    "InstallVerificationFailed",
    "InstallationFailed",
)


def _default(config: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(config) if f.name == name)


def _phases(accepted: float, times: dict[str, float]) -> dict[str, float]:
    """Seconds spent between successive statuses, from Accepted."""
    out, last, previous = {}, accepted, "Accepted"
    for status in PHASES:
        if status in times:
            out[f"{previous}->{status}"] = round(times[status] - last, 3)
            last, previous = times[status], status
    return out


def _read_back_method(log: str) -> str:
    if "read back with O_DIRECT" in log:
        return "O_DIRECT"
    if "read back after fsync + fadvise(DONTNEED)" in log:
        return "fsync + fadvise(DONTNEED)"
    return "unknown"


def _run(*argv: str) -> str:
    done = subprocess.run(
        [*argv, "status=none"] if argv[0] == "dd" else list(argv),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
