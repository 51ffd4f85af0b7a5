"""The `ocpp-fw-agent` command: one function per subcommand, dispatched from a table.

Exit status: 0 success, 1 the operation failed, 2 usage or configuration error (one line on
stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import agent
from agent import config as config_module
from agent import tools
from agent.config import ConfigError
from agent.slots.base import BootBackend

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _load(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(Path(args.config))


def _backend(config: config_module.Config) -> BootBackend:
    """The configured slot backend; its option mistakes are configuration errors (exit 2)."""
    from agent.slots import load_backend
    from agent.slots.unconfigured import UnconfiguredBackend

    slots = config.slots
    if not slots.devices:
        return UnconfiguredBackend()
    try:
        return load_backend(slots.backend, slots.devices, slots.options, state_dir=config.state_dir)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: [slots] {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service.daemon import Daemon
    from agent.service.systemd import setup_logging

    config = _load(args)
    backend = _backend(config)
    setup_logging(args.verbose)
    return Daemon(config, backend).run()


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    _backend(config)
    print(json.dumps(config.effective(), indent=2))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from agent.service import status

    state_dir = Path(args.state_dir) if args.state_dir else _load(args).state_dir
    document = status.read(state_dir)
    print(json.dumps(document, indent=2) if args.json else status.human(document))
    return EXIT_OK if document.get("running") else EXIT_FAILED


def cmd_slots(args: argparse.Namespace) -> int:
    from agent.slots import describe

    config = _load(args)
    document = describe(_backend(config))
    print(json.dumps(document, indent=2))
    return EXIT_FAILED if document.get("problems") or document.get("error") else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo.run import main as demo_main

    return demo_main(verbose=args.verbose)


Command = Callable[[argparse.Namespace], int]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(
        prog="ocpp-fw-agent",
        description="OCPP 1.6J secure firmware update agent for A/B charger controllers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent.__version__}")
    parser.add_argument(
        "-c",
        "--config",
        default=str(config_module.DEFAULT_PATH),
        help=f"configuration file (default {config_module.DEFAULT_PATH})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, Command] = {}

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        commands[name] = func
        return sub.add_parser(name, help=help_text, description=help_text)

    add("run", cmd_run, "run the daemon in the foreground")
    add("check-config", cmd_check_config, "validate the configuration and print it, secrets masked")
    status_parser = add("status", cmd_status, "show the running daemon's state")
    status_parser.add_argument("--json", action="store_true", help="machine-readable output")
    status_parser.add_argument("--state-dir", help="read this state dir instead of the config's")
    add("slots", cmd_slots, "show what the boot-slot backend sees")
    add("demo", cmd_demo, "run the whole update on this machine: CSMS, server, agent, reboot")
    tools.add_commands(sub, add)
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        print(f"ocpp-fw-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
