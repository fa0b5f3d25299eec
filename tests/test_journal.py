"""The journal: its public line format, torn-tail repair, the resume index, ``--fresh``, and the
single writer (including a disk that fills up)."""

from __future__ import annotations

import errno
import json
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import AT, U1, U2

from bulktag.journal import (
    JournalError,
    JournalWriter,
    ResumeIndex,
    format_time,
    invalid_key,
    load_index,
    pair_key,
    prepare,
    read_blocks,
    render,
    repair_torn_tail,
)
from bulktag.journal import file as journal_file
from bulktag.journal import format as journal_format
from bulktag.journal import index as journal_index
from bulktag.model import InvalidRow, Outcome, Result, Row

FIELDS = ["line", "image_id", "tag", "outcome", "status", "attempts", "error", "request_id",
          "at", "elapsed_ms"]  # fmt: skip


def record(
    outcome: Outcome, image_id: str | None = U1, tag: str | None = "gold", line: int = 1
) -> bytes:
    return render(Result(line, image_id, tag, outcome, at=AT))


# -- render ------------------------------------------------------------------------------------


def test_render_writes_the_documented_fields_in_order_on_one_line() -> None:
    result = Result(17, U1, "team-web", Outcome.OK, status=204, attempts=2, error=None,
                    request_id="req-5f0c", at=AT, elapsed_ms=41)  # fmt: skip
    expected = (
        b'{"line": 17, "image_id": "8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87", "tag": "team-web", '
        b'"outcome": "ok", "status": 204, "attempts": 2, "error": null, '
        b'"request_id": "req-5f0c", "at": "2026-11-28T02:00:01.123Z", "elapsed_ms": 41}\n'
    )
    assert expected == render(result)


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(Result(3, None, None, Outcome.INVALID, error="expected 2 columns"),
                     id="invalid-with-nulls"),
        pytest.param(Result(4, U1, "gold", Outcome.FAILED, status=404,
                            error='no image "x"\nsecond line\ttab'), id="error-with-newline"),
        pytest.param(Result(5, U1, "gold", Outcome.GAVE_UP, status=None, attempts=8,
                            error="connect: refused"), id="gave-up-no-status"),
        pytest.param(Result(6, "x\\xff", "café😀", Outcome.INVALID, error="tag contains 'é'"),
                     id="non-ascii-and-escaped-bytes"),
    ],
)  # fmt: skip
def test_render_is_one_json_line_that_reads_back_as_the_result(result: Result) -> None:
    line = render(result)
    assert line.endswith(b"\n")
    assert 1 == line.count(b"\n")
    parsed = json.loads(line)
    assert FIELDS == list(parsed)
    assert [result.line, result.image_id, result.tag, result.outcome.value, result.status,
            result.attempts, result.error, result.request_id, format_time(result.at),
            result.elapsed_ms] == list(parsed.values())  # fmt: skip


def test_render_keeps_non_ascii_readable() -> None:
    line = render(Result(1, U1, "café", Outcome.INVALID, error="tag contains 'é'"))
    assert "café".encode() in line
    assert b"\\u" not in line


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(Result(1, U1, "gold", Outcome.OK, status=204, request_id="req-\udcff\udcfe"),
                     id="request-id-header-with-bad-bytes"),
        pytest.param(Result(1, U1, "gold", Outcome.FAILED, status=400, error="bad \udce9"),
                     id="error-with-bad-bytes"),
    ],
)  # fmt: skip
def test_render_never_raises_and_always_writes_utf8(result: Result) -> None:
    line = render(result)
    line.decode("utf-8")
    assert FIELDS == list(json.loads(line))


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        pytest.param(AT, "2026-11-28T02:00:01.123Z", id="milliseconds"),
        pytest.param(0.0, "1970-01-01T00:00:00.000Z", id="epoch"),
        pytest.param(AT + 0.0004, "2026-11-28T02:00:01.123Z", id="sub-millisecond-dropped"),
        pytest.param(datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC).timestamp(),
                     "2026-11-28T23:59:59.000Z", id="whole-second"),
    ],
)  # fmt: skip
def test_format_time_is_rfc3339_utc_with_milliseconds(epoch: float, expected: str) -> None:
    assert expected == format_time(epoch)


