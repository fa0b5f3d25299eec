"""One line is one row: a bad line — a stray quote, a line of megabytes, binary noise — is one
invalid row naming its line, and never costs another line, however the input arrives (a file
read in blocks, or a pipe whose producer cuts its writes anywhere)."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support import U1, U2
from support import read_csv as rows

from bulktag import source
from bulktag.model import InvalidRow, Row
from bulktag.source import (
    GLANCE_RULES,
    Parsed,
    RowReader,
    read_input,
    read_stream,
)

U3 = "11111111-2222-4333-8444-555555555555"
NOT_CLOSED = "a quoted field is not closed on its line"


def rows_in_pieces(data: bytes, cuts: list[int]) -> list[Parsed]:
    """``data`` as a pipe delivers it: bytes cut at ``cuts`` (a read returns each piece)."""
    return list(read_stream(Pieces(data, cuts)))  # type: ignore[arg-type]


class Pieces(io.RawIOBase):
    """A raw stream whose reads return the bytes between the cuts, one piece a read."""

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
        self._pieces = iter([data[a:b] for a, b in itertools.pairwise(bounds)])

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return next(self._pieces, b"")


@pytest.mark.parametrize(
    ("data", "bad_lines"),
    [
        pytest.param(f'{U1},gold\n{U2},"oops\n{U3},silver\n', [2], id="open-quote-mid-file"),
        pytest.param(f'{U1},gold\n{U2},"oops', [2], id="open-quote-last-line-no-newline"),
        pytest.param(f'{U1},"a\n{U2},gold\n{U3},b"\n', [1, 3], id="two-strays-around-a-row"),
        pytest.param(f'"{U1},gold\n{U2},gold\n', [1], id="quote-opens-the-first-field"),
        pytest.param(f'{U1},gold\r\n{U2},"oops\r\n{U3},silver\r\n', [2], id="crlf"),
        pytest.param(f'{U1},gold\r{U2},"oops\r{U3},silver\r', [2], id="cr-only"),
        pytest.param(f'image_id,tag\n{U1},"x""\n{U2},gold\n', [2], id="escaped-quote-then-open"),
        pytest.param(f'{U1},gold\n"\n{U2},gold\n', [2], id="a-lone-quote"),
    ],
)
def test_a_quoted_field_left_open_is_its_own_lines_error(data: str, bad_lines: list[int]) -> None:
    parsed = rows(data.encode())
    invalid = [item for item in parsed if isinstance(item, InvalidRow)]
    assert bad_lines == [item.line for item in invalid]
    assert NOT_CLOSED in invalid[0].error  # (a quote closing a later line is a tag error)
    good = [item for item in parsed if isinstance(item, Row)]
    assert len(good) == len(data.splitlines()) - len(bad_lines) - data.startswith("image_id")


def test_a_legitimate_quoted_field_on_one_line_still_works() -> None:
    data = f'image_id,note,tag\n"{U1}","a, b ""c""",gold\n{U2},"",silver\n'.encode()
    assert [Row(2, U1, "gold"), Row(3, U2, "silver")] == rows(data)


def test_an_overlong_line_is_one_invalid_row_and_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(source, "_LINE_LIMIT", 1000)
    data = f"{U1},gold\n{U2},".encode() + b"x" * 50_000 + f"\n{U3},silver\n".encode()
    held: list[int] = []
    real_grow = source._LineSplitter._grow

    def watched(self: source._LineSplitter, text: str) -> None:
        real_grow(self, text)
        held.append(self._size)

    monkeypatch.setattr(source._LineSplitter, "_grow", watched)
    parsed = rows_in_pieces(data, list(range(0, len(data), 300)))
    assert [Row(1, U1, "gold"), Row(3, U3, "silver")] == [parsed[0], parsed[2]]
    assert isinstance(parsed[1], InvalidRow)
    assert (2, f"line is longer than 1,000 characters: '{U2},{'x' * 43}'") == (
        parsed[1].line,
        parsed[1].error,
    )
    assert max(held) <= 1000 + 300  # never the whole line


# -- property: one bad line never costs another line ----------------------------------------

