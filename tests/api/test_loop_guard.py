"""The daemon's loop outlives a failing event (review #4): one event's unexpected exception is
logged with its traceback and the next events are handled; a configuration error still ends
the daemon, as at start. The daemon runs in this process (API mode, the rig's file slots)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import config as config_module
from agent.config import ConfigError
from agent.demo.rig import ChargerRig
from agent.durable import StateWriteError
from agent.service.daemon import Daemon
from agent.slots.filemodel import FileModelBackend
from tests.api.conftest import GROUP, wait_for


class Loop:
    """A Daemon's loop on a thread of this process, noting how `run` ended."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.ended: list[BaseException | int] = []
        self.thread = threading.Thread(target=self._run, name="daemon-loop", daemon=True)

    def _run(self) -> None:
        try:
            self.ended.append(self.daemon.run())
        except BaseException as exc:
            self.ended.append(exc)


@pytest.fixture
def loop(rig: ChargerRig, sockdir: Path) -> Iterator[Loop]:
    socket_path = sockdir / "api.sock"
    path = rig.config(csms={"mode": "api"}, api={"socket": str(socket_path), "group": str(GROUP)})
    config = config_module.load(path)
    backend = FileModelBackend(config.slots.devices, config.slots.options, config.state_dir)
    running = Loop(Daemon(config, backend))
    running.thread.start()
    wait_for(socket_path.exists, "the agent's socket")
    yield running
    running.daemon.stop()
    running.thread.join(60)


def test_an_events_unexpected_exception_is_logged_and_the_loop_goes_on(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    """E.g. a security event that cannot be written (a full disk) in an after-action."""

    def failing() -> None:
        raise StateWriteError(28, "cannot write outbox.json: No space left on device")

    handled = threading.Event()
    with caplog.at_level(logging.ERROR, logger="agent.service.daemon"):
        loop.daemon.post(failing)
        loop.daemon.post(handled.set)
        wait_for(lambda: handled.is_set() or loop.ended, "the next event, or the loop's end")
    assert loop.ended == [] and handled.is_set()
    [record] = [r for r in caplog.records if "going on" in r.getMessage()]
    assert record.exc_info is not None and isinstance(record.exc_info[1], StateWriteError)


def test_a_configuration_error_still_ends_the_daemon(loop: Loop) -> None:
    def misconfigured() -> None:
        raise ConfigError("agent.toml: [sidecar] listen: cannot listen")

    loop.daemon.post(misconfigured)
    loop.thread.join()
    [ended] = loop.ended
    assert isinstance(ended, ConfigError)
