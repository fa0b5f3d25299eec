"""Keep secrets out of reprs and messages.

Pure helpers. Every value object of the credentials layer builds its repr here, and every
message that quotes a remote server's words is scrubbed here, so there is one place to audit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

REDACTED = "<redacted>"

# Secrets shorter than this are not scrubbed from free text: replacing "a" everywhere would
# mangle the message and a one-letter secret cannot be protected by scrubbing anyway.
_MIN_SCRUB_LENGTH = 4


def redacted_repr(obj: Any, secret_fields: Iterable[str]) -> str:
    """``Cls(a='x', password=<redacted>)``: dataclass repr with secrets masked, Nones left out."""
    hidden = frozenset(secret_fields)
    parts = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None or not f.repr:
            continue
        shown = REDACTED if f.name in hidden else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret in ``text`` by ``<redacted>``."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SCRUB_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace so a remote message cannot break the one-line error format."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
