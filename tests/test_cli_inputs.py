"""Hostile and odd inputs through the real ``bulktag run``: each run ends with exit 0 (all ok) or
1 (some rows invalid), never a traceback, and the journal holds exactly the right records — one
per distinct row, every line valid UTF-8 JSON of bounded size; or, when the input as a whole is
not what bulktag reads (UTF-16, binary, an unknown header, one column), the run refuses it with
exit 2 and one line saying what to do, before anything is sent or written."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import (
    Done,
    FakeServer,
    fake_glance,
    image_ids,
    make_pairs,
    no_traceback,
    read_journal,
    run_bulktag,
    write_csv,
)

MAX_RECORD_BYTES = 4096  # a journal line stays small whatever the input row was


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with fake_glance(tmp_path_factory.mktemp("fake"), stats=True) as server:
        yield server


def tag(fake: FakeServer, tmp_path: Path, source: str | Path, stdin: bytes | None = None) -> Done:
    args = [str(source)] if source != "" else []
    args += ["--endpoint", fake.url, "--results", "journal.jsonl", "--rate", "1000"]
    return run_bulktag([*args, "--log-format", "json"], tmp_path, stdin=stdin)


def refused(done: Done, *expected: str) -> None:
    """Exit 2 with one line on stderr saying what is wrong (containing each of ``expected``)."""
    no_traceback(done)
    assert 2 == done.code, str(done)
    assert 1 == len(done.lines), str(done)
    for text in expected:
        assert text in done.lines[0], str(done)


def checked_journal(tmp_path: Path) -> list[dict[str, Any]]:
    """The journal's records in input order, after checking every line is small UTF-8 JSON."""
    path = tmp_path / "journal.jsonl"
    for raw in path.read_bytes().splitlines():
        assert len(raw) < MAX_RECORD_BYTES, f"a {len(raw)}-byte journal line"
        raw.decode("utf-8")  # strict: bad input bytes must be escaped, not copied
    return sorted(read_journal(path), key=lambda record: int(record["line"]))


def test_binary_garbage_is_refused_up_front_and_nothing_is_sent(
    fake: FakeServer, tmp_path: Path
) -> None:
    garbage = random.Random(20261128).randbytes(64 * 1024) + b"\x00\x00,\x00\n\xff\xfe,\x00\n"
    assert b"\x00" in garbage
    (tmp_path / "garbage.csv").write_bytes(garbage)
    puts = fake.puts()

    done = tag(fake, tmp_path, "garbage.csv")

    refused(done, "garbage.csv: the input is not text")
    assert not (tmp_path / "journal.jsonl").exists()
    assert puts == fake.puts()


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 17 * 1024 * 1024], ids=["2MB", "17MB"])
def test_a_huge_line_is_one_invalid_row_and_the_next_row_still_goes(
    fake: FakeServer, tmp_path: Path, size: int
) -> None:
    """2 MB fits the CSV field limit (rejected as a too-long tag); 17 MB is above it (an
    unreadable row). Either way the valid row after it is tagged."""
    huge_image, valid_image = image_ids(2, seed=1)
    with (tmp_path / "huge.csv").open("w") as out:
        out.write(f"{huge_image},{'x' * size}\n")
        out.write(f"{valid_image},after-the-huge-one\n")

    done = tag(fake, tmp_path, "huge.csv")

    no_traceback(done)
    assert 1 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert ["invalid", "ok"] == [r["outcome"] for r in records], records
    assert (valid_image, "after-the-huge-one", 2) == (
        records[1]["image_id"],
        records[1]["tag"],
        records[1]["line"],
    )
    assert 1 == records[0]["line"]
    assert ["after-the-huge-one"] == fake.image(valid_image)["tags"]


