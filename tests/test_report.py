"""``bulktag report``: hand-written journals (shards, torn and unreadable lines, pairs recorded
more than once) in, counts, tables, JSON and exit codes out."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from clitools import journal_record as record
from clitools import write_journal as write
from support import image

from bulktag import report as report_module
from bulktag.report import add_report_arguments, command_report


def failed_404(n: int, **fields: Any) -> dict[str, Any]:
    message = f"404 Not Found No image found with ID {image(n)}"
    return record(n, outcome="failed", status=404, error=message, **fields)


def run(*argv: str | Path) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = command_report(parser.parse_args([str(a) for a in argv]), stdout, stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def as_json(*argv: str | Path) -> dict[str, Any]:
    _, out, err = run(*argv, "--format", "json")
    assert "" == err
    data: dict[str, Any] = json.loads(out)
    return data


def lines_read(*journals: Path) -> tuple[int, int, int]:
    """What the report made of the journals' lines: (records, torn, unreadable)."""
    data = as_json(*journals)
    return data["records"], data["torn"], data["unreadable"]


def test_a_pair_that_gave_up_then_went_ok_counts_once_as_ok(tmp_path: Path) -> None:
    journal = write(
        tmp_path / "j.jsonl",
        [record(0, outcome="gave_up", status=503, attempts=8, error="busy"), record(0)],
    )
    data = as_json(journal)
    assert (2, 1) == (data["records"], data["pairs"])
    assert {"ok": 1, "failed": 0, "gave_up": 0, "invalid": 0} == data["outcomes"]
    assert {"ok": 1, "failed": 0, "gave_up": 1, "invalid": 0} == data["record_outcomes"]
    assert data["all_ok"]


def test_a_pair_that_went_ok_then_failed_counts_as_failed(tmp_path: Path) -> None:
    """Last record wins in both directions (e.g. a later --retry-failed run)."""
    journal = write(tmp_path / "j.jsonl", [record(0), failed_404(0)])
    assert 1 == as_json(journal)["outcomes"]["failed"]


def test_removing_a_tag_is_a_pair_of_its_own_apart_from_adding_it(tmp_path: Path) -> None:
    removal = record(0, op="remove", outcome="gave_up", status=503, error="busy")
    journal = write(tmp_path / "j.jsonl", [record(0), removal])
    data = as_json(journal)
    assert (2, 2) == (data["records"], data["pairs"])
    assert {"ok": 1, "failed": 0, "gave_up": 1, "invalid": 0} == data["outcomes"]


def test_shards_merge_into_one_report(tmp_path: Path) -> None:
    shard0 = write(tmp_path / "s0.jsonl", [record(0), record(1), failed_404(2)])
    shard1 = write(tmp_path / "s1.jsonl", [record(3), record(3, tag="db")])
    data = as_json(shard0, shard1)
    assert {"ok": 4, "failed": 1, "gave_up": 0, "invalid": 0} == data["outcomes"]
    assert (5, 5) == (data["records"], data["pairs"])
    assert [(str(shard0), 3), (str(shard1), 2)] == [
        (j["path"], j["records"]) for j in data["journals"]
    ]


