"""IMS key/value work in the journal: the extra fields, the resume keys, and which rows a run
sends (the last value asked for a key wins; the same key and value is done once)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import AT, U1, U2

from bulktag.admission import Admission, Decision
from bulktag.journal import (
    ResumeIndex,
    ims_key,
    ims_slot,
    invalid_key,
    load_index,
    pair_key,
    render,
)
from bulktag.model import Api, InvalidRow, Op, Outcome, Result, Row
from bulktag.summary import Tally


def ims_record(
    key: str, value: str | None, outcome: Outcome = Outcome.OK, op: str = "add", line: int = 1
) -> bytes:
    return render(Result(line, U1, key, outcome, at=AT, op=op, value=value, api="ims"))


def test_an_ims_record_adds_value_and_api_after_the_documented_fields() -> None:
    result = Result(3, U1, "env", Outcome.OK, status=204, attempts=1, request_id="req-1",
                    at=AT, elapsed_ms=9, value="prod", api="ims")  # fmt: skip
    expected = (
        b'{"line": 3, "image_id": "8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87", "tag": "env", '
        b'"outcome": "ok", "status": 204, "attempts": 1, "error": null, '
        b'"request_id": "req-1", "at": "2026-11-28T02:00:01.123Z", "elapsed_ms": 9, '
        b'"value": "prod", "api": "ims"}\n'
    )
    assert expected == render(result)


def test_a_removal_of_a_bare_key_says_op_and_api_and_no_value() -> None:
    record = json.loads(render(Result(1, U1, "env", Outcome.OK, op="remove", api="ims")))
    assert ["op", "api"] == list(record)[-2:]
    assert "value" not in record


def test_a_glance_record_has_neither_field() -> None:
    record = json.loads(render(Result(1, U1, "env", Outcome.OK)))
    assert not {"value", "api"} & set(record)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("env", "prod", "add"), ("env", "staging", "add"), id="other-value"),
        pytest.param(("env", "", "add"), ("env", None, "add"), id="empty-is-not-bare"),
        pytest.param(("env", "prod", "add"), ("env", "prod", "remove"), id="other-op"),
        pytest.param(("env", "a\x00=b", "add"), ("env\x00=a", "b", "add"), id="boundary"),
    ],
)
def test_ims_keys_of_different_work_differ(
    first: tuple[str, str | None, str], second: tuple[str, str | None, str]
) -> None:
    key, value, op = first
    other_key, other_value, other_op = second
    assert ims_key(U1, key, op, value) != ims_key(U1, other_key, other_op, other_value)


def test_ims_keys_never_meet_glance_keys_or_slots() -> None:
    assert ims_key(U1, "env", "remove", None) != pair_key(U1, "env", "remove")
    assert ims_key(U1, "env", "add", None) != pair_key(U1, "env")
    assert ims_slot(U1, "env") not in {pair_key(U1, "env"), ims_key(U1, "env", "add", None)}


def test_an_invalid_rows_value_is_part_of_its_content() -> None:
    assert invalid_key(1, U1, "env", "a") != invalid_key(1, U1, "env", "b")
    assert invalid_key(1, U1, "env") == invalid_key(1, U1, "env", None)


# -- the resume index ----------------------------------------------------------------------------


def test_the_same_key_and_value_is_done_and_a_new_value_is_not() -> None:
    index = load_index([ims_record("env", "prod")])
    assert index.is_settled(ims_key(U1, "env", "add", "prod"))
    assert not index.is_settled(ims_key(U1, "env", "add", "staging"))


def test_only_the_latest_ok_value_of_a_key_is_done() -> None:
    """prod, then staging: the image holds staging, so a later prod must be sent again."""
    index = load_index([ims_record("env", "prod"), ims_record("env", "staging", line=2)])
    assert not index.is_settled(ims_key(U1, "env", "add", "prod"))
    assert index.is_settled(ims_key(U1, "env", "add", "staging"))


def test_a_removal_ends_the_value_it_removed() -> None:
    index = load_index([ims_record("env", "prod"), ims_record("env", None, op="remove")])
    assert not index.is_settled(ims_key(U1, "env", "add", "prod"))
    assert index.is_settled(ims_key(U1, "env", "remove", None))


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.GAVE_UP])
def test_a_later_value_that_did_not_go_through_leaves_the_earlier_one_done(
    outcome: Outcome,
) -> None:
    index = load_index([ims_record("env", "prod"), ims_record("env", "bad", outcome)])
    assert index.is_settled(ims_key(U1, "env", "add", "prod"))


def test_an_ims_invalid_record_settles_its_line() -> None:
    line = render(Result(4, U1, "a.b", Outcome.INVALID, error="x", value="v", api="ims"))
    assert load_index([line]).is_settled(invalid_key(4, U1, "a.b", "v"))


# -- admission -------------------------------------------------------------------------------------


def admit(index: ResumeIndex, rows: list[Row | InvalidRow], op: Op = Op.ADD) -> list[str]:
    admission = Admission(index, Tally(), op=op, api=Api.IMS)
    return [admission.decide(row).value for row in rows]


def test_a_key_set_to_several_values_is_sent_each_time_in_order() -> None:
    rows: list[Row | InvalidRow] = [
        Row(1, U1, "env", "a"),
        Row(2, U1, "env", "b"),
        Row(3, U1, "env", "a"),
        Row(4, U1, "env", "a"),
        Row(5, U2, "env", "a"),
    ]
    assert ["send", "send", "send", "skip", "send"] == admit(ResumeIndex.empty(), rows)


def test_a_done_value_is_sent_again_once_the_run_set_the_key_to_another() -> None:
    index = load_index([ims_record("env", "prod")])
    rows: list[Row | InvalidRow] = [
        Row(1, U1, "env", "prod"),
        Row(2, U1, "env", "staging"),
        Row(3, U1, "env", "prod"),
    ]
    assert ["skip", "send", "send"] == admit(index, rows)


def test_a_failed_value_stays_skipped_even_after_the_key_moved() -> None:
    index = load_index([ims_record("env", "bad", Outcome.FAILED)])
    rows: list[Row | InvalidRow] = [Row(1, U1, "env", "ok"), Row(2, U1, "env", "bad")]
    assert ["send", "skip"] == admit(index, rows)


def test_removals_and_additions_of_a_key_resume_apart() -> None:
    index = load_index([ims_record("env", "prod")])
    assert [Decision.SEND.value] == admit(index, [Row(1, U1, "env", "prod")], op=Op.REMOVE)
    assert [Decision.SKIP.value] == admit(index, [Row(1, U1, "env", "prod")], op=Op.ADD)


def test_glance_rows_are_keyed_as_before() -> None:
    admission = Admission(ResumeIndex.empty(), Tally())
    assert pair_key(U1, "env") == admission.key(Row(1, U1, "env"))


# -- report and verify read IMS records ----------------------------------------------------------


def test_the_report_keys_ims_records_as_the_resume_index_does(tmp_path: Path) -> None:
    from bulktag.journal import FileStats, read_records

    journal = tmp_path / "j.jsonl"
    journal.write_bytes(
        ims_record("env", "prod") + ims_record("env", "staging") + ims_record("env", "prod")
    )
    records = [record for _, record in read_records(journal, FileStats(str(journal)))]
    assert [("prod", "ims"), ("staging", "ims"), ("prod", "ims")] == [
        (r.value, r.api) for r in records
    ]
    assert 2 == len({r.key for r in records})
    assert ims_key(U1, "env", "add", "prod") == records[0].key


def test_verify_leaves_ims_records_alone(tmp_path: Path) -> None:
    """verify reads Glance's tag list, which does not hold IMS key/value tags."""
    from bulktag.verify import expected_tags

    journal = tmp_path / "j.jsonl"
    glance = render(Result(1, U2, "web", Outcome.OK, at=AT))
    journal.write_bytes(ims_record("env", "prod") + glance)
    read = expected_tags([journal])
    assert {U2: {"web": True}} == read.expected
    assert 1 == read.ims_ok


def test_verify_of_a_journal_of_ims_tags_only_says_why_it_reads_nothing(tmp_path: Path) -> None:
    """It said "records no ok tag" of a journal of hundreds of ok IMS records: true of Glance
    tags only, and read as if the run had done nothing."""
    import argparse
    import io

    from bulktag.verify import add_verify_arguments, command_verify

    journal = tmp_path / "ims.jsonl"
    journal.write_bytes(ims_record("env", "prod") + ims_record("owner", "web", line=2))
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    args = parser.parse_args([str(journal), "--endpoint", "http://h", "--token", "t"])
    stderr = io.StringIO()
    assert 0 == command_verify(args, {}, stderr)
    [line] = stderr.getvalue().splitlines()
    assert line == (
        f"bulktag verify: nothing to verify: {journal} holds only IMS key/value tags (2 ok "
        "records), which Glance's tag list, the one verify reads back, does not show"
    )
