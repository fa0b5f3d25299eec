"""Counting outcomes, the consecutive-failure breaker, and the exit code."""

from __future__ import annotations

import pytest
from support import U1

from bulktag.model import Outcome, Result
from bulktag.summary import (
    ExitCode,
    FailureBreaker,
    Tally,
    exit_code,
    summary_fields,
    summary_lines,
)


def result(
    outcome: Outcome, status: int | None = None, error: str | None = None, line: int = 1
) -> Result:
    return Result(line, U1, "gold", outcome, status=status, attempts=1, error=error)


OK = result(Outcome.OK, 204)
F403 = result(Outcome.FAILED, 403, "You are not authorized to modify this image")
F404 = result(Outcome.FAILED, 404, "No image found")
G503 = result(Outcome.GAVE_UP, 503, "Service Unavailable")
F503 = result(Outcome.FAILED, 503, "Service Unavailable")
TIMEOUT = result(Outcome.GAVE_UP, None, "timeout: no answer in 30 s")
REFUSED = result(Outcome.GAVE_UP, None, "connect: connection refused")
INVALID = result(Outcome.INVALID, None, "tag is empty")


def tally_of(*outcomes: Outcome) -> Tally:
    tally = Tally()
    for outcome in outcomes:
        tally.add(result(outcome))
    return tally


# -- exit code ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "aborted", "interrupted", "expected"),
    [
        pytest.param([], False, False, ExitCode.OK, id="nothing-to-do"),
        pytest.param([Outcome.OK] * 3, False, False, ExitCode.OK, id="all-ok"),
        pytest.param([Outcome.OK, Outcome.FAILED], False, False, ExitCode.SOME_FAILED,
                     id="a-failed-row"),
        pytest.param([Outcome.OK, Outcome.GAVE_UP], False, False, ExitCode.SOME_FAILED,
                     id="a-gave-up-row"),
        pytest.param([Outcome.OK, Outcome.INVALID], False, False, ExitCode.SOME_FAILED,
                     id="an-invalid-row"),
        pytest.param([Outcome.OK], True, False, ExitCode.ABORTED, id="aborted"),
        pytest.param([Outcome.OK], False, True, ExitCode.INTERRUPTED, id="interrupted"),
        pytest.param([Outcome.FAILED], True, True, ExitCode.ABORTED,
                     id="aborted-beats-interrupted-and-failures"),
        pytest.param([Outcome.FAILED], False, True, ExitCode.INTERRUPTED,
                     id="interrupted-beats-failures"),
    ],
)  # fmt: skip
def test_exit_code(
    outcomes: list[Outcome], aborted: bool, interrupted: bool, expected: ExitCode
) -> None:
    assert expected == exit_code(tally_of(*outcomes), aborted=aborted, interrupted=interrupted)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(ExitCode.OK, 0, id="ok"),
        pytest.param(ExitCode.SOME_FAILED, 1, id="some-failed"),
        pytest.param(ExitCode.USAGE, 2, id="usage"),
        pytest.param(ExitCode.ABORTED, 3, id="aborted"),
        pytest.param(ExitCode.INTERRUPTED, 130, id="interrupted"),
    ],
)
def test_exit_codes_are_the_documented_numbers(code: ExitCode, expected: int) -> None:
    assert expected == int(code)


# -- FailureBreaker ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "results", "expected_trip_at"),
    [
        pytest.param(3, [F403, F403, F403], 2, id="trips-at-threshold"),
        pytest.param(3, [F403, F403], None, id="one-short"),
        pytest.param(1, [F404], 0, id="threshold-one-trips-at-once"),
        pytest.param(3, [F403, F403, OK, F403, F403], None, id="ok-resets"),
        pytest.param(3, [F403, F403, F404, F403, F403], None, id="other-status-resets"),
        pytest.param(3, [F403, F404, F404, F404], 3, id="counts-afresh-after-a-change"),
        pytest.param(3, [G503, G503, F503], None, id="same-status-other-outcome-resets"),
        pytest.param(3, [F403, INVALID, F403, INVALID, F403], 4,
                     id="invalid-rows-neither-count-nor-reset"),
        pytest.param(3, [INVALID] * 10, None, id="invalid-rows-never-trip"),
        pytest.param(2, [TIMEOUT, TIMEOUT], 1, id="no-status-same-error-kind"),
        pytest.param(2, [TIMEOUT, REFUSED], None, id="no-status-different-error-kind"),
        pytest.param(0, [F403] * 500, None, id="threshold-zero-never-trips"),
    ],
)  # fmt: skip
def test_breaker_trips_after_threshold_identical_failures_in_a_row(
    threshold: int, results: list[Result], expected_trip_at: int | None
) -> None:
    breaker = FailureBreaker(threshold)
    reasons = [breaker.observe(r) for r in results]
    tripped = [n for n, reason in enumerate(reasons) if reason is not None]
    assert ([] if expected_trip_at is None else [expected_trip_at]) == tripped


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param(
            [F403, F403],
            "stopped after 2 consecutive rows failed with HTTP 403 (last: You are not authorized "
            "to modify this image); check the endpoint, project and permissions "
            "(threshold: --max-consecutive-failures)",
            id="http-status",
        ),
        pytest.param(
            [REFUSED, REFUSED],
            "stopped after 2 consecutive rows gave_up with connect (last: connect: connection "
            "refused); check the endpoint, project and permissions "
            "(threshold: --max-consecutive-failures)",
            id="transport-error",
        ),
        pytest.param(
            [result(Outcome.FAILED, 400), result(Outcome.FAILED, 400)],
            "stopped after 2 consecutive rows failed with HTTP 400 (last: no message); check the "
            "endpoint, project and permissions (threshold: --max-consecutive-failures)",
            id="no-message",
        ),
    ],
)
def test_the_breakers_reason_names_the_outcome_and_status(
    results: list[Result], expected: str
) -> None:
    breaker = FailureBreaker(2)
    reasons = [breaker.observe(r) for r in results]
    assert [None, expected] == reasons