def test_for_a_pair_in_two_journals_the_journal_named_last_wins(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", [record(0, outcome="gave_up", status=503, error="x")])
    new = write(tmp_path / "new.jsonl", [record(0)])
    assert 1 == as_json(old, new)["outcomes"]["ok"]
    assert 1 == as_json(new, old)["outcomes"]["gave_up"]


def test_a_torn_last_line_is_counted_and_the_records_before_it_stand(tmp_path: Path) -> None:
    journal = write(tmp_path / "j.jsonl", [record(0), record(1)], extra=b'{"line": 4, "ima')
    assert (2, 1, 0) == lines_read(journal)


def test_lines_that_are_not_records_are_counted_as_unreadable_and_skipped(
    tmp_path: Path,
) -> None:
    junk = [
        b"not json\n",
        b"[1, 2]\n",  # JSON, not an object
        b'{"image_id": "x", "tag": "y"}\n',  # no outcome
        json.dumps(record(5, outcome="maybe")).encode() + b"\n",  # unknown outcome
        json.dumps(record(6, attempts="two")).encode() + b"\n",  # wrong type
        b"\n",  # blank lines are neither records nor unreadable
    ]
    journal = write(tmp_path / "j.jsonl", [record(0)], extra=b"".join(junk))
    assert (1, 0, 5) == lines_read(journal)


def test_statuses_count_every_record_and_error_classes_every_record_not_ok(
    tmp_path: Path,
) -> None:
    records = [
        record(0),
        record(1, outcome="gave_up", status=None, error="timeout after 30 s"),
        record(2, outcome="gave_up", status=None, error="connect: Connection refused"),
        record(3, outcome="gave_up", status=None, error="connect: Name or service not known"),
        record(4, outcome="gave_up", status=429, error="throttled"),
        record(5, outcome="invalid", status=None, image_id="nope", error="image_id is not..."),
    ]
    data = as_json(write(tmp_path / "j.jsonl", records))
    assert {"204": 1, "429": 1, "none": 4} == data["statuses"]
    assert {"connect": 2, "timeout": 1, "429": 1, "invalid": 1} == data["error_classes"]


def test_failures_group_by_reason_with_ids_masked_and_the_last_three_examples(
    tmp_path: Path,
) -> None:
    records = [failed_404(n, request_id=f"req-{n}") for n in range(5)]
    records.append(record(9, outcome="failed", status=403, error="not permitted"))
    data = as_json(write(tmp_path / "j.jsonl", records))
    first, second = data["failures"]
    assert ("failed", "404", 5) == (first["outcome"], first["error_class"], first["records"])
    assert "404 Not Found No image found with ID <uuid>" == first["reason"]
    assert [(image(n), "web", f"req-{n}") for n in (2, 3, 4)] == [
        (e["image_id"], e["tag"], e["request_id"]) for e in first["examples"]
    ]
    assert ("403", 1) == (second["error_class"], second["records"])


def test_invalid_rows_group_by_the_rule_they_broke_not_by_the_bad_value(tmp_path: Path) -> None:
    records = [
        record(
            n,
            outcome="invalid",
            status=None,
            image_id=f"bad{n}",
            error=f"image_id is not a UUID: bad{n}",
        )
        for n in range(4)
    ]
    data = as_json(write(tmp_path / "j.jsonl", records))
    assert [("invalid", "image_id is not a UUID", 4)] == [
        (g["error_class"], g["reason"], g["records"]) for g in data["failures"]
    ]


def test_a_failure_group_counts_only_pairs_still_failing_as_not_ok(tmp_path: Path) -> None:
    retried = [record(n, outcome="gave_up", status=503, error="busy") for n in range(3)]
    data = as_json(write(tmp_path / "j.jsonl", [*retried, record(0), record(1)]))
    [group] = data["failures"]
    assert (3, 1) == (group["records"], group["pairs_not_ok"])


def test_reasons_beyond_the_cap_are_pooled_into_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "MAX_REASONS", 2)
    records = [record(n, outcome="failed", status=400, error=f"reason {n}") for n in range(5)]
    data = as_json(write(tmp_path / "j.jsonl", records))
    assert {"reason 0": 1, "reason 1": 1, report_module.POOLED_REASON: 3} == {
        g["reason"]: g["records"] for g in data["failures"]
    }
    assert 5 == sum(g["pairs_not_ok"] for g in data["failures"])


def test_slowest_and_most_retried_are_ranked_and_cut_at_top(tmp_path: Path) -> None:
    records = [record(n, elapsed_ms=100 * n, attempts=n % 4 + 1) for n in range(10)]
    data = as_json(write(tmp_path / "j.jsonl", records), "--top", "3")
    assert [900, 800, 700] == [item["elapsed_ms"] for item in data["slowest"]]
    # attempts 4 for n = 3 and 7; ties go to the record read first
    assert [(4, image(3)), (4, image(7)), (3, image(2))] == [
        (item["attempts"], item["image_id"]) for item in data["most_retried"]
    ]


def test_rows_never_sent_are_neither_slowest_nor_retried(tmp_path: Path) -> None:
    invalid = record(0, outcome="invalid", status=None, attempts=0, elapsed_ms=0, error="bad")
    data = as_json(write(tmp_path / "j.jsonl", [invalid]))
    assert ([], []) == (data["slowest"], data["most_retried"])


def test_rate_over_time_counts_records_per_minute_and_finds_the_peak(tmp_path: Path) -> None:
    times = ["02:00:59.000", "02:01:00.000", "02:01:30.000", "02:01:59.999", "02:05:00.000"]
    records = [record(n, at=f"2026-11-28T{t}Z") for n, t in enumerate(times)]
    timeline = as_json(write(tmp_path / "j.jsonl", records))["timeline"]
    assert "2026-11-28T02:00:59.000Z" == timeline["first"]
    assert "2026-11-28T02:05:00.000Z" == timeline["last"]
    assert ("2026-11-28T02:01:00.000Z", 3) == (timeline["peak_minute"], timeline["peak_records"])
    per_minute = {m["minute"]: m["records"] for m in timeline["per_minute"]}
    assert {
        "2026-11-28T02:00:00.000Z": 1,
        "2026-11-28T02:01:00.000Z": 3,
        "2026-11-28T02:05:00.000Z": 1,
    } == per_minute


def test_json_output_has_the_documented_keys(tmp_path: Path) -> None:
    data = as_json(write(tmp_path / "j.jsonl", [record(0, attempts=2), failed_404(1)]))
    assert [
        "journals", "records", "pairs", "unreadable", "torn", "outcomes", "record_outcomes",
        "statuses", "error_classes", "timeline", "slowest", "most_retried", "failures", "all_ok",
        "schema_version",
    ] == list(data)  # fmt: skip
    assert ["first", "last", "peak_minute", "peak_records", "per_minute"] == list(data["timeline"])
    assert [
        "journal", "journal_line", "line", "image_id", "tag", "op", "outcome", "status",
        "attempts", "elapsed_ms", "request_id", "at",
    ] == list(data["slowest"][0])  # fmt: skip
    assert ["outcome", "error_class", "reason", "records", "pairs_not_ok", "examples"] == list(
        data["failures"][0]
    )


