"""Reading the input: CSV text → a stream of valid :class:`Row` or :class:`InvalidRow`.

Pure apart from reading the file object it is given. A bad row is a value, never an exception:
the run goes on and the row gets an ``invalid`` journal record saying why. One line is one row,
so one bad line never costs another. Only a problem of the whole input (another encoding,
binary data, a header bulktag does not know, one column where two are needed) is an exception,
:class:`InputRefused`, raised before any row is handed out.

Format: columns ``image_id,tag``; an optional header naming those columns (then extra columns
are allowed, in any order; ``ID`` is the openstack CLI's ``image_id``); UTF-8 with or without
BOM; LF, CRLF or CR; quoted fields, each ending on its line; blank lines and lines starting
with ``#`` skipped. With ``--tag`` (:class:`ConstantTag`) rows are image ids alone.

With IMS rules (``--api ims``, :func:`ims_rules`) a row may also carry a value:
``image_id,key,value`` (three columns without a header, or a header naming ``image_id``,
``key`` (or ``tag``) and ``value``); the two-column form stays a bare key. Keys and values are
checked against IMS's limits instead of Glance's.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass
from itertools import repeat
from typing import BinaryIO

from bulktag.errors import BulktagError
from bulktag.model import InvalidRow, Row
from bulktag.text import escaped

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
    """An input field quoted in a message: bounded, bad bytes and control characters escaped
    (:func:`bulktag.text.escaped`)."""
    text = value if len(value) <= _ECHO else value[:_ECHO] + "…"
    return "'" + escaped(_printable_utf8(text)) + "'"  # not repr(): it would escape the escapes


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


class InputRefused(BulktagError):
    """The input as a whole cannot be read as meant — another encoding, binary data, a header
    bulktag does not know, one column where two are needed: refused before anything is sent,
    with one line that says what is wrong and how to fix it. A problem of one row is an
    InvalidRow instead. The run names the input (``input_name``) once it knows the error."""

    event = "input_refused"
    input_name: str | None = None

    def __str__(self) -> str:
        told = super().__str__()
        return told if self.input_name is None else f"input {self.input_name}: {told}"


@dataclass(frozen=True, slots=True)
class ConstantTag:
    """``--tag``: the one tag (IMS: key and value) for every image id of a list of ids."""

    tag: str
    value: str | None = None


def constant_tag(text: str, rules: TagRules = GLANCE_RULES) -> ConstantTag:
    """``--tag``'s value checked by the rows' rules: a tag, or with IMS rules ``key`` or
    ``key=value``; ValueError saying why not."""
    key, value = text, None
    if rules.values and "=" in text:
        key, value = text.split("=", 1)
        value = value.strip()
    key = key.strip()
    error = tag_error(key, rules) or (None if value is None else value_error(value, rules))
    if error is not None:
        raise ValueError(error)
    return ConstantTag(key, value)


@dataclass(frozen=True, slots=True)
class _Columns:
    """Where image_id, tag and value sit in a row: fixed for headerless input (two columns,
    or three with IMS rules; with ``--tag`` one), named by a header."""

    rules: TagRules
    image_id: int = 0
    tag: int = 1
    value: int | None = None
    _: KW_ONLY
    headerless: bool = True
    two_wide: bool = True  # rows have exactly image_id and tag, nothing else
    constant: ConstantTag | None = None  # --tag: rows are image ids only

    def pick(self, line: int, fields: list[str]) -> Parsed:
        width = len(fields)
        if self.constant is not None:
            return self._pick_id(line, fields)
        if self.headerless:
            return self._pick_headerless(line, fields)
        named = max(self.image_id, self.tag, -1 if self.value is None else self.value)
        if width <= named:
            error = f"expected at least {named + 1} columns, as the header names, got {width}"
            return InvalidRow(line, None, None, error)
        value = None if self.value is None else fields[self.value]
        return validate(line, fields[self.image_id], fields[self.tag], value, self.rules)

    def _pick_id(self, line: int, fields: list[str]) -> Parsed:
        assert self.constant is not None
        if len(fields) != 1:
            error = f"expected 1 column (an image id; the tag is --tag's), got {len(fields)}"
            return InvalidRow(line, clean(fields[0]), None, error)
        return validate(line, fields[0], self.constant.tag, self.constant.value, self.rules)

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


# ── the first row: a header or data, and the whole-input problems it shows ─────────────────────

# The image id column: ours, and the openstack CLI's (``openstack image list -f csv``: "ID").
_ID_COLUMNS = ("image_id", "id")
# Names (lower case, letters and digits only) that say "this row names columns": with no UUID
# in it, such a first row is a header, known or not — never data, never a row whose second
# field becomes the tag.
_HEADER_WORDS = frozenset(
    {"imageid", "id", "uuid", "imageuuid", "image", "images", "tag", "tags", "key", "value",
     "name", "imagename"}
)  # fmt: skip
_NEAR_ID = frozenset({"imageid", "uuid", "imageuuid", "image", "images"})
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]")


def _word(field: str) -> str:
    return _NOT_NAME_CHARS.sub("", field.lower())


def _shown(fields: list[str]) -> str:
    return ",".join(_echo(field.strip()) for field in fields[:8])


def _looks_like_header(fields: list[str]) -> bool:
    if any(_UUID.search(field) for field in fields):
        return False
    return any(_word(field) in _HEADER_WORDS for field in fields)


def _first_columns(
    line: int, fields: list[str], rules: TagRules, constant: ConstantTag | None
) -> tuple[_Columns, bool]:
    """The layout the input's first row sets, and whether that row is a header; InputRefused
    when the row shows that no row of the input can be read as meant."""
    if _looks_like_header(fields):
        return _header_columns(fields, rules, constant), True
    width = len(fields)
    if constant is not None and width != 1:
        raise InputRefused(
            f"with --tag the input is one image id a line, but line {line} has {width} columns "
            f"({_shown(fields)}): list only the ids (openstack image list -f value -c ID)"
        )
    if constant is None and width == 1:
        raise InputRefused(
            f"line {line} has one column ({_shown(fields)}) and no tag: "
            + (_other_separator(fields[0]) or "for a list of image ids give the tag with "
               "--tag TAG, or add a tag column (image_id,tag)")
        )  # fmt: skip
    return _Columns(rules, constant=constant), False


# What a one-column first row split by something other than commas is split by.
_SEPARATORS = {"\t": ("tabs", "'\\t'"), ";": ("semicolons", "';'"), "|": ("bars", "'|'"),
               " ": ("spaces", "' '")}  # fmt: skip


def _other_separator(field: str) -> str | None:
    """What to do with a row whose fields seem split by tabs, semicolons, bars or spaces
    (a TSV export, a spreadsheet's CSV in a locale whose lists use ';', ``openstack image
    list -f value -c ID -c Name``), if it is one: told only "one column, no tag", the
    operator's first fix would be --tag, and every row would get one tag."""
    inner = field.strip()
    for separator, (name, quoted) in _SEPARATORS.items():
        if separator in inner:
            return (
                f"its fields look separated by {name}, and bulktag reads commas: convert the "
                f"input first (e.g. tr {quoted} ',')"
            )
    return None


