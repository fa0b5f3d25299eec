"""What earlier runs settled, so a resumed run skips it: :class:`ResumeIndex` and
:func:`load_index`.

Keys are 128-bit fingerprints of the work (:mod:`bulktag.journal.format`), stored as ints in a
set: less than half the memory per settled pair of a tuple of strings. They are made afresh
by every run from the journal's text, never stored.

The settle rule is :meth:`ResumeIndex.settle`, and every record that is not a plain Glance add
goes through it after :func:`~bulktag.journal.format.parse`. Plain Glance adds, nearly every
line of a big journal, take fast lanes that match the bytes; property tests check the lanes
give the index the plain path gives (tests/test_journal.py).

Pure: the journal's bytes come in as blocks (:func:`bulktag.journal.file.read_blocks`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bulktag.journal.format import fingerprint_bytes, parse
from bulktag.model import Outcome


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
        Glance record's other kind of work on the same pair (:attr:`Record.rival`).

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


# The common record — a Glance add whose id and tag need no JSON escapes, with nothing after
# elapsed_ms — is matched on the bytes: its key is the digest of the very bytes pair_key
# hashes, with no json.loads. Two speeds, each faster than json.loads or a regex per line;
# one findall per block is the fastest:
#
# * a block whose every line is such a record with outcome ``ok`` — a finished run's journal,
#   block after block — is matched whole by one findall (one match per line: the first line
#   at the block's start, each next one after its newline), and its keys go into the index in
#   one set update. A block without a backslash has no JSON escape anywhere, so its strings
#   are matched as ``[^"]*`` — the regex engine's tight loop for "anything but one
#   character", which scans faster than the character class (see RESULTS.md); a newline
#   inside a match would make the match count fall short of the line count;
# * any other block is walked match by match: lines the pattern skips (any other record,
#   blank lines, garbage) are found as gaps between matches and take the full parse.
#
# A line either lane takes must be one parse() reads alike, so the pattern checks every
# field's type (a "status" written as the text "204" is not a record for resume either) and
# quantifiers are possessive (no backtracking). Kept because it pays: the timings (and this
# check's cost) are in the commit messages and benchmarks/RESULTS.md, section 6.
_PLAIN_RECORD = (  # every field in render()'s order, of the type parse() accepts
    rb'\{"line": %(int)s, "image_id": "(%(text)s)", "tag": "(%(text)s)", '
    rb'"outcome": "%(outcome)s", "status": (?:%(int)s|null), "attempts": %(int)s, '
    rb'"error": (?:null|"%(any)s"), "request_id": (?:"%(any)s"|null), "at": "%(any)s", '
    rb'"elapsed_ms": %(int)s\}'
)
_INT = rb"(?!0\d)\d++"  # a JSON int as json.loads reads one: no leading zero
# A JSON string's body with its escapes, as runs between escapes (most strings have none).
_ESCAPED_TEXT = rb'[^"\\\n]*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\n]*+)*+'
_PLAIN_ADD = re.compile(
    _PLAIN_RECORD
    % {
        b"int": _INT,
        b"text": rb'[^"\\\n]*+',  # the key hashes these very bytes: no escape in them
        b"any": _ESCAPED_TEXT,
        b"outcome": rb"(ok|failed|gave_up)",
    }
    + rb"\r?\n"
)
_UNESCAPED = rb'[^"]*+'  # in a block with no backslash; a newline in it is caught by the count
_UNESCAPED_OK = (
    _PLAIN_RECORD % {b"int": _INT, b"text": _UNESCAPED, b"any": _UNESCAPED, b"outcome": b"ok"}
    + rb"(?=\r?\n)"
)
_FIRST_PLAIN_OK = re.compile(_UNESCAPED_OK)
_NEXT_PLAIN_OK = re.compile(rb"\n" + _UNESCAPED_OK)


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
        record = parse(raw)
        if record is None:
            index.unreadable += 1
            continue
        index.settle(record.key, record.outcome, record.slot, record.rival)