_GOOD = st.builds(
    lambda image, tag, end: f"{image},{tag}{end}",
    st.uuids().map(str),
    st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    st.sampled_from(["\n", "\r\n"]),
)
# Anything on one line: quotes, commas, undecodable bytes, NULs — but no line end, and not
# empty (a CR line then an empty LF line would be one CRLF: one line, not two).
_JUNK = st.builds(
    lambda text, end: text + end,
    st.text(st.sampled_from('"",, a#\t\x00é\udcff' + U1[:9]), min_size=1, max_size=60),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
_LINES = st.lists(st.tuples(st.booleans(), st.one_of(_GOOD, _JUNK)), min_size=1, max_size=40)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@settings(max_examples=400, deadline=None)
@given(_LINES, st.lists(st.integers(0, 5000), max_size=12))
def test_one_bad_line_never_costs_another_line(
    lines: list[tuple[bool, str]], cuts: list[int]
) -> None:
    """After a header (the layout is known), every good line is read as its row with its own
    line number, whatever junk is around it and however a pipe cuts the bytes."""
    texts = ["image_id,tag\n"] + [text for _, text in lines]
    data = b"".join(_encode(text) for text in texts)
    expected = {
        number: text.rstrip("\r\n")
        for number, text in enumerate(texts, start=1)
        if number > 1 and text in _good_texts(lines)
    }
    for parsed in (rows(data), rows_in_pieces(data, cuts)):
        found = {
            item.line: f"{item.image_id},{item.tag}" for item in parsed if isinstance(item, Row)
        }
        for number, text in expected.items():
            assert text.lower() == found.get(number, "").lower(), (number, text, parsed)
        assert all(1 < item.line <= len(texts) for item in parsed)


def _good_texts(lines: list[tuple[bool, str]]) -> set[str]:
    return {text for _, text in lines if "," in text and text.count('"') == 0 and _is_pair(text)}


def _is_pair(text: str) -> bool:
    image_id, _, tag = text.rstrip("\r\n").partition(",")
    return source.image_id_error(image_id) is None and source.tag_error(tag) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_GOOD, _JUNK), max_size=30).map(lambda ts: b"".join(map(_encode, ts))),
    st.lists(st.integers(0, 3000), max_size=10),
    st.integers(1, 300),
)
@example(data=b"11\x00\r\n", cuts=[], block=1)  # a CRLF read whole, or as CR then LF
def test_a_pipe_cut_anywhere_reads_what_the_file_reads(
    data: bytes, cuts: list[int], block: int
) -> None:
    """The same rows (or the same refusal) from a file read in blocks of any size and from a
    pipe whose writes are cut anywhere — inside a CRLF, inside a UTF-8 sequence."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(source, "_BLOCK_CHARS", block)
        from_file = outcome(lambda: rows(data))
    assert from_file == outcome(lambda: rows_in_pieces(data, cuts))


def outcome(read: object) -> list[Parsed] | str:
    try:
        return read()  # type: ignore[operator, no-any-return]
    except source.InputRefused as exc:
        return f"refused: {exc}"


def test_rows_of_each_read_are_handed_out_at_once() -> None:
    """A pipe's reader hands out the rows of each read as it returns — here, before the
    next read is even attempted."""
    reads: list[int] = []

    class Counted(Pieces):
        def read(self, size: int = -1) -> bytes:
            reads.append(len(reads))
            return super().read(size)

    data = f"{U1},gold\n{U2},silver\n{U3},gold\n".encode()
    reader: RowReader = read_stream(Counted(data, [len(data) // 3]))  # type: ignore[arg-type]
    chunks: Iterator[list[Parsed]] = reader.chunks()
    first = next(chunks)
    while not first:
        first = next(chunks)
    assert [Row(1, U1, "gold")] == first
    assert 1 == len(reads)


def test_only_a_regular_file_or_bytes_in_memory_is_read_as_a_file(tmp_path: Path) -> None:
    """Anything else — a pipe, a FIFO, a character device (a terminal, /dev/null) — may wait on
    a producer and can be read only once: it is read as a stream, through its own descriptor."""
    (tmp_path / "in.csv").write_text(f"{U1},gold\n")
    os.mkfifo(tmp_path / "fifo")
    read, write = os.pipe()
    fifo = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with (
            (tmp_path / "in.csv").open("rb") as regular,
            open(os.devnull, "rb") as device,
            os.fdopen(read, "rb") as pipe,
            os.fdopen(fifo, "rb") as named_pipe,
        ):
            assert [False, False] == [
                read_input(source, GLANCE_RULES).may_wait
                for source in (regular, io.BytesIO(b"x,y\n"))
            ]
            streams = [read_input(source) for source in (device, pipe, named_pipe)]
            assert [True, True, True] == [reader.may_wait for reader in streams]
            os.close(write)
            assert [] == list(streams[0])  # /dev/null: at its end at once
            assert [] == list(streams[1])  # the closed pipe
    finally:
        with contextlib.suppress(OSError):
            os.close(write)