def _header_columns(fields: list[str], rules: TagRules, constant: ConstantTag | None) -> _Columns:
    names = [field.strip().lower() for field in fields]
    image_id = next((names.index(name) for name in _ID_COLUMNS if name in names), None)
    if image_id is None:
        near = next((field.strip() for field in fields if _word(field) in _NEAR_ID), None)
        fix = f"rename {_echo(near)} to image_id" if near else "name the column image_id"
        raise InputRefused(f"the header ({_shown(fields)}) names no image id column: {fix}")
    if constant is not None:
        if len(names) > 1:
            raise InputRefused(
                f"with --tag the input is a list of image ids, but its header ({_shown(fields)}) "
                "names more columns: list only the ids (openstack image list -f value -c ID)"
            )
        return _Columns(rules, image_id, headerless=False, two_wide=False, constant=constant)
    return _named_columns(names, fields, image_id, rules)


def _named_columns(names: list[str], fields: list[str], image_id: int, rules: TagRules) -> _Columns:
    if "tag" in names:
        tag = names.index("tag")
    elif rules.values and "key" in names:
        tag = names.index("key")
    elif len(names) == 1:
        raise InputRefused(
            f"the input is a list of image ids (its header names one column, {_shown(fields)}): "
            "give the tag with --tag TAG"
        )
    else:
        column = "tag (or key)" if rules.values else "tag"
        raise InputRefused(
            f"the header ({_shown(fields)}) names no {column} column, and no other column (such "
            f"as an image name) is ever taken for the tag: name the column {column}, or give "
            "only the ids (openstack image list -f value -c ID) and the tag with --tag TAG"
        )
    value = names.index("value") if rules.values and "value" in names else None
    return _Columns(rules, image_id, tag, value, headerless=False, two_wide=len(names) == 2)


