"""The `ocpp-fw-agent` command: one function per subcommand, dispatched from a table.

Exit status: 0 success, 1 the operation failed or found a problem, 2 usage or configuration
error (one line per mistake on stderr, no traceback). Global options (-c, -v) are accepted
before or after the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def _checking_logs(args: argparse.Namespace) -> None:
    """The checks report through `problem:` lines; the modules' own warnings about the same
    files (a skipped root) are shown only with -v."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="ocpp-fw-agent: %(message)s",
    )


def _print_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every configuration mistake (exit 2), then the referenced files (exit 1 on a problem);
    with --deep, what the daemon can reach where it runs."""
    from agent.service import selfcheck

    _checking_logs(args)
    config = _load(args)
    backend = _backend(config)
    if not args.deep:
        problems = selfcheck.file_problems(config)
        print(json.dumps(config.effective(), indent=2))
        _print_problems(problems)
        return EXIT_FAILED if problems else EXIT_OK
    if not args.here and selfcheck.unit_installed():
        print(f"deep check inside the sandbox of {selfcheck.UNIT} (systemd-run)", flush=True)
        cli_args = ["-c", str(Path(args.config).resolve()), "check-config", "--deep", "--here"]
        done = selfcheck.in_unit_sandbox(cli_args)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode if done.returncode in (EXIT_OK, EXIT_USAGE) else EXIT_FAILED
    if not args.here:
        print("deep check in this process (no systemd, or the unit is not installed)")
    problems = selfcheck.problems(config, backend) + selfcheck.api_problems(config)
    _print_problems(problems)
    print(f"{len(problems)} problem(s)" if problems else "no problems: updates can run")
    return EXIT_FAILED if problems else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from agent.service import status

    state_dir = Path(args.state_dir) if args.state_dir else _load(args).state_dir
    document = status.read(state_dir)
    print(json.dumps(document, indent=2) if args.json else status.human(document))
    return EXIT_OK if document.get("running") else EXIT_FAILED


def cmd_slots(args: argparse.Namespace) -> int:
    """What the backend sees and every problem the daemon would refuse updates over."""
    from agent.service import selfcheck
    from agent.slots import describe, human

    _checking_logs(args)
    config = _load(args)
    backend = _backend(config)
    document = describe(backend)
    document["problems"] = selfcheck.problems(config, backend)
    print(json.dumps(document, indent=2) if args.json else human(document))
    return EXIT_FAILED if document["problems"] or document.get("error") else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    if args.sidecar:
        if args.ocpp != "1.6":
            print("ocpp-fw-agent: demo --sidecar speaks OCPP 1.6 only", file=sys.stderr)
            return EXIT_USAGE
        from agent.demo.sidecar_run import main as sidecar_main

        return sidecar_main(verbose=args.verbose)
    from agent.demo.run import main as demo_main

    return demo_main(verbose=args.verbose, ocpp=args.ocpp)


Command = Callable[[argparse.Namespace], int]


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-c and -v, on the main parser and again on each command (so `run -c FILE` works); a
    command's copy defaults to SUPPRESS so it never overrides one given before the command."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-c",
        "--config",
        help=f"configuration file (default {config_module.DEFAULT_PATH})",
        **({"default": str(config_module.DEFAULT_PATH)} if top else default),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging", **({} if top else default)
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(
        prog="ocpp-fw-agent",
        description="OCPP 1.6J secure firmware update agent for A/B charger controllers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent.__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, Command] = {}

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        commands[name] = func
        command = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(command, top=False)
        return command

    add("run", cmd_run, "run the daemon in the foreground")
    check = add(
        "check-config",
        cmd_check_config,
        "validate the configuration, list every problem, print it with secrets masked",
    )
    check.add_argument(
        "--deep",
        action="store_true",
        help="also check the slots, boot environment, tools and roots where the daemon runs "
        "(inside the unit's sandbox when systemd runs the unit)",
    )
    check.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    status_parser = add("status", cmd_status, "show the daemon's state and the last update")
    status_parser.add_argument("--json", action="store_true", help="machine-readable output")
    status_parser.add_argument("--state-dir", help="read this state dir instead of the config's")
    slots_parser = add("slots", cmd_slots, "show what the boot-slot backend sees, and problems")
    slots_parser.add_argument("--json", action="store_true", help="machine-readable output")
    demo_parser = add(
        "demo", cmd_demo, "run the whole update on this machine: CSMS, server, agent, reboot"
    )
    demo_parser.add_argument(
        "--ocpp",
        choices=config_module.OCPP_VERSIONS,
        default="1.6",
        help="the OCPP version the agent and the CSMS speak (default 1.6)",
    )
    demo_parser.add_argument(
        "--sidecar",
        action="store_true",
        help="sidecar mode (1.6): a charge-point stack behind the agent charges during the update",
    )
    tools.add_commands(sub, add)
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"ocpp-fw-agent: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
