"""What the pacer reads from an answer (:class:`Signal`), the numbers it works by
(:class:`PacingPolicy`), and the states of its controller (:class:`Mode`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Signal(Enum):
    """What one answer says about the cloud's pace."""

    ACCEPTED = "accepted"  # it did the work, or answered for the row (404, 403…): the cloud is up
    REFUSED = "refused"  # 429, 503, 413 + Retry-After: the cloud would not take the request
    FAILED = "failed"  # no answer, 502/504/5xx: says nothing about the rate, but nothing got in


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    window: float = 0.2  # a window lasts at least this long…
    window_answers: int = 8  # …and holds at least this many answers…
    window_max: float = 1.0  # …unless this much time passed first
    opening_answers: int = 128  # the run's first window lasts ``window`` or this many answers
    test_answers: int = 32  # answers a window after a cut needs: the experiment's sample
    quick_refusals: int = 5  # this many refusals and nothing accepted end a window at once…
    guessed_share: float = 0.8  # …or as many as this share makes unlikely, on a first resume
    horizon: float = 1.0  # accepted/s is measured over at least this (a fixed window's period)
    margin: float = 0.05  # refused share above the rate-independent one that means overload
    below: float = 0.95  # pace this far under the accepted rate
    cut_at_least: float = 0.85  # a cut lowers the rate at least this far: the experiment shows
    not_fallen: float = 0.8  # a share that stayed above this × before did not fall
    probe_every: float = 1.0  # seconds at a pace before the next probe above it (a horizon)…
    probe_answers: int = 32  # …and long enough for this many answers at it
    probe_step: float = 0.02  # the first probe's step; each clean probe makes it 4× larger
    common_within: float = 20.0  # its common part: on --rate, up to this × the most accepted/s
    plateau: float = 1.15  # …but not under this × a confirmed capacity, where steps stay small…
    stale_after: float = 2.0  # …while a row's first try was refused less than this long ago…
    stale_answers: int = 64  # …or than this many answers at the pace ago
    stale_kick: float = 0.25  # a stale pace's first probe steps up to 4×, this share at most
    used_share: float = 0.8  # a pace is probed above only once the run sent this share of it
    overshot_for: float = 5.0  # seconds a probe's overshoot bounds the next probes (halving)…
    retest_within: float = 0.2  # …unless well under a recent peak, with one this close above
    peak_memory: float = 60.0  # seconds the highest confirmed pace draws probes back to it
    recheck_every: float = 10.0  # seconds between dips that test rate-independent refusals…
    dip_for: float = 2.0  # …under what gets in, for a window no longer than this…
    large_share: float = 0.25  # …but the first after finding a share this large or larger…
    recheck_first: float = 2.0  # …comes on marks this many seconds apart
    independent_answers: int = 128  # answers a rate-independent share is taken as read from
    held_back_rate_share: float = 1 / 32  # while nothing is accepted: this share of the pace…
    silent_after: float = 1.0  # …until nothing has been accepted for this long, then:
    silent_rate: float = 1.0  # requests per second while the cloud accepts nothing
    min_rate: float = 0.2  # never slower than one request every five seconds


class Mode(Enum):
    CRUISE = "cruise"  # answers come back accepted (up to the rate-independent share)
    TESTING = "testing"  # cut after refusals; the next windows tell whether cutting helped
    VERIFYING = "verifying"  # the refusals looked rate-independent and the rate went back up:
    # did the accepted rate rise with it (independent), or stay flat (a limit after all)?
    RECHECKING = "rechecking"  # a dip under a pace with rate-independent refusals: are they?
    HELD_BACK = "held back"  # nothing accepted lately: a window spent, or the cloud is down
