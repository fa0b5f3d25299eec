"""Logging set-up (structlog): JSON lines for cron and files, readable lines on a terminal.

Only the CLI calls :func:`configure`. Every event passes :class:`SecretScrubber` last before
rendering, so even a secret that slipped into an event by mistake (a server echoing a token in
an error message, say) is printed as ``<redacted>``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from bulktag.auth.redact import redact_urls, scrub
from bulktag.text import without_controls

if TYPE_CHECKING:
    from bulktag.errors import BulktagError


class SecretScrubber:
    """A structlog processor that removes registered secret values, and the userinfo of any
    URL (``http://admin:PW@host``), from every string."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret:
            self.secrets.add(secret)

    def __call__(
        self, logger: Any, name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self.clean(value)
        return event

    def clean(self, text: str) -> str:
        """``text`` fit to print: no registered secret, no URL userinfo, no control character
        but tabs and newlines (:func:`bulktag.text.without_controls`)."""
        return without_controls(redact_urls(scrub(text, self.secrets) if self.secrets else text))


SCRUBBER = SecretScrubber()

CLEAR_LINE = "\r\x1b[K"  # to the line's start, and wipe it: a terminal's status line


class StatusAwareWriter:
    """Writes log lines to stderr; on a terminal, clears the live status line first."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self._stream = stream
        self._prefix = CLEAR_LINE if tty else ""

    def msg(self, message: str) -> None:
        try:
            self._stream.write(self._prefix + message + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # nobody reads stderr any more (`| head`): the journal still records all

    log = debug = info = warning = warn = error = critical = exception = msg


def wants_json(log_format: str, stream: TextIO) -> bool:
    if log_format == "auto":
        return not stream.isatty()
    return log_format == "json"


def configure(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    as_json = wants_json(log_format, stream)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty(), pad_event_to=0)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SCRUBBER,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_: StatusAwareWriter(stream, stream.isatty() and not as_json),
        cache_logger_on_first_use=False,
    )


def refusal_line(error: BulktagError, prog: str = "bulktag") -> str:
    """What the operator reads of a command that could not do its work; with the error's
    ``exit_code`` and ``event`` it is all a command's entry point needs to end (cli, verify).
    Scrubbed: a message may quote a URL or a server's words."""
    return f"{prog}: error: {SCRUBBER.clean(str(error))}{error.hint}"


def error_line(
    stream: TextIO, message: str, *, as_json: bool, exit_code: int = 2, **fields: Any
) -> None:
    """One line that ends the program before (or instead of) a run: a usage or configuration
    error, a held lock, a cloud to try again later.

    On a terminal it is the human line itself (``bulktag: error: …``). In JSON mode it is a
    JSON object like every other log line, the human line its ``message`` field, so that a
    log shipper or ``jq`` reading a cron job's stderr never meets a line it cannot parse.
    ``fields`` (``exit_code``, ``event``) go into the object.
    """
    text = without_controls(scrub(message, SCRUBBER.secrets) if SCRUBBER.secrets else message)
    if as_json:
        record = {
            "event": "error",
            "level": "error",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "exit_code": exit_code,
            **fields,
            "message": text,
        }
        text = json.dumps(record)
    try:
        stream.write(text + "\n")
        stream.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # nobody reads stderr any more; the exit code still tells
