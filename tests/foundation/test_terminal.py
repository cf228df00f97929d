"""Data cannot drive the analyst's terminal: the CLI escapes control characters in everything it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from herdwatch.terminal import UNSAFE, escape_control

ROOT = Path(__file__).resolve().parents[2]


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_escaped_text_has_no_control_characters_and_keeps_the_rest(text: str) -> None:
    out = escape_control(text)
    assert not UNSAFE.search(out)
    if not UNSAFE.search(text):
        assert out == text


def test_known_terminal_attacks_are_shown_escaped() -> None:
    assert escape_control("\x1b[2J\x1b]0;owned\x07") == "\\x1b[2J\\x1b]0;owned\\x07"
    assert escape_control("host\u202eexe.sh") == "host\\u202eexe.sh"
    assert escape_control("a\tb\nc\x00") == "a\tb\nc\\x00"


def test_the_cli_escapes_what_any_command_prints() -> None:
    # argparse echoes the bad argument back in its error: the same path any printed value takes
    code = ("import sys; from herdwatch.cli import main; "
            "sys.exit(main(['sql', '--format', 'x\\x1b[31mred']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "\x1b" not in out.stdout + out.stderr
    assert "\\x1b[31mred" in out.stderr
