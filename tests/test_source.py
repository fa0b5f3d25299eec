"""CSV bytes → Row / InvalidRow: the header, the encodings, and every validation rule.

A bad row is a value (an InvalidRow with a reason), never an exception: nothing one row holds may
stop the run, and one bad line never costs another line. A row is one physical line, and its
number is that line's. Only a problem of the whole input (another encoding, binary data, a header
bulktag does not know, one column where two are needed) is refused, up front: InputRefused, before
any row is handed out.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import U1, U2
from support import read_csv as rows

from bulktag import source
from bulktag.model import InvalidRow, Row
from bulktag.source import InputRefused, Parsed, RowReader, open_text, read_rows

UPPER = "8A3F1C2E-5B7D-4C1E-9F00-3C2B1A0D9E87"
ALLOWED = "(allowed: letters, digits, '_' and '-')"

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TAG_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")


def outcome(reader: Iterator[Parsed]) -> list[Parsed] | str:
    """Every row, or what refused the input — which must come before any row."""
    read: list[Parsed] = []
    try:
        read.extend(reader)
    except InputRefused as exc:
        assert [] == read, "a whole-input problem is found before any row is handed out"
        return f"refused: {exc}"
    return read


def outcome_of(data: bytes) -> list[Parsed] | str:
    return outcome(read_rows(open_text(io.BytesIO(data))))


# -- header, layout and line numbers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(f"{U1},gold\n{U2},silver\n".encode(),
                     [Row(1, U1, "gold"), Row(2, U2, "silver")], id="no-header"),
        pytest.param(f"image_id,tag\n{U1},gold\n".encode(), [Row(2, U1, "gold")],
                     id="header"),
        pytest.param(f"tag,owner,image_id\ngold,alice,{U1}\n".encode(), [Row(2, U1, "gold")],
                     id="header-extra-columns-any-order"),
        pytest.param(f" Image_ID , TAG \n{U1},gold\n".encode(), [Row(2, U1, "gold")],
                     id="header-names-case-and-space-insensitive"),
        pytest.param(f"\ufeffimage_id,tag\n{U1},gold\n".encode(), [Row(2, U1, "gold")],
                     id="bom-then-header"),
        pytest.param(f"\ufeff{U1},gold\n".encode(), [Row(1, U1, "gold")], id="bom-no-header"),
        pytest.param(f"image_id,tag\r\n{U1},gold\r\n{U2},silver\r\n".encode(),
                     [Row(2, U1, "gold"), Row(3, U2, "silver")], id="crlf"),
        pytest.param(f"{U1},gold\r\n{U2},silver\n".encode(),
                     [Row(1, U1, "gold"), Row(2, U2, "silver")], id="mixed-crlf-and-lf"),
        pytest.param(f"{U1},gold".encode(), [Row(1, U1, "gold")], id="no-final-newline"),
        pytest.param(f'"{U1}","gold"\n'.encode(), [Row(1, U1, "gold")], id="quoted-fields"),
        pytest.param(f'image_id,tag\n\n# a comment\n   # indented comment\n  \n{U1},gold\n'
                     .encode(), [Row(6, U1, "gold")], id="blank-lines-and-comments-skipped"),
        pytest.param(f"# inventory of 2026-11-28\nimage_id,tag\n{U1},gold\n".encode(),
                     [Row(3, U1, "gold")], id="comment-before-header"),
        pytest.param(f'{U1},gold\n"x",\n{U2},silver\n'.encode(),
                     [Row(1, U1, "gold"),
                      InvalidRow(2, "x", "", "image_id is not a UUID: 'x'"),
                      Row(3, U2, "silver")], id="a-bad-row-does-not-stop-the-rest"),
        pytest.param(b"", [], id="empty-file"),
        pytest.param(b"image_id,tag\n", [], id="only-a-header"),
        pytest.param(b"\xef\xbb\xbfimage_id,tag\r\n", [], id="only-a-bom-and-header"),
        pytest.param(b"\n\n# nothing\n", [], id="only-blank-lines-and-comments"),
    ],
)  # fmt: skip
def test_rows_are_read_with_the_line_they_end_on(data: bytes, expected: list[Parsed]) -> None:
    assert expected == rows(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(f"{U1},gold,extra\n".encode(),
                     InvalidRow(1, U1, None, "expected 2 columns (image_id,tag), got 3"),
                     id="three-columns-no-header"),
        pytest.param(f"{U1},gold\n{U1}\n".encode(),
                     InvalidRow(2, U1, None, "expected 2 columns (image_id,tag), got 1"),
                     id="one-column-after-the-first-row"),
        pytest.param(f"image_id,tag\n{U1}\n".encode(),
                     InvalidRow(2, None, None,
                                "expected at least 2 columns, as the header names, got 1"),
                     id="short-row-with-header"),
        pytest.param(b"owner,tag,image_id\nalice,gold\n",
                     InvalidRow(2, None, None,
                                "expected at least 3 columns, as the header names, got 2"),
                     id="short-row-with-header-missing-last-named-column"),
    ],
)  # fmt: skip
def test_a_row_of_the_wrong_width_is_invalid(data: bytes, expected: InvalidRow) -> None:
    assert expected == rows(data)[-1]


def test_header_with_extra_columns_accepts_rows_of_any_sufficient_width() -> None:
    data = f"image_id,tag,note\n{U1},gold\n{U2},silver,x,y\n".encode()
    assert [Row(2, U1, "gold"), Row(3, U2, "silver")] == rows(data)


def test_quoted_comma_stays_in_its_field() -> None:
    (row,) = rows(f'{U1},"gold,silver"\n'.encode())
    assert isinstance(row, InvalidRow)
    assert "gold,silver" == row.tag
    assert f"tag contains ',' {ALLOWED}" == row.error


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_id", "tag", "expected"),
    [
        pytest.param(U1, "gold", Row(1, U1, "gold"), id="valid"),
        pytest.param(UPPER, "gold", Row(1, U1, "gold"), id="image-id-lowercased"),
        pytest.param(f"  {U1}\t", "  gold  ", Row(1, U1, "gold"), id="whitespace-stripped"),
        pytest.param(U1, "a_b-C9", Row(1, U1, "a_b-C9"), id="underscore-and-dash-ok"),
        pytest.param(U1, "t" * 255, Row(1, U1, "t" * 255), id="255-characters-ok"),
        pytest.param(U1, "", InvalidRow(1, U1, "", "tag is empty"), id="empty-tag"),
        pytest.param(U1, "   ", InvalidRow(1, U1, "", "tag is empty"), id="blank-tag"),
        pytest.param(U1, "t" * 256,
                     InvalidRow(1, U1, "t" * 256, "tag is 256 characters long (at most 255)"),
                     id="256-characters"),
        pytest.param(U1, "v1.2", InvalidRow(1, U1, "v1.2", f"tag contains '.' {ALLOWED}"),
                     id="dot"),
        pytest.param(U1, "team web",
                     InvalidRow(1, U1, "team web", f"tag contains U+0020 {ALLOWED}"),
                     id="inner-space"),
        pytest.param(U1, "café", InvalidRow(1, U1, "café", f"tag contains 'é' {ALLOWED}"),
                     id="non-ascii-letter"),
        pytest.param(U1, "ok😀", InvalidRow(1, U1, "ok😀", f"tag contains '😀' {ALLOWED}"),
                     id="four-byte-emoji"),
        pytest.param(U1, "a\tb", InvalidRow(1, U1, "a\tb", f"tag contains U+0009 {ALLOWED}"),
                     id="control-character"),
        pytest.param("", "gold", InvalidRow(1, "", "gold", "image_id is empty"),
                     id="empty-image-id"),
        pytest.param("img-1", "gold",
                     InvalidRow(1, "img-1", "gold", "image_id is not a UUID: 'img-1'"),
                     id="image-id-not-uuid"),
        pytest.param(U1[:-1], "gold",
                     InvalidRow(1, U1[:-1], "gold", f"image_id is not a UUID: '{U1[:-1]}'"),
                     id="image-id-one-digit-short"),
        pytest.param(U1.replace("-", ""), "gold",
                     InvalidRow(1, U1.replace("-", ""), "gold",
                                f"image_id is not a UUID: '{U1.replace('-', '')}'"),
                     id="image-id-without-dashes"),
        pytest.param("img", "", InvalidRow(1, "img", "", "image_id is not a UUID: 'img'"),
                     id="image-id-error-reported-first"),
    ],
)  # fmt: skip
def test_each_pair_is_validated_with_an_exact_reason(
    image_id: str, tag: str, expected: Parsed
) -> None:
    data = f'"{image_id}","{tag}"\n'.encode()
    assert [expected] == rows(data)


def test_a_long_bad_image_id_is_cut_short_in_the_error() -> None:
    (row,) = rows(b"x" * 500 + b",gold\n")
    assert isinstance(row, InvalidRow)
    assert "image_id is not a UUID: '" + "x" * 80 + "…'" == row.error


# -- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected_image_id", "expected_tag", "expected_in_error"),
    [
        pytest.param(f"{U1},ta".encode() + b"\xffg\n", U1, "ta\\xffg",
                     "tag contains a byte that is not UTF-8 (0xff)", id="bad-byte-in-tag"),
        pytest.param(f"{U1}".encode() + b"\xfe,gold\n", U1 + "\\xfe", "gold", "\\xfe",
                     id="bad-byte-in-image-id"),
        pytest.param(f"{U1},".encode() + b"\xed\xa0\x80\n", U1, "\\xed\\xa0\\x80",
                     "(0xed)", id="utf8-encoded-surrogate"),
        pytest.param(f"{U1},".encode() + b"\xc3\n", U1, "\\xc3", "(0xc3)",
                     id="truncated-utf8-sequence"),
    ],
)  # fmt: skip
def test_undecodable_bytes_become_an_invalid_row_with_escaped_text(
    data: bytes, expected_image_id: str, expected_tag: str, expected_in_error: str
) -> None:
    (row,) = rows(data)
    assert isinstance(row, InvalidRow)
    assert expected_image_id == row.image_id
    assert expected_tag == row.tag
    assert expected_in_error in row.error
    for text in (row.image_id, row.tag, row.error):
        text.encode("utf-8")  # strict: no lone surrogate may reach the journal


def test_binary_garbage_after_a_first_row_of_text_yields_invalid_rows_and_never_raises() -> None:
    data = (
        f"{U2},first\n".encode()
        + b"a," * 30_000
        + bytes(range(256)) * 4
        + f"\n{U1},gold\n".encode()
    )
    parsed = rows(data)
    assert Row(1, U2, "first") == parsed[0]
    assert Row(parsed[-1].line, U1, "gold") == parsed[-1]
    assert all(isinstance(item, InvalidRow) for item in parsed[1:-1])
    assert parsed[1:-1]


def test_nul_byte_makes_only_its_row_invalid() -> None:
    data = f"{U1},a\x00b\n{U2},gold\n".encode()
    assert [
        InvalidRow(1, U1, "a\x00b", f"tag contains U+0000 {ALLOWED}"),
        Row(2, U2, "gold"),
    ] == rows(data)


def test_a_2mb_line_is_one_invalid_row_and_reading_goes_on() -> None:
    data = f"{U1},".encode() + b"x" * 2_000_000 + f"\n{U2},gold\n".encode()
    first, second = rows(data)
    assert isinstance(first, InvalidRow)
    assert 1 == first.line
    assert "tag is 2000000 characters long (at most 255)" == first.error
    assert first.tag is not None
    assert len(first.tag) <= 400  # echoed, not stored whole in the journal
    assert Row(2, U2, "gold") == second


# -- property: nothing the input holds makes the reader raise ----------------------------------

_PIECES = st.sampled_from(
    [b"a", b",", b'"', b"\n", b"\r", b"\r\n", b"#", b" ", b"\xff", b"\x00", b"\xef\xbb\xbf",
     U1.encode(), UPPER.encode(), b"image_id", b"tag", b"\xc3\xa9", b"-", b"_", b"gold"]
)  # fmt: skip
_INPUTS = st.one_of(st.binary(max_size=300), st.lists(_PIECES, max_size=40).map(b"".join))


@settings(max_examples=300, deadline=None)
@given(_INPUTS)
def test_any_bytes_give_rows_or_invalid_rows_and_rows_are_always_valid(data: bytes) -> None:
    read = outcome_of(data)
    if isinstance(read, str):
        return  # refused as a whole, before any row
    for item in read:
        assert isinstance(item, Row | InvalidRow)
        if isinstance(item, Row):
            assert UUID_RE.fullmatch(item.image_id)
            assert TAG_RE.fullmatch(item.tag)
        else:
            for text in (item.image_id, item.tag, item.error):
                if text is not None:
                    text.encode("utf-8")
        assert item.line >= 1


# -- property: the fast lane reads exactly what the CSV path reads -----------------------------


def rows_without_fast_lane(data: bytes, monkeypatch: pytest.MonkeyPatch) -> list[Parsed] | str:
    with monkeypatch.context() as patch:
        patch.setattr(source, "_plain_pair", lambda columns: None)
        return outcome_of(data)


@settings(max_examples=500, deadline=None)
@given(_INPUTS)
def test_fast_lane_reads_exactly_what_the_csv_path_reads(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert outcome_of(data) == rows_without_fast_lane(data, monkeypatch)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            f'{U1},gold\n"{U2},multi\n{U1},line"\n{U2},silver\n'.encode(), id="quoted-span"
        ),
        pytest.param(f"image_id,tag\r\n{U1},gold\r\n{U2},silver\r\n".encode(), id="crlf-header"),
        pytest.param(f"tag,image_id\n{U1},gold\ngold,{U1}\n".encode(), id="header-swapped"),
        pytest.param(f"image_id,tag,note\n{U1},gold\n{U1},gold,x\n".encode(), id="header-3-wide"),
        pytest.param(f"# c\n\n{U1},gold\n{UPPER},gold\n{U1},{'x' * 256}\n".encode(), id="mixed"),
        pytest.param(f"{U1},gold\r{U2},silver\r".encode(), id="cr-only"),
    ],
)
def test_fast_lane_agrees_on_awkward_layouts(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = outcome_of(data)
    assert fast == rows_without_fast_lane(data, monkeypatch)
    assert fast  # each layout yields something to compare


def test_fast_lane_is_taken_for_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane is real: plain lines after a header never reach the CSV reader."""
    seen: list[list[str]] = []
    real_reader = source.csv.reader

    def counting_reader(lines: Iterator[str]) -> Iterator[list[str]]:
        for fields in real_reader(lines):
            seen.append(fields)
            yield fields

    monkeypatch.setattr(source.csv, "reader", counting_reader)
    parsed = rows(f"image_id,tag\n{U1},gold\n{U2},silver\n{UPPER},gold\n".encode())
    assert [Row(2, U1, "gold"), Row(3, U2, "silver"), Row(4, U1, "gold")] == parsed
    assert [["image_id", "tag"], [UPPER, "gold"]] == seen