# -- repair_torn_tail --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kept", "torn"),
    [
        # a clean journal: nothing to cut
        pytest.param(b"", b"", id="empty"),
        pytest.param(b'{"a": 1}\n', b"", id="one-clean-line"),
        pytest.param(b'{"a": 1}\n{"b": 2}\n', b"", id="clean-lines"),
        pytest.param(b"\n", b"", id="just-a-newline"),
        # a torn last line
        pytest.param(b'{"a": 1}\n{"b": 2}\n', b'{"c": 3, "ou', id="unterminated-last-line"),
        pytest.param(b"", b'{"line": 1, "image', id="one-torn-line-no-newline-at-all"),
        pytest.param(b'{"a": 1}\n', b"x", id="one-byte-torn"),
        pytest.param(b'{"a": 1}\n', b"x" * 65535, id="tail-just-under-64k"),
        pytest.param(b'{"a": 1}\n', b"x" * 65536, id="tail-exactly-64k"),
        pytest.param(b'{"a": 1}\n', b"x" * 65537, id="tail-just-over-64k"),
        pytest.param(b'{"a": 1}\n', b"x" * 200_000, id="tail-over-three-chunks"),
        pytest.param(b"", b"x" * 200_000, id="long-torn-line-no-newline-at-all"),
    ],
)  # fmt: skip
def test_repair_cuts_only_a_torn_tail_and_keeps_it_aside(
    tmp_path: Path, kept: bytes, torn: bytes
) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(kept + torn)
    assert len(torn) == repair_torn_tail(path)
    assert kept == path.read_bytes()
    side_file = tmp_path / "j.jsonl.torn"
    if torn:
        assert torn + b"\n" == side_file.read_bytes()
    else:  # a clean journal is left alone, and no side file made
        assert not side_file.exists()


def test_repair_appends_every_torn_tail_to_the_side_file(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b"ok\nfirst-tear")
    repair_torn_tail(path)
    path.write_bytes(path.read_bytes() + b"more\nsecond-tear")
    repair_torn_tail(path)
    assert b"ok\nmore\n" == path.read_bytes()
    assert b"first-tear\nsecond-tear\n" == (tmp_path / "j.jsonl.torn").read_bytes()


# -- keys --------------------------------------------------------------------------------------


def test_pair_key_is_a_128_bit_int_and_the_same_on_every_call() -> None:
    key = pair_key(U1, "gold")
    assert key == pair_key(U1, "gold")
    assert -(2**127) <= key < 2**127


_HASHES = st.integers(-(2**63), 2**63 - 1)  # what hash() gives on a 64-bit build


@given(_HASHES, _HASHES)
def test_a_fingerprint_keeps_both_of_its_hashes_whole(first: int, second: int) -> None:
    """Whatever the two 64-bit hashes of a pair are, both can be read back from its
    fingerprint: two fingerprints are equal only if both of their hashes are."""
    hashes = {b"data": first, b"data\x00": second}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(journal_format, "hash", hashes.__getitem__, raising=False)
        key = journal_format.fingerprint_bytes(b"data")
    low = key & (2**64 - 1)
    second_back = low - 2**64 if low >= 2**63 else low
    assert (first, second) == ((key ^ second_back) >> 64, second_back)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("a", "bc"), ("ab", "c"), id="boundary-moves"),
        pytest.param((U1, "gold"), (U2, "gold"), id="other-image"),
        pytest.param((U1, "gold"), (U1, "Gold"), id="tag-case-matters"),
        pytest.param((U1, "gold"), (U1, "gold "), id="trailing-space"),
    ],
)
def test_pair_keys_of_different_pairs_differ(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert pair_key(*first) != pair_key(*second)


@pytest.mark.parametrize(
    ("image_id", "tag"),
    [
        pytest.param(U1, "gold", id="valid-looking"),
        pytest.param("x", "", id="short"),
        pytest.param("", "", id="empty"),
    ],
)
def test_invalid_key_never_equals_the_pair_key_of_the_same_strings(image_id: str, tag: str) -> None:
    assert pair_key(image_id, tag) != invalid_key(1, image_id, tag)


def test_invalid_key_depends_on_the_line() -> None:
    assert invalid_key(1, "x", "y") != invalid_key(2, "x", "y")


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(Row(4, U1, "gold"), id="row"),
        pytest.param(InvalidRow(9, "x\\xff", "g.", "image_id is not a UUID"), id="invalid"),
        pytest.param(InvalidRow(9, None, None, "expected 2 columns"), id="invalid-nulls"),
    ],
)
def test_a_recorded_item_is_settled_by_its_own_journal_line(item: Row | InvalidRow) -> None:
    if isinstance(item, Row):
        outcome, key = Outcome.OK, pair_key(item.image_id, item.tag)
    else:
        outcome, key = Outcome.INVALID, invalid_key(item.line, item.image_id, item.tag)
    line = render(Result(item.line, item.image_id, item.tag, outcome, at=AT))
    assert load_index([line]).is_settled(key)


