"""The results journal: one JSON object per line, one line per input row's outcome.

Three parts, in the order a run uses them:

* :func:`repair_torn_tail` — a run killed mid-write leaves a last line with no newline. It is
  cut off (and kept in ``<journal>.torn`` for the curious) so the next record never gets glued
  to it; every complete line before it stands.
* :class:`ResumeIndex` / :func:`load_index` — what earlier runs settled, so a resumed run skips
  it. Keys are 128-bit fingerprints of the pair, stored as ints in a set: about 80 bytes per
  settled pair instead of ~200 for a tuple of strings (measured in ``benchmarks/``). They
  are made afresh by every run from the journal's text, never stored.
* :class:`JournalWriter` — the single writer. Records are written with one ``write`` per batch
  as soon as the sink has no more in hand (so a ``kill -9`` loses at most what was not yet
  handed to the kernel), and ``fsync``-ed at most every ``fsync_interval`` seconds and at
  close (so a power cut loses at most that window; those rows are simply sent again — the
  PUT is idempotent).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from bulktag.lock import JournalLock
from bulktag.model import Outcome, Result


def fingerprint_bytes(data: bytes) -> int:
    """128 bits: no collision in any journal this tool will ever see.

    Two SipHash values (Python's own ``hash()`` of the bytes, and of the bytes and a NUL),
    which is keyed by a random key per process: fingerprints are comparable only within one
    process. That is all they need — the resume index is built from the journal's text by the
    run that uses it, and never stored. Half the cost of a 128-bit blake2b (0.43 against
    0.77 us a row key), and each resume computes one per journal record and per input row.

    The two values are joined as ``first << 64 ^ second``: the low 64 bits are the second
    (sign-extended, as ``hash()`` gives it) and the rest is the first, so different pairs of
    values give different ints — without masking either to 64 bits first (0.19 against
    0.24 us a key, timeit).
    """
    return hash(data) << 64 ^ hash(data + b"\x00")


def _fingerprint(text: str) -> int:
    return fingerprint_bytes(text.encode("utf-8", "surrogatepass"))


def pair_key(image_id: str, tag: str, op: str = "add") -> int:
    """The resume key of a pair: a 128-bit fingerprint (a tuple of strings costs 2.5× more).

    Removing a tag is a different piece of work from adding it, so it has different keys.
    """
    text = f"{image_id}\n{tag}" if op == "add" else f"\x00{op}\x00{image_id}\n{tag}"
    return _fingerprint(text)


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
    if op == "add":  # the common case, inlined: this runs for every input row
        return _fingerprint(f"{image_id}\n{tag}")
    return pair_key(image_id, tag, op)


def invalid_key(line: int, image_id: str | None, tag: str | None, value: str | None = None) -> int:
    """Invalid rows are keyed by line and content: the same row of the same file, once."""
    content = f"{tag}" if value is None else f"{tag}\x00{value}"
    return pair_key(f"\x00invalid\x00{line}\x00{image_id}", content)


# ── rendering ───────────────────────────────────────────────────────────────────────────────


class _TimeCache:
    """``format_time`` runs for every record, and records come a few per millisecond.

    The date-and-second part changes once a second: formatted once and reused (a datetime per
    record cost ~1.5 µs). And the last text is kept with the span of times well inside its
    millisecond (``low``, ``high``): a time in that span gets it back after two comparisons,
    where the full path costs ~5,000 instructions. The span stays 2 µs away from the
    millisecond's edges, more than a float's error up to 2100 (0.48 µs), so a time near
    an edge always takes the full path and the text is always exactly the full path's.
    """

    second = -1
    prefix = ""
    low = high = 0.0
    text = ""


_MILLIS = [f"{ms:03d}Z" for ms in range(1000)]  # "000Z" … "999Z": a list index, not a format
_EDGE = 2e-6  # seconds kept clear of a millisecond's edges by the cached span


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-28T02:00:01.123Z``."""
    cache = _TimeCache
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
    are fixed, and this is the sink's hot path (it halved the cost of a record). Strings go
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


# ── reading back ────────────────────────────────────────────────────────────────────────────


class JournalError(Exception):
    """The journal cannot be used (not a regular file, unreadable, unwritable)."""


def repair_torn_tail(path: Path) -> int:
    """Cut an unterminated last line off ``path``; return how many bytes were cut (0: none)."""
    with path.open("r+b") as journal:
        size = journal.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        journal.seek(size - 1)
        if journal.read(1) == b"\n":
            return 0
        keep = _end_of_last_complete_line(journal, size)
        journal.seek(keep)
        torn = journal.read()
        with path.with_name(path.name + ".torn").open("ab") as side:
            side.write(torn + b"\n")
        journal.truncate(keep)
        return size - keep


def _end_of_last_complete_line(journal: IO[bytes], size: int) -> int:
    """Offset just past the last newline (0 if none), scanning back in chunks."""
    position = size
    while position > 0:
        start = max(0, position - 65536)
        journal.seek(start)
        chunk = journal.read(position - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


@dataclass(slots=True)
class ResumeIndex:
    """Fingerprints of what is settled: ``ok`` and ``invalid`` rows, and ``failed`` ones apart
    (so that a later ``--retry-failed`` can send them again).

    The latest ``ok`` work on a *slot* is the only work done there, because the image holds
    what was done to it last. A Glance pair's slot holds two kinds of work, adding and
    removing the tag: after add, remove, a later add is sent again. An IMS key's slot holds
    any number of values (:func:`ims_slot`); the index keeps the key of each slot's latest
    ``ok`` record in ``latest``: after ``env=prod`` then ``env=staging``, a later ``env=prod``
    is sent again, while ``env=staging`` is skipped.
    """

    done: set[int]
    failed: set[int]
    records: int = 0  # journal lines read
    unreadable: int = 0  # lines that were not a journal record (reported, then ignored)
    latest: dict[int, int] = field(default_factory=dict)  # IMS slot → its last ok key
    # A Glance record with a rival went through settle(): from now on a plain add ok must
    # also displace its pair's remove (the fast lanes check this instead of hashing twice).
    rivals: bool = field(default=False, compare=False)

    @classmethod
    def empty(cls) -> ResumeIndex:
        return cls(set(), set())

    def state(self, key: int) -> Literal["done", "failed"] | None:
        """What earlier runs settled for ``key``: done (ok, or invalid), failed, or nothing."""
        if key in self.done:
            return "done"
        return "failed" if key in self.failed else None

    def is_settled(self, key: int, retry_failed: bool = False) -> bool:
        """The resume rule: skip what is done, and what failed unless retrying failures."""
        state = self.state(key)
        return state == "done" or (state == "failed" and not retry_failed)

    def settle(
        self, key: int, outcome: Outcome, slot: int | None = None, rival: int | None = None
    ) -> None:
        """Fold one record in: the settle rule. ``slot``: an IMS record's slot; ``rival``: a
        Glance record's other kind of work on the same pair (:func:`rival_key`).

        load_index repeats the ok/failed/gave_up part inline for plain Glance adds (per block
        and per match); they must agree (tests/test_journal.py checks)."""
        if outcome is Outcome.FAILED:
            self.failed.add(key)
        elif outcome is Outcome.GAVE_UP:  # not settled, and no longer failed
            self.failed.discard(key)
        else:
            self.done.add(key)
            self.failed.discard(key)
            if outcome is Outcome.OK:
                self._displace(key, slot, rival)

    def _displace(self, key: int, slot: int | None, rival: int | None) -> None:
        """``key`` is now the latest ok work on its slot: earlier work there is not done."""
        if rival is not None:
            self.done.discard(rival)
            self.rivals = True
        if slot is not None:
            previous = self.latest.get(slot)
            if previous is not None and previous != key:
                self.done.discard(previous)  # the image no longer holds that value
            self.latest[slot] = key


def rival_key(image_id: str, tag: str, op: str) -> int:
    """The key of the other kind of work on a Glance pair: removing for an add, and back."""
    return pair_key(image_id, tag, "add" if op == "remove" else "remove")


# The common record — a Glance add whose id and tag need no JSON escapes, with nothing after
# elapsed_ms — is matched on the bytes: its key is the digest of the very bytes pair_key
# hashes, with no json.loads. Two speeds (loading the index of 1M records, timed in-process
# over the benchmark's journal: 6.5 s with json.loads per line, ~2 s with a regex per line
# (both in f062c44's message), ~1.6 s with a match object per record, ~1.2 s with one findall
# per block):
#
# * a block whose every line is such a record with outcome ``ok`` — a finished run's journal,
#   block after block — is matched whole by one findall (one match per line: the first line
#   at the block's start, each next one after its newline), and its keys go into the index in
#   one set update. A block without a backslash has no JSON escape anywhere, so its strings
#   are matched as ``[^"]*`` — the regex engine's tight loop for "anything but one
#   character", ~30% less scanning than the character class (1M records: 0.55 -> 0.39 s);
#   a newline inside a match would make the match count fall short of the line count;
# * any other block is walked match by match: lines the pattern skips (any other record,
#   blank lines, garbage) are found as gaps between matches and take the full parse.
_PLAIN_RECORD = (
    rb'\{"line": \d+, "image_id": "(%(text)s)", "tag": "(%(text)s)", '
    rb'"outcome": "%(outcome)s", [^\n]*"elapsed_ms": \d+\}'
)
_PLAIN_ADD = re.compile(
    _PLAIN_RECORD % {b"text": rb'[^"\\\n]*', b"outcome": rb"(ok|failed|gave_up)"} + rb"\r?\n"
)
_UNESCAPED_OK = _PLAIN_RECORD % {b"text": rb'[^"]*', b"outcome": b"ok"} + rb"(?=\r?\n)"
_FIRST_PLAIN_OK = re.compile(_UNESCAPED_OK)
_NEXT_PLAIN_OK = re.compile(rb"\n" + _UNESCAPED_OK)
_BLOCK_BYTES = 1 << 20  # 1 MiB of journal per scan


def load_index(blocks: Iterable[bytes]) -> ResumeIndex:
    """Build the resume index from journal text (the last record of a pair wins).

    ``blocks``: the journal in pieces that each end at a line end (or at the end of the
    journal) — whole lines, or the blocks :func:`read_blocks` cuts.
    """
    index = ResumeIndex.empty()
    done, failed = index.done, index.failed
    for block in blocks:
        keys = _plain_ok_keys(block)
        if keys is None:
            _load_block(index, block)
            continue
        index.records += len(keys)
        done.update(keys)  # ResumeIndex.settle of an ok record, for the whole block at once
        if failed:
            failed.difference_update(keys)
        if index.rivals:
            done.difference_update(_plain_ok_rivals(block))
    return index


def _plain_ok_keys(block: bytes) -> list[int] | None:
    """The keys of a block of plain Glance add ``ok`` records only; None for any other block."""
    first = _FIRST_PLAIN_OK.match(block)
    if first is None or not block.endswith(b"\n") or b"\\" in block:
        return None
    rest = _NEXT_PLAIN_OK.findall(block, first.end())
    if len(rest) + 1 != block.count(b"\n"):  # a line that is not one
        return None
    fingerprint = fingerprint_bytes
    return [fingerprint(image_id + b"\n" + tag) for image_id, tag in (first.groups(), *rest)]


def _plain_ok_rivals(block: bytes) -> list[int]:
    """The remove keys of the pairs of a block that _plain_ok_keys took whole."""
    first = _FIRST_PLAIN_OK.match(block)
    assert first is not None
    pairs = (first.groups(), *_NEXT_PLAIN_OK.findall(block, first.end()))
    return [fingerprint_bytes(_REMOVE + image_id + b"\n" + tag) for image_id, tag in pairs]


_REMOVE = b"\x00remove\x00"  # pair_key's prefix for a remove, as bytes


def _load_block(index: ResumeIndex, block: bytes) -> None:
    """A block with other lines in it: plain records by their match, the rest parsed."""
    done, failed = index.done, index.failed
    fingerprint = fingerprint_bytes
    position = 0
    for plain in _PLAIN_ADD.finditer(block):
        start = plain.start()
        if start != position:  # lines the pattern skipped: the careful way
            if block[start - 1] != 0x0A:  # a match inside a line: the line is not plain
                _load_lines(index, block[position : plain.end()])
                position = plain.end()
                continue
            _load_lines(index, block[position:start])
        position = plain.end()
        index.records += 1
        image_id, tag, outcome = plain.groups()
        key = fingerprint(image_id + b"\n" + tag)
        if outcome == b"ok":  # ResumeIndex.settle, inlined: this runs for every record
            done.add(key)
            failed.discard(key)
            if index.rivals:
                done.discard(fingerprint(_REMOVE + image_id + b"\n" + tag))
        elif outcome == b"failed":
            failed.add(key)
        else:  # gave_up: not settled, and no longer failed
            failed.discard(key)
    if position != len(block):
        _load_lines(index, block[position:])


def _load_lines(index: ResumeIndex, text: bytes) -> None:
    """Records that are not plain Glance adds (IMS, removes, invalid rows, escapes)."""
    for raw in text.split(b"\n"):
        if not raw.strip():
            continue
        index.records += 1
        parsed = _parse_record(raw)
        if parsed is None:
            index.unreadable += 1
            continue
        index.settle(*parsed)


def _parse_record(raw: bytes) -> tuple[int, Outcome, int | None, int | None] | None:
    try:
        record = json.loads(raw)
        outcome = Outcome(record["outcome"])
        image_id, tag, value = record["image_id"], record["tag"], record.get("value")
        if outcome is Outcome.INVALID:
            return invalid_key(record["line"], image_id, tag, value), outcome, None, None
        api, op = record.get("api", "glance"), record.get("op", "add")
        key = row_key(image_id, tag, op, value, api)
        if api == "ims":
            return key, outcome, ims_slot(image_id, tag), None
        return key, outcome, None, rival_key(image_id, tag, op)
    except (ValueError, KeyError, TypeError, RecursionError):  # not a record we wrote
        return None


_SNIFF_BYTES = 65536  # how far into a file its first line is looked for
_RECORD_START = b'{"line": '  # how every rendered record begins


def not_a_journal(path: Path) -> str | None:
    """Why the file at ``path`` is not a journal, or None when it is one (raises OSError).

    Judged on its first non-blank line, read at most 64 KiB in (a binary file with no newline
    costs no more): a journal's first line is a record or, when a run was killed while writing
    its very first record, the unterminated start of one. An empty file holds no journal.
    """
    with path.open("rb") as file:
        head = file.read(_SNIFF_BYTES)
    if not head.strip():
        return "it is empty" if not head else "it holds no journal record"
    first, newline, _ = head.lstrip().partition(b"\n")
    if newline:
        return None if _parse_record(first) is not None else _NOT_A_RECORD
    torn_first_record = len(head) < _SNIFF_BYTES and first.startswith(_RECORD_START)
    return None if torn_first_record else _NOT_A_RECORD


_NOT_A_RECORD = "its first line is not a journal record"


def read_blocks(path: Path, size: int = _BLOCK_BYTES) -> Iterator[bytes]:
    """The journal in blocks of about ``size`` bytes, each cut just after a newline.

    A block is completed to its line end with ``readline`` (one copy of the block at most;
    cutting at the last newline and carrying the rest over made two).
    """
    with path.open("rb") as journal:
        while block := journal.read(size):
            if not block.endswith(b"\n"):
                block += journal.readline()
            yield block


# ── writing ─────────────────────────────────────────────────────────────────────────────────


class JournalReplaced(OSError):
    """The journal's path no longer names the file this run appends to (deleted, moved,
    replaced) or the file was cut shorter than what was written: records would be lost."""


class JournalWriter:
    """Appends records to the journal. Only the engine's sink task calls it.

    At every fsync (every ``fsync_interval`` seconds while records come, and at close) it
    also checks that the journal is still there: that the path names the file it opened
    (st_dev, st_ino) and that the file is no shorter than what was written. A journal deleted,
    moved or replaced mid-run would otherwise take every later record with it, and the run
    would exit 0 with nothing to resume from.
    """

    def __init__(self, path: Path, fsync_interval: float = 1.0) -> None:
        self.path = path
        self._file = path.open("ab", buffering=0)
        status = os.fstat(self._file.fileno())
        self._identity = status.st_dev, status.st_ino
        self._end = status.st_size  # where the file ends after our last write
        self._fsync_interval = fsync_interval
        self._last_fsync = time.monotonic()
        self._unsynced = False
        self._wrote = False  # anything written by this run: then losing the file loses it
        self._cut = False  # a write landed before where our last one ended

    def write_batch(self, lines: list[bytes]) -> None:
        """Hand a batch to the kernel in one write (raises OSError: disk full, quota, EIO...).

        A write that fails part-way is cut back off, so the journal never keeps half a record.
        """
        start = self._file.tell()
        data = b"".join(lines)
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), start)
            raise
        end = self._file.tell()
        if end < start + len(data):  # appended at an end nearer than ours: cut short
            self._cut = True
        self._end = end
        self._unsynced = self._wrote = True

    def fsync_due(self) -> bool:
        return self._unsynced and time.monotonic() - self._last_fsync >= self._fsync_interval

    def fsync(self) -> None:
        """Sync to disk, after checking the journal is still the one (raises JournalReplaced)."""
        self.check_in_place()
        os.fsync(self._file.fileno())
        self._last_fsync = time.monotonic()
        self._unsynced = False

    def check_in_place(self) -> None:
        """Raise JournalReplaced unless the path still names this file, whole."""
        try:
            at_path = os.stat(self.path)
            named = (at_path.st_dev, at_path.st_ino) == self._identity
        except FileNotFoundError:
            named = False
        if not named:
            raise JournalReplaced(
                0,
                "it was deleted, moved or replaced during the run; the records written "
                "since then are not in it (run again to send those rows again)",
            )
        if self._cut or os.fstat(self._file.fileno()).st_size < self._end:
            raise JournalReplaced(
                0,
                "it was cut shorter during the run; records written to it are gone "
                "(run again to send those rows again)",
            )

    def close(self) -> None:
        """Fsync what is unsynced and close, after checking the journal is in place if this
        run wrote to it; calling it again does nothing."""
        if self._file.closed:
            return
        try:
            if self._unsynced:
                self.fsync()
            elif self._wrote:
                self.check_in_place()
        finally:
            self._file.close()


