"""Text from elsewhere made fit for a terminal: an input file's fields, a server's words, a
journal's records. Their control characters are shown escaped, never written as they are: a
tab shows as ``\\t``, not as a gap in a quoted field, and an ESC or a C1 CSI from a file or an
error page never reaches the operator's terminal as a command (colours, a cleared screen, a
rewritten line).

Pure.
"""

from __future__ import annotations

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# C0, DEL and C1: every code point a terminal may act on rather than show.
_ESCAPES = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}") for code in (*range(0x20), *range(0x7F, 0xA0))
}
_ESCAPES_BUT_LINES = {code: text for code, text in _ESCAPES.items() if chr(code) not in "\t\n"}


def escaped(text: str) -> str:
    """Every control character escaped: a field quoted inside one line of a message."""
    return text.translate(_ESCAPES)


def without_controls(text: str) -> str:
    """Control characters escaped but tabs and newlines: a log value or a report line, where
    a traceback keeps its lines."""
    return text.translate(_ESCAPES_BUT_LINES)