# -- load_index --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "expected_settled", "expected_settled_retrying_failed"),
    [
        pytest.param([Outcome.OK], True, True, id="ok-done"),
        pytest.param([Outcome.FAILED], True, False, id="failed-settled-unless-retry-failed"),
        pytest.param([Outcome.GAVE_UP], False, False, id="gave-up-sent-again"),
        pytest.param([Outcome.FAILED, Outcome.GAVE_UP], False, False,
                     id="gave-up-after-failed-wins"),
        pytest.param([Outcome.GAVE_UP, Outcome.FAILED], True, False,
                     id="failed-after-gave-up-wins"),
        pytest.param([Outcome.FAILED, Outcome.OK], True, True, id="ok-after-failed-wins"),
        pytest.param([Outcome.GAVE_UP, Outcome.OK], True, True, id="ok-after-gave-up-wins"),
        pytest.param([Outcome.GAVE_UP, Outcome.GAVE_UP], False, False, id="gave-up-twice"),
    ],
)  # fmt: skip
def test_the_last_record_of_a_pair_decides_whether_it_is_settled(
    outcomes: list[Outcome], expected_settled: bool, expected_settled_retrying_failed: bool
) -> None:
    index = load_index([record(outcome) for outcome in outcomes])
    key = pair_key(U1, "gold")
    assert expected_settled == index.is_settled(key)
    assert expected_settled_retrying_failed == index.is_settled(key, retry_failed=True)
    assert len(outcomes) == index.records


@pytest.mark.parametrize(
    "outcomes",
    [
        [Outcome.OK], [Outcome.FAILED], [Outcome.GAVE_UP], [Outcome.FAILED, Outcome.GAVE_UP],
        [Outcome.GAVE_UP, Outcome.FAILED], [Outcome.FAILED, Outcome.OK],
        [Outcome.OK, Outcome.FAILED], [Outcome.OK, Outcome.GAVE_UP],
        [Outcome.GAVE_UP, Outcome.OK, Outcome.FAILED],
    ],
)  # fmt: skip
def test_the_fast_path_and_settle_agree_on_every_sequence(outcomes: list[Outcome]) -> None:
    """load_index folds plain Glance records inline; the same lines through the careful path
    (json.loads, then ResumeIndex.settle) must give the same index."""
    text = b"".join(record(outcome) for outcome in outcomes)
    careful = ResumeIndex.empty()
    journal_index._load_lines(careful, text)
    fast = load_index([text])
    assert (careful.done, careful.failed, careful.records) == (
        fast.done,
        fast.failed,
        fast.records,
    )


def test_an_invalid_record_settles_that_line_and_not_the_pair() -> None:
    index = load_index([record(Outcome.INVALID, line=7)])
    assert index.is_settled(invalid_key(7, U1, "gold"))
    assert not index.is_settled(pair_key(U1, "gold"))
    assert not index.is_settled(invalid_key(8, U1, "gold"))


def test_other_pairs_are_not_settled() -> None:
    index = load_index([record(Outcome.OK, U1, "gold")])
    assert not index.is_settled(pair_key(U2, "gold"))
    assert not index.is_settled(pair_key(U1, "silver"))


