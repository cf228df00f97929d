"""What the CLI prints cannot drive the terminal: control characters and bidirectional overrides that
arrive in data (host ids, command lines, config values, query results) are shown escaped.

Everything the CLI writes goes through `SafeStream`, installed once in `herdwatch.cli.main`, so no
command can forget it. Newlines and tabs pass; every other C0/C1 control character, DEL and the Unicode
bidirectional controls become visible escapes such as `\\x1b` or `\\u202e`.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape_control(text: str) -> str:
    """The text with terminal control characters and bidi overrides escaped (newlines and tabs kept)."""
    return UNSAFE.sub(_escape, text)


class SafeStream:
    """A text stream wrapper that escapes what `escape_control` escapes on every write."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(escape_control(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
