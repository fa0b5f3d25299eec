"""Reading the input: CSV text → a stream of valid :class:`Row` or :class:`InvalidRow`.

Pure apart from reading the file object it is given. A bad row is a value, never an exception:
the run goes on and the row gets an ``invalid`` journal record saying why.

Format: columns ``image_id,tag``; an optional header naming those columns (then extra columns
are allowed, in any order); UTF-8 with or without BOM; CRLF or LF; quoted fields; blank lines
and lines starting with ``#`` skipped.

With IMS rules (``--api ims``, :func:`ims_rules`) a row may also carry a value:
``image_id,key,value`` (three columns without a header, or a header naming ``image_id``,
``key`` (or ``tag``) and ``value``); the two-column form stays a bare key. Keys and values are
checked against IMS's limits instead of Glance's.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import BinaryIO

from bulktag.model import InvalidRow, Row

# Glance image ids are UUIDs (the API answers 404 for anything else); we accept any case.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Huawei IMS's rule is the strictest of the clouds we serve; Glance itself caps tags at 255.
_TAG = re.compile(r"[A-Za-z0-9_-]+")
_BAD_TAG_CHAR = re.compile(r"[^A-Za-z0-9_-]")
MAX_TAG_LENGTH = 255
# A field is cut off at this length when echoed into an error or the journal.
_ECHO = 80
# Big enough that a hostile 2 MB line is read as one row (and rejected), not a csv.Error storm.
_FIELD_LIMIT = 16 * 1024 * 1024

csv.field_size_limit(_FIELD_LIMIT)

Parsed = Row | InvalidRow

# IMS key/value tags. The defaults are the IMS API reference's: "Image Tag Format"
# (support.huaweicloud.com/intl/en-us/api-ims/ims_03_0902.html) gives a key of at most 36
# characters of letters, digits, '_' and '-', and a value of at most 43 characters of letters,
# digits, '_', '.' and '-' (may be empty); "Adding an Image Tag" (ims_03_0618) and "Adding or
# Deleting Image Tags in a Batch" (ims_03_0617) repeat the lengths. The pages disagree on the
# characters: the Paris-region reference (eu-west-0-api-ims/en-us_topic_0020092110.html) also
# allows CJK letters, and for image_tags forbids only = * < > \ , | / and leading or trailing
# spaces; the batch page says deletions are not checked for characters at all and take keys up
# to 127 and values up to 255 characters. Hence "relaxed": the wider rule, for regions that
# take it.
IMS_MAX_KEY_LENGTH = 36
IMS_MAX_VALUE_LENGTH = 43
IMS_CHARSETS = ("strict", "relaxed")
_STRICT_KEY = re.compile(r"[A-Za-z0-9_-]+")
_STRICT_VALUE = re.compile(r"[A-Za-z0-9_.-]*")
_RELAXED_FORBIDDEN = frozenset("=*<>\\,|/")


@dataclass(frozen=True, slots=True)
class TagRules:
    """What a tag (or an IMS key and value) may look like, and whether rows carry values.

    The default is Glance's: a bare tag of 1-255 characters checked by IMS's strict character
    rule (the strictest of the clouds we serve), no value column.
    """

    values: bool = False  # IMS: rows may carry a value (image_id,key,value)
    max_key_length: int = MAX_TAG_LENGTH
    max_value_length: int = 0
    charset: str = "strict"  # "relaxed": any printable character but = * < > \ , | /
    word: str = "tag"  # what errors call the tag: "tag" (Glance) or "key" (IMS)


GLANCE_RULES = TagRules()


def ims_rules(
    max_key_length: int = IMS_MAX_KEY_LENGTH,
    max_value_length: int = IMS_MAX_VALUE_LENGTH,
    charset: str = "strict",
) -> TagRules:
    if charset not in IMS_CHARSETS:
        raise ValueError(f"charset must be one of {', '.join(IMS_CHARSETS)}, got {charset!r}")
    return TagRules(True, max_key_length, max_value_length, charset, "key")


def open_text(binary: BinaryIO) -> io.TextIOWrapper:
    """Wrap a byte stream for the CSV reader.

    ``utf-8-sig`` drops a BOM; ``surrogateescape`` turns undecodable bytes into lone surrogates
    so that binary garbage becomes an invalid row instead of a UnicodeDecodeError that would
    end the whole input.
    """
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")


def tag_error(tag: str, rules: TagRules = GLANCE_RULES) -> str | None:
    """Why ``tag`` (or an IMS key) cannot be sent, or None when it is fine."""
    word, most = rules.word, rules.max_key_length
    if not tag:
        return f"{word} is empty"
    if len(tag) > most:
        return f"{word} is {len(tag)} characters long (at most {most})"
    if rules.charset == "relaxed":
        return _relaxed_error(word, tag)
    if _TAG.fullmatch(tag):
        return None
    bad = _BAD_TAG_CHAR.search(tag)
    assert bad is not None
    return f"{word} contains {_describe_char(bad.group())} (allowed: letters, digits, '_' and '-')"


def value_error(value: str, rules: TagRules) -> str | None:
    """Why an IMS tag value cannot be sent, or None when it is fine (it may be empty)."""
    most = rules.max_value_length
    if len(value) > most:
        return f"value is {len(value)} characters long (at most {most})"
    if rules.charset == "relaxed":
        return _relaxed_error("value", value)
    if _STRICT_VALUE.fullmatch(value):
        return None
    bad = next(char for char in value if not _STRICT_VALUE.fullmatch(char))
    return f"value contains {_describe_char(bad)} (allowed: letters, digits, '_', '.' and '-')"


def _relaxed_error(word: str, text: str) -> str | None:
    for char in text:
        if char in _RELAXED_FORBIDDEN or not char.isprintable():
            return (
                f"{word} contains {_describe_char(char)} "
                "(not allowed: = * < > \\ , | / and control characters)"
            )
    return None


def image_id_error(image_id: str) -> str | None:
    """Why ``image_id`` cannot be sent, or None when it is fine."""
    if not image_id:
        return "image_id is empty"
    if _UUID.fullmatch(image_id):
        return None
    return f"image_id is not a UUID: {_echo(image_id)}"


def _describe_char(char: str) -> str:
    if "\udc80" <= char <= "\udcff":
        return f"a byte that is not UTF-8 (0x{ord(char) - 0xDC00:02x})"
    if char.isprintable() and char != " ":
        return repr(char)
    return f"U+{ord(char):04X}"


def _printable_utf8(value: str) -> str:
    """Undecodable input bytes (carried as lone surrogates) shown as ``\\xNN`` escapes."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from decoding: escape it as is
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _echo(value: str) -> str:
    text = value if len(value) <= _ECHO else value[:_ECHO] + "…"
    return "'" + _printable_utf8(text) + "'"  # not repr(): that would escape the escapes