def test_unreadable_lines_are_counted_and_skipped_and_blank_lines_ignored() -> None:
    lines = [
        record(Outcome.OK, U1, "gold"),
        b"not json\n",
        b"\n",
        b"   \r\n",
        b'{"outcome": "ok"}\n',  # no pair
        b'{"outcome": "maybe", "image_id": "x", "tag": "y"}\n',
        b"[1, 2]\n",
        b'"just a string"\n',
        b"null\n",
        b'{"line": 1, "image_id": "\xff\xfe"}\n',  # not UTF-8
        b'{"line": 2, "outcome": "invalid"}\n',
        record(Outcome.OK, U2, "silver"),
    ]
    index = load_index(lines)
    assert (10, 8) == (index.records, index.unreadable)
    assert index.is_settled(pair_key(U1, "gold"))
    assert index.is_settled(pair_key(U2, "silver"))


def test_an_empty_journal_gives_an_empty_index() -> None:
    assert ResumeIndex(set(), set(), 0, 0) == load_index([])


# -- reading in blocks: the fast scan agrees with the line-by-line parse --------------------

# Every kind of line a journal can hold: plain Glance adds (the fast pattern), removes, IMS
# records, invalid rows, escapes, blank and CRLF lines, garbage, and two records glued onto one
# line (what a pre-repair torn write left).
_JOURNAL_LINES = st.sampled_from(
    [
        record(Outcome.OK, U1, "gold"),
        record(Outcome.FAILED, U1, "gold"),
        record(Outcome.GAVE_UP, U1, "gold"),
        record(Outcome.OK, U2, "silver", line=3),
        record(Outcome.INVALID, U2, "bad tag", line=4),
        record(Outcome.OK, U1, 'quo"te'),
        render(Result(5, U1, "gold", Outcome.OK, at=AT, op="remove")),
        render(Result(5, U2, "silver", Outcome.OK, at=AT, op="remove")),
        render(Result(5, U1, 'quo"te', Outcome.OK, at=AT, op="remove")),
        render(Result(5, U1, "gold", Outcome.FAILED, at=AT, op="remove")),
        render(Result(6, U2, "env", Outcome.OK, at=AT, value="prod", api="ims")),
        render(Result(7, U2, "env", Outcome.OK, at=AT, value="test", api="ims")),
        record(Outcome.OK, U2, "crlf")[:-1] + b"\r\n",
        b"\n",
        b"not json\n",
        record(Outcome.OK, U1, "glued")[:40] + record(Outcome.OK, U2, "after-glue"),
        # Lines that look plain but are not records parse() reads: the lanes must agree.
        record(Outcome.OK, U2, "typed").replace(b'"status": null', b'"status": "204"'),
        record(Outcome.OK, U2, "typed").replace(b'"attempts": 0', b'"attempts": "0"'),
        record(Outcome.OK, U2, "typed").replace(b'"attempts": 0', b'"attempts": 0.5'),
        record(Outcome.OK, U2, "typed").replace(b'"attempts": 0', b'"attempts": true'),
        record(Outcome.OK, U2, "typed").replace(b'"line": 1', b'"line": 01'),
        record(Outcome.OK, U2, "typed").replace(b'"error": null', b'"error": 5'),
        record(Outcome.OK, U2, "typed").replace(b'"elapsed_ms": 0', b'"elapsed_ms": -0'),
        record(Outcome.OK, U2, "tab\there").replace(b"\\t", b"\t"),
        render(Result(8, U2, "esc", Outcome.OK, at=AT, error='tab\tand \\ quote"')),
        render(Result(8, U2, "esc", Outcome.FAILED, at=AT, error="\x01 é \\u", request_id='"')),
        record(Outcome.OK, U2, "typed").replace(b'"error": null', b'"error": "bad \\x escape"'),
    ]
)


def index_state(index: ResumeIndex) -> tuple[object, ...]:
    return index.done, index.failed, index.latest, index.records, index.unreadable


