"""The `herdwatch` command. Each subcommand lives in herdwatch/commands/<name>.py and exposes
`register(subparsers)`; command modules import heavy libraries (Faust, scikit-learn, chDB) only inside
their run functions so `herdwatch --help` and the collector stay light."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from contract.observability import setup_logging
from herdwatch import __version__
from herdwatch.terminal import SafeStream

# Order here is the order in `herdwatch --help`.
COMMANDS = [
    "kafka", "collect", "worker", "sink", "anomalies",
    "sql", "host", "hosts", "timeline", "rollouts", "hardening",
    "simulate", "demo", "evaluate", "backtest", "lab",
]


def build_parser(commands: list[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herdwatch", description="herdwatch: does this host still look like its clone army?")
    parser.add_argument("--version", action="version", version=f"herdwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands:
        importlib.import_module(f"herdwatch.commands.{name}").register(sub)
    return parser


def commands_for(argv: list[str]) -> list[str]:
    """`collect` alone when it is the command: the other command modules import pydantic (settings), which
    would cost the host agent ~23 MB of memory."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return ["collect"] if first == "collect" else COMMANDS


def time_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings of every option, in every command, that takes a time (metavar TIME)."""
    from herdwatch.commands.options import TIME_METAVAR

    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= time_options(sub)
        elif action.metavar == TIME_METAVAR:
            found.update(action.option_strings)
    return found


_LEADING_MINUS_TIME = re.compile(r"^-\d+(?:\.\d+)?\s*[A-Za-z]+(?:\s+ago)?$")


def join_time_values(argv: list[str], options: set[str]) -> list[str]:
    """`--since -30d` as `--since=-30d`: argparse takes a value with a leading minus for an option
    ("expected one argument"); joined, every time option of every command accepts it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return out + argv[i:]
        if token in options and i + 1 < len(argv) and _LEADING_MINUS_TIME.match(argv[i + 1]):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    if not isinstance(sys.stdout, SafeStream):
        sys.stdout = SafeStream(sys.stdout)  # type: ignore[assignment]
        sys.stderr = SafeStream(sys.stderr)  # type: ignore[assignment]
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(commands_for(argv))
    args = parser.parse_args(join_time_values(argv, time_options(parser)))
    try:
        setup_logging(args.verbose)
    except ValueError as e:  # HERDWATCH_LOG_FORMAT
        print(f"herdwatch: error: {e}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a clear one-line error; -v shows the traceback
        if args.verbose:
            raise
        print(f"herdwatch {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