def clean(value: str | None) -> str | None:
    """A field made safe to store in the journal: valid UTF-8 (bad bytes escaped), bounded."""
    if value is None:
        return None
    if len(value) > _ECHO * 4:
        value = value[: _ECHO * 4] + "…"
    return _printable_utf8(value)


def validate(
    line: int,
    image_id: str,
    tag: str,
    value: str | None = None,
    rules: TagRules = GLANCE_RULES,
) -> Parsed:
    """One pair (or IMS key and value) → a Row ready to send, or an InvalidRow saying why not."""
    image_id = image_id.strip()
    tag = tag.strip()
    value = None if value is None else value.strip()  # IMS strips them too
    error = image_id_error(image_id) or tag_error(tag, rules)
    if error is None and value is not None:
        error = value_error(value, rules)
    if error is None:
        return Row(line, image_id.lower(), tag, value)
    return InvalidRow(line, clean(image_id), clean(tag), error, clean(value))


class _Columns:
    """Where image_id, tag and value sit in a row: fixed for headerless input (two columns,
    or three with IMS rules), named by a header."""

    def __init__(
        self,
        rules: TagRules,
        image_id: int = 0,
        tag: int = 1,
        value: int | None = None,
        *,
        headerless: bool = True,
        two_wide: bool = True,
    ) -> None:
        self.rules = rules
        self.image_id = image_id
        self.tag = tag
        self.value = value
        self.headerless = headerless
        self.two_wide = two_wide  # rows have exactly image_id and tag, nothing else

    @classmethod
    def from_header(cls, fields: list[str], rules: TagRules) -> _Columns | None:
        names = [f.strip().lower() for f in fields]
        if "image_id" not in names:
            return None
        if "tag" in names:
            tag = names.index("tag")
        elif rules.values and "key" in names:
            tag = names.index("key")
        else:
            return None
        value = names.index("value") if rules.values and "value" in names else None
        image_id = names.index("image_id")
        return cls(rules, image_id, tag, value, headerless=False, two_wide=len(names) == 2)

    def pick(self, line: int, fields: list[str]) -> Parsed:
        width = len(fields)
        if self.headerless:
            return self._pick_headerless(line, fields)
        named = max(self.image_id, self.tag, -1 if self.value is None else self.value)
        if width <= named:
            return InvalidRow(line, None, None, f"row has {width} columns, the header names more")
        value = None if self.value is None else fields[self.value]
        return validate(line, fields[self.image_id], fields[self.tag], value, self.rules)

    def _pick_headerless(self, line: int, fields: list[str]) -> Parsed:
        width = len(fields)
        if width == 2:
            return validate(line, fields[0], fields[1], None, self.rules)
        if width == 3 and self.rules.values:
            return validate(line, fields[0], fields[1], fields[2], self.rules)
        first = clean(fields[0]) if fields else None
        if self.rules.values:
            expected = "expected 2 or 3 columns (image_id,key[,value])"
        else:
            expected = "expected 2 columns (image_id,tag)"
        return InvalidRow(line, first, None, f"{expected}, got {width}")


