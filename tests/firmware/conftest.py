"""Fixtures for the firmware I/O tests: a generated manufacturer PKI, images, real servers."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent.demo import pki as fwpki
from agent.firmware.fetch import Fetcher, FetchSettings
from tests.firmware.fwservers import FirmwareFtpServer, FirmwareHttpServer


@pytest.fixture(scope="session")
def rsa_root() -> fwpki.Issued:
    return fwpki.issue("Manufacturer Root RSA", fwpki.rsa_key(2048, 0), ca=True)


@pytest.fixture(scope="session")
def ec_root() -> fwpki.Issued:
    return fwpki.issue("Manufacturer Root EC", fwpki.ec_key("secp384r1", 0), ca=True)


@pytest.fixture(scope="session")
def rsa_signer(rsa_root: fwpki.Issued) -> fwpki.Issued:
    return fwpki.issue("Firmware Signing RSA", fwpki.rsa_key(2048, 1), rsa_root)


@pytest.fixture(scope="session")
def ec_signer(ec_root: fwpki.Issued) -> fwpki.Issued:
    return fwpki.issue("Firmware Signing EC", fwpki.ec_key("secp256r1", 1), ec_root)


@pytest.fixture(scope="session")
def image() -> bytes:
    """1 MiB + 123 bytes: not a multiple of any block or chunk size."""
    return hashlib.shake_256(b"firmware image").digest((1 << 20) + 123)


@pytest.fixture
def http_server() -> Iterator[FirmwareHttpServer]:
    with FirmwareHttpServer() as server:
        yield server


@pytest.fixture(scope="session")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA unknown to the system store, and a server certificate for localhost only."""
    folder = tmp_path_factory.mktemp("tls")
    ca = fwpki.issue("Test TLS CA", fwpki.ec_key("secp256r1", 7), ca=True)
    server = fwpki.issue("localhost", fwpki.ec_key("secp256r1", 8), ca, sans=("localhost",))
    by_ip = fwpki.issue("127.0.0.1", fwpki.ec_key("secp256r1", 9), ca, sans=("127.0.0.1",))
    (folder / "ip.pem").write_text(by_ip.pem)
    (folder / "ip.key").write_bytes(
        by_ip.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (folder / "ca.pem").write_text(ca.pem)
    (folder / "server.pem").write_text(server.pem)
    (folder / "server.key").write_bytes(
        server.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return {
        "ca": folder / "ca.pem",
        "cert": folder / "server.pem",
        "key": folder / "server.key",
        "ip_cert": folder / "ip.pem",
        "ip_key": folder / "ip.key",
    }


@pytest.fixture
def https_server(tls_pki: dict[str, Path]) -> Iterator[FirmwareHttpServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_pki["cert"], tls_pki["key"])
    with FirmwareHttpServer(tls=context) as server:
        yield server


FTP_USER = "fw-user"
FTP_PASSWORD = "p@ss:w/rd%secret"


@pytest.fixture
def ftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "ftproot"
    root.mkdir()
    return root


@pytest.fixture
def ftp_server(ftp_root: Path) -> Iterator[FirmwareFtpServer]:
    with FirmwareFtpServer(ftp_root, FTP_USER, FTP_PASSWORD, None) as server:
        yield server


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(
        FetchSettings(
            connect_timeout=5,
            stall_timeout=5,
            chunk_size=64 * 1024,
            allowed_hosts=("127.0.0.1", "localhost"),
        )
    ) as f:
        yield f


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mount: a real filesystem that refuses O_DIRECT (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting ramfs needs root: run the tests as root (make test does)")
    mountpoint = tmp_path / "ramfs"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "ramfs", "ramfs", str(mountpoint)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount ramfs: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB loop device backed by a file (needs root and losetup); detached afterwards."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root: run the tests as root (make test does)")
    backing = tmp_path / "slot.img"
    with open(backing, "wb") as stream:
        stream.truncate(2 << 20)
    try:
        done = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("losetup not installed: apt-get install mount (make deps does)")
    if done.returncode != 0:
        pytest.skip(f"no loop device: {done.stderr.strip()}")
    device = Path(done.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", str(device)], check=False)
