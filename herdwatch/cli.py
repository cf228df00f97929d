"""The `herdwatch` command. Each subcommand lives in herdwatch/commands/<name>.py and exposes
`register(subparsers)`; command modules import heavy libraries (Faust, scikit-learn, chDB) only inside
their run functions so `herdwatch --help` and the collector stay light."""

from __future__ import annotations

import argparse
import importlib
import sys

from contract.observability import setup_logging
from herdwatch import __version__
from herdwatch.terminal import SafeStream

# Order here is the order in `herdwatch --help`.
COMMANDS = [
    "kafka", "collect", "worker", "sink", "anomalies",
    "sql", "host", "hosts", "timeline",
    "simulate", "demo", "evaluate", "backtest", "lab",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herdwatch", description="herdwatch: does this host still look like its clone army?")
    parser.add_argument("--version", action="version", version=f"herdwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"herdwatch.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not isinstance(sys.stdout, SafeStream):
        sys.stdout = SafeStream(sys.stdout)  # type: ignore[assignment]
        sys.stderr = SafeStream(sys.stderr)  # type: ignore[assignment]
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
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