@given(st.lists(_JOURNAL_LINES, max_size=30), st.integers(min_value=1, max_value=600))
def test_blocks_of_any_size_give_the_index_that_line_by_line_gives(
    lines: list[bytes], block_size: int
) -> None:
    text = b"".join(lines)
    by_line = load_index(text.splitlines(keepends=True))
    blocks = list(_blocks(text, block_size))
    assert b"".join(blocks) == text
    assert index_state(by_line) == index_state(load_index(blocks))


# Mostly plain ok records (whole blocks of them take the one-findall path), now and then a line
# that sends its block down the other path.
_MOSTLY_PLAIN_OK = st.one_of(
    st.builds(
        lambda n, tag: record(Outcome.OK, U1 if n % 2 else U2, tag, line=n),
        st.integers(min_value=1, max_value=99),
        st.sampled_from(["gold", "silver", "crlf"]),
    ),
    _JOURNAL_LINES,
)


@settings(max_examples=300)
@given(st.lists(_MOSTLY_PLAIN_OK, max_size=40), st.integers(min_value=1, max_value=2000))
def test_the_block_scan_gives_the_index_that_json_loads_gives(
    lines: list[bytes], block_size: int
) -> None:
    """Whatever the mix of lines and blocks, the index is the one parsing every line as JSON
    (then folding it in with ResumeIndex.settle) gives."""
    text = b"".join(lines)
    careful = ResumeIndex.empty()
    journal_index._load_lines(careful, text)
    assert index_state(careful) == index_state(load_index(_blocks(text, block_size)))


def test_a_block_of_ok_records_clears_what_an_earlier_block_failed() -> None:
    failed_then_ok = [record(Outcome.FAILED, U1, "gold"), record(Outcome.OK, U1, "gold")]
    index = load_index([failed_then_ok[0], failed_then_ok[1] * 3])
    assert index.is_settled(pair_key(U1, "gold"))
    assert pair_key(U1, "gold") not in index.failed
    assert 4 == index.records


def test_a_block_of_ok_records_with_an_escape_in_one_keys_each_like_pair_key() -> None:
    tags = ["gold", "back\\slash", "new\nline", "silver"]
    index = load_index([b"".join(record(Outcome.OK, U1, tag) for tag in tags)])
    assert {pair_key(U1, tag) for tag in tags} == index.done
    assert (4, 0) == (index.records, index.unreadable)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"", id="unterminated-last-line"),
        pytest.param(b"\n", id="blank-line-at-the-end"),
        pytest.param(b"garbage\n", id="garbage-line-at-the-end"),
    ],
)
def test_a_block_of_ok_records_with_anything_else_at_its_end_is_read_line_by_line(
    tail: bytes,
) -> None:
    block = record(Outcome.OK, U1, "gold") + record(Outcome.OK, U2, "silver")
    if not tail:
        block = block[:-1]  # the last record, complete but without its newline
    index = load_index([block + tail])
    assert index.is_settled(pair_key(U1, "gold"))
    assert index.is_settled(pair_key(U2, "silver"))
    assert (2 + (tail == b"garbage\n"), int(tail == b"garbage\n")) == (
        index.records,
        index.unreadable,
    )


