"""The values that flow through a run: an input row, and the outcome recorded for it.

Pure data, no I/O. Every other module speaks in these terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """How one input row ended. Written verbatim into the journal's ``outcome`` field."""

    OK = "ok"  # the cloud answered 2xx: the tag is on the image
    FAILED = "failed"  # a permanent answer (400, 403, 404, 413 without Retry-After, ...)
    GAVE_UP = "gave_up"  # retryable answers until --max-attempts ran out; retried on resume
    INVALID = "invalid"  # rejected locally, never sent


#: Outcomes a resumed run does not send again.
SETTLED = frozenset({Outcome.OK, Outcome.FAILED, Outcome.INVALID})


@dataclass(frozen=True, slots=True)
class Row:
    """One valid ``(image_id, tag)`` pair read from the input, with its line number.

    ``value`` is an IMS tag's value (``image_id,key,value`` input); None for a bare tag or key.
    With ``--api ims`` the ``tag`` is the tag's key.
    """

    line: int
    image_id: str
    tag: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that failed local validation; ``image_id``/``tag`` as given (None when absent)."""

    line: int
    image_id: str | None
    tag: str | None
    error: str
    value: str | None = None  # as given, when the input had a value column


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one row: exactly what becomes one journal line."""

    line: int
    image_id: str | None
    tag: str | None
    outcome: Outcome
    status: int | None = None
    attempts: int = 0
    error: str | None = None
    request_id: str | None = None
    at: float = 0.0  # wall-clock seconds since the epoch when the outcome was settled
    elapsed_ms: int = 0  # from the first attempt to the outcome, sleeps included
    op: str = "add"  # "add" or "remove"
    value: str | None = None  # the IMS tag value the row set (or removed), if it had one
    api: str = "glance"  # "glance" or "ims": which call the outcome is about
