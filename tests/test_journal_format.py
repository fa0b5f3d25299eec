"""One reading of the journal: resume, ``report`` and ``verify`` agree on what each line says
(``parse``), and the run summary, the metrics and the report give a failure one label
(``error_class``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import AT, U1, U2

from bulktag.journal import (
    FileStats,
    error_class,
    load_index,
    pair_key,
    parse,
    read_records,
    render,
)
from bulktag.metrics import MetricsWriter
from bulktag.model import Outcome, Result
from bulktag.report import Report, to_json
from bulktag.summary import FailureBreaker, Tally
from bulktag.verify import expected_tags

GOOD = render(Result(1, U1, "gold", Outcome.OK, status=204, attempts=1, at=AT, elapsed_ms=5))
ODD = json.loads(render(Result(2, U2, "silver", Outcome.OK, status=204, attempts=1, at=AT)))

# A record bulktag would write, with one field of a type (or value) it never writes.
MUTATIONS = {
    "status-as-text": {"status": "204"},
    "status-as-float": {"status": 204.0},
    "status-as-bool": {"status": True},
    "attempts-as-text": {"attempts": "1"},
    "line-as-text": {"line": "2"},
    "elapsed-as-float": {"elapsed_ms": 1.5},
    "image-id-as-number": {"image_id": 7},
    "tag-missing": {"tag": ...},
    "image-id-null-on-ok": {"image_id": None},
    "outcome-unknown": {"outcome": "OK"},
    "op-unknown": {"op": "frobnicate"},
    "api-unknown": {"api": "aws"},
    "error-as-list": {"error": ["x"]},
}


def odd_line(change: dict[str, object]) -> bytes:
    data = {k: v for k, v in {**ODD, **change}.items() if v is not ...}
    return json.dumps(data).encode() + b"\n"


def report_of(path: Path) -> dict[str, object]:
    report = Report()
    report.read([path])
    return to_json(report)


@pytest.mark.parametrize("change", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_resume_report_and_verify_agree_a_mistyped_line_is_not_a_record(
    tmp_path: Path, change: dict[str, object]
) -> None:
    journal = tmp_path / "j.jsonl"
    journal.write_bytes(GOOD + odd_line(change))

    index = load_index([journal.read_bytes()])
    assert (2, 1) == (index.records, index.unreadable)
    assert not index.is_settled(pair_key(U2, "silver"))  # sent again, like any unread line
    assert index.is_settled(pair_key(U1, "gold"))

    data = report_of(journal)
    assert (1, 1, 1) == (data["records"], data["pairs"], data["unreadable"])

    read = expected_tags([journal])
    assert {U1: {"gold": True}} == read.expected
    assert [1] == [stats.unreadable for stats in read.files]

    assert None is parse(odd_line(change))


def test_every_rendered_result_parses_back_to_its_fields() -> None:
    result = Result(9, U1, "gold", Outcome.GAVE_UP, status=None, attempts=3,
                    error="timeout after 30 s", request_id="req-1", at=AT, elapsed_ms=41,
                    op="remove")  # fmt: skip
    record = parse(render(result))
    assert record is not None
    assert (9, U1, "gold", Outcome.GAVE_UP, None, 3, "timeout after 30 s", "req-1",
            AT, 41, "remove", None, "glance") == (
        record.line, record.image_id, record.tag, record.outcome, record.status,
        record.attempts, record.error, record.request_id, record.at, record.elapsed_ms,
        record.op, record.value, record.api)  # fmt: skip
    assert result == record  # what is read back is the Result that was written, field for field
    assert pair_key(U1, "gold", "remove") == record.key


@pytest.mark.parametrize(
    "at", ["yesterday", 1700000000, None], ids=["not-a-time", "number", "null"]
)
def test_a_line_without_a_time_or_an_input_line_reads_as_0_and_reports_as_null(at: object) -> None:
    """Older or hand-made journals: what the line lacks is 0 in the record, null in the
    report's listing — never a made-up time, and never an unreadable line."""
    fields = {"image_id": U1, "tag": "gold", "outcome": "ok", "elapsed_ms": 40, "at": at}
    record = parse(json.dumps(fields))
    assert record is not None
    assert (0, 0.0) == (record.line, record.at)
    report = Report()
    report.add(record)
    listed = to_json(report)["slowest"][0]
    assert (None, None) == (listed["line"], listed["at"])


# -- one error class ---------------------------------------------------------------------------

ANSWERS = [
    pytest.param(None, "timeout after 30 s", "timeout", id="timeout-30"),
    pytest.param(None, "timeout after 0.2 s", "timeout", id="timeout-short"),
    pytest.param(None, "connect: Connection refused", "connect", id="connect"),
    pytest.param(None, "connection dropped by the server", "connection dropped by the server",
                 id="dropped"),
    pytest.param(None, "connection error: ClientPayloadError: bad", "connection error",
                 id="connection-error"),
    pytest.param(503, "Service Unavailable", "503", id="status"),
]  # fmt: skip


def metric_labels(tally: Tally, path: Path) -> set[str]:
    metrics = MetricsWriter(path)
    snapshot = metrics.snapshot(tally, allowed_rate=1, elapsed=1, finished=True, succeeded=False)
    metrics.write(snapshot)
    return {
        sample.labels["status"]
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.name == "bulktag_requests_total"
    }


@pytest.mark.parametrize(("status", "error", "expected"), ANSWERS)
def test_summary_metrics_and_report_label_a_failure_alike(
    tmp_path: Path, status: int | None, error: str, expected: str
) -> None:
    assert expected == error_class(status, error)

    tally = Tally()
    tally.answered(status, error)
    assert {expected} == set(tally.statuses)
    assert {expected} == metric_labels(tally, tmp_path / "m.prom")

    journal = tmp_path / "j.jsonl"
    gave_up = Result(1, U1, "gold", Outcome.GAVE_UP, status=status, error=error, at=AT)
    journal.write_bytes(render(gave_up))
    data = report_of(journal)
    assert {expected: 1} == data["error_classes"]
    failures = data["failures"]
    assert isinstance(failures, list)
    assert expected == failures[0]["error_class"]


def test_the_breaker_counts_timeouts_of_any_duration_as_one_failure() -> None:
    breaker = FailureBreaker(threshold=3)
    reasons = [
        breaker.observe(Result(n, U1, f"t{n}", Outcome.GAVE_UP, error=f"timeout after {s} s"))
        for n, s in enumerate((30, 10, 30))
    ]
    assert [None, None] == reasons[:2]
    assert reasons[2] is not None
    assert "timeout" in reasons[2]


def test_read_records_numbers_lines_and_counts_what_is_not_a_record(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    journal.write_bytes(GOOD + b"junk\n\n" + GOOD + GOOD[:20])
    stats = FileStats(str(journal))
    numbers = [number for number, _ in read_records(journal, stats)]
    assert [1, 4] == numbers
    assert (2, 1, 1) == (stats.records, stats.unreadable, stats.torn)
