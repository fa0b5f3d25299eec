"""Reading the input: CSV text → a stream of valid :class:`Row` or :class:`InvalidRow`.

Pure apart from reading the file object it is given. A bad row is a value, never an exception:
the run goes on and the row gets an ``invalid`` journal record saying why.

Format: columns ``image_id,tag``; an optional header naming those columns (then extra columns
are allowed, in any order); UTF-8 with or without BOM; CRLF or LF; quoted fields; blank lines
and lines starting with ``#`` skipped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
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


def open_text(binary: BinaryIO) -> io.TextIOWrapper:
    """Wrap a byte stream for the CSV reader.

    ``utf-8-sig`` drops a BOM; ``surrogateescape`` turns undecodable bytes into lone surrogates
    so that binary garbage becomes an invalid row instead of a UnicodeDecodeError that would
    end the whole input.
    """
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")


def tag_error(tag: str) -> str | None:
    """Why ``tag`` cannot be sent, or None when it is fine."""
    if not tag:
        return "tag is empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"tag is {len(tag)} characters long (at most {MAX_TAG_LENGTH})"
    if _TAG.fullmatch(tag):
        return None
    bad = _BAD_TAG_CHAR.search(tag)
    assert bad is not None
    return f"tag contains {_describe_char(bad.group())} (allowed: letters, digits, '_' and '-')"


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


def validate(line: int, image_id: str, tag: str) -> Parsed:
    """One pair → a Row ready to send, or an InvalidRow saying what is wrong with it."""
    image_id = image_id.strip()
    tag = tag.strip()
    error = image_id_error(image_id) or tag_error(tag)
    if error is None:
        return Row(line, image_id.lower(), tag)
    return InvalidRow(line, clean(image_id), clean(tag), error)


class _Columns:
    """Where image_id and tag sit in a row: fixed for headerless input, named by a header."""

    def __init__(self, image_id: int = 0, tag: int = 1, exact_width: int | None = 2) -> None:
        self.image_id = image_id
        self.tag = tag
        self.exact_width = exact_width  # headerless input must have exactly two columns

    @classmethod
    def from_header(cls, fields: list[str]) -> _Columns | None:
        names = [f.strip().lower() for f in fields]
        if "image_id" in names and "tag" in names:
            return cls(names.index("image_id"), names.index("tag"), exact_width=None)
        return None

    def pick(self, line: int, fields: list[str]) -> Parsed:
        width = len(fields)
        if self.exact_width is not None and width != self.exact_width:
            first = clean(fields[0]) if fields else None
            return InvalidRow(line, first, None, f"expected 2 columns (image_id,tag), got {width}")
        if width <= max(self.image_id, self.tag):
            return InvalidRow(line, None, None, f"row has {width} columns, the header names more")
        return validate(line, fields[self.image_id], fields[self.tag])


def _is_skipped(fields: list[str]) -> bool:
    if not fields or (len(fields) == 1 and not fields[0].strip()):
        return True
    return fields[0].lstrip().startswith("#")


def read_rows(text: io.TextIOBase) -> Iterator[Parsed]:
    """Yield every data row of ``text`` as a Row or an InvalidRow, in input order.

    ``line`` is the physical line where the row ends (as ``csv`` counts), so it stays stable
    across runs over the same file: resume relies on that for invalid rows.
    """
    reader = csv.reader(text)
    columns: _Columns | None = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the size limit: this row only
            yield InvalidRow(reader.line_num, None, None, f"unreadable CSV row: {exc}")
            continue
        if _is_skipped(fields):
            continue
        if columns is None:
            columns = _Columns.from_header(fields)
            if columns is not None:
                continue
            columns = _Columns()
        yield columns.pick(reader.line_num, fields)