# Whole-input encodings and formats told by their first bytes (undecodable bytes arrive as
# lone surrogates U+DC80..U+DCFF, see open_text).
_MAGIC = (
    (("\udcff\udcfe", "\udcfe\udcff"),
     "is UTF-16 or UTF-32 (it starts with its byte-order mark), not UTF-8: convert it first, "
     "e.g. iconv -f UTF-16 -t UTF-8 in.csv > in-utf8.csv"),
    (("\x1f\udc8b",),
     "is gzip-compressed: decompress it first, e.g. zcat in.csv.gz | bulktag run -"),
)  # fmt: skip
# Characters that text never has: C0 controls but tab and line ends, and undecodable bytes.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\udc80-\udcff]")


def _check_encoding(line: str, first: bool) -> None:
    """InputRefused when a line before the first row (``first``: the input's first line) shows
    that the input is not UTF-8 text: UTF-16 (with or without a byte-order mark), compressed
    or binary data would only make one garbled invalid row a line. Lines, not the first
    bytes read: the verdict must not depend on how a pipe's producer cut its writes. A stray
    bad byte later in a text file stays that row's problem."""
    line = line.rstrip("\r\n")  # a CRLF may come whole or as CR then LF: judge the text
    if first:
        for prefixes, problem in _MAGIC:
            if line.startswith(prefixes):
                raise InputRefused(f"the input {problem}")
    if line.count("\x00") * 4 >= len(line) > 0:
        raise InputRefused(
            "the input looks like UTF-16 without a byte-order mark (NUL bytes between the "
            "characters), not UTF-8: convert it first, e.g. iconv -f UTF-16LE -t UTF-8"
        )
    bad = len(_NOT_TEXT.findall(line))
    if bad >= 2 and bad * 10 >= len(line) * 3:  # random bytes: ~half; Latin-1 text: a few %
        raise InputRefused(
            f"the input is not text: its line {'1' if first else 'before the first row'} is "
            "largely control characters or bytes that are not UTF-8; give a UTF-8 CSV "
            "(image_id,tag)"
        )


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
    if columns.constant is not None:  # --tag: rows are one column, the lane's are two
        return None
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
    map: several times cheaper a row than a regex per line and a Row call per row. CRLF line
    ends become LF first.
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


# Characters read at once from a file (~1,400 plain lines), and bytes from a pipe.
_BLOCK_CHARS = 1 << 16
_PIPE_BYTES = 1 << 16
# A line longer than this is an invalid row; its text beyond a short prefix is dropped as it
# comes, so no line — not even a stray quote's — can hold more than this in memory.
_LINE_LIMIT = _FIELD_LIMIT
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class _Overlong:
    """A line over _LINE_LIMIT: its first characters, for the error."""

    prefix: str


class _LineSplitter:
    """Text as it comes → blocks of whole lines, the moment their line end has come.

    A line ends at LF, CRLF or a lone CR (universal newlines, as ``csv`` has it), also when a
    CRLF is split between two pieces. What follows the last line end waits for the next piece
    (or the end of the input: :meth:`finish`).
    """

    def __init__(self) -> None:
        self._partial: list[str] = []
        self._size = 0
        self._overlong: str | None = None  # the prefix of an overlong line being skipped
        self._after_cr = False  # the last piece ended with CR: a LF next is part of it

    def feed(self, text: str) -> list[str | _Overlong]:
        if self._after_cr:
            self._after_cr = False
            if text.startswith("\n"):
                text = text[1:]
        end = max(text.rfind("\n"), text.rfind("\r")) + 1
        if end == 0:
            self._grow(text)
            return []
        whole = text[:end]
        done: list[str | _Overlong] = []
        if self._overlong is not None:
            first_end = _LINE_END.search(whole)
            assert first_end is not None
            done.append(_Overlong(self._overlong))
            self._overlong, whole = None, whole[first_end.end() :]
        elif self._partial:
            whole = "".join(self._partial) + whole
            self._partial.clear()
            self._size = 0
        if whole:
            done.append(whole)
        self._after_cr = text.endswith("\r")
        self._grow(text[end:])
        return done

    def finish(self) -> list[str | _Overlong]:
        """The last line, when the input does not end with a line end."""
        if self._overlong is not None:
            return [_Overlong(self._overlong)]
        return ["".join(self._partial)] if self._partial else []

    def _grow(self, text: str) -> None:
        if not text or self._overlong is not None:
            return
        self._partial.append(text)
        self._size += len(text)
        if self._size > _LINE_LIMIT:
            self._overlong = "".join(self._partial)[:_ECHO]
            self._partial.clear()
            self._size = 0


