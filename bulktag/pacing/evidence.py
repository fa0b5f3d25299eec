"""What the controller measures its decisions on: a window of answers (:class:`Window`), how
long answers take, accepted and refused apart (:class:`Delays`), what was sent at a pace
(:class:`Sending`), the most that got in while the cloud refused (:class:`RefusedSeconds`), and
the noise of a refused share (:func:`share_noise`)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from bulktag.pacing.policy import Signal

ENOUGH_ANSWERS = 8  # a second with fewer says little of what the cloud lets in


@dataclass(slots=True)
class Window:
    """Counts of one evaluation window. Answers count only for requests sent since ``start``
    (earlier ones describe the rate before), accepted and refused alike. So do the
    acceptances the attempt loop's fast path counted while calm, read off the running total:
    calm ends at the first refusal, so they all came before any."""

    start: float
    accepted_before: int  # the running total of accepted answers when the window began
    accepted: int = 0  # accepted answers to requests sent since ``start``
    refused: int = 0
    failed: int = 0
    asked: list[float] | None = None  # Retry-After values among the refusals
    # Answers to rows' first attempts. The refused share is read from these when there are
    # enough: a row refused on every try (per-row refusals) sends more and more of the
    # traffic as the run goes on, and would make a steady share look like a rising one.
    fresh_accepted: int = 0
    fresh_refused: int = 0
    observed_accepted: int = 0  # accepted answers passed to observe(), sent whenever
    observed_other: int = 0  # refused or failed ones, sent whenever (see calm)
    # Answers to requests sent after the window's first refused one: the cloud as it is now,
    # with the burst a limiter lets through first, or the pace it took before it dropped,
    # left out (PaceController._overwhelmed, _refusals_began_partway). The share is read from
    # rows' first attempts (a row refused on every try would make a streak of its own), the
    # rate that got in from every attempt (retries take the cloud's capacity too).
    first_refused_sent: float | None = None
    later_accepted: int = 0
    later_refused: int = 0
    later_got_in: int = 0  # accepted answers to any attempt sent after it…
    later_accepted_sent: float = 0.0  # …when the latest of them was sent…
    later_sent: float = 0.0  # …and the latest send among all these answers

    def add(
        self,
        signal: Signal,
        retry_after: float | None,
        fresh: bool,
        sent_at: float,
        *,
        counted: bool = True,
    ) -> None:
        """One answer. A refusal not ``counted`` yet goes into the share later
        (:meth:`count_refusal`), when an acceptance of its request would be back."""
        self._add_later(signal, sent_at, fresh)
        if signal is Signal.REFUSED:
            if counted:
                self.count_refusal(fresh, retry_after)
            return
        self.accepted += signal is Signal.ACCEPTED
        if fresh:
            self.fresh_accepted += signal is Signal.ACCEPTED
        if signal is Signal.FAILED:
            self.failed += 1

    def count_refusal(self, fresh: bool, retry_after: float | None) -> None:
        self.refused += 1
        self.fresh_refused += fresh
        if retry_after is not None:
            if self.asked is None:
                self.asked = []
            self.asked.append(retry_after)

    def _add_later(self, signal: Signal, sent_at: float, fresh: bool) -> None:
        if self.first_refused_sent is None:
            if signal is Signal.REFUSED and fresh:
                self.first_refused_sent = sent_at
        elif sent_at > self.first_refused_sent and signal is not Signal.FAILED:
            # Failures say nothing of the rate, as in the window's own share.
            accepted = signal is Signal.ACCEPTED
            self.later_got_in += accepted
            if accepted:
                self.later_accepted_sent = max(self.later_accepted_sent, sent_at)
            self.later_sent = max(self.later_sent, sent_at)
            if fresh:
                self.later_accepted += accepted
                self.later_refused += not accepted

    def _sent_span(self) -> float:
        """From the first refused request to the latest answered."""
        assert self.first_refused_sent is not None
        return self.later_sent - self.first_refused_sent

    def settled(self, extra: float) -> bool:
        """The acceptances of at least half the span can be back: acceptances take ``extra``
        longer than refusals (the backend serves; the gateway refuses at once), so the
        latest requests answered are refused ones, their acceptances not back yet."""
        return self.first_refused_sent is not None and self._sent_span() >= 2 * extra

    def later_share(self, extra: float) -> tuple[float, int]:
        """The refused share of answers to requests sent after the first refused one, and
        their count, with the acceptances counted per second of the span theirs can be
        back from: the last ``extra`` seconds of sending came back as refusals only (where
        service takes 50-150 ms, nearly all the answers back to the latest requests;
        RESULTS section 34). Raw while too little is settled to scale by."""
        answers = self.later_accepted + self.later_refused
        if not answers or not extra or not self.settled(extra):
            return (self.later_refused / answers if answers else 0.0), answers
        span = self._sent_span()
        accepted = self.later_accepted * span / (span - extra)
        return self.later_refused / (self.later_refused + accepted), answers

    def later_accepted_rate(self, extra: float) -> float:
        """Accepted per second of sending, from the first refused request to the latest
        accepted one, or to the last whose acceptance can be back if that is sooner:
        counted to the latest accepted alone, a cloud serving in 50-150 ms read as taking
        half what it did."""
        assert self.first_refused_sent is not None
        end = min(self.later_accepted_sent, self.later_sent - extra)
        return self.later_got_in / max(end - self.first_refused_sent, 1e-6)


class Delays:
    """How long answers take to come back, accepted and refused apart: the gateway refuses
    at once, the backend serves first, and at a concurrency limit serving takes long. Every
    acceptance is timed, the fast path's too (:meth:`Pacer.accepted_while_calm`): timed
    only once calm ended, the first acceptances timed were the calm flood's stragglers,
    slow by selection (a fixed window's first burst read 20-40 ms slower than its refusals
    where both took 5 ms plus up to 100 ms late; simulated)."""

    __slots__ = ("_added", "_extra", "accepted", "refused")

    def __init__(self) -> None:
        self.accepted: deque[float] = deque(maxlen=DELAYS_KEPT)
        self.refused: deque[float] = deque(maxlen=DELAYS_KEPT)
        self._extra = 0.0
        self._added = 0  # delays added since it was last read

    def add(self, delay: float, accepted: bool) -> None:
        (self.accepted if accepted else self.refused).append(delay)
        self._added += 1

    @property
    def extra(self) -> float:
        """How much longer an acceptance takes than a refusal, where it clearly does. Read
        again after each new delay while either kind has few, after every 8th once both
        have 64: the windows ask on every answer, and reading it is most of their cost."""
        if self._added and self._added * 8 >= min(len(self.accepted), len(self.refused)):
            self._extra = self._read_extra()
            self._added = 0
        return self._extra

    @property
    def lag(self) -> float:
        """The longest an acceptance took over the quickest refusal, where acceptances are
        slower beyond chance (else 0)."""
        if not self.extra:
            return 0.0
        return max(self.accepted) - min(self.refused)

    def _read_extra(self) -> float:
        """Acceptances are slower beyond chance: were the two kinds alike, the last n
        acceptances would all be as slow as the quickest of them with chance ``slower ** n``,
        ``slower`` the share of refusals that slow (plus one in the count, so that one
        refusal quicker than one acceptance is no evidence). Then the difference of the mean
        delays, or of the quickest if that is more, if at least 10 ms. Else nothing: where
        the two come back alike, no reason to read the answers any differently."""
        accepted, refused = self.accepted, self.refused
        if not accepted or not refused:
            return 0.0
        quickest = min(accepted)
        slower = (sum(map(quickest.__le__, refused)) + 1) / (len(refused) + 1)
        if slower ** len(accepted) > BY_CHANCE:
            return 0.0
        mean_accepted = sum(accepted) / len(accepted)
        mean_refused = sum(refused) / len(refused)
        extra = max(mean_accepted - mean_refused, quickest - min(refused))
        return extra if extra >= SERVICE_FLOOR else 0.0


class Sending:
    """The requests sent since ``since`` whose answers are in: how many, and the first and
    the last of them sent. Whether a pace was used is read off it (RFC 7661's rule for a
    congestion window the sender does not fill; see :meth:`PaceController._probe_due`)."""

    __slots__ = ("began", "count", "first", "last", "since")

    def __init__(self, since: float) -> None:
        self.since = since  # requests sent from here are counted…
        self.began = since  # …and the time from here on is what they are judged against
        self.count = 0
        self.first, self.last = math.inf, -math.inf

    def add(self, sent_at: float) -> None:
        if sent_at >= self.since:
            self.count += 1
            self.first = min(self.first, sent_at)
            self.last = max(self.last, sent_at)

    def resumed(self, now: float, paused_at: float) -> Sending:
        """This sending, going on from ``now`` after a pause since ``paused_at`` that it
        leaves out, as if it had not been (a dip under the pace: its sends were not at the
        pace, and its time is not the pace's)."""
        resumed = Sending(now)
        pause = now - paused_at
        resumed.began = self.began + pause
        resumed.count = self.count
        resumed.first, resumed.last = self.first + pause, self.last + pause
        return resumed

    def at_least(self, rate: float, answers: int, now: float) -> bool:
        """``answers`` at least, sent at ``rate`` or more from the first to the last, and
        those two half the time since it began apart at least: requests sent in bursts (a
        cap on requests in flight sends a burst each time answers return) are at the pace
        within each burst, and not over the time."""
        span = self.last - self.first
        return self.count >= max(answers, rate * span) and span >= 0.5 * (now - self.began)


# The delays of the last this many answers of each kind are kept (see Delays).
DELAYS_KEPT = 64
# Acceptances read as slower than refusals when that is at most this likely by chance…
BY_CHANCE = 0.01
# …and by at least this much: a few milliseconds move what got in by a few percent at most,
# where two kinds that come back alike still read a millisecond apart now and then.
SERVICE_FLOOR = 0.010


def share_noise(share: float, answers: int, deviations: float) -> float:
    """``deviations`` standard deviations of a refused share measured over ``answers``."""
    share = min(max(share, 0.01), 0.99)
    return deviations * math.sqrt(share * (1.0 - share) / max(answers, 1))


@dataclass(slots=True)
class RefusedSeconds:
    """The most that got in during one second in which the cloud also refused some while the
    run sent at its pace: a capacity the run saw, whatever the limiter's shape (a bucket's
    refill, a fixed window's quota, what a cap serves). Seconds are counted from the run's
    first refusal, not its start: the second before holds what a fresh limiter lets through
    first (a full bucket, or a window and the start of the next). Left out: the second under
    way; seconds with nothing refused, or with fewer answers than half the pace or than
    ``ENOUGH_ANSWERS`` (a retry tail: the run had little to send); and seconds with nothing
    accepted (an outage, a spent quota: the cloud was away)."""

    second: float | None = None  # the current second began then (None: nothing refused yet)
    accepted: int = 0  # answers in it so far
    refused: int = 0
    most: int | None = None  # the most accepted in one of the seconds above, if there was one

    def add(self, now: float, signal: Signal, pace: float) -> None:
        """An answer at ``now``, while the run was paced at ``pace`` requests a second."""
        second = self.second
        if second is None:
            if signal is not Signal.REFUSED:
                return
            second = self.second = now
        elif now >= second + 1.0:
            answers = self.accepted + self.refused
            if self.refused and self.accepted and answers >= max(pace / 2, ENOUGH_ANSWERS):
                self.most = max(self.most or 0, self.accepted)
            self.second = second + math.floor(now - second)
            self.accepted = self.refused = 0
        if signal is Signal.ACCEPTED:
            self.accepted += 1
        elif signal is Signal.REFUSED:
            self.refused += 1

    @property
    def none_refused(self) -> bool:
        """Nothing has been refused in the run so far."""
        return self.second is None