def test_the_breaker_keeps_tripping_while_the_failures_go_on() -> None:
    breaker = FailureBreaker(2)
    reasons = [breaker.observe(F403) for _ in range(4)]
    assert [False, True, True, True] == [reason is not None for reason in reasons]
    assert reasons[3] is not None
    assert reasons[3].startswith("stopped after 4 consecutive rows")


# -- Tally and the summary ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "expected_recorded", "expected_problems"),
    [
        pytest.param([], 0, 0, id="empty"),
        pytest.param([Outcome.OK, Outcome.OK], 2, 0, id="all-ok"),
        pytest.param(list(Outcome), 4, 3, id="one-of-each"),
    ],
)
def test_tally_counts_recorded_rows_and_problems(
    outcomes: list[Outcome], expected_recorded: int, expected_problems: int
) -> None:
    tally = tally_of(*outcomes)
    assert (expected_recorded, expected_problems) == (tally.recorded, tally.problems)


@pytest.mark.parametrize(
    ("status", "error", "expected_label"),
    [
        pytest.param(204, None, "204", id="status"),
        pytest.param(503, "Service Unavailable", "503", id="status-wins-over-error"),
        pytest.param(None, "connect: connection refused", "connect", id="error-kind"),
        pytest.param(None, "timeout", "timeout", id="error-without-colon"),
        pytest.param(None, None, "error", id="nothing-at-all"),
    ],
)
def test_tally_labels_each_answer_by_status_or_error_kind(
    status: int | None, error: str | None, expected_label: str
) -> None:
    tally = Tally()
    tally.answered(status, error)
    tally.answered(status, error)
    assert {expected_label: 2} == dict(tally.statuses)


def full_tally() -> Tally:
    tally = tally_of(*[Outcome.OK] * 1234, Outcome.FAILED, Outcome.FAILED, Outcome.INVALID)
    tally.read = 1240
    tally.skipped_done = 3
    tally.skipped_duplicate = 1200
    tally.attempts = 1300
    for status, error in [(204, None), (503, "x"), (204, None), (None, "connect: refused")]:
        tally.answered(status, error)
    return tally


def test_summary_fields_hold_every_count() -> None:
    fields = summary_fields(full_tally(), 12.3456)
    expected = {
        "read": 1240,
        "ok": 1234,
        "failed": 2,
        "gave_up": 0,
        "invalid": 1,
        "skipped_done": 3,
        "skipped_duplicate": 1200,
        "requests": 1300,
        "statuses": {"204": 2, "503": 1, "connect": 1},
        "elapsed_s": 12.346,
        "request_rate": 105.3,
    }
    assert expected == {key: fields[key] for key in expected}
    statuses = fields["statuses"]
    assert isinstance(statuses, dict)
    assert ["204", "503", "connect"] == list(statuses)  # sorted, for a stable log line


@pytest.mark.parametrize(
    ("elapsed", "expected_rate"),
    [
        pytest.param(0.0, 0.0, id="zero-elapsed-no-division"),
        pytest.param(-1.0, 0.0, id="negative-elapsed"),
        pytest.param(3.0, 3.33, id="rounded-to-two-places"),
    ],
)
def test_summary_request_rate(elapsed: float, expected_rate: float) -> None:
    tally = Tally()
    tally.attempts = 10
    assert expected_rate == summary_fields(tally, elapsed)["request_rate"]


def test_summary_lines_are_a_readable_table() -> None:
    assert [
        "Run finished",
        "  ok            1,234",
        "  failed            2",
        "  gave_up           0",
        "  invalid           1",
        "  skipped           3 already done by an earlier run, 1,200 duplicate rows",
        "  requests      1,300 in 12.3 s (105.3/s); answers 204: 2, 503: 1, connect: 1",
    ] == summary_lines(full_tally(), 12.3456, "Run finished")


def test_summary_lines_leave_out_empty_sections() -> None:
    assert [
        "Nothing to do",
        "  ok                0",
        "  failed            0",
        "  gave_up           0",
        "  invalid           0",
        "  requests          0 in 0.0 s (0.0/s)",
    ] == summary_lines(Tally(), 0.0, "Nothing to do")