def _blocks(text: bytes, size: int) -> list[bytes]:
    """What read_blocks makes of ``text`` with blocks of ``size`` bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.jsonl"
        path.write_bytes(text)
        return list(read_blocks(path, size))


def test_each_block_ends_at_a_line_end(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(record(Outcome.OK) * 50 + b"tail without newline")
    blocks = list(read_blocks(path, 100))
    assert all(block.endswith(b"\n") for block in blocks[:-1])
    assert blocks[-1].endswith(b"tail without newline")
    assert 51 == sum(block.count(b"\n") for block in blocks) + 1


def test_a_glued_line_is_one_unreadable_line_as_json_sees_it() -> None:
    """A record cut short with the next one written after it on the same line (what a torn
    write left before repair_torn_tail existed): one line, which json.loads cannot read. The
    fast scan finds the whole record inside it but must not take it: the line is not plain."""
    glued = record(Outcome.OK, U1, "cut")[:40] + record(Outcome.OK, U2, "whole")
    index = load_index([record(Outcome.OK, U1, "before") + glued])
    assert index.is_settled(pair_key(U1, "before"))
    assert not index.is_settled(pair_key(U2, "whole"))
    assert (2, 1) == (index.records, index.unreadable)


# -- prepare -----------------------------------------------------------------------------------

MOVED_NAME = re.compile(r"bulktag-results\.\d{8}T\d{6}Z(-\d+)?\.jsonl")


class FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz: object = None) -> FrozenDatetime:  # type: ignore[override]
        return cls(2026, 11, 28, 2, 0, 1, tzinfo=UTC)


def test_prepare_on_a_missing_journal_gives_an_empty_index(tmp_path: Path) -> None:
    index, torn, moved = prepare(tmp_path / "bulktag-results.jsonl", fresh=False)
    assert (ResumeIndex.empty(), 0, None) == (index, torn, moved)


def test_prepare_repairs_the_tail_and_loads_the_index(tmp_path: Path) -> None:
    path = tmp_path / "bulktag-results.jsonl"
    torn = record(Outcome.OK, U2, "silver")[:30]
    path.write_bytes(record(Outcome.OK, U1, "gold") + torn)
    index, cut, moved = prepare(path, fresh=False)
    assert (len(torn), None, 1, 0) == (cut, moved, index.records, index.unreadable)
    assert index.is_settled(pair_key(U1, "gold"))
    assert not index.is_settled(pair_key(U2, "silver"))
    assert record(Outcome.OK, U1, "gold") == path.read_bytes()


def test_prepare_fresh_moves_the_old_journal_aside_intact(tmp_path: Path) -> None:
    path = tmp_path / "bulktag-results.jsonl"
    content = record(Outcome.OK) + b"torn tail is moved as is"
    path.write_bytes(content)
    index, torn, moved = prepare(path, fresh=True)
    assert (ResumeIndex.empty(), 0) == (index, torn)
    assert moved is not None
    assert MOVED_NAME.fullmatch(moved.name)
    assert tmp_path == moved.parent
    assert content == moved.read_bytes()
    assert not path.exists()


def test_prepare_fresh_twice_in_one_second_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_file, "datetime", FrozenDatetime)
    path = tmp_path / "bulktag-results.jsonl"
    moved = []
    for run in range(3):
        path.write_bytes(f"run {run}\n".encode())
        moved.append(prepare(path, fresh=True)[2])
    assert [
        tmp_path / "bulktag-results.20261128T020001Z.jsonl",
        tmp_path / "bulktag-results.20261128T020001Z-1.jsonl",
        tmp_path / "bulktag-results.20261128T020001Z-2.jsonl",
    ] == moved
    assert [b"run 0\n", b"run 1\n", b"run 2\n"] == [p.read_bytes() for p in moved if p]


def test_prepare_fresh_without_an_old_journal_moves_nothing(tmp_path: Path) -> None:
    assert (ResumeIndex.empty(), 0, None) == prepare(tmp_path / "j.jsonl", fresh=True)
    assert [] == list(tmp_path.iterdir())


@pytest.mark.parametrize("fresh", [False, True])
def test_prepare_on_a_directory_is_a_journal_error(tmp_path: Path, fresh: bool) -> None:
    directory = tmp_path / "bulktag-results.jsonl"
    directory.mkdir()
    with pytest.raises(JournalError, match="is not a regular file"):
        prepare(directory, fresh=fresh)
    assert directory.is_dir()


# -- JournalWriter -----------------------------------------------------------------------------


class FlakyFile:
    """Stands in for the writer's file: short writes, or a write that fails."""

    def __init__(self, chunk: int = 3, error: OSError | None = None) -> None:
        self.data = b""
        self.chunk = chunk
        self.error = error
        self.closed = False

    def write(self, view: memoryview) -> int:
        if self.error is not None:
            raise self.error
        piece = bytes(view[: self.chunk])
        self.data += piece
        return len(piece)

    def tell(self) -> int:
        return len(self.data)

    def fileno(self) -> int:  # no real descriptor: fsync or truncate fail as on a bad fd
        raise OSError(9, "Bad file descriptor")

    def close(self) -> None:
        self.closed = True


def test_write_batch_appends_every_line_in_order(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b"earlier\n")
    writer = JournalWriter(path)
    writer.write_batch([b"one\n", b"two\n"])
    writer.write_batch([b"three\n"])
    writer.close()
    assert b"earlier\none\ntwo\nthree\n" == path.read_bytes()


