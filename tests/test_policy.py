"""The retry policy as a table: an answer, the attempt number, ``now`` and a seeded RNG in, a
decision out. No clock, no sleep, no event loop."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from bulktag.model import Answer, Outcome
from bulktag.policy import (
    ACCEPTED,
    Abort,
    Decision,
    Kind,
    Missing,
    Retry,
    RetryPolicy,
    Settle,
    Verdict,
    classify,
    decide,
    glance_404,
    parse_retry_after,
)

NOW = datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC).timestamp()
POLICY = RetryPolicy()  # max_attempts 8, base 0.5, max_delay 60, max_retry_after 300, 500 ×3


def rng() -> random.Random:
    return random.Random(1234)


# -- classify ----------------------------------------------------------------------------------

# What classify() says of an answer: done, failed for good, the token refused, or worth
# another try — and whether the server is pushing back (slow the whole run down).
OK = Verdict(Kind.OK, pushback=False)
PERMANENT = Verdict(Kind.PERMANENT, pushback=False)
AUTH = Verdict(Kind.AUTH, pushback=False)
TRANSIENT = Verdict(Kind.RETRYABLE, pushback=False)
PUSHBACK = Verdict(Kind.RETRYABLE, pushback=True)


def answer(
    status: int | None,
    expected: object,
    *,
    retry_after: str | None = None,
    attempt: int = 1,
    id: str | None = None,
) -> Any:
    """A row of the tables of answers below: ``status`` (with a Retry-After header of
    ``retry_after``) answered to ``attempt``, and what must come of it. Its id is the status
    unless given."""
    return pytest.param(status, retry_after, attempt, expected, id=id or str(status))


@pytest.mark.parametrize(
    ("status", "retry_after", "attempt", "expected"),
    [
        answer(200, OK),
        answer(204, OK),
        answer(299, OK),
        answer(301, PERMANENT),
        answer(400, PERMANENT),
        answer(401, AUTH),
        answer(401, AUTH, retry_after="5", id="401-with-retry-after"),
        answer(403, PERMANENT),
        answer(404, PERMANENT),
        answer(409, PERMANENT),
        answer(413, PERMANENT, id="413-quota"),
        answer(413, PUSHBACK, retry_after="5", id="413-rate-limit"),
        answer(413, PUSHBACK, retry_after="garbage",
               id="413-any-retry-after-header-means-rate-limit"),
        answer(429, PUSHBACK),
        answer(429, PUSHBACK, retry_after="5", attempt=7, id="429-late-attempt"),
        answer(500, TRANSIENT, id="500-first"),
        answer(500, TRANSIENT, attempt=2, id="500-second"),
        answer(500, PERMANENT, attempt=3, id="500-third-is-permanent"),
        answer(502, TRANSIENT),
        answer(503, PUSHBACK),
        answer(503, PUSHBACK, retry_after="1", id="503-with-retry-after"),
        answer(504, TRANSIENT),
        answer(507, TRANSIENT, id="other-5xx"),
        answer(None, TRANSIENT, id="no-answer-is-transient-not-a-load-signal"),
    ],
)  # fmt: skip
def test_classify_sorts_answers_and_flags_pushback(
    status: int | None, retry_after: str | None, attempt: int, expected: Verdict
) -> None:
    assert expected == classify(Answer(status, retry_after), attempt, max_500_attempts=3)


# -- decide ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "attempt", "expected"),
    [
        answer(204, Settle(Outcome.OK), id="ok"),
        answer(204, Settle(Outcome.OK), attempt=8, id="ok-at-last-attempt"),
        answer(400, Settle(Outcome.FAILED), id="400-failed"),
        answer(403, Settle(Outcome.FAILED), id="403-failed"),
        answer(404, Settle(Outcome.FAILED), id="404-failed"),
        answer(409, Settle(Outcome.FAILED), id="409-failed"),
        answer(413, Settle(Outcome.FAILED), id="413-quota-failed"),
        answer(401, Abort(), id="401-aborts"),
        answer(401, Abort(), attempt=8, id="401-aborts-even-at-last-attempt"),
        answer(500, Settle(Outcome.FAILED), attempt=3, id="500-at-max-500-attempts-failed"),
        answer(429, Settle(Outcome.GAVE_UP, pushback=True), attempt=8,
               id="429-at-max-attempts-gave-up-still-pushes-back"),
        answer(503, Settle(Outcome.GAVE_UP, pushback=True), retry_after="5", attempt=8,
               id="503-with-retry-after-at-max-attempts-gave-up"),
        answer(None, Settle(Outcome.GAVE_UP), attempt=8, id="no-answer-at-max-gave-up"),
        answer(502, Settle(Outcome.GAVE_UP), attempt=9, id="past-max-attempts-gave-up"),
    ],
)  # fmt: skip
def test_decide_settles_or_aborts(
    status: int | None, retry_after: str | None, attempt: int, expected: Decision
) -> None:
    assert expected == decide(POLICY, Answer(status, retry_after), attempt, NOW, rng())


@pytest.mark.parametrize(
    ("status", "retry_after", "attempt", "expected_pushback"),
    [
        answer(429, True),
        answer(503, True),
        answer(502, False),
        answer(504, False),
        answer(None, False, id="no-answer"),
        answer(413, True, retry_after="2", id="413-with-retry-after"),
        answer(500, False, id="500-first"),
        answer(500, False, attempt=2, id="500-second"),
        answer(429, True, attempt=7, id="429-one-before-max"),
    ],
)
def test_decide_retries_transient_answers(
    status: int | None, retry_after: str | None, attempt: int, expected_pushback: bool
) -> None:
    decision = decide(POLICY, Answer(status, retry_after), attempt, NOW, rng())
    assert isinstance(decision, Retry)
    assert expected_pushback == decision.pushback


@pytest.mark.parametrize(
    ("max_500_attempts", "expected"),
    [
        pytest.param(1, [Settle(Outcome.FAILED)], id="one"),
        pytest.param(3, ["retry", "retry", Settle(Outcome.FAILED)], id="three"),
    ],
)
def test_500_is_retried_until_max_500_attempts_then_failed(
    max_500_attempts: int, expected: list[object]
) -> None:
    policy = RetryPolicy(max_500_attempts=max_500_attempts)
    decisions = [
        decide(policy, Answer(500), attempt, NOW, rng())
        for attempt in range(1, max_500_attempts + 1)
    ]
    assert expected == ["retry" if isinstance(d, Retry) else d for d in decisions]


def test_500_past_max_attempts_gives_up_before_max_500_attempts() -> None:
    policy = RetryPolicy(max_attempts=2, max_500_attempts=3)
    assert Settle(Outcome.GAVE_UP) == decide(policy, Answer(500), 2, NOW, rng())


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 7 ", 7.0, id="surrounding-space"),
        pytest.param("Sat, 28 Nov 2026 02:01:30 GMT", 90.0, id="http-date-in-the-future"),
        pytest.param("Sat, 28 Nov 2026 03:00:05 +0100", 5.0, id="date-with-offset"),
        pytest.param("Sat, 28 Nov 2026 01:59:00 GMT", 0.0, id="date-in-the-past-is-zero"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", 0.0, id="long-past-date-is-zero"),
        pytest.param("Sat, 28 Nov 2026 02:01:30 -0000", None, id="naive-date"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("5 seconds", None, id="trailing-words"),
    ],
)  # fmt: skip
def test_retry_after_is_parsed_as_seconds_or_http_date(
    header: str | None, expected: float | None
) -> None:
    assert expected == parse_retry_after(header, NOW)


@pytest.mark.parametrize("header", ["²", "1²"])
def test_retry_after_with_non_ascii_digits_is_ignored_not_raised(header: str) -> None:
    assert None is parse_retry_after(header, NOW)


@pytest.mark.parametrize(
    ("header", "expected_asked"),
    [
        pytest.param("5", 5.0, id="delta"),
        pytest.param("300", 300.0, id="at-cap"),
        pytest.param("301", 300.0, id="just-over-cap"),
        pytest.param("86400", 300.0, id="a-day-capped"),
        pytest.param("9" * 400, 300.0, id="absurdly-large-capped"),
        pytest.param("Sat, 28 Nov 2026 02:00:10 GMT", 10.0, id="http-date"),
        pytest.param("Sun, 29 Nov 2026 02:00:00 GMT", 300.0, id="http-date-capped"),
        pytest.param("Sat, 28 Nov 2026 01:00:00 GMT", 0.0, id="past-date"),
    ],
)  # fmt: skip
def test_retry_honours_the_server_capped_at_max_retry_after(
    header: str, expected_asked: float
) -> None:
    decision = decide(POLICY, Answer(429, header), 1, NOW, rng())
    assert isinstance(decision, Retry)
    assert expected_asked == decision.server_asked
    assert expected_asked <= decision.delay <= expected_asked + 0.1


@pytest.mark.parametrize(
    ("status", "header"),
    [
        pytest.param(429, None, id="429-no-header"),
        pytest.param(503, "garbage", id="503-unparseable-header"),
        pytest.param(502, None, id="502-no-header"),
        pytest.param(None, None, id="no-answer"),
    ],
)
def test_retry_without_a_usable_retry_after_uses_backoff_and_asks_nothing(
    status: int | None, header: str | None
) -> None:
    decision = decide(POLICY, Answer(status, header), 3, NOW, rng())
    assert isinstance(decision, Retry)
    assert None is decision.server_asked
    assert POLICY.backoff(3, rng()) == decision.delay


def test_retry_after_on_a_non_pushback_status_is_still_honoured() -> None:
    decision = decide(POLICY, Answer(502, "4"), 1, NOW, rng())
    assert Retry(decision.delay, pushback=False, server_asked=4.0) == decision


# -- backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected_ceiling"),
    [
        pytest.param(1, 0.5, id="1"),
        pytest.param(2, 1.0, id="2"),
        pytest.param(3, 2.0, id="3"),
        pytest.param(7, 32.0, id="7"),
        pytest.param(8, 60.0, id="8-capped"),
        pytest.param(200, 60.0, id="huge-attempt-capped-no-overflow"),
    ],
)
def test_backoff_is_full_jitter_up_to_the_doubling_ceiling(
    attempt: int, expected_ceiling: float
) -> None:
    generator = random.Random(42)
    delays = [POLICY.backoff(attempt, generator) for _ in range(2000)]
    assert all(0.0 <= delay <= expected_ceiling for delay in delays)
    # Full jitter spreads over the whole range, not only near the ceiling.
    assert min(delays) < 0.05 * expected_ceiling
    assert max(delays) > 0.95 * expected_ceiling


def test_backoff_is_reproducible_with_the_same_seed() -> None:
    first = [POLICY.backoff(n, random.Random(7)) for n in range(1, 9)]
    second = [POLICY.backoff(n, random.Random(7)) for n in range(1, 9)]
    assert first == second


def test_backoff_honours_custom_base_and_cap() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=5.0)
    generator = random.Random(3)
    assert all(0.0 <= policy.backoff(1, generator) <= 2.0 for _ in range(200))
    assert all(0.0 <= policy.backoff(4, generator) <= 5.0 for _ in range(200))


@pytest.mark.parametrize("status", range(200, 300))
def test_every_2xx_is_decided_as_the_one_accepted_object(status: int) -> None:
    """The engine checks a 2xx inline and uses ACCEPTED without asking decide(): they agree."""
    decision = decide(RetryPolicy(), Answer(status), 1, 0.0, random.Random(1))
    assert decision is ACCEPTED
    assert Outcome.OK is ACCEPTED.outcome


# -- a 404 to removing a tag: the tag absent (done) or the image unknown (failed) -------------
#
# Glance's own bodies, as webob renders them (plain text, HTML for Accept: */*, JSON): since
# Kilo an unknown image is "Image {id} not found.", before it the database layer's "No image
# found with ID {id}"; a tag not on the image is a bare HTTPNotFound(), webob's "The resource
# could not be found." The fake says "Tag {tag} not found.".

IMAGE_ID = "8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87"


def _webob(explanation: str) -> dict[str, str]:
    return {
        "plain": f"404 Not Found\n\n{explanation}\n\n   ",
        "html": (
            "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n"
            f"  <h1>404 Not Found</h1>\n  {explanation}<br /><br />\n\n\n\n </body>\n</html>"
        ),
        "json": (
            f'{{"message": "{explanation}<br /><br />\\n\\n\\n", "code": "404 Not Found", '
            '"title": "Not Found"}'
        ),
    }


REAL_404 = [
    *[(f"image-kilo-{form}", body, Missing.IMAGE) for form, body in
      _webob("Image {id} not found.").items()],
    *[(f"image-old-{form}", body, Missing.IMAGE) for form, body in
      _webob("No image found with ID {id}").items()],
    *[(f"tag-bare-{form}", body, Missing.TAG) for form, body in
      _webob("The resource could not be found.").items()],
    ("tag-fake", "404 Not Found\n\nTag {tag} not found.\n", Missing.TAG),
    ("image-fake", "404 Not Found\n\nNo image found with ID {id}\n", Missing.IMAGE),
    ("gateway-json", '{"error_code": "APIGW.0101", "error_msg": "The API does not exist"}',
     Missing.UNSURE),
    ("bare-not-found", "Not Found", Missing.UNSURE),
    ("empty", "", Missing.UNSURE),
    ("translated", "找不到映像 {id}。", Missing.UNSURE),
]  # fmt: skip

TAGS = ["gold", "image-backup", "image", "Image", "not-found-image", "found", "ID"]


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize(("body", "expected"), [pytest.param(b, e, id=n) for n, b, e in REAL_404])
def test_a_glance_404_is_read_for_what_is_missing_whatever_the_tag_is_called(
    body: str, expected: Missing, tag: str
) -> None:
    text = body.replace("{id}", IMAGE_ID).replace("{tag}", tag)
    assert expected == glance_404(text, IMAGE_ID, tag)


@pytest.mark.parametrize("image_id", ["image-0001", "IMAGE-NOT-FOUND", IMAGE_ID.upper()])
def test_an_image_id_with_the_word_image_in_it_changes_nothing(image_id: str) -> None:
    tag_absent = "404 Not Found\n\nThe resource could not be found.\n\n   "
    image_gone = f"404 Not Found\n\nImage {image_id.lower()} not found.\n\n   "
    assert Missing.TAG == glance_404(tag_absent, image_id, "image-backup")
    assert Missing.IMAGE == glance_404(image_gone, image_id, "image-backup")


@pytest.mark.parametrize(
    ("tag_absent", "absent_is_ok", "expected"),
    [
        (True, True, Kind.OK),  # removing a tag that is not there: done
        (False, True, Kind.PERMANENT),  # the image is unknown (or unsure): failed
        (True, False, Kind.PERMANENT),  # adding: a 404 is always the image
    ],
)
def test_a_404_is_ok_only_when_removing_and_the_tag_is_absent(
    tag_absent: bool, absent_is_ok: bool, expected: Kind
) -> None:
    answer = Answer(404, error="Image not found", tag_absent=tag_absent)
    assert expected == classify(answer, 1, 3, absent_is_ok).kind
