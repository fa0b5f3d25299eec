"""Keep secrets out of reprs and messages.

Pure helpers. Every value object of the credentials layer builds its repr here, and every
message that quotes a remote server's words is scrubbed here, so there is one place to audit.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import unquote

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


#: Characters of someone else's words (a server's error page, a library's exception chain)
#: that a message quotes: the gist, never so much that what bulktag says after it is buried.
QUOTE_LIMIT = 200


def one_line(text: str) -> str:
    """Collapse whitespace so no message can break the one-line error format. Never cut:
    bulktag's own words (the fix, where the settings came from) are what the operator acts on,
    and a whole message cut at 300 characters lost them behind a library's connection error.
    What it quotes is bounded instead (:func:`quoted`)."""
    return " ".join(text.split())


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Someone else's words, to go inside a message: on one line, at most ``limit``
    characters. Scrub secrets before: a cut through a secret leaves a part scrubbing misses."""
    flat = one_line(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# scheme://userinfo@ inside free text (a log value, an aiohttp message quoting a URL): the
# userinfo ends at the first "@" before any "/", "?", "#" or space.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]+@")


def redact_url(url: str) -> str:
    """``http://admin:PW@host/x`` → ``http://<redacted>@host/x``: any userinfo hidden, with or
    without a scheme (a mistyped endpoint is quoted in its error message too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" not in authority:
        return url
    host = authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{REDACTED}@{host}{rest[end:]}"


def redact_urls(text: str) -> str:
    """Every ``scheme://userinfo@`` in ``text`` with the userinfo replaced by ``<redacted>``."""
    return _URL_USERINFO.sub(rf"\g<1>{REDACTED}@", text) if "://" in text else text


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The secrets a URL's userinfo carries, to scrub from what a server sends back: the user
    and password as given and decoded, and the Basic credentials an HTTP client makes of them."""
    if not url or "@" not in url:
        return ()
    authority = url.partition("://")[2] or url
    authority = authority.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" not in authority:
        return ()
    userinfo = authority.rsplit("@", 1)[0]
    password = userinfo.partition(":")[2]
    decoded = unquote(userinfo)
    basic = base64.b64encode(decoded.encode("utf-8", "surrogatepass")).decode("ascii")
    found = (userinfo, decoded, password, unquote(password), basic)
    return tuple(dict.fromkeys(s for s in found if len(s) >= _MIN_SCRUB_LENGTH))


def control_character(value: str) -> str | None:
    """The first control character of ``value`` (a CR from a CRLF env file, say), shown as
    ``\\r``; None if there is none. Such a character cannot go into an HTTP header."""
    for char in value:
        if char < " " or char == "\x7f":
            return repr(char)[1:-1]
    return None


def control_character_problem(spec: Any) -> str | None:
    """Why the credentials dataclass ``spec`` cannot be used as given, or None: a field holding
    a control character (a CR left by an env file with Windows line ends, typically). The value
    itself is never quoted: it may be a secret."""
    for name, value in _named_values(spec):
        char = control_character(value) if isinstance(value, str) else None
        if char is not None:
            what = name.replace("_", " ")
            return (
                f"the {what} contains a control character ({char}); was it read from a file "
                "with Windows (CRLF) line ends? Remove the character and run again"
            )
    return None


def _named_values(spec: Any) -> Iterator[tuple[str, object]]:
    """The dataclass's fields, and the options of its auth plugin when it has a resolved cloud
    (openstacksdk's ``region.config["auth"]``: username, password, secrets…)."""
    for f in fields(spec):
        yield f.name, getattr(spec, f.name)
    region = getattr(spec, "region", None)
    config = getattr(region, "config", None)
    auth = config.get("auth") if isinstance(config, Mapping) else None
    if isinstance(auth, Mapping):
        yield from auth.items()