def test_write_batch_goes_on_after_a_short_write(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path / "j.jsonl")
    writer._file.close()
    fake = FlakyFile(chunk=3)
    writer._file = fake  # type: ignore[assignment]
    writer.write_batch([b"0123456789\n", b"abc\n"])
    assert b"0123456789\nabc\n" == fake.data


@pytest.mark.parametrize(
    ("batches", "expected_fsyncs"),
    [
        pytest.param([], 0, id="nothing-written-no-fsync"),
        pytest.param([[b"a\n"]], 1, id="written-then-closed"),
        pytest.param([[b"a\n"], [b"b\n"]], 1, id="several-batches-one-fsync"),
    ],
)
def test_close_fsyncs_what_was_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batches: list[list[bytes]],
    expected_fsyncs: int,
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(journal_file.os, "fsync", synced.append)
    writer = JournalWriter(tmp_path / "j.jsonl", fsync_interval=3600)
    for batch in batches:
        writer.write_batch(batch)
    writer.close()
    assert expected_fsyncs == len(synced)


def test_fsync_is_due_only_with_unsynced_data_and_the_interval_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_file.os, "fsync", lambda fd: None)
    every_batch = JournalWriter(tmp_path / "a.jsonl", fsync_interval=0)
    hourly = JournalWriter(tmp_path / "b.jsonl", fsync_interval=3600)
    assert (False, False) == (every_batch.fsync_due(), hourly.fsync_due())
    every_batch.write_batch([b"x\n"])
    hourly.write_batch([b"x\n"])
    assert (True, False) == (every_batch.fsync_due(), hourly.fsync_due())
    every_batch.fsync()
    assert not every_batch.fsync_due()
    every_batch.close()
    hourly.close()


def test_a_failing_write_raises_oserror(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path / "j.jsonl")
    writer._file.close()
    fake = FlakyFile(error=OSError(errno.ENOSPC, "No space left on device"))
    writer._file = fake  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space left on device") as raised:
        writer.write_batch([b"x\n"])
    assert errno.ENOSPC == raised.value.errno
    writer.close()  # nothing was written: no fsync attempted, the file is closed
    assert fake.closed


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_raises_enospc() -> None:
    writer = JournalWriter(Path("/dev/full"))
    try:
        with pytest.raises(OSError, match="No space left on device") as raised:
            writer.write_batch([b"x\n"])
        assert errno.ENOSPC == raised.value.errno
    finally:
        writer.close()


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-9, max_value=3e-4),
)
def test_format_time_matches_datetime_for_times_in_a_row(start: float, step: float) -> None:
    """As the sink sees them: times a few microseconds apart, most of them answered from the
    cached millisecond, some a hair from its edges."""
    for n in range(400):
        epoch = start + n * step
        expected = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
        assert expected[:-6] + "Z" == format_time(epoch)


@given(
    st.floats(
        min_value=-2_000_000_000, max_value=4_102_444_800, allow_nan=False, allow_infinity=False
    )
)
def test_format_time_matches_datetime_to_the_millisecond(epoch: float) -> None:
    """The cached formatter must print exactly what datetime would, float noise included."""
    expected = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    assert expected == format_time(epoch)


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.sampled_from([Outcome.OK, Outcome.FAILED]),
    st.one_of(st.none(), st.text(max_size=30)),
)
def test_the_resume_fast_path_keys_every_rendered_record_like_pair_key(
    image_id: str, tag: str, outcome: Outcome, error: str | None
) -> None:
    """load_index reads common records with a regex over the bytes; whatever the strings hold
    (quotes, backslashes, non-ASCII, 'elapsed_ms' inside an error), the key must be pair_key's."""
    record = Result(7, image_id, tag, outcome, 204, 1, error, None, 1_764_295_201.0, 3)
    index = load_index([render(record)])
    key = pair_key(image_id, tag)
    assert (outcome is Outcome.OK) == (key in index.done)
    assert (outcome is Outcome.FAILED) == (key in index.failed)
    assert 0 == index.unreadable
