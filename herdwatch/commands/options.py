"""Options several commands share: times (one syntax everywhere, storage/when.py) and output formats."""

from __future__ import annotations

import argparse

FORMATS = ["table", "json", "csv"]
TIME_METAVAR = "TIME"
"""Every option that takes a time uses this metavar; herdwatch.cli finds them by it (`--since -30d`)."""
TIME_HELP = "ISO-8601 (UTC if no zone), a date, epoch seconds/ms, now, yesterday, or relative: -30d, -2h, '2h ago'"


def time_value(text: str) -> str:
    """argparse type of a time option: checked now (a bad time is a usage error naming the forms), kept as
    text so a relative time is taken relative to when the query runs."""
    from storage.when import parse_when

    try:
        parse_when(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_time_arg(p: argparse.ArgumentParser, *flags: str, default: str | None, help: str) -> None:
    p.add_argument(*flags, default=default, type=time_value, metavar=TIME_METAVAR, help=f"{help}. {TIME_HELP}")


def add_output_args(p: argparse.ArgumentParser, formats: list[str] | None = None) -> None:
    p.add_argument("--format", choices=formats or FORMATS, default="table", help="output format")
    p.add_argument("--max-width", type=int, default=80, help="truncate table cells to this width")