def _is_skipped(fields: list[str]) -> bool:
    if not fields or (len(fields) == 1 and not fields[0].strip()):
        return True
    return fields[0].lstrip().startswith("#")


def _plain_pair(columns: _Columns) -> re.Pattern[str] | None:
    """The fast lane for a column layout, or None when every row must go through ``csv``.

    A line that is exactly a lower-case UUID, a comma and a tag of the strict characters (then
    the line end) parses to those two fields and passes every check, so it becomes a Row with
    no ``csv`` call and no validation: the same Row the slow path would make, at a fraction of
    the cost. Most inventories are nothing else; it matters most on resume, where every row of
    a big input is read only to be skipped. IMS rows (values, other rules) take the slow path.
    The pattern takes one line with its end (``fullmatch``); :class:`_PlainBlock` takes every
    such line of a block.
    """
    rules = columns.rules
    plain_layout = columns.image_id == 0 and columns.tag == 1 and columns.value is None
    if rules.values or rules.charset != "strict" or not plain_layout or not columns.two_wide:
        return None
    return re.compile(
        r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}),"
        rf"([A-Za-z0-9_-]{{1,{rules.max_key_length}}})\r?\n?"
    )


class _PlainBlock:
    """The fast lane for a block of lines: every line a plain pair, or the block is not taken.

    One findall over the block with the loosest pattern that still finds one pair a line —
    36 characters but a comma, a comma, then characters but a newline up to the tag limit:
    the regex engine's single-character loops — then what it let through is checked for all
    rows at once (ids: UUIDs; tags: the strict characters), and the rows are made by C-level
    map. ~0.4 against ~0.7 s for a million rows (read, matched and made, one core), where a
    regex per line and a Row call per row cost ~1.1 us a row. CRLF line ends become LF first.
    """

    def __init__(self, max_tag: int) -> None:
        line = rf"([^,]{{36}}),([^\n]{{1,{max_tag}}})(?=\n)"
        self._first = re.compile(line)  # the block's first line, at its start
        self._next = re.compile(r"\n" + line)  # every other line, after its newline

    def rows(self, block: str, first_line: int) -> list[Parsed] | None:
        """The rows of ``block`` (whole lines, the first numbered ``first_line``), or None if
        any line of it is not a plain pair."""
        if "\r" in block:
            block = block.replace("\r\n", "\n")  # a lone CR stays, and fails the tag check
        head = self._first.match(block)
        if head is None or not block.endswith("\n"):
            return None
        pairs = self._next.findall(block, head.end())
        count = len(pairs) + 1
        if count != block.count("\n"):  # a line that is not one (or a match over two lines)
            return None
        ids, tags = zip(head.groups(), *pairs, strict=True)
        if not (_all_uuids(ids, count) and _only(_STRICT_TAG_BYTES, "".join(tags))):
            return None
        numbers = range(first_line, first_line + count)
        return list(map(_new_tuple, repeat(Row), zip(numbers, ids, tags, repeat(None))))


