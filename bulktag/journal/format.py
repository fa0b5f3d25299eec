"""The journal's format, in one place: the resume keys, one record's line, and reading one
line back (:func:`parse`, used by resume, ``report`` and ``verify`` alike).

One JSON object per line. The fields, in this order (README, "The journal"): ``line``,
``image_id``, ``tag``, ``outcome``, ``status``, ``attempts``, ``error``, ``request_id``, ``at``,
``elapsed_ms``; then ``op`` only on removes, ``value`` and ``api`` only on IMS records.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TypeVar

from bulktag.model import Outcome, Result

_T = TypeVar("_T")

# ── keys ────────────────────────────────────────────────────────────────────────────────────


def fingerprint_bytes(data: bytes) -> int:
    """128 bits: no collision in any journal this tool will ever see.

    Two SipHash values (Python's own ``hash()`` of the bytes, and of the bytes and a NUL),
    which is keyed by a random key per process: fingerprints are comparable only within one
    process. That is all they need — the resume index is built from the journal's text by the
    run that uses it, and never stored. About half the cost of a 128-bit blake2b, and each
    resume computes one per journal record and per input row.

    The two values are joined as ``first << 64 ^ second``: the low 64 bits are the second
    (sign-extended, as ``hash()`` gives it) and the rest is the first, so different pairs of
    values give different ints — without masking either to 64 bits first, which would only
    add cost.
    """
    return hash(data) << 64 ^ hash(data + b"\x00")


def _fingerprint(text: str) -> int:
    return fingerprint_bytes(text.encode("utf-8", "surrogatepass"))


def add_key(image_id: str, tag: str) -> int:
    """The resume key of adding a Glance tag: the work of nearly every row, keyed for every
    row of a resume (admission calls it directly, without pair_key's or row_key's branches)."""
    return fingerprint_bytes(f"{image_id}\n{tag}".encode("utf-8", "surrogatepass"))


def pair_key(image_id: str, tag: str, op: str = "add") -> int:
    """The resume key of a pair: a 128-bit fingerprint (a tuple of strings takes more memory).

    Removing a tag is a different piece of work from adding it, so it has different keys.
    """
    if op == "add":
        return add_key(image_id, tag)
    return _fingerprint(f"\x00{op}\x00{image_id}\n{tag}")


def ims_key(image_id: str, key: str, op: str, value: str | None) -> int:
    """The resume key of IMS work: the image, the tag's key, the op and the value.

    Setting a key to a new value is new work; the same key and value again is not. A value of
    None (a bare key) is apart from the empty value. The ``ims`` prefix keeps these keys apart
    from Glance's, so a journal shared by both APIs never confuses Glance's tag ``env`` with
    IMS's key ``env``.
    """
    # JSON keeps the boundaries unambiguous whatever the strings hold (and None apart from "").
    return _fingerprint("\x00ims\x00" + json.dumps([op, image_id, key, value]))


def ims_slot(image_id: str, key: str) -> int:
    """Where an IMS tag lives, whatever its value or op: one key of one image.

    IMS keeps one value per key, so only the last settled word about a slot describes the
    image: the resume index counts as done only the latest ``ok`` value of each slot.
    """
    return _fingerprint("\x00ims-slot\x00" + json.dumps([image_id, key]))


def row_key(image_id: str, tag: str, op: str = "add", value: str | None = None,
            api: str = "glance") -> int:  # fmt: skip
    """The resume key of a row's work under either API."""
    if api == "ims":
        return ims_key(image_id, tag, op, value)
    return pair_key(image_id, tag, op)


def invalid_key(line: int, image_id: str | None, tag: str | None, value: str | None = None) -> int:
    """Invalid rows are keyed by line and content: the same row of the same file, once."""
    content = f"{tag}" if value is None else f"{tag}\x00{value}"
    return pair_key(f"\x00invalid\x00{line}\x00{image_id}", content)


def rival_key(image_id: str, tag: str, op: str) -> int:
    """The key of the other kind of work on a Glance pair: removing for an add, and back."""
    return pair_key(image_id, tag, "add" if op == "remove" else "remove")


# ── rendering ───────────────────────────────────────────────────────────────────────────────


class _TimeCache:
    """``format_time`` runs for every record, and records come a few per millisecond.

    The date-and-second part changes once a second: formatted once and reused (a datetime per
    record would be dear). And the last text is kept with the span of times well inside its
    millisecond (``low``, ``high``): a time in that span gets it back after two comparisons,
    far cheaper than the full path. The span stays 2 µs away from the millisecond's edges,
    more than a float's error up to 2100 (0.48 µs), so a time near an edge always takes the
    full path and the text is always exactly the full path's.

    One instance with slots, not class attributes: storing a class attribute also invalidates
    the interpreter's type caches, and the full path stores three.
    """

    __slots__ = ("high", "low", "prefix", "second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""
        self.low = self.high = 0.0
        self.text = ""


_TIME_CACHE = _TimeCache()
_MILLIS = [f"{ms:03d}Z" for ms in range(1000)]  # "000Z" … "999Z": a list index, not a format
_EDGE = 2e-6  # seconds kept clear of a millisecond's edges by the cached span


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-28T02:00:01.123Z``."""
    cache = _TIME_CACHE
    if cache.low < epoch < cache.high:
        return cache.text
    # Exactly as datetime.fromtimestamp does: round the fraction to the microsecond (so
    # float noise in epoch * 10^6 cannot tip a value), then show milliseconds truncated.
    fraction, whole = math.modf(epoch)
    micro = round(fraction * 1_000_000)
    second = int(whole)
    if micro >= 1_000_000:
        second += 1
        micro -= 1_000_000
    elif micro < 0:  # before 1970: modf's parts are both negative
        second -= 1
        micro += 1_000_000
    if second != cache.second:
        cache.prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        cache.second = second
    millis = micro // 1000
    text = cache.prefix + _MILLIS[millis]
    start = second + millis / 1000  # the millisecond [start, start + 1 ms) holds epoch
    cache.low, cache.high, cache.text = start + _EDGE, start + 0.001 - _EDGE, text
    return text


_OK = Outcome.OK
_quote = json.encoder.encode_basestring  # the C encoder when available: "…" with escapes


def render(result: Result) -> bytes:
    """One journal line (with its newline). Field order is part of the public format.

    Assembled by hand rather than through ``json.dumps`` of a dict: the fields and their types
    are fixed, and this is the sink's hot path (it makes a record much cheaper). Strings go
    through the json module's own encoder, so escaping is exactly json.dumps's.
    """
    # One unpacking, not thirteen attribute reads: render runs for every row.
    (
        line,
        image_id,
        tag,
        outcome,
        status,
        attempts,
        error,
        request_id,
        at,
        elapsed,
        op,
        value,
        api,
    ) = result
    # Inline conditionals, not a helper per field, for the same reason.
    text = (
        f'{{"line": {line}, '
        f'"image_id": {"null" if image_id is None else _quote(image_id)}, '
        f'"tag": {"null" if tag is None else _quote(tag)}, '
        f'"outcome": "{"ok" if outcome is _OK else outcome.value}", '
        f'"status": {"null" if status is None else status}, "attempts": {attempts}, '
        f'"error": {"null" if error is None else _quote(error)}, '
        f'"request_id": {"null" if request_id is None else _quote(request_id)}, '
        f'"at": "{format_time(at)}", "elapsed_ms": {elapsed}'
    )
    if op != "add":  # add records keep the original format; other ops say what they did
        text += f', "op": {_quote(op)}'
    if value is not None:  # IMS key/value rows only: Glance records are unchanged
        text += f', "value": {_quote(value)}'
    if api != "glance":
        text += f', "api": {_quote(api)}'
    # A lone surrogate (an undecodable byte in a server's header) becomes a \uDCxx escape.
    return (text + "}\n").encode("utf-8", "backslashreplace")


# ── reading one line back ───────────────────────────────────────────────────────────────────

OPS = ("add", "remove")
APIS = ("glance", "ims")


class Record(Result):
    """One journal line, read back: the :class:`~bulktag.model.Result` it was rendered from,
    with ``at`` to the millisecond and 0 for a field the line lacks (``line``, ``at``). Every
    field has the type bulktag writes; a line that breaks that is not a record (:func:`parse`
    gives None), for resume, report and verify alike."""

    __slots__ = ()

    @property
    def key(self) -> int:
        """The resume key of the record's work (as Admission keys an input row)."""
        if self.outcome is Outcome.INVALID:
            return invalid_key(self.line or 0, self.image_id, self.tag, self.value)
        return row_key(self.image_id or "", self.tag or "", self.op, self.value, self.api)

    @property
    def slot(self) -> int | None:
        """An IMS record's slot (image and key), whose latest ok value is the one done."""
        if self.api != "ims" or self.outcome is Outcome.INVALID:
            return None
        return ims_slot(self.image_id or "", self.tag or "")

    @property
    def rival(self) -> int | None:
        """A Glance record's other kind of work on the same pair (add ↔ remove)."""
        if self.api != "glance" or self.outcome is Outcome.INVALID:
            return None
        return rival_key(self.image_id or "", self.tag or "", self.op)

    @property
    def error_class(self) -> str:
        return error_class(self.status, self.error, self.outcome)


def parse(raw: bytes | str) -> Record | None:
    """The record on one journal line, or None if the line is not one bulktag wrote."""
    try:
        data = json.loads(raw, strict=False)  # raw control characters: as the fast lanes
        record = Record(
            line=_optional(data.get("line"), int) or 0,
            image_id=_optional(data["image_id"], str),
            tag=_optional(data["tag"], str),
            outcome=Outcome(data["outcome"]),
            status=_optional(data.get("status"), int),
            attempts=_optional(data.get("attempts"), int) or 0,
            error=_optional(data.get("error"), str),
            request_id=_optional(data.get("request_id"), str),
            at=_epoch(data.get("at")),
            elapsed_ms=_optional(data.get("elapsed_ms"), int) or 0,
            op=_one_of(data.get("op"), OPS),
            value=_optional(data.get("value"), str),
            api=_one_of(data.get("api"), APIS),
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if record.outcome is not Outcome.INVALID and (record.image_id is None or record.tag is None):
        return None  # only an invalid row may lack its pair
    return record


def _optional(value: object, kind: type[_T]) -> _T | None:
    """``value`` if it is a ``kind`` or None; anything else makes the line not a record (so a
    status written as the text "204" is not read as settled by one reader and not by another)."""
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}")
    return value


def _epoch(at: object) -> float:
    """The seconds since the epoch an ``at`` field names; 0 when it names none, as an ``at``
    that is not a time never made a line unreadable."""
    if not isinstance(at, str):
        return 0.0
    try:
        return datetime.fromisoformat(at).timestamp()
    except ValueError:
        return 0.0


def _one_of(value: object, choices: tuple[str, ...]) -> str:
    """One of ``choices``; absent means the first (older records have no ``op``/``api``)."""
    if value is None:
        return choices[0]
    if value not in choices:
        raise ValueError(f"expected one of {choices}")
    return str(value)


def error_class(status: int | None, error: str | None, outcome: Outcome | None = None) -> str:
    """What kind of answer (or failure) this was, the one label the run summary, the metrics
    and the report all use: ``invalid`` for a row never sent, the HTTP status when there was
    one, else the transport error's kind — its text before the first colon (``connect``,
    ``connection error``), and ``timeout`` whatever the duration."""
    if outcome is Outcome.INVALID:
        return "invalid"
    if status is not None:
        return str(status)
    text = error or "error"  # the transport always says why; this is only a fallback
    if text.startswith("timeout"):  # "timeout after 30 s": the duration is not the class
        return "timeout"
    return text.split(":", 1)[0]