class _PastLineEnd(Exception):
    """The CSV reader asked for another line: a quoted field is still open at the line end."""


class _OneLine:
    """The CSV reader's input: one line a row, never more. A quoted field left open at the end
    of its line (a stray ``"``) makes the reader ask for the next line; that ends the row as
    invalid, instead of letting it swallow the lines after it up to the next quote."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line: str | None = None

    def __iter__(self) -> _OneLine:
        return self

    def __next__(self) -> str:
        line = self.line
        if line is None:
            raise _PastLineEnd
        self.line = None
        return line


def _lines_of(block: str) -> list[str]:
    return io.StringIO(block, newline="").readlines()  # LF, CRLF and CR, as _LineSplitter


class RowReader:
    """Every data row of an input as a Row or an InvalidRow, in input order: one by one
    (iteration), a batch at a time (:meth:`take`), or as read (:meth:`chunks`).

    A row is one physical line, and ``line`` its number: stable across runs over the same
    file (resume relies on that for invalid rows), and one bad line — a stray quote, binary
    noise, a line of megabytes — is one invalid row: it never costs another line.

    The input comes as pieces of text (:func:`read_rows`, :func:`read_stream`), cut into
    blocks of whole lines. A block of plain lines — the usual case — goes through the fast
    lane (one regex scan for the whole block instead of one per line); a block with
    anything else in it is read line by line. The lines up to the first row (header or data)
    are checked for problems of the whole input (:class:`InputRefused`).
    """

    def __init__(
        self,
        pieces: Iterator[str],
        rules: TagRules = GLANCE_RULES,
        constant: ConstantTag | None = None,
        *,
        may_wait: bool = False,
    ) -> None:
        self._pieces = pieces
        self._rules = rules
        self._constant = constant
        #: Whether reading can wait on a producer (a pipe, a terminal): then it belongs in a
        #: thread. A file's next block is on disk, so it is read where it is needed.
        self.may_wait = may_wait
        self.lines = 0  # physical lines read so far
        self._columns: _Columns | None = None
        self._plain: re.Pattern[str] | None = None  # one plain line
        self._plain_block: _PlainBlock | None = None  # every plain line of a block
        self._one_line = _OneLine()
        self._csv = csv.reader(self._one_line)
        self._chunks = self._read()
        self._spare: deque[Parsed] = deque()  # read, not yet handed out

    def __iter__(self) -> RowReader:
        return self

    def __next__(self) -> Parsed:
        spare = self._spare
        while not spare:
            spare.extend(next(self._chunks))
        return spare.popleft()

    def check_head(self) -> None:
        """Read up to the first row (header or data), so that a problem of the whole input
        raises InputRefused now, before anything is sent; what was read is kept."""
        while self._columns is None:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._spare.extend(chunk)

    def take(self, limit: int) -> list[Parsed]:
        """Up to ``limit`` rows; an empty list at the end of the input."""
        batch = list(self._spare)
        self._spare.clear()
        for chunk in self._chunks:
            batch += chunk
            if len(batch) >= limit:
                break
        if len(batch) > limit:
            self._spare.extend(batch[limit:])
            del batch[limit:]
        return batch

    def chunks(self) -> Iterator[list[Parsed]]:
        """The rows of each piece of input as it is read (possibly none): nothing read is
        held back for what is still to come."""
        if self._spare:
            yield list(self._spare)
            self._spare.clear()
        yield from self._chunks

    def _read(self) -> Iterator[list[Parsed]]:
        splitter = _LineSplitter()
        for piece in self._pieces:
            for block in splitter.feed(piece):
                yield self._parse(block)
        for block in splitter.finish():
            yield self._parse(block)

    def _parse(self, block: str | _Overlong) -> list[Parsed]:
        if isinstance(block, _Overlong):
            self.lines += 1
            if self._columns is None:  # a broken first row says nothing of the layout
                _check_encoding(block.prefix, self.lines == 1)
                self._set_columns(_Columns(self._rules, constant=self._constant))
            error = f"line is longer than {_LINE_LIMIT:,} characters: {_echo(block.prefix)}"
            return [InvalidRow(self.lines, None, None, error)]
        fast = self._plain_block
        if fast is not None and (rows := fast.rows(block, self.lines + 1)) is not None:
            self.lines += len(rows)
            return rows
        parsed = []
        for line in _lines_of(block):
            self.lines += 1
            item = self._parse_line(self.lines, line)
            if item is not None:
                parsed.append(item)
        return parsed

    def _parse_line(self, number: int, line: str) -> Parsed | None:
        """One line → its row; None for a blank line, a comment or the header."""
        plain = self._plain
        if plain is not None and (pair := plain.fullmatch(line)) is not None:
            return Row(number, pair[1], pair[2])
        if self._columns is None:
            _check_encoding(line, number == 1)
        self._one_line.line = line
        try:
            fields = next(self._csv)
        except (_PastLineEnd, csv.Error) as exc:
            if self._columns is None:  # a broken first row says nothing of the layout
                self._set_columns(_Columns(self._rules, constant=self._constant))
            return _unreadable(number, line, exc)
        if _is_skipped(fields):
            return None
        if self._columns is None:  # the first row: a header, or already data
            columns, header = _first_columns(number, fields, self._rules, self._constant)
            self._set_columns(columns)
            if header:
                return None
        assert self._columns is not None
        return self._columns.pick(number, fields)

    def _set_columns(self, columns: _Columns) -> None:
        self._columns = columns
        self._plain = _plain_pair(columns)
        if self._plain is not None:
            self._plain_block = _PlainBlock(self._rules.max_key_length)


def _unreadable(number: int, line: str, exc: Exception) -> InvalidRow:
    if isinstance(exc, _PastLineEnd):
        error = "a quoted field is not closed on its line (a stray '\"'?): "
        return InvalidRow(number, None, None, error + _echo(line.rstrip("\r\n")))
    return InvalidRow(number, None, None, f"unreadable CSV row: {exc}")


def _text_pieces(text: io.TextIOBase) -> Iterator[str]:
    """A file's text a block at a time; a text stream that may wait on a producer a line at
    a time (a line's first 64K characters at most), so no row waits for a block to fill."""
    read = text.read if text.seekable() else text.readline
    while piece := read(_BLOCK_CHARS):
        yield piece


def _raw_pieces(raw: BinaryIO) -> Iterator[str]:
    """What a pipe's producer has written, decoded, as each read returns it: ``read`` of an
    unbuffered file returns what has arrived, up to _PIPE_BYTES, without waiting for more.
    Closes ``raw`` at the end (the reader owns it: nobody else may close it under a read)."""
    decode = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape").decode
    with raw:
        while data := raw.read(_PIPE_BYTES):
            if text := decode(data):
                yield text
        if text := decode(b"", final=True):
            yield text


def read_rows(
    text: io.TextIOBase, rules: TagRules = GLANCE_RULES, constant: ConstantTag | None = None
) -> RowReader:
    """Every data row of ``text`` (see :class:`RowReader`); ``constant``: ``--tag``."""
    return RowReader(_text_pieces(text), rules, constant, may_wait=not text.seekable())


def read_stream(
    raw: BinaryIO, rules: TagRules = GLANCE_RULES, constant: ConstantTag | None = None
) -> RowReader:
    """Every data row of an unbuffered binary stream (a pipe, a FIFO, a terminal), the rows of
    each read as soon as it returns; the reader owns ``raw`` and closes it at the end."""
    return RowReader(_raw_pieces(raw), rules, constant, may_wait=True)


def is_regular_file(binary: BinaryIO) -> bool:
    """Whether an opened input is a regular file, which can be read twice (or in memory)."""
    try:
        fd = binary.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return True  # bytes in memory: read where needed, as a file
    return stat.S_ISREG(os.fstat(fd).st_mode)


def read_input(
    binary: BinaryIO, rules: TagRules = GLANCE_RULES, constant: ConstantTag | None = None
) -> RowReader:
    """The rows of an opened input. A regular file is read a block at a time, where it is
    needed. Anything else — a pipe, a FIFO, ``<(...)``, a terminal, a character device — is
    read exactly once, as its producer writes, through a descriptor of its own that only the
    reader closes: the caller may close ``binary`` whenever it likes."""
    if is_regular_file(binary):
        return read_rows(open_text(binary), rules, constant)
    return read_stream(io.FileIO(os.dup(binary.fileno()), "rb"), rules, constant)
