"""The retry policy: given what one attempt got back, settle the row, retry it, or abort the run.

A decision is a value computed from plain inputs (the answer, the attempt number, ``now`` and a
``random.Random``), in the manner of stamina's ``_compute_backoff`` and rclone's pacer: no
sleeping, no clock reads, so one table of cases tests the whole policy.

    answer ──► classify ──► ok | permanent | retryable(pushback?) | auth
                                   │              │
                                   ▼              ▼
                                 Settle     Retry(delay) or Settle(gave_up)
"""

from __future__ import annotations

import email.utils
import random
import re
from dataclasses import dataclass
from enum import Enum

from bulktag.model import Answer, Outcome


class Kind(Enum):
    OK = "ok"
    PERMANENT = "permanent"  # the same request will get the same answer: record it as failed
    RETRYABLE = "retryable"  # transient: try again later
    AUTH = "auth"  # the token was refused


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    pushback: bool  # the server says it is overloaded: slow the whole run, not only this row


# The verdicts and settlements of every healthy answer, made once: decide() runs per request.
_OK = Verdict(Kind.OK, pushback=False)
_PERMANENT = Verdict(Kind.PERMANENT, pushback=False)


class Missing(Enum):
    """What a 404 to ``DELETE /v2/images/{id}/tags/{tag}`` says is missing."""

    IMAGE = "image"
    TAG = "tag"
    UNSURE = "unsure"  # words Glance does not use (a gateway's, a translation): ask the image


_MARKUP = re.compile(r"<[^>]*>")  # webob's HTML form of an error
# Glance's words for an unknown image, once the image id is "<id>" (lower case):
_IMAGE_GONE = re.compile(
    r"\bimage <id> (?:was )?not found"  # Glance since Kilo: "Image {id} not found."
    r"|\bno image found with id <id>"  # older Glance (its database layer), the fake
    r"|\bimage <id> could not be found"
)
# Glance raises a bare HTTPNotFound() when the tag is not on the image: webob's own words.
_TAG_GONE = "the resource could not be found"


def glance_404(text: str, image_id: str, tag: str) -> Missing:
    """Which of image and tag a Glance 404 to removing ``tag`` says is missing, from its text
    (plain, HTML or JSON, as webob renders it). Only whole phrases as Glance writes them
    count, with the image id in its place: the word "image" in a tag (``image-backup``) or
    in an id says nothing. Anything else is UNSURE."""
    flat = _MARKUP.sub(" ", text)
    if image_id:
        flat = re.sub(re.escape(image_id), " <id> ", flat, flags=re.IGNORECASE)
    flat = " ".join(flat.lower().split())
    if _IMAGE_GONE.search(flat):
        return Missing.IMAGE
    tag_gone = f"tag {tag.lower()} not found"  # the fake's words, and a proxy's
    if _TAG_GONE in flat or (tag and re.search(rf"\b{re.escape(tag_gone)}", flat)):
        return Missing.TAG
    return Missing.UNSURE


def classify(
    answer: Answer, attempt: int, max_500_attempts: int, absent_is_ok: bool = False
) -> Verdict:
    """Sort an answer into ok / permanent / retryable / auth (see API-FACTS.md).

    ``absent_is_ok``: removing a tag that is not there is done, not failed (Glance answers 404).
    """
    status = answer.status
    if status == 404 and absent_is_ok and answer.tag_absent:
        return _OK
    if status is None:  # connection refused or dropped, timeout: transient, not a load signal
        return Verdict(Kind.RETRYABLE, pushback=False)
    if 200 <= status < 300:
        return _OK
    if status == 401:
        return Verdict(Kind.AUTH, pushback=False)
    if status in (429, 503) or (status == 413 and answer.retry_after is not None):
        return Verdict(Kind.RETRYABLE, pushback=True)  # 413 + Retry-After is a rate limit
    if status in (502, 504):
        return Verdict(Kind.RETRYABLE, pushback=False)
    if status == 500:  # usually a deterministic server bug: worth a few tries, not many
        kind = Kind.RETRYABLE if attempt < max_500_attempts else Kind.PERMANENT
        return Verdict(kind, pushback=False)
    if status >= 500:
        return Verdict(Kind.RETRYABLE, pushback=False)
    return _PERMANENT  # 400, 403, 404, 413 quota, 409, 3xx...


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() is True too
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None  # unparseable: fall back to our own backoff
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is treated as such
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.5  # the first backoff's upper bound
    max_delay: float = 60.0  # cap on our own exponential backoff
    max_retry_after: float = 300.0  # cap on what a server may ask us to wait
    max_500_attempts: int = 3

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base·2^(attempt-1))]."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 60))
        return rng.uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class Settle:
    outcome: Outcome
    pushback: bool = False  # a gave_up on 429/503 still tells the pacer the server is full


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float
    pushback: bool = False  # the server is overloaded: slow the whole run down
    server_asked: float | None = None  # seconds the server asked us to wait (Retry-After)


@dataclass(frozen=True, slots=True)
class Abort:
    """The token was refused: the run cannot go on without new credentials."""


Decision = Settle | Retry | Abort

ACCEPTED = Settle(Outcome.OK)  # decide() returns this very object for every accepted answer
_SETTLE_FAILED = Settle(Outcome.FAILED)


def decide(
    policy: RetryPolicy,
    answer: Answer,
    attempt: int,
    now: float,
    rng: random.Random,
    *,
    absent_is_ok: bool = False,
) -> Decision:
    """What to do after attempt number ``attempt`` (1-based) got ``answer``."""
    status = answer.status
    if status is not None and 200 <= status < 300:  # the common case, without classify()
        return ACCEPTED
    verdict = classify(answer, attempt, policy.max_500_attempts, absent_is_ok)
    if verdict.kind is Kind.OK:
        return ACCEPTED
    if verdict.kind is Kind.PERMANENT:
        return _SETTLE_FAILED
    if verdict.kind is Kind.AUTH:
        return Abort()
    if attempt >= policy.max_attempts:
        return Settle(Outcome.GAVE_UP, pushback=verdict.pushback)
    asked = parse_retry_after(answer.retry_after, now)
    if asked is not None:
        asked = min(asked, policy.max_retry_after)
        # Honour the server, with a little jitter so a storm's retries do not all align.
        delay = asked + rng.uniform(0.0, 0.1)
        return Retry(delay, pushback=verdict.pushback, server_asked=asked)
    return Retry(policy.backoff(attempt, rng), pushback=verdict.pushback)