_STRICT_TAG_BYTES = bytes(c for c in range(128) if _TAG.fullmatch(chr(c)))  # _TAG's, as bytes
_UUID_BYTES = b"0123456789abcdef-"  # a lower-case UUID's (the fast lane's ids)


def _only(allowed: bytes, text: str) -> bool:
    """Whether every character of ``text`` is one of ``allowed`` (ASCII): one C-level pass."""
    return text.isascii() and not text.encode("ascii").translate(None, allowed)


def _all_uuids(ids: tuple[str, ...], count: int) -> bool:
    """Whether ``count`` ids of 36 characters each are lower-case UUIDs: hex digits and four
    dashes each, at 8, 13, 18 and 23 — checked on all of them joined, a slice per position."""
    joined = "".join(ids)
    if not _only(_UUID_BYTES, joined) or joined.count("-") != 4 * count:
        return False
    return all(joined[at::36].count("-") == count for at in (8, 13, 18, 23))


_new_tuple = tuple.__new__  # Row(...) from a 4-tuple with no Python call per row


# Characters of input read at once when the input is a file (not a pipe): ~1,400 plain lines.
_BLOCK_CHARS = 1 << 16


class _Lines:
    """The input's physical lines, counted, with lines that can be handed back so the CSV
    reader sees them (rows the fast lane did not take)."""

    def __init__(self, text: io.TextIOBase) -> None:
        self._text = iter(text)
        self.count = 0
        self.pending: deque[str] = deque()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.pending.popleft() if self.pending else next(self._text)
        self.count += 1
        return line

    def give_back(self, line: str) -> None:
        self.pending.appendleft(line)
        self.count -= 1