@settings(max_examples=300, deadline=None)
@given(_INPUTS, st.integers(min_value=1, max_value=200))
def test_block_reading_reads_what_line_by_line_reading_reads(data: bytes, block: int) -> None:
    """Files are read a block of lines at a time; any block size gives the same rows."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(source, "_BLOCK_CHARS", block)
        blocks = outcome_of(data)
    by_line = outcome(read_rows(open_text(Pipe(data))))
    assert by_line == blocks
    assert outcome(read_rows(open_text(Pipe(data)))) == blocks


# Ids the block lane's loose pattern ([^,]{36}) lets through to its UUID check: real
# UUIDs; UUIDs with a digit turned into a fifth dash (the dashes where a UUID has them, and
# one more); UUIDs with a dash moved one place (four dashes, one misplaced); any mix.
def _with_char(text: str, at: int, char: str) -> str:
    return text[:at] + char + text[at + 1 :]


_UUIDS = st.uuids().map(str)
_NEAR_UUIDS = st.one_of(
    _UUIDS,
    st.tuples(_UUIDS, st.integers(0, 35)).map(lambda u: _with_char(u[0], u[1], "-")),
    st.tuples(_UUIDS, st.sampled_from([8, 13, 18, 23]), st.sampled_from([-1, 1])).map(
        lambda u: _with_char(_with_char(u[0], u[1], u[0][u[1] + u[2]]), u[1] + u[2], "-")
    ),
    st.text(alphabet="0123456789abcdef-", min_size=36, max_size=36),
    _UUIDS.map(str.upper),
    st.tuples(_UUIDS, st.integers(0, 35), st.sampled_from('gG é,"')).map(lambda u: _with_char(*u)),
)
# Tags of the strict characters, and tags the block lane's loose pattern lets through to its
# character check.
_NEAR_PLAIN_TAGS = ["gold", "t-1", "x" * 255, "x" * 256, "", "a b", "é", "a,b", 'a"b', "a\tb",
                    "a\rb", "a.b", "\u00a0"]  # fmt: skip


def _mostly(
    usual: st.SearchStrategy[str], now_and_then: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    """``usual`` seven times in eight: a block must be plain but for one line to reach the
    lane's checks at all."""
    return st.integers(0, 7).flatmap(lambda n: now_and_then if n == 0 else usual)