def prepare(
    path: Path, fresh: bool, lock: JournalLock | None = None
) -> tuple[ResumeIndex, int, Path | None]:
    """Get the journal at ``path`` ready to append to.

    Returns the resume index, the bytes cut off a torn last line, and where an old journal was
    moved with ``fresh`` (never deleted; an empty one is simply reused). ``lock``, the run's
    lock on the journal, follows the new file when the old one is moved aside (LockHeld if
    another run took it first). Raises JournalError with a one-line reason.
    """
    moved = None
    try:
        if path.exists() and not path.is_file():
            raise JournalError(f"{path} is not a regular file")
        if fresh and path.exists() and path.stat().st_size > 0:
            moved = _move_aside(path)
            if lock is not None:
                lock.relock()
        if not path.exists():
            return ResumeIndex.empty(), 0, moved
        _refuse_what_is_not_a_journal(path)
        torn = repair_torn_tail(path)
        return load_index(read_blocks(path)), torn, moved
    except OSError as exc:
        raise JournalError(f"cannot use journal {path}: {exc.strerror or exc}") from None


def _refuse_what_is_not_a_journal(path: Path) -> None:
    """An empty file is a journal yet to be written; anything else must look like one, or the
    run would append records to (say) a CSV file and resume from its lines."""
    if path.stat().st_size == 0:
        return
    problem = not_a_journal(path)
    if problem is not None:
        raise JournalError(
            f"{path} is not a bulktag journal: {problem}; name the journal with --results "
            "(or move this file away)"
        )


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{stamp}-{counter}{path.suffix}")
        counter += 1
    path.rename(target)
    return target
