"""The values that flow through a run: what a run does (Op, Api), an input row, what one
attempt got back (Answer), and the outcome recorded for it.

Pure data, no I/O. Every other module speaks in these terms.

Rows and results are named tuples rather than frozen dataclasses: just as immutable, and a
run makes one of each per input row — a frozen dataclass's ``__init__`` calls
``object.__setattr__`` per field, which makes it several times dearer to build than a tuple.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import NamedTuple


class Outcome(StrEnum):
    """How one input row ended. Written verbatim into the journal's ``outcome`` field."""

    OK = "ok"  # the cloud answered 2xx: the tag is on the image
    FAILED = "failed"  # a permanent answer (400, 403, 404, 413 without Retry-After, ...)
    GAVE_UP = "gave_up"  # retryable answers until --max-attempts ran out; retried on resume
    INVALID = "invalid"  # rejected locally, never sent


#: Outcomes a resumed run does not send again.
SETTLED = frozenset({Outcome.OK, Outcome.FAILED, Outcome.INVALID})


#: One tag of a request: the tag (IMS: the key) and its value (None: a bare tag or key).
Tag = tuple[str, str | None]


class Op(Enum):
    """What a run does to each pair. Each op keeps its own resume keys in the journal."""

    ADD = "add"
    REMOVE = "remove"


class Api(Enum):
    """Which call a run makes: Glance's native tag call, or IMS's key/value tag API."""

    GLANCE = "glance"
    IMS = "ims"


#: ``built(Result, fields)``: what ``Result(*fields)`` makes, from all the fields in order,
#: without the Python function a named tuple's constructor is (``tuple.__new__`` builds it in
#: C, several times cheaper): for the few places that make one per request. No defaults and
#: no checks, so every field must be there.
built = tuple.__new__


class Answer(NamedTuple):
    """What one attempt got back: an HTTP status, or a transport error (status None)."""

    status: int | None
    retry_after: str | None = None  # the raw Retry-After header
    request_id: str | None = None
    error: str | None = None  # transport error ("connect: …", "timeout") or the server's message
    body: bytes = b""  # read only for errors and the calls that need it (see transport.py)
    # A 404 to removing a tag that says the tag is not on the image (not that the image is
    # unknown): set by the transport, which reads the words (glance_404) or the image.
    tag_absent: bool = False


class Row(NamedTuple):
    """One valid ``(image_id, tag)`` pair read from the input, with its line number.

    ``value`` is an IMS tag's value (``image_id,key,value`` input); None for a bare tag or key.
    With ``--api ims`` the ``tag`` is the tag's key.
    """

    line: int
    image_id: str
    tag: str
    value: str | None = None


class InvalidRow(NamedTuple):
    """A row that failed local validation; ``image_id``/``tag`` as given (None when absent)."""

    line: int
    image_id: str | None
    tag: str | None
    error: str
    value: str | None = None  # as given, when the input had a value column


class Result(NamedTuple):
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