_NEAR_PLAIN_LINES = st.lists(
    st.tuples(
        _mostly(_UUIDS, _NEAR_UUIDS), _mostly(st.just("gold"), st.sampled_from(_NEAR_PLAIN_TAGS))
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_NEAR_PLAIN_LINES, st.sampled_from(["\n", "\r\n"]), st.integers(1, 400))
def test_block_reading_takes_only_real_uuids_and_strict_tags(
    pairs: list[tuple[str, str]], end: str, block: int
) -> None:
    data = "".join(f"{image_id},{tag}{end}" for image_id, tag in pairs).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(source, "_BLOCK_CHARS", block)
        blocks = outcome_of(data)
    assert outcome(read_rows(open_text(Pipe(data)))) == blocks


class Pipe(io.BytesIO):
    """Bytes that cannot seek, as stdin from a pipe: read line by line."""

    def seekable(self) -> bool:
        return False


def test_a_file_of_plain_lines_is_read_in_blocks_not_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(source, "_BLOCK_CHARS", 100)
    data = "".join(f"{U1[:-4]}{n:04d},t{n}\n" for n in range(500)).encode()
    one_by_one: list[int] = []
    real_parse_line = RowReader._parse_line

    def counting(self: RowReader, number: int, line: str) -> Parsed | None:
        one_by_one.append(number)
        return real_parse_line(self, number, line)

    monkeypatch.setattr(RowReader, "_parse_line", counting)
    reader = read_rows(open_text(io.BytesIO(data)))
    assert list(range(1, 501)) == [row.line for row in reader.take(10_000)]
    # The first block line by line (its first line decides there is no header), then only
    # whole blocks through the fast lane.
    assert [1, 2] == one_by_one


def test_take_keeps_what_it_read_beyond_its_limit_for_the_next_call() -> None:
    data = "".join(f"{U1[:-4]}{n:04d},t{n}\n" for n in range(50)).encode()
    reader = read_rows(open_text(io.BytesIO(data)))
    taken = [reader.take(7) for _ in range(9)]
    assert [7] * 7 + [1, 0] == [len(batch) for batch in taken]
    assert list(range(1, 51)) == [row.line for batch in taken for row in batch]