@pytest.mark.parametrize(
    "content",
    [b"", b"image_id,tag\n", b"\xef\xbb\xbf\r\n\r\n# only a comment\r\n  \r\n"],
    ids=["empty", "header-only", "bom-blank-lines-and-comments"],
)
def test_an_input_without_rows_exits_0_with_an_empty_journal(
    fake: FakeServer, tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "empty.csv").write_bytes(content)

    done = tag(fake, tmp_path, "empty.csv")

    no_traceback(done)
    assert 0 == done.code, str(done)
    assert b"" == (tmp_path / "journal.jsonl").read_bytes()
    finished = done.event("run_finished")
    assert (0, 0, 0) == (finished["read"], finished["ok"], finished["requests"])


@pytest.mark.parametrize("source", ["-", ""], ids=["dash", "default"])
def test_stdin_input(fake: FakeServer, tmp_path: Path, source: str) -> None:
    pairs = make_pairs(5, 2, seed=2 if source else 3)
    data = write_csv(tmp_path / "in.csv", pairs).read_bytes()

    done = tag(fake, tmp_path, source, stdin=data)

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert sorted(pairs) == sorted(
        (r["image_id"], r["tag"]) for r in records if r["outcome"] == "ok"
    )
    assert len(pairs) == len(records)
    assert len(pairs) == done.event("run_finished")["read"]


def test_crlf_bom_header_extra_columns_and_quotes(fake: FakeServer, tmp_path: Path) -> None:
    """A spreadsheet export: BOM, CRLF, a header naming extra columns in another order, quoted
    fields (one with a comma) — the pairs arrive intact."""
    first, second, third = image_ids(3, seed=4)
    text = (
        "owner,tag,image_id\r\n"
        f'"Smith, J.",gold,{first}\r\n'
        f'alice,"silver",{second.upper()}\r\n'
        "\r\n"
        f'"Jones",bronze,"{third}"\r\n'
    )
    (tmp_path / "export.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())

    done = tag(fake, tmp_path, "export.csv")

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert [(first, "gold", 2), (second, "silver", 3), (third, "bronze", 5)] == [
        (r["image_id"], r["tag"], r["line"]) for r in records
    ]
    assert {"ok"} == {r["outcome"] for r in records}
    assert ["gold"] == fake.image(first)["tags"]
    assert ["silver"] == fake.image(second)["tags"]
    assert ["bronze"] == fake.image(third)["tags"]


def test_duplicate_pairs_are_sent_and_recorded_once(fake: FakeServer, tmp_path: Path) -> None:
    pairs = make_pairs(6, 3, seed=5)
    repeats = [pairs[0], pairs[0], pairs[7], (pairs[3][0].upper(), pairs[3][1]), pairs[17]]
    write_csv(tmp_path / "dups.csv", [*pairs, *repeats, *pairs[:4]])
    puts = fake.puts()

    done = tag(fake, tmp_path, "dups.csv")

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert sorted(pairs) == sorted((r["image_id"], r["tag"]) for r in records)
    assert len(pairs) == fake.puts() - puts
    finished = done.event("run_finished")
    assert (len(repeats) + 4, len(pairs)) == (finished["skipped_duplicate"], finished["ok"])
    for image in image_ids(6, seed=5):
        assert ["t0", "t1", "t2"] == sorted(fake.image(image)["tags"])


def test_invalid_rows_are_not_recorded_again_on_rerun(fake: FakeServer, tmp_path: Path) -> None:
    (good,) = image_ids(1, seed=6)
    (tmp_path / "mixed.csv").write_text(
        f"{good},fine\nnot-a-uuid,fine\n{good},bad tag\n{good}\nfine\n"
    )

    first = tag(fake, tmp_path, "mixed.csv")
    assert 1 == first.code, str(first)
    records = checked_journal(tmp_path)
    assert ["ok", "invalid", "invalid", "invalid", "invalid"] == [r["outcome"] for r in records]

    second = tag(fake, tmp_path, "mixed.csv")
    no_traceback(second)
    assert records == checked_journal(tmp_path)
    finished = second.event("run_finished")
    assert (1, 4) == (finished["skipped_done"], finished["skipped_still_bad"])
    assert 1 == second.code  # the invalid rows are still not tagged: not a clean night