def test_human_output_is_plain_aligned_tables_of_every_section(tmp_path: Path) -> None:
    records = [record(0, attempts=3, elapsed_ms=1500), failed_404(1), record(2)]
    _, out, err = run(write(tmp_path / "j.jsonl", records))
    lines = out.splitlines()
    assert "bulktag report: 1 journal, 3 records, 3 pairs" == lines[0]
    titles = [line.split(" ")[0] for line in lines if line and not line.startswith(" ")]
    assert ["bulktag", "Outcomes", "HTTP", "Error", "Rate", "Slowest", "Most", "Failures"] == titles
    assert "  ok           2" in lines
    assert "  failed       1" in lines
    assert "\x1b" not in out  # no colours: the report goes to mail and files
    assert "" == err


def test_human_output_lists_each_shard_when_there_are_several(tmp_path: Path) -> None:
    shard0 = write(tmp_path / "s0.jsonl", [record(0)], extra=b"junk\n")
    shard1 = write(tmp_path / "s1.jsonl", [record(1), record(2)])
    _, out, _ = run(shard0, shard1)
    assert f"  {shard0}        1           1     0" in out.splitlines()
    assert f"  {shard1}        2           0     0" in out.splitlines()


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param([record(0), record(1)], 0, id="all-ok"),
        pytest.param(
            [record(0, outcome="gave_up", status=503, error="x"), record(0)],
            0,
            id="gave-up-then-ok",
        ),
        pytest.param([record(0), failed_404(1)], 1, id="one-failed"),
        pytest.param([record(0, outcome="gave_up", status=503, error="x")], 1, id="gave-up"),
        pytest.param([record(0, outcome="invalid", status=None, error="bad")], 1, id="invalid"),
    ],
)
def test_exit_code_is_0_only_when_every_pair_ended_ok(
    tmp_path: Path, records: list[dict[str, Any]], expected: int
) -> None:
    code, _, _ = run(write(tmp_path / "j.jsonl", records))
    assert expected == code


def test_a_missing_journal_exits_2_with_one_line_and_prints_no_report(tmp_path: Path) -> None:
    present = write(tmp_path / "j.jsonl", [record(0)])
    code, out, err = run(present, tmp_path / "missing.jsonl")
    assert (2, "") == (code, out)
    assert [
        f"bulktag report: error: cannot read journal {tmp_path / 'missing.jsonl'}: "
        "No such file or directory"
    ] == err.splitlines()


def test_a_directory_is_not_a_journal(tmp_path: Path) -> None:
    code, out, err = run(tmp_path)
    assert (2, "") == (code, out)
    assert "Is a directory" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("span_minutes", "width"),
    [(1, 1), (24, 1), (25, 2), (90, 5), (24 * 60, 60), (3 * 1440, 180), (30 * 1440, 2 * 1440)],
)
def test_the_rate_table_uses_the_smallest_round_bucket_that_fits_24_rows(
    span_minutes: int, width: int
) -> None:
    assert width == report_module.bucket_width(span_minutes)


def test_the_human_rate_table_shows_empty_buckets_so_stalls_are_visible(tmp_path: Path) -> None:
    records = [record(0, at="2026-11-28T02:00:10Z"), record(1, at="2026-11-28T02:03:10Z")]
    _, out, _ = run(write(tmp_path / "j.jsonl", records))
    table_start = out.splitlines().index("  1-minute bucket from  records  per minute")
    assert [
        "  2026-11-28 02:00            1         1.0",
        "  2026-11-28 02:01            0         0.0",
        "  2026-11-28 02:02            0         0.0",
        "  2026-11-28 02:03            1         1.0",
    ] == out.splitlines()[table_start + 1 : table_start + 5]


def test_control_characters_from_a_journal_are_shown_escaped(tmp_path: Path) -> None:
    """A journal holds what the input and the cloud said: an invalid row's tag as read, a
    server's error page quoted. Printed as they are, an ESC or a C1 CSI in them would be a
    command to the terminal that shows the report (or the mail that carries it)."""
    records = [
        record(0, tag="web\x1b[2J", outcome="failed", status=500, error="oops\x9b31m\r!",
               attempts=3, elapsed_ms=900),
    ]  # fmt: skip
    code, out, err = run(write(tmp_path / "j.jsonl", records))
    assert 1 == code
    assert not any(ord(char) < 0x20 and char != "\n" for char in out)
    assert not any(0x7F <= ord(char) < 0xA0 for char in out)
    assert "web\\x1b[2J" in out  # the slowest and most retried tables
    assert "oops\\x9b31m" in out  # the failures' reasons
    assert "" == err
