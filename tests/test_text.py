"""Text from elsewhere reaches a terminal with its control characters escaped: the helpers,
and the two ways out that carry such text (a log line, a one-line error)."""

from __future__ import annotations

import io

import structlog
from hypothesis import given
from hypothesis import strategies as st

from bulktag.logs import configure, error_line
from bulktag.text import escaped, without_controls


def _controls(text: str, *, but: str = "") -> list[str]:
    return [c for c in text if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) and c not in but]


@given(st.text())
def test_escaped_text_has_no_control_character_and_other_text_is_unchanged(text: str) -> None:
    assert [] == _controls(escaped(text))
    assert [] == _controls(without_controls(text), but="\t\n")
    if not _controls(text):
        assert text == escaped(text) == without_controls(text)


def test_each_control_character_is_shown_as_its_escape() -> None:
    assert "a\\tb\\nc\\rd\\x1b[2J\\x00\\x7f\\x9b" == escaped("a\tb\nc\rd\x1b[2J\x00\x7f\x9b")
    assert "a\tb\nc\\rd\\x1b" == without_controls("a\tb\nc\rd\x1b")


def test_a_console_log_line_shows_a_values_escape_escaped() -> None:
    stream = io.StringIO()
    configure("console", "info", stream)
    try:
        # No space in it: the renderer quotes (repr) only a value with spaces, else prints it
        # as it is.
        structlog.get_logger().warning("row_refused", error="bad\x1b]0;pwned\x07page")
    finally:
        structlog.reset_defaults()
    line = stream.getvalue()
    assert [] == _controls(line, but="\n")
    assert "error=bad\\x1b]0;pwned\\x07page" in line


def test_a_one_line_error_shows_an_escape_escaped() -> None:
    stream = io.StringIO()
    error_line(stream, "bulktag: error: the server said \x1b[31mno", as_json=False)
    assert "bulktag: error: the server said \\x1b[31mno\n" == stream.getvalue()