class RowReader:
    """Every data row of an input as a Row or an InvalidRow, in input order: one by one
    (iteration) or a batch at a time (:meth:`take`, what the engine calls).

    ``line`` is the physical line where the row ends (as ``csv`` counts), so it stays stable
    across runs over the same file: resume relies on that for invalid rows.

    A file (a seekable input) in the fast lane is read a block of lines at a time: one regex
    scan finds the pairs of the whole block, and when every line of it is plain — the usual
    case — its rows are made without a Python step per line beyond the Row itself (0.35
    against 1.1 us a row). A block with anything else in it is read line by line. A pipe is
    always read line by line, so rows from a slow producer are not held back.
    """

    def __init__(self, text: io.TextIOBase, rules: TagRules = GLANCE_RULES) -> None:
        self._text = text
        self._rules = rules
        self._lines = _Lines(text)
        self._csv = csv.reader(self._lines)
        self._blocks = text.seekable()
        self._chunks = self._read()
        self._spare: deque[Parsed] = deque()  # read, not yet handed out
        self._plain: re.Pattern[str] | None = None  # one plain line
        self._plain_block: _PlainBlock | None = None  # every plain line of a block

    @property
    def may_wait(self) -> bool:
        """Whether reading can wait on a producer (a pipe, a terminal): then it belongs in a
        thread. A file's next block is on disk, so it is read where it is needed."""
        return not self._blocks

    def __iter__(self) -> RowReader:
        return self

    def __next__(self) -> Parsed:
        spare = self._spare
        while not spare:
            spare.extend(next(self._chunks))
        return spare.popleft()

    def take(self, limit: int, linger: float = math.inf) -> list[Parsed]:
        """Up to ``limit`` rows, or fewer once ``linger`` seconds passed since the first one;
        an empty list at the end of the input."""
        batch = fill(list(self._spare), self._chunks, limit, linger)
        self._spare.clear()
        if len(batch) > limit:
            self._spare.extend(batch[limit:])
            del batch[limit:]
        return batch

    def _read(self) -> Iterator[list[Parsed]]:
        lines = self._lines
        columns: _Columns | None = None
        for line in lines:
            plain = self._plain
            if plain is not None and (pair := plain.fullmatch(line)) is not None:
                yield [Row(lines.count, pair[1], pair[2])]
                if self._blocks and not lines.pending and self._plain_block is not None:
                    yield from self._read_blocks(self._plain_block)
                continue
            lines.give_back(line)  # the CSV reader takes it from here (and any lines it spans)
            try:
                fields = next(self._csv)
            except StopIteration:  # unreachable: the reader always has the returned line
                return
            except csv.Error as exc:  # e.g. a field over the size limit: this row only
                yield [InvalidRow(lines.count, None, None, f"unreadable CSV row: {exc}")]
                continue
            if _is_skipped(fields):
                continue
            if columns is None:  # the first row: a header, or already data
                header = _Columns.from_header(fields, self._rules)
                columns = header or _Columns(self._rules)
                self._plain = _plain_pair(columns)
                self._plain_block = (
                    None if self._plain is None else _PlainBlock(self._rules.max_key_length)
                )
                if header is not None:
                    continue
            yield [columns.pick(lines.count, fields)]

    def _read_blocks(self, plain: _PlainBlock) -> Iterator[list[Parsed]]:
        """Blocks of plain lines; returns at the end of the input or at the first block with
        another line in it, whose lines are then pending for the line-by-line reading."""
        lines, text = self._lines, self._text
        while block := text.read(_BLOCK_CHARS):
            if not block.endswith("\n"):
                block += text.readline()  # whole lines only
            rows = plain.rows(block, lines.count + 1)
            if rows is None:  # not every line is plain: read it line by line
                lines.pending.extend(io.StringIO(block, newline="").readlines())
                return
            lines.count += len(rows)
            yield rows


def fill(
    batch: list[Parsed], chunks: Iterator[list[Parsed]], limit: int, linger: float
) -> list[Parsed]:
    """Extend ``batch`` from ``chunks`` until it holds ``limit`` rows (or more: the last chunk
    is not cut), or until a chunk comes ``linger`` seconds after the first one; return it.

    The rule for every hand-over of rows to the engine: big batches from a fast input, and
    a slow producer's rows held back by at most the linger, never until a batch is full.
    """
    deadline = 0.0
    for chunk in chunks:
        batch += chunk
        if len(batch) >= limit:
            break
        now = time.monotonic()
        if deadline == 0.0:
            deadline = now + linger
        elif now >= deadline:
            break
    return batch


def read_rows(text: io.TextIOBase, rules: TagRules = GLANCE_RULES) -> RowReader:
    """Every data row of ``text`` (see :class:`RowReader`)."""
    return RowReader(text, rules)
