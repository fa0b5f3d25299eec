"""The allowed rate, moved by the cloud's answers (:class:`PaceController`), and the line the
summary gives of what it found (:func:`describe`). Reads no clock: ``now`` is passed in."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from bulktag.pacing.evidence import Delays, RefusedSeconds, Sending, Window, share_noise
from bulktag.pacing.policy import Mode, PacingPolicy, Signal
from bulktag.pacing.verdict import Sample, limit_fits_better

# While a cap on requests in flight found in the cloud governs (see gate.GIVE_WAY), the
# probes take the rate no further above what it lets through than this: clear above, since
# the answers that free its places come back in clumps, which an evenly spaced pace close
# above meets with places unused (8 in service ± 50 %: 94 % of what it serves at 1.5×, 97 %
# at 3×, 98 % unbounded); not at --rate: the cap may be dropped.
CAP_GUARD = 3.0

# Got in at this share of --rate or more, nothing refused: --rate held the run back.
HELD_BY_RATE = 0.8


@dataclass(slots=True)
class _DoubtfulHold:
    """A hold-back begun on a streak whose acceptances, had there been any, could not be
    back yet (see :meth:`PaceController._misread_hold_back`): what it replaced, and the
    answers to requests sent from the streak's first refused one to the hold-back."""

    streak_sent: float  # the streak's first refused request left then
    at: float  # the hold-back began
    rate: float  # the pace, the good pace and the cuts before it
    good: float
    cuts: int
    capacity: float | None
    rate_related: bool
    held_since: float
    refused: int  # the streak, and the refusals to requests sent in it that came later
    accepted: int = 0


class PaceController:
    """The allowed rate, moved by the cloud's answers. Reads no clock: pass ``now``.

    Invariants: ``min(min_rate, ceiling) ≤ rate ≤ ceiling``; ``good`` is the last rate a clean
    window confirmed (the ceiling until something is refused); ``independent`` is the refused
    share the experiment found not to depend on the rate.
    """

    cap_through: float | None
    _doubtful_hold: _DoubtfulHold | None

    def __init__(
        self, ceiling: float, policy: PacingPolicy, now: float, *, wall_offset: float = 0.0
    ) -> None:
        self.policy = policy
        # The wall clock minus ``now``'s clock: processes share the one, not the other.
        self.wall_offset = wall_offset
        self.ceiling = ceiling
        self.rate = ceiling
        self.good = ceiling
        self.independent = 0.0
        self.mode = Mode.CRUISE
        self.paused_until = float("-inf")  # nobody sends before this (the server asked)
        self.cuts = 0
        self.capacity: float | None = None  # accepted/s where a cut was confirmed to help
        self.rate_related = False  # some refusals were confirmed to depend on the rate
        # A cap on requests in flight found in the cloud governs, letting this many requests
        # a second through (the Pacer sets both).
        self.capped, self.cap_through = False, None
        self.accepted_total = 0  # also counted by the attempt loop's fast path while calm
        self.last_accepted = now
        self._refused_at = now  # when a row's first try was last refused (see _stale)
        # Refusals and failures since the last accepted answer; those of them that answered
        # a row's first attempt; when the earliest of them was sent.
        self._streak, self._fresh_streak, self._streak_sent = 0, 0, math.inf
        # A hold-back the streak's own acceptances may yet show was a misreading; whether
        # one was undone, and no window judged the pace since.
        self._doubtful_hold, self._undone = None, False
        self._accepted_seen = 0  # accepted_total when observe() last looked
        self._resumed_at = float("-inf")  # the last time accepted answers ended a hold-back
        self._resumed_total = 0  # accepted_total then
        # The highest pace a clean horizon confirmed, and when it last was (see _toward_peak);
        # the most accepted/s seen (see _common_scale).
        self._peak, self._peak_at, self._most_accepted = 0.0, now, 0.0
        self._held_since = float("-inf")  # the last time nothing got in any more
        self.changed_at = now  # the allowed rate last moved
        self._window = self._new_window(now)
        # How long answers take, accepted and refused apart; the most that got in during a
        # second the cloud refused in (it checks the capacity the operator is told of).
        self.delays, self.refused_seconds = Delays(), RefusedSeconds()
        # Every answer of the run's first horizon after its first refusal (see _opening_rate).
        self._opening: Window | None = self._new_window(now)
        # (time, accepted_total), ~0.1 s apart over the last two horizons
        self._history: deque[tuple[float, int]] = deque([(now, 0)])
        self._started = now
        self._steps: list[Sample] = []  # each pace of an episode before its cut, as judged
        self._trigger = 0.0  # the refused share that began the episode
        self._admitted_while_refused = ceiling  # admitted/s measured at the latest cut
        # The tested rate ÷ the restored one; the refused share at the tested rate, and the
        # answers it was read from; the rate-independent share before the experiment.
        self._verifying = (1.0, 0.0, 1, 0.0)
        self._resume = ceiling  # the pace to resume at when something is accepted again
        self._probes = 0  # clean probes in a row: each step is 4× the last
        self._probing = False  # the rate was last moved by a probe
        self._overshot: float | None = None  # the last pace that brought refusals, if above…
        self._overshot_at = now  # …and when: after a while it says little about the cloud
        self._bisections = 0  # probes since then that went half the way to it, all clean
        self._checked_at = now  # the last dip under a pace with rate-independent refusals
        self._found_at = now  # the last time refusals were found not to be about the rate
        self._first_tries = False  # the last window's share was read from rows' first tries
        self._dip_answers = 0  # answers the window of a dip needs
        self._dip_before = (0.0, 1)  # the share before the dip, and the answers behind it
        self._dip_accepted = 0.0  # accepted/s when the dip began
        self._probe_base = (0.0, ceiling)  # accepted/s when the last probe began, and its pace
        self._last_share = 0.0  # the refused share of the last window evaluated
        # Refusals and answers since the rate last changed, as the windows judged them (rows'
        # first tries, when there were enough): what a probe is judged on.
        self._tally_refused, self._tally_answers = 0.0, 0
        self._sending = Sending(now)  # since then too (see _probe_due)
        # Refusals not in the window's share yet: (when they go in, sent at, fresh, the wait
        # they asked for); see _add_to_window.
        self._deferred: deque[tuple[float, float, bool, float | None]] = deque()
        self._sending_before_dip = (self._sending, now)  # at the last dip, and its start

    def _new_window(self, now: float) -> Window:
        return Window(now, self.accepted_total)

    def begin(self, now: float) -> None:
        """The first request leaves now: rates are measured from here, not from when the
        controller was made (a run reads its journal and checks the endpoint first)."""
        self._started = self.last_accepted = self.changed_at = now
        self._history = deque([(now, self.accepted_total)])
        self._window = self._new_window(now)
        self._opening = self._new_window(now)
        self._sending = Sending(now)

    # ── answers in ────────────────────────────────────────────────────────────────────────

    def observe(
        self,
        now: float,
        sent_at: float,
        signal: Signal,
        retry_after: float | None = None,
        *,
        fresh: bool = True,
    ) -> None:
        """Fold one answer in; evaluate the window when it is complete. ``fresh``: the
        answer to a row's first attempt."""
        if signal is not Signal.FAILED:
            self._timed(now, sent_at, signal is Signal.ACCEPTED)
        if self._deferred:
            self._count_deferred(now)
        self._sending.add(sent_at)
        self.refused_seconds.add(now, signal, self.rate)
        if signal is Signal.ACCEPTED:
            self.accepted_total += 1
            self._window.observed_accepted += 1
        if self.accepted_total != self._accepted_seen:
            # Accepted since the last answer seen here (some counted by the engine's fast
            # path while calm, which reads no clock): the cloud took something until now.
            self._accepted_seen = self.accepted_total
            self.last_accepted = now
            self._streak = self._fresh_streak = 0
            self._streak_sent = math.inf
        if signal is Signal.REFUSED and fresh:
            self._refused_at = now
        if signal is not Signal.ACCEPTED:
            if sent_at >= self._resumed_at:
                # Refusals of requests sent before the pace resumed were sent at the pace
                # that spent the window: no evidence against the resumed one.
                self._streak += 1
                self._fresh_streak += fresh
                self._streak_sent = min(self._streak_sent, sent_at)
        elif self.mode is Mode.HELD_BACK:
            self._resume_pace(now)
            return
        if signal is not Signal.ACCEPTED:
            self._window.observed_other += 1
        if sent_at >= self._window.start:  # else it left at the old rate: not evidence
            self._add_to_window(now, signal, retry_after, fresh, sent_at)
        if self._opening is not None:
            self._add_to_opening(now, signal, retry_after, fresh, sent_at)
        if self._window_complete(now):
            self._evaluate(now)

    def _timed(self, now: float, sent_at: float, accepted: bool) -> None:
        """An answer that says how long the cloud takes: timed, and, while a hold-back is in
        doubt, a witness for or against it."""
        self.delays.add(now - sent_at, accepted)
        if self._doubtful_hold is not None:
            self._misread_hold_back(now, sent_at, accepted)

    def _add_to_window(
        self, now: float, signal: Signal, retry_after: float | None, fresh: bool, sent_at: float
    ) -> None:
        """A refusal goes into the window's share when an acceptance of the same request
        would be back: refusals come at once, acceptances once served, and a share of the
        answers back reads more refused than the cloud refuses (a backend refusing 20 % at
        any rate and serving in 150 ms was read as refusing 43-57 %: RESULTS section 35).
        What got in after the window's first refusal is measured apart, as before."""
        extra = self.delays.extra
        if signal is Signal.REFUSED and extra and now < sent_at + extra:
            self._window.add(signal, retry_after, fresh, sent_at, counted=False)
            self._deferred.append((sent_at + extra, sent_at, fresh, retry_after))
        else:
            self._window.add(signal, retry_after, fresh, sent_at)

    def _count_deferred(self, now: float) -> None:
        deferred, window = self._deferred, self._window
        while deferred and deferred[0][0] <= now:
            _, sent_at, fresh, retry_after = deferred.popleft()
            if sent_at >= window.start:
                window.count_refusal(fresh, retry_after)

    def _window_complete(self, now: float) -> bool:
        window, policy = self._window, self.policy
        elapsed = now - window.start
        accepted = self._accepted_in(window)
        if self._nothing_gets_in(now) or self._overwhelmed(now, window):
            return True
        if accepted == 0:
            return False  # a few refusals and nothing else yet: wait for more
        if elapsed >= policy.window_max and self.mode is Mode.CRUISE:
            return True
        if elapsed >= policy.dip_for and self.mode is Mode.RECHECKING:
            return True
        if elapsed < policy.window or elapsed < self._unsettled_for(window):
            return False
        answers = accepted + window.refused
        return answers >= self._answers_needed() or self._clean_sooner(window, answers)

    def _overwhelmed(self, now: float, window: Window) -> bool:
        """A pace far above the cloud's, beyond doubt before the window's time is up: of the
        answers to an experiment's sample of requests sent after the first refused one, more
        than half are refused (and more than the overload line), by three standard
        deviations: the pace is over twice what gets in. Waiting out the window would only
        add refusals: at 1,000/s against a 200/s bucket, 160 in 0.2 s. Counted from the first
        refusal, so a limiter's burst (a bucket's tokens, the first ones a window admits) is
        not read as capacity. At least a window's worth must have got in, to time them:
        nothing at all is a spent window or an outage, for the hold-back.

        A run's first window needs less, once its time is out: a window's worth of answers
        after the first refusal, one of them accepted. A streak in that window does not hold
        the run back (see :meth:`_nothing_gets_in`), so the pace is still the ceiling and what
        got in is the only measure there is."""
        if self.mode is not Mode.CRUISE or not window.settled(self.delays.extra):
            return False  # the acceptances of the latest requests are not back yet
        share, answers = window.later_share(self.delays.extra)
        policy = self.policy
        if self._first_window_out(now, window):
            least_answers, least_got_in = policy.window_answers, 1
        else:
            least_answers, least_got_in = policy.test_answers, policy.window_answers
        if answers < least_answers or window.later_got_in < least_got_in:
            return False  # too few to tell, or to time what got in (nothing: a spent window)
        return share - share_noise(share, answers, 3.0) > max(self._threshold(answers), 0.5)

    def _first_window_out(self, now: float, window: Window) -> bool:
        """This is the run's first window, it is out (:meth:`_in_first_window`), and nothing
        was decided yet."""
        return self.cuts == 0 and window.start == self._started and not self._in_first_window(now)

    def _in_first_window(self, now: float) -> bool:
        """The run's first window is open: less than ``window`` seconds old, and fewer than
        ``opening_answers`` answers in it. While it is, a streak does not hold the run back
        once something got in (see :meth:`_nothing_gets_in`). Bounded by time alone, its
        length in requests was --rate's: at --rate 20000 a run sent ~1,000 requests in its
        first 0.2 s to a local 200/s fixed window, and 797 of its 2,397 requests over the
        run were refused (336 with the bound; sliding window 819 → 364). At --rate 600 two
        runs started together get ~120 answers each in 0.2 s: as before, each window holds
        what it needs to measure what got in after its first refusal."""
        window = self._window
        answers = window.accepted + window.refused
        if window.start == self._started and answers >= self.policy.opening_answers:
            return False
        return now - self._started < self.policy.window

    def _unsettled_for(self, window: Window) -> float:
        """How long the window must last before its share can be read: the run's first,
        and the first after a hold-back was undone, judge a pace nothing judged yet, while
        the time acceptances take over refusals is read from the quickest acceptances only
        (the slow ones are not back): twice the longest an acceptance took over the
        quickest refusal, so that the requests of its first half are answered."""
        if not (self._undone or window.start == self._started):
            return 0.0
        return 2.0 * self.delays.lag

    def _clean_sooner(self, window: Window, answers: int) -> bool:
        """After a cut, a window with no refusal at all is sure sooner than the experiment's
        full sample: nothing refused in n answers where at least half the excess share that
        began the episode was expected happens less than once in a hundred. At a few
        requests a second the full sample takes ten seconds and more, spent under the pace
        the cut was meant to find."""
        if self.mode is not Mode.TESTING or window.refused or answers < self.policy.window_answers:
            return False
        expected = (self._trigger - self.independent) / 2
        return expected > 0 and answers >= math.log(0.01) / math.log1p(-min(expected, 0.99))

    def _first_tries_needed(self) -> int:
        """Rows' first tries a window's share is read from, if it has as many: as many as it
        needs answers, or, for the window that checks an experiment's verdict, as many as the
        experiment read its share from (first tries too, nearly always): a verdict is checked
        against a share of the same kind. Near the input's end most answers are retries of
        rows refused before, refused again whatever the rate where refusals are per row: read
        from them, 46 % where the first tries read 33 %, a run with a fifth of its rows refused
        three times each was cut to 60 % of its pace for its last 17 s (simulated)."""
        if self.mode is Mode.VERIFYING:
            return self.policy.test_answers
        return self._answers_needed()

    def _answers_needed(self) -> int:
        if self.mode is Mode.RECHECKING:
            return self._dip_answers
        if self.mode is Mode.VERIFYING:  # its verdict stands for the rest of the run
            return 3 * self.policy.test_answers
        return self.policy.test_answers if self._testing else self.policy.window_answers

    @property
    def _testing(self) -> bool:
        return self.mode in (Mode.TESTING, Mode.VERIFYING, Mode.RECHECKING)

    def _accepted_in(self, window: Window) -> int:
        """Accepted answers that are evidence for ``window``: to requests sent since it
        began, as its refusals are (answers come back late, and out of order, and those sent
        before describe the rate before), and those the fast path counted while calm (none
        in an experiment's windows, which see every answer).

        Counted off the running total, acceptances of requests sent before the window stood
        against none of their refusals. Where answers take longer than a window (a far cloud,
        300 ms), every window read clean: at --rate 1000 on a 200/s bucket, 72 % refused."""
        return window.accepted + self._counted_only(window)

    @property
    def calm(self) -> bool:
        """At the ceiling, nothing refused lately: an accepted answer would change nothing."""
        window = self._window
        return (
            self.mode is Mode.CRUISE
            and self.rate >= self.ceiling
            and self.independent == 0.0
            # Any refusal ends it, of a request sent whenever: counted only from the window's
            # own, a far cloud's came back after the next window began, calm stayed on, and
            # the fast path's acceptances were all the windows saw.
            and window.observed_other == 0
        )

    # ── the decision, once a window ─────────────────────────────────────────────────────

    def _evaluate(self, now: float) -> None:
        window = self._window
        accepted = self._accepted_in(window)
        self._remember(now)
        if self._nothing_gets_in(now):
            self._hold_back(now, window)
        elif self._overwhelmed(now, window):
            self._cut_to_what_got_in(now, window)
        elif answers := accepted + window.refused:
            share = window.refused / answers
            fresh = window.fresh_accepted + window.fresh_refused + self._counted_only(window)
            # An experiment decides on rows' first tries only if there are as many of them
            # as it needs answers: a dozen say less than all the answers, retries and all.
            self._first_tries = fresh >= self._first_tries_needed()
            if self._first_tries:
                share, answers = window.fresh_refused / fresh, fresh
            self._last_share = share
            self._undone = False
            self._tally_refused += share * answers
            self._tally_answers += answers
            if self.mode is Mode.VERIFYING:
                self._verify(now, share, answers)
            elif self.mode is Mode.RECHECKING:
                self._recheck(now, share, answers)
            elif share > self._threshold(answers):
                self._over_the_line(now, share, answers, window)
            else:
                self._clean(now, share, answers)
        self._window = self._new_window(now)

    def _over_the_line(self, now: float, share: float, answers: int, window: Window) -> None:
        """A window's share over the overload line. Where a window is a few answers only and
        a little over it, judged with the answers before it at this pace instead, once they
        are an experiment's sample (see :meth:`_few_a_little_over`)."""
        if self._few_a_little_over(share, answers):
            answers = self._tally_answers  # this window's with those before it at this pace
            if answers < self.policy.test_answers:
                return  # not yet: the next windows add to it
            share = self._tally_refused / answers
            if share <= self._threshold(answers):
                self._clean(now, share, answers)
                return
        self._overloaded(now, share, answers, window)

    def _few_a_little_over(self, share: float, answers: int) -> bool:
        """A window of fewer answers than an experiment's sample, at a pace too slow to
        gather one within a horizon, over the line by less than two standard deviations, at
        a pace a clean window confirmed, before any refusal was found to be about the rate.
        There one or two refusals in eight began an episode whose first sample was that
        window, small and by selection high, against which the 32-answer steps fitted a
        limit about as well; each step took seconds: a backend refusing 10 % at any rate,
        asked --rate 10, was cut to 3.8/s over 24 s before the refusals were found not to
        be about the rate (simulated). A limit, once confirmed, is followed window by window
        as before: at a 10/s bucket, waiting let each probe over it spill more."""
        test = self.policy.test_answers
        if self.mode is not Mode.CRUISE or answers >= test or self.rate > self.good:
            return False
        if self.rate_related or self.rate * self._horizon() >= test:
            return False
        return share - share_noise(share, answers, 2.0) <= self._threshold(test)

    def _counted_only(self, window: Window) -> int:
        """Accepted answers the attempt loop's fast path counted while calm, never passed to
        :meth:`observe`: first tries, nearly all (nothing was refused, so few rows retry).
        Without them, the window in which calm ends would read its first refusals against
        none of the answers accepted before them. An experiment's windows see every answer."""
        if self._testing:
            return 0
        return self.accepted_total - window.accepted_before - window.observed_accepted

    def _nothing_gets_in(self, now: float) -> bool:
        """Refusals (or failures) in a row, with nothing accepted, that are no longer luck:
        five in a row are common where a backend refuses half of everything at any rate.
        First attempts are the evidence; retries count too, four times less, since a row
        refused on every try would otherwise make a streak of its own — or as few as five,
        once nothing at all has got in for a second (the end of a run is all retries)."""
        if self._streak < self.policy.quick_refusals:
            return False  # under the shortest streak that counts: nothing to weigh (most answers)
        if self.accepted_total and self._in_first_window(now):
            # Something got in, in the run's first window: what gets in is for the window to
            # tell (see _overwhelmed). Two runs started together on one limit each see ~80 %
            # refused at first; the one whose streak came first held back, resumed on a
            # guess while the other took the whole limit, and every cut after kept the split.
            return False
        unlucky = self._unlucky_run()
        if self._fresh_streak >= unlucky or self._streak >= 4 * unlucky:
            return True
        silent = now - self.last_accepted >= self.policy.silent_after
        return silent and self._streak >= self.policy.quick_refusals

    def _unlucky_run(self) -> int:
        """Refusals in a row, with nothing accepted, that the refused share would produce
        less than once in ten thousand windows: the rate-independent share, or the share
        the last window or this one before the streak showed, if higher (a backend that refuses half
        at any rate makes streaks of five every 32 requests, before any experiment)."""
        window = self._window
        streak = min(self._fresh_streak, window.fresh_refused)
        before = window.fresh_accepted + self._counted_only(window) + window.fresh_refused - streak
        share = max(self.independent, self._last_share)
        if before >= self.policy.window_answers:
            share = max(share, (window.fresh_refused - streak) / before)
        if self._resumed_on_a_guess() or self._undone:
            share = max(share, self.policy.guessed_share)
        share = min(share, 0.9)
        if share <= 0.0:
            return self.policy.quick_refusals
        return max(self.policy.quick_refusals, math.ceil(math.log(1e-4) / math.log(share)))

    def _resumed_on_a_guess(self) -> bool:
        """Resumed after the run's first hold-back, with less than a window got in since: the
        pace resumed is a guess from the run's first tenth of a second, and the share before
        a streak is unknown. Read as if ``guessed_share`` were refused (what such a start
        shows), a short streak is luck. Two runs started together on one limit see 80 %
        refused at first: one that held back again on five in a row, to a quarter of its
        pace, left the other the whole limit, and every cut after kept that split. A quota
        spent again is still read at once: it comes after a window's worth got in."""
        return (
            self.cuts == 1
            and self._resumed_at > self._started
            and self.accepted_total - self._resumed_total < self.policy.window_answers
        )

    def _remember(self, now: float) -> None:
        history = self._history
        if now - self._started >= self._horizon():
            self._most_accepted = max(self._most_accepted, self.accepted_rate(now, full=True))
        if now - history[-1][0] >= 0.1:
            history.append((now, self.accepted_total))
        while len(history) > 2 and history[1][0] <= now - 2 * self._horizon():
            history.popleft()

    def _horizon(self) -> float:
        """The span rates are measured over: a horizon, or long enough for ~16 answers at the
        allowed rate (at 5/s a second holds too few to tell a capacity from noise)."""
        return max(self.policy.horizon, min(30.0, 16.0 / self.rate))

    def _threshold(self, answers: int) -> float:
        """The refused share above which a window is overload, not noise: the known
        rate-independent share, plus three standard deviations of a window this size."""
        return self.independent + max(
            self.policy.margin, share_noise(self.independent, answers, 3.0)
        )

    def accepted_rate(self, now: float, *, full: bool = False) -> float:
        """Accepted answers per second over the trailing horizon (at least one second, so a
        window's burst and its refusals are averaged, never read apart), up to ``now``: the
        present, or when the last answer was accepted. Early in the run, over the run so far,
        unless ``full``, less the time acceptances take over refusals (:class:`Delays`): the
        first came back that much later than a refusal would have (at 100 ms ± 50 % in
        service, the first 0.2 s read as half what got in; RESULTS section 34)."""
        horizon = self._horizon()
        since, accepted = self._horizon_start(now)
        elapsed = now - self._started
        if not full and elapsed < horizon:
            span = max(elapsed - min(self.delays.extra, elapsed / 2), 1e-3)
        else:
            span = max(now - since, horizon if full else min(horizon, elapsed), 1e-3)
        return (self.accepted_total - accepted) / span

    def admitted_rate(self, now: float, *, full: bool = False) -> float:
        """The request rate the cloud admits, over the horizon (see :meth:`_admitted`)."""
        return self._admitted(self.accepted_rate(now, full=full))

    def _admitted(self, accepted: float) -> float:
        """The request rate the cloud admits where ``accepted`` per second get in: plus the
        share it refuses at any rate (admitted by its limiter, then failed on their own)."""
        return accepted / (1.0 - min(self.independent, 0.9))

    def _horizon_start(self, now: float) -> tuple[float, int]:
        """The newest remembered point at least a horizon before ``now`` (else the oldest)."""
        start = self._history[0]
        for point in self._history:
            if point[0] > now - self._horizon():
                break
            start = point
        return start

    def _cut_to_what_got_in(self, now: float, window: Window) -> None:
        """An overwhelmed window: the pace was over twice what got in. No experiment is
        needed to tell a limit from a flaky backend (a backend that refuses more than half
        at any rate shows it again at the lower pace, and the experiment runs then): go
        straight under what got in after the first refusal — early in a run, accepted/s
        since the start would count a limiter's burst as capacity."""
        self._last_share = window.later_share(self.delays.extra)[0]
        got_in = window.later_accepted_rate(self.delays.extra)
        self._overshoot(now)
        self.cuts += 1
        self.rate_related = True
        self.capacity = got_in
        self._most_accepted = max(self._most_accepted, got_in)
        self._confirm(now, self._admitted(got_in) * self.policy.below)

    def _overloaded(self, now: float, share: float, answers: int, window: Window) -> None:
        if self.mode is Mode.TESTING and self._independent_of_rate(share, answers):
            return
        policy = self.policy
        if self.mode is Mode.CRUISE and self._probing and self.rate > self.good:
            # A probe above a pace a clean horizon confirmed went too far: back to that pace,
            # not under what got in while overshooting (which, at a concurrency limit, is
            # less than the pace: refusals there come in clumps).
            self._back_from_probe(now)
            return
        self._probes = 0
        if self.mode is not Mode.TESTING:
            self._overshoot(now)
        admitted, counted = self._admitted_while_sending(now)
        self._admitted_while_refused = admitted  # the capacity
        partway = self._refusals_began_partway(window, share)
        # The share this step is judged by later. An experiment's step keeps its window's
        # own: the share after the first refusal is a part of the window, 32 answers at 20 %
        # read 28 % whole and 45 % after it, and held against 45 % the next step's 13 % (luck)
        # read as the fall a limit makes, so the run was restored to 207/s, not 300
        # (the real-time 100-ms model's low mode: 243-252 requests/s of 300).
        step = Sample(self.rate, share, answers)
        if partway:
            share, later_answers = window.later_share(self.delays.extra)
            if self.mode is not Mode.TESTING:
                step = Sample(self.rate, share, later_answers)
        later = partway or (
            self.mode is Mode.TESTING and window.later_got_in >= policy.window_answers
        )
        if later and window.settled(self.delays.extra):
            # What the window saw after its first refusal is the cloud as it is now (once the
            # acceptances of most of it can be back).
            got_in = self._admitted(window.later_accepted_rate(self.delays.extra))
            self._admitted_while_refused = min(self._admitted_while_refused, got_in)
        target = min(self.rate * policy.cut_at_least, self._admitted_while_refused * policy.below)
        if counted < policy.window_answers:
            # Too few got in to measure what gets in by (a few requests a second, much of it
            # held back; one answer accepted since a resume): halve, as TCP does, rather than
            # trust a count of two or three, and let the experiment's windows measure from there.
            target = max(target, 0.5 * self.rate)
        if self.mode is not Mode.TESTING:
            self._steps = []
            self._trigger = share
        self._steps.append(step)
        self.mode = Mode.TESTING
        self.cuts += 1
        self._set_rate(now, target)

    def _refusals_began_partway(self, window: Window, share: float) -> bool:
        """The refused share after the window's first refusal stands clearly above the
        window's (two standard deviations): the refusals began partway through it — a
        capacity that dropped, a limiter's burst spent. The whole window, and the horizon,
        then mix the cloud as it was with the cloud as it is: the share would understate the
        overload, and a cut's experiment read a share that goes on rising as a share
        independent of the rate."""
        least = self.policy.window_answers
        later, answers = window.later_share(self.delays.extra)
        if answers < least or window.later_got_in < least:
            return False
        return later > share + share_noise(share, answers, 2.0)

    def _add_to_opening(
        self, now: float, signal: Signal, retry_after: float | None, fresh: bool, sent_at: float
    ) -> None:
        opening = self._opening
        assert opening is not None
        opening.add(signal, retry_after, fresh, sent_at)
        first = opening.first_refused_sent
        if first is not None and now - first > self._horizon() + 0.1:
            self._opening = None  # the horizon no longer reaches back before it

    def _opening_rate(self) -> tuple[float, int] | None:
        """Accepted/s from the run's first refusal on, and the count, while the horizon
        still reaches back before it (else None). A limiter lets its burst through first (a
        bucket's tokens), and over the run's first horizon that burst reads as capacity (20
        tokens in the first 0.27 s add 74/s to a 200/s bucket): a run paced over the limit
        from there on takes its steady refusals for a flaky backend's."""
        opening = self._opening
        if opening is None or opening.later_got_in < self.policy.window_answers:
            return None
        if not opening.settled(self.delays.extra):
            return None  # the acceptances of the latest requests are not back yet
        return opening.later_accepted_rate(self.delays.extra), opening.later_got_in

    def _admitted_while_sending(self, now: float) -> tuple[float, int]:
        """The admitted rate, and the count of accepted answers it was measured from: over
        the horizon, or since the pace resumed after a hold-back if that is later (and a
        window ago): a horizon that is mostly hold-back, at a trickle, reads what we sent,
        not what the cloud takes — a run that joined another on one limit, held back at
        first, would cut itself to a tenth of its share. In the run's first horizon, from
        its first refusal on (:meth:`_opening_rate`)."""
        if self._measured_since_resume(now):
            counted = self.accepted_total - self._resumed_total
            return self._admitted(counted / (now - self._resumed_at)), counted
        if opening := self._opening_rate():
            return self._admitted(opening[0]), opening[1]
        return self.admitted_rate(now), self.accepted_total - self._horizon_start(now)[1]

    def _measured_since_resume(self, now: float) -> bool:
        return self.policy.window <= now - self._resumed_at < self._horizon()

    def _independent_of_rate(self, share: float, answers: int) -> bool:
        """The experiment, after each cut of 15 % or more in this episode: at a limit, what
        gets in stays flat, so the refused share falls to ``1 − (1 − before) × old ÷ new``;
        refusals not about the rate keep it where it was. Judged on which of the two fits the
        samples better (:func:`limit_fits_better`): the episode's steps since the cloud last
        changed (:meth:`_since_the_cloud_changed`), less those the share now has risen above,
        the share now, and the rate-independent share known before (:meth:`_known_share`).
        The rate goes back to the first step of the longest run of last steps that fits "not
        about the rate" (and that the share has not risen above): the run's pace, where a
        flaky backend's lucky windows made the steps; a later step, where a limit lies above
        it and a flaky share under it (a bucket with 10 % refused behind it: 464/s refused
        60 %, then 209/s and 172/s 17 %: back to 209/s; judged as one, all the steps or none,
        it went back to 464/s or on down, and got 135-147/s in of 180 in real time). The next
        window checks that the accepted share holds there (:meth:`_verify`). Else cutting goes
        on, and each cut adds a sample: at a 15 % step, 32 answers each tell the two apart by
        less than ``LIMIT_FAVOURED``."""
        margin, now_at = self.policy.margin, Sample(self.rate, share, answers)
        judged = [
            step
            for step in self._since_the_cloud_changed([*self._steps, now_at])[:-1]
            if share <= step.share + max(share_noise(step.share, answers, 2.0), margin)
        ]  # a share that rose above a step's says the cloud changed since: it says nothing
        known = self._known_share()
        for first, step in enumerate(judged):
            # Not back to a step whose share has risen since, even by less than marks a
            # change: no limit explains a rise as the pace falls, so "not about the rate"
            # fits it best, but a second run's flood coming in does too, and going back up
            # into it is the dear mistake (see LIMIT_FAVOURED). The next step tells.
            risen = share > step.share + share_noise(step.share, answers, 1.0)
            if not risen and not limit_fits_better([*known, *judged[first:], now_at]):
                self._restore(step.rate, share, answers)
                return True
        return False  # a limit from the last step on: cutting stays the answer

    def _since_the_cloud_changed(self, samples: list[Sample]) -> list[Sample]:
        """The samples from the last one whose share rose above the share of the step before
        it, and of every earlier step under twice its pace (by three standard deviations, and
        the overload margin), on. Each step of an episode is slower than the one before, and
        neither hypothesis lets the share rise as the pace falls: the cloud changed there,
        and what came before says nothing about it. A run whose limit a second run joined
        read 6 % refused at 198/s (alone), 32 % at 168/s (the newcomer's flood), 6 % at
        115/s: held together, the three fit no limit, so it went back to 198/s, took the
        newcomer's share and kept 90 % of the limit (simulated). Not a rise over just one
        step: a flaky backend's 30 %, read 15 % then 48 % by luck, did not change. A pace
        twice as fast or more is left out: a limit alone explains a much higher share there
        (66 % at a run's opening 600/s, over a 200/s bucket), and it hid the change after."""
        start = 0
        for later_at, later in enumerate(samples[1:], start=1):
            earlier = samples[:later_at]
            near = [sample for sample in earlier if sample.rate < 2.0 * later.rate]
            if all(self._rose(later, sample) for sample in [earlier[-1], *near]):
                start = later_at
        return samples[start:]

    def _rose(self, later: Sample, sample: Sample) -> bool:
        noise = share_noise(sample.share, later.answers, 3.0)
        return later.share > sample.share + max(noise, self.policy.margin)

    def _known_share(self) -> list[Sample]:
        """The rate-independent share found before this episode, as a sample at the pace it
        began from, worth ``independent_answers``: the window that began the episode is by
        selection one that read high, and judged against it alone, an ordinary one after the
        cut reads as the fall a limit makes (regression to the mean): a backend refusing 30 %
        at any rate, its share known as 19 %, a window at 67 % (6 of 9 rows' first tries),
        then 28 % at 255/s, was confirmed as a limit there, at 85 % of its pace (simulated).
        The share is taken as measured at the episode's first pace, the run's own."""
        if not self.independent or not self._steps:
            return []
        answers = self.policy.independent_answers
        return [Sample(self._steps[0].rate, self.independent, answers)]

    def _restore(self, rate: float, share: float, answers: int) -> None:
        """The refusals looked independent of the rate: take the rate back up, and check with
        the next window that the accepted share holds."""
        self._verifying = (self.rate / rate, share, answers, self.independent)
        self._found_at = self.changed_at
        self.independent = max(self.independent, share)
        # A capacity confirmed earlier may have been this share read as a limit (5 % refused
        # at any rate, one window's noise over the line): its plateau would keep the climb
        # back to 2 % steps. A limit that is real is confirmed again by the next cut.
        self.capacity = None
        self._confirm(self.changed_at, rate)
        self.mode = Mode.VERIFYING

    def _verify(self, now: float, share: float, answers: int) -> None:
        """The first window back at the restored rate. Refusals that are not about the rate
        keep the accepted share where it was at the tested rate (accepted/s rises with the
        rate); at a limit (one that moved while we tested), accepted/s stays flat, so the
        accepted share falls by the ratio of the rates. Judged on shares, which the answers'
        latency does not bias as it does accepted/s, and only on a fall a standard deviation
        past halfway: a wrong "limit" sends the run down to a crawl, a wrong "independent"
        costs retries until the next experiment or dip corrects it."""
        ratio, tested_share, tested_answers, before = self._verifying
        self.mode = Mode.CRUISE
        held, now_held = 1.0 - tested_share, 1.0 - share
        noise = math.hypot(
            share_noise(tested_share, tested_answers, 1.0), share_noise(share, answers, 1.0)
        )
        if tested_share >= 0.5:
            # Half or more refused at the tested rate: a wrong "independent" is no longer the
            # cheap mistake. Read as a backend's own share, a limit far under both rates is
            # paced at several times its capacity (200/s falling to 20/s: 85-90 % of the
            # requests refused until it came back), so the fall is judged at the halfway mark.
            noise = 0.0
        if now_held >= held * (0.5 + 0.5 * ratio) - noise:
            # The share held: the refusals are not about the rate, and this window is one
            # more sample of their share.
            pooled = (tested_share * tested_answers + share * answers) / (tested_answers + answers)
            self.independent = max(before, pooled)
            return
        self.independent = before
        self.rate_related = True
        self.cuts += 1
        accepted = self.rate * now_held  # what the window got in: no answer's latency lag
        target = accepted / (1.0 - min(before, 0.9)) * self.policy.below
        if answers * now_held < self.policy.window_answers:
            # Too few got in to measure what gets in by: halve, as a cut does (see
            # _overloaded). Nothing at all in a window after a flood is a queue that has not
            # drained yet: read as 0/s, it sent a run to the floor, whose probes come every
            # 160 s (a queueing server at 0.05 s: 21/s of its 200/s over four minutes).
            target = max(target, 0.5 * self.rate)
        self._confirm(now, target)

    def _clean(self, now: float, share: float, answers: int) -> None:
        if self.mode is Mode.TESTING:
            self._tested_clean(now, share, answers)
            return
        if self.independent and self._recheck_due(now) and self._first_tries:
            self._dip(now, share, answers)
            return
        if self.independent and self.rate <= self.good and self._first_tries:
            # Follow the rate-independent share while the pace holds still (never while
            # probing above it, where a rising share is the limit, not the flakiness), on
            # rows' first tries (a run's last seconds are all retries of refused rows).
            self.independent += 0.2 * (share - self.independent)
            if self.independent < 0.005:
                self.independent = 0.0
        if self.rate < self.good:
            self._set_rate(now, min(self.good, 2.0 * self.rate))
        elif self.rate < self.ceiling and self._probe_due(now):
            self._probe(now)

    def _recheck_due(self, now: float) -> bool:
        """A dip is due at each mark of the wall clock every ``recheck_every`` seconds (half a
        period after the last at least). On the marks, not a period after this run's last dip:
        where two runs share a limit that either one alone fills, a dip of one is filled by the
        other and shows nothing, so each takes the limit for refusals that are not about the
        rate and neither slows down. Dipping together, they see the share fall.

        Not within a horizon of a resume, though: a dip that finds a limit paces under what got
        in over the horizon before it, and just after an outage that is mostly the outage, so
        the run would settle far under its pace and climb back for seconds. The mark's dip
        waits until the horizon holds only the resumed pace.

        The first dip after refusals were found not to be about the rate comes sooner, at the
        next 2-s mark, when their share is large (a quarter or more). The experiment that found
        them read a few dozen answers, and two runs that joined one limit confound it: each
        cuts while the other does not, the share does not fall, and both flood the limit,
        30-70 % refused, until the next 10-s mark (in the simulator, 39 of 96 runs started
        0.3 s apart refused over 30 % of their requests; 14 with the sooner dip). A large
        share makes the dip cheap (a few dozen answers under the pace) and a wrong verdict
        dear; a small one the other way round, so it waits for the 10-s marks."""
        policy = self.policy
        every = policy.recheck_every
        if self.independent >= policy.large_share and self._checked_at < self._found_at:
            every = policy.recheck_first
        if now - self._checked_at < every / 2 or now - self._resumed_at < self._horizon():
            return False
        mark = math.floor((now + self.wall_offset) / every)
        return mark > math.floor((self._checked_at + self.wall_offset) / every)

    def _probe_due(self, now: float) -> bool:
        """A horizon at the pace (see :meth:`_probe_every`), and the run sent at it: a clean
        horizon says nothing of a pace something else held the sends under — our own
        ``--concurrency`` while answers are slow, an input that comes slowly. Probes would
        raise it, untested, up to ``--rate``, and once the sends were free again the first
        refusal would find the run far over the cloud's pace (RFC 7661's rule for a
        congestion window the sender does not fill): 58-155 refused in 3 s after a slow
        spell, simulated. Read from the answers in (:class:`Sending`): since the pace was set,
        a window's worth of requests at least, sent at ``used_share`` of the pace or more
        from the first to the last of them, and those two half that time apart at least. A
        horizon that did not is forgotten, so a pace the run comes back to (an input that
        stalled and resumed) is judged on what it sends from then.

        While a cap on requests in flight found in the cloud holds the sends (``capped``),
        up to ``CAP_GUARD`` times what it lets through, whatever was sent: that cap governs,
        and grows by its own probes one request at a time; the pace is to stay clear above
        what it lets through. Held to what was sent, the pace's even spacing met answers that
        come back in clumps and left places unused: a limit of 8 requests in service got
        93-94 % of what it serves, against 98-99 %. Probed on without a bound, the pace
        reached ``--rate`` under the cap (11-42 × what a limit of 8 in service 50-300 ms away
        serves), and when a refusal under the cap showed it wrong (:class:`InFlightCap`
        drops it), the run sent at ``--rate``: 250 refused in half a second, 0.3 s away, in
        a run that a change to its start sent down that path (RESULTS section 36)."""
        every = self._probe_every()
        if now - self.changed_at < every:
            return False
        policy, sending = self.policy, self._sending
        if self.capped:
            return self.rate < self._cap_guard()
        if sending.at_least(policy.used_share * self.rate, policy.window_answers, now):
            return True
        if now - sending.since >= every:
            self._sending = Sending(now)
        return False

    def _cap_guard(self) -> float:
        """How far a cap on requests in flight lets probes take the pace: ``CAP_GUARD`` ×
        what it lets through (no bound while that is not known yet)."""
        through = self.cap_through
        return math.inf if through is None else CAP_GUARD * through

    def _probe_every(self) -> float:
        """Seconds at a pace before the next probe: a horizon, or long enough for
        ``probe_answers`` answers, whichever is longer. A probe that overshoots costs a
        refusal or two whatever the pace: at ten requests a second, one probe a second
        would spend one request in ten on probing."""
        return max(self.policy.probe_every, self.policy.probe_answers / self.rate)

    def _dip(self, now: float, share: float, answers: int) -> None:
        """Now and then a pace with rate-independent refusals dips for a window: the
        experiment that found them had a few dozen answers, and a limit mistaken for
        flakiness (or a limit behind a flaky backend, or a second run on the same limit)
        would refuse its excess for the rest of the run, its share followed as if it were
        the backend's. The dip goes just under what gets in, (1 − share) × 0.9 of the pace:
        at a limit the share then falls to nothing, where refusals that are not about the
        rate keep it. A small share makes a shallow dip: one of 10 % is checked for two
        seconds at the cost of a few percent of them. A large one makes a deep dip: two runs
        flooding one limit each read 70-80 % refused, and a dip only to half leaves the two
        well over the limit: the share hardly falls, and the flood goes on. The window holds
        enough answers to see the share halve at 2.5 standard deviations, and the dip is no
        deeper than lets them come within ``dip_for``; one that would need more at the pace
        itself is not made (a share that small costs few requests, even if wrong). Only while
        rows' first tries are the evidence: at a run's end, all retries, the share says
        nothing of the rate."""
        self._checked_at = now
        before = max(share, self.independent)
        needed = max(math.ceil(25.0 * (1.0 - before) / before), self.policy.test_answers)
        depth = max(0.9 * (1.0 - before), needed / (self.rate * self.policy.dip_for))
        if depth >= 1.0:
            return
        self._dip_answers = needed
        # The share the dip's is judged against: this window's and the rate-independent one,
        # pooled, with the answers behind each (see _recheck).
        known = self.policy.independent_answers
        pooled = (share * answers + self.independent * known) / (answers + known)
        self._dip_before = (pooled, answers + known)
        self._steps = [Sample(self.rate, before, answers)]
        self._dip_accepted = self.accepted_rate(now)
        self._sending_before_dip, self._sending = (self._sending, now), Sending(now)
        self.mode = Mode.RECHECKING
        self.rate = max(self.rate * depth, min(self.policy.min_rate, self.ceiling))

    def _recheck(self, now: float, share: float, answers: int) -> None:
        """The dip's window. A share that stayed is not about the rate: back to the pace. One
        that fell was partly a limit's: what is left under what got in is the backend's own,
        and the pace goes under what got in before the dip. "Fell" is judged against the share
        before the dip pooled from the last window and the rate-independent share, with the
        noise of both samples: judged against the last window alone, one that read high by
        luck made an ordinary dip read as a fall — one dip in ten against flaky backends in
        the simulator, each cutting a run that had nothing to fear from its pace."""
        rate, self._steps = self._steps[0].rate, []
        self.mode = Mode.CRUISE
        before, known = self._dip_before
        noise = 2.5 * math.hypot(share_noise(before, answers, 1.0), share_noise(before, known, 1.0))
        if share >= before - max(self.policy.margin, noise):
            self.rate = rate  # not about the rate: as before (changed_at kept: no probe debt)
            sending, dipped_at = self._sending_before_dip
            self._sending = sending.resumed(now, dipped_at)
            # The dip's window, at another rate, says nothing of the pace's own refusals.
            self._tally_refused, self._tally_answers = 0.0, 0
            return
        self.independent = share if share >= 0.005 else 0.0
        self.rate_related = True
        self.cuts += 1
        admitted = self._admitted(self._dip_accepted)
        self.capacity = self._dip_accepted
        self._confirm(now, admitted * self.policy.below)

    def _accepted_rose(self, now: float) -> bool:
        """Did the last probe's higher pace get more in, clearly (half the step, and two
        standard deviations of a count)? Where some refusals are the backend's, the share
        cannot tell a probe into a limit from noise: what got in can."""
        before, at_rate = self._probe_base
        horizon = self._horizon()
        accepted = self.accepted_rate(now, full=True)
        expected = before * (1.0 + 0.5 * (self.rate / at_rate - 1.0))
        noise = 2.0 * math.sqrt(max(accepted, 1.0) * horizon) / horizon
        return self.rate > at_rate and accepted >= max(expected, before + noise)

    def _probe(self, now: float) -> None:
        """A pace held clean for a horizon: try a little faster, more each time it stays clean
        (2 %, 8 %, 32 %…; near a capacity a cut found, 2 % each time: see _near_capacity), so
        a capacity that grew is found in seconds, a steady one rarely overshot. A step that
        brought refusals, even under the overload line, is taken back."""
        policy = self.policy
        answers = self._tally_answers
        share = self._tally_refused / answers if answers else 0.0
        if share > self.independent + max(0.01, share_noise(self.independent, answers, 2.0)):
            if self.rate <= self.good:  # refusals at the held pace itself: go under them
                self.good = min(self.good, self.admitted_rate(now) * policy.below)
            self._back_from_probe(now)
            return
        if share > 0.0 == self.independent and self.rate <= self.good:
            # A few refusals at the held pace, too few to be sure of: no probe, and the pace
            # no faster than what gets in (a bucket's burst hides a small excess for a while).
            self.good = min(self.good, max(self.admitted_rate(now), policy.below * self.good))
            self._set_rate(now, self.good)
            return
        if not self.independent or self._accepted_rose(now):
            self.good = self.rate
            if self.good >= policy.below * self._peak:
                self._peak, self._peak_at = max(self._peak, self.good), now
        self._probe_base = (self.accepted_rate(now, full=True), self.rate)
        # The step grows with the rate, plus a part that does not: two runs sharing one limit
        # add the same amount, so the smaller one gains on the larger (AIMD's fairness).
        shared = 0.25 * policy.probe_step * self._common_scale()
        stale = self._stale(now)
        if stale:
            self._forget_close_overshoot()
        # Doubling at most, as slow start does: a fifth clean probe in a row would add 5×.
        growth = 1.0 if self._near_capacity(stale=stale) else 4.0**self._probes
        step = min((policy.probe_step * self.rate + shared) * growth, self.rate)
        if stale and not self._probes:
            # A stale pace grows from the first probe on, as if one had already come back
            # clean: two seconds with nothing refused are that evidence already, and a first
            # step of 2 % cost the run left alone a second more each time an overshoot sent
            # it back (RESULTS section 31). Up to a quarter of the pace: far under --rate,
            # the common step alone is larger, and 4× it doubled the pace of a lone run at
            # its own limit (at --rate 20000 on 200/s: up to 5.9 % refused, from 2.9 %).
            step = max(step, min(4.0 * step, policy.stale_kick * self.rate))
        toward = self._toward_peak(now)
        step, grows = self._bounded_step(now, max(step, toward), under_peak=toward > 0)
        if self.capped:
            step = min(step, self._cap_guard() - self.rate)
        self._set_rate(now, self.rate + step)
        # Counted from the new pace: the step that leaves the plateau is the first that grows.
        self._probes += grows and not self._near_capacity(stale=stale)
        self._probing = True

    def _common_scale(self) -> float:
        """What the part of a probe's step that runs sharing a limit have in common is figured
        on: ``--rate``, which the shards of one job share, but no more than ``common_within`` ×
        the most the cloud was seen to accept, over a horizon or after the first refusal of
        an overwhelmed window. ``--rate`` says nothing of the cloud: unbounded, --rate 100000
        against a 200/s bucket made each probe at its limit a doubling (500/s), and 4 % of the
        requests were refused from 5 s on, against 1 % at --rate 1000 (a sliding window: 3-4 %
        against 1 %; simulated). Not over horizons alone: a run that joined another on one
        limit and got 52/s at most over any horizon had its common part bound, and less than
        the other's, it starved (its first cut had measured 117/s). Nor at 10 ×: over the
        144 simulated two-run starts at --rate 600, 319 probes were bound, and 17 of the
        smaller runs got under 10 % of the limit (15 unbound; at 20 ×, 8 probes and 14)."""
        most = self._most_accepted
        return min(self.ceiling, self.policy.common_within * most) if most else self.ceiling

    def _stale(self, now: float) -> bool:
        """Nothing refused for a while (two seconds, and 64 answers at the pace): what the
        last refusals taught, the capacity a cut found and a probe's overshoot close to it,
        may describe a cloud that is gone. Most often, another run that shared the limit
        finished: the one left alone kept the capacity it measured as its share, and its
        probes stepped 2 % at a time up to 1.15 × that, bounded for seconds more by an
        overshoot from the other's last second (72/s when the other ended, 115/s 10 s
        later, in a traced start; RESULTS section 30). A limit that is still there refuses
        the next growing probe, and the cut or the step back renews both. A lone run near
        its limit is rarely stale: its probes find the limit every few seconds."""
        quiet = max(self.policy.stale_after, self.policy.stale_answers / self.rate)
        return now - self._refused_at > quiet

    def _forget_close_overshoot(self) -> None:
        """A stale overshoot within the plateau of the capacity found no longer bounds the
        probes. One further above is kept until it ages out (``overshot_for``): a fixed
        window's spent quota or a doubling probe, where each overshoot costs a window, not a
        few refusals, and bisecting it is cheaper than finding it again."""
        overshot, capacity = self._overshot, self.capacity
        if (
            overshot is not None
            and capacity is not None
            and overshot <= self.policy.plateau * capacity
        ):
            self._overshot = None

    def _near_capacity(self, *, stale: bool) -> bool:
        """Under the capacity a cut confirmed, or a little over it, where probes keep their
        first step (CUBIC's plateau near its last loss). A limiter's burst hides a small excess
        for a second or two (a bucket's 20 tokens hide 8 % over 200/s for two and a half
        seconds), so a probe just over the limit reads clean, and a 4× step after it
        overshoots by a third. Past the plateau, clean probes are news (the capacity grew),
        and the steps grow again.

        With a rate-independent share too, only once a limit was confirmed: a run sharing a
        limit reads a few percent of the other's probes as its own backend's share, and
        without the plateau its probes grew 4× past the limit every few seconds, each one
        refused to the other run, which cut itself to a few requests a second.

        Not once the capacity is ``stale``: nothing refused lately says little about a
        capacity found before (:meth:`_stale`)."""
        if stale or self.capacity is None or (self.independent and not self.rate_related):
            return False  # refusals not about the rate only: a probe is judged on what got in
        # A pace against an accepted rate: the same where nothing is refused at any rate, and
        # lower by that share where something is. Read in requests instead, the simulated
        # bucket + random rows moved by a point or less (RESULTS section 42).
        return self.rate < self.policy.plateau * self.capacity

    def _toward_peak(self, now: float) -> float:
        """A step half the way back to the highest pace a clean horizon confirmed in the last
        minute, when well under it: capacity that dropped for a while (another tenant's
        load, a backend restarting) often comes back, and growing from +2 % again takes
        five probes to get there. A probe that brings refusals is bounded by the bisection
        for a few seconds, so a drop that lasts costs one such probe every few seconds,
        until the minute is out."""
        if now - self._peak_at > self.policy.peak_memory:
            self._peak = 0.0
        if self._peak < 1.1 * self.rate:
            return 0.0
        return (self._peak - self.rate) / 2

    def _bounded_step(self, now: float, step: float, *, under_peak: bool) -> tuple[float, bool]:
        """A probe's step, and whether the next one may grow. No further than half the way to
        a recent pace that brought refusals: the capacity lies between the two, and halving
        the gap finds it in a few probes (BIC's binary search), where the growing step would
        overshoot again and fall back to where it started. Once the gap is closed, or the
        overshoot is a few seconds old, the step grows freely: capacity may have grown."""
        if now - self._overshot_at > self.policy.overshot_for:
            self._overshot = None
        gap = (self._overshot or 0.0) - self.rate
        if gap < 0.02 * self.rate:
            self._overshot = None
            return step, True
        if step <= gap / 2:
            return step, True
        if under_peak and gap <= self.policy.retest_within * self.rate:
            # Well under a recent peak, the overshoot close above (a probe just over a low
            # capacity shortly before it came back): the question is whether the capacity
            # came back, not where in the gap it lies. Bisecting took a probe a second for up
            # to three seconds before the climb to the peak began (back in 5.5-6 s in 5 of 48
            # simulated step-ups). One probe just past the overshoot answers it: clean, the
            # gap is gone and the next probe heads for the peak; refused, its excess was a
            # fifth of the pace at most, and the plateau's probes cost about as much.
            return gap + self.policy.probe_step * self.rate, False
        if self._bisections >= 2:
            # Two halvings in a row got in clean: the capacity moved up past the overshoot
            # (a limit that rose right after it), so grow from here, as after a clean probe.
            self._overshot = None
            self._probes = max(self._probes, 1)
            return step, True
        self._bisections += 1
        return gap / 2, False

    def _overshoot(self, now: float) -> None:
        self._overshot, self._overshot_at = self.rate, now
        self._bisections = 0

    def _back_from_probe(self, now: float) -> None:
        """A probe brought refusals: back to the last good pace, and remember where it was."""
        if self.rate > self.good:
            self._overshoot(now)
        self._probes = 0
        self._set_rate(now, self.good)

    def _tested_clean(self, now: float, share: float, answers: int) -> None:
        """Clean after a cut: confirmed, unless the experiment finds the refusals not about
        the rate after all. Judged before on whether the excess over the rate-independent
        share halved, a window that began an episode by luck (by selection, one that read
        high) was confirmed as a limit by the ordinary one after it: regression to the mean
        (:meth:`_known_share`)."""
        if self._independent_of_rate(share, answers):
            return
        # The cut helped. Pace under what got in while the cloud refused (the capacity), not
        # under what gets in now: below the capacity, that is only our own rate.
        self.rate_related = True
        capacity = self._admitted_while_refused
        self.capacity = capacity * (1.0 - min(self.independent, 0.9))
        self.mode = Mode.CRUISE
        # No lower than the pace just found clean: a capacity read from a handful of answers
        # (one accepted in the first 0.2 s after a resume) may be far under it.
        self._confirm(now, max(capacity * self.policy.below, self.rate))

    def _confirm(self, now: float, rate: float) -> None:
        self.good = self._resume = min(rate, self.ceiling)
        self._steps = []
        self._probes = 0
        self._set_rate(now, rate)

    def _hold_back(self, now: float, window: Window) -> None:
        """Nothing was accepted: a window of the cloud's limiter is spent, or it is down."""
        policy = self.policy
        if self.mode is not Mode.HELD_BACK:
            if self._streak_in_doubt(now):
                self._doubtful_hold = _DoubtfulHold(
                    streak_sent=self._streak_sent,
                    at=now,
                    rate=self.rate,
                    good=self.good,
                    cuts=self.cuts,
                    capacity=self.capacity,
                    rate_related=self.rate_related,
                    held_since=self._held_since,
                    refused=self._streak,
                )
            if self._probing and self.rate > self.good:
                # A probe spent the window (a fixed window's quota): an overshoot, which the
                # next probes bisect. Else the same probe came back every two seconds, and at
                # --rate 100000 each spent a whole window: 6 % refused against 200/s.
                self._overshoot(now)
            self.good = max(
                min(self.rate, self.good, self._spent_pace(now, window)), policy.min_rate
            )
            self._resume = self.good
            self.mode = Mode.HELD_BACK
            self._held_since = now
            self.cuts += 1
            self._steps = []
            self._probes = 0
        if now - self.last_accepted >= policy.silent_after or not self.accepted_total:
            target = policy.silent_rate
        else:
            target = self._resume * policy.held_back_rate_share
        self._set_rate(now, min(self.rate, max(target, policy.silent_rate)))
        if window.asked and 2 * len(window.asked) >= window.refused:
            # Most refusals asked for the same wait: the server as a whole asked for it.
            asked = sorted(window.asked)[len(window.asked) // 2]
            self.paused_until = max(self.paused_until, now + asked)

    def _streak_in_doubt(self, now: float) -> bool:
        """No window judged the pace yet, and the streak's acceptances, had there been any,
        could not be back: nothing was timed yet, or it began less than the time acceptances
        take over refusals ago (see :meth:`_misread_hold_back`). A pace windows judged clean
        before the streak is not restored on it: a queueing server's queue takes requests
        (acceptances of the streak's come back late) while it refuses the rest, and each
        undo flooded it again."""
        if self._tally_answers or self._undone:
            return False
        return not self.accepted_total or now - self._streak_sent < self.delays.extra

    def _misread_hold_back(self, now: float, sent_at: float, accepted: bool) -> None:
        """Undo a hold-back once the answers to requests sent from its streak's first
        refused one to the hold-back show it was not one: two of them got in for every three
        refused. Only a streak whose acceptances could not be back yet is in doubt (nothing
        timed yet, or begun less than the time acceptances take over refusals before it):
        it was answers arriving out of order, refusals back at once and acceptances once
        served (a gateway that refuses 20 % in front of a backend that serves in 100-150
        ms), not "nothing gets in". TCP undoes a cut that late acknowledgements show was
        spurious in the same way (Eifel detection, RFC 3522; F-RTO, RFC 5682). Held back and
        resumed at a quarter of ``--rate``, such a run was sent 81-88 % of it, simulated;
        58 % in real time. At a limit, what a streak comes among is refused too (a window
        spent), was sent before it (a bucket's burst, a window's quota, the requests a
        concurrency limit holds), or is a small share (a bucket's refill at five times its
        rate: undone on one acceptance, such a run went back to that pace again and again),
        and the hold-back stands. Undone, the pace is the one before, for the windows to
        judge on their shares."""
        held = self._doubtful_hold
        assert held is not None
        if now - held.at > self._horizon() or self.cuts > held.cuts + 1:
            self._doubtful_hold = None  # too late to be the streak's, or judged since
            return
        if not held.streak_sent < sent_at < held.at:
            return
        if accepted:
            held.accepted += 1
        else:
            held.refused += 1
        if 3 * held.accepted < 2 * held.refused:
            return
        self._doubtful_hold = None
        self._undone = True
        self.mode = Mode.CRUISE
        self._steps, self._probes = [], 0
        self.cuts, self.good, self._resume = held.cuts, held.good, held.good
        self.capacity, self.rate_related = held.capacity, held.rate_related
        # Resumed now: what gets in is measured from here, not over the hold-back's trickle.
        self._resumed_at, self._resumed_total = now, self.accepted_total
        self._held_since, self.paused_until = held.held_since, float("-inf")
        self._window = self._new_window(now)
        self._set_rate(now, held.rate)

    def _spent_pace(self, now: float, window: Window) -> float:
        """The pace to resume at after nothing got in: what got in over the last horizon up
        to the last acceptance. The first time, early in a run, over the run so far: a
        concurrency limit refuses within milliseconds, and a whole second would read its 8
        accepted as 8/s. If that overestimates a window's quota (200 in its first 0.2 s read
        as 1,000/s), the next spent window, read over a full horizon, corrects it. Spent again
        soon after resuming, the resumed pace was too fast: a quarter of it then, or more — a
        horizon spent mostly held back reads far under the capacity."""
        soon = now - self._resumed_at < 2 * self._horizon()  # spent again soon after resuming
        if self.accepted_total < self.policy.window_answers:
            # Nothing got in yet, or too little to measure a rate by (the first answers of a
            # run arrive out of order, with its connections still opening): the share of the
            # pace that got in, a quarter at least (a cloud taking 10/s let 2 of the first 7 in
            # at 100/s: 29/s, where the whole pace again was 5 more refusals), or a quarter of
            # it if that was spent again at once.
            answered = window.accepted + window.refused
            got_in = window.accepted / answered if answered else 1.0
            return 0.25 * self._resume if soon else self.rate * max(got_in, 0.25)
        # Over a full horizon once the run is that old: a limiter that counts per second (a
        # fixed or a sliding window) is read right over no less. Before, over the run so far:
        # a horizon mostly from before the first request reads a fraction of what got in (a
        # run spent twice in its first 0.2 s, sharing a limit, got 110/s in and read 21/s).
        full = self.cuts > 0 and now - self._started >= self._horizon()
        pace = self.admitted_rate(self.last_accepted, full=full) * self.policy.below
        return max(pace, 0.25 * self._resume) if soon else pace

    def _resume_pace(self, now: float) -> None:
        if 0.1 <= now - self._held_since < self.policy.silent_after:
            # Back within a second, not at once: a spent window of a limiter (not an outage,
            # nor a lucky run of refusals from a flaky backend).
            self.rate_related = True
            self.capacity = self._resume / self.policy.below
        self._resumed_at, self._resumed_total = now, self.accepted_total
        self.mode = Mode.CRUISE
        self.paused_until = float("-inf")
        self._window = self._new_window(now)
        self._set_rate(now, max(self.rate, self._resume))

    def give_way(self, now: float, rate: float) -> None:
        """A cap on requests in flight now limits the run (bulktag/inflight.py): pace no
        slower than ``rate``, what the cap lets through, so that the rate found while the
        refusals were read as a rate's does not bind under it. Probes go on from there."""
        if self.mode is Mode.HELD_BACK or rate <= self.rate:
            return  # nothing gets in: that is for the hold-back to read
        self.mode = Mode.CRUISE  # a cut's experiment is answered: the cap explains the refusals
        self._steps = []
        self.good = self._resume = min(rate, self.ceiling)
        self._probes = 0
        self._set_rate(now, rate)

    def _set_rate(self, now: float, rate: float) -> None:
        floor = min(self.policy.min_rate, self.ceiling)
        self.rate = min(self.ceiling, max(floor, rate))
        self.changed_at = now
        self._sending = Sending(now)
        self._probing = False  # a probe sets it again after this
        self._tally_refused, self._tally_answers = 0.0, 0

    @property
    def hold_in_doubt(self) -> bool:
        """A hold-back, ended or not, that the answers to its streak's requests may yet undo
        (see :meth:`_misread_hold_back`): the gate keeps its opening window meanwhile."""
        return self._doubtful_hold is not None

    # ── what the operator is told ─────────────────────────────────────────────────────────

    def silent_for(self, now: float) -> float:
        """Seconds since the cloud last accepted anything, while it accepts nothing (else 0)."""
        return now - self.last_accepted if self.mode is Mode.HELD_BACK else 0.0

    @property
    def refusals_not_about_rate(self) -> bool:
        """Cruising with a rate-independent share: a refused row's retry need not wait long
        (the pace protects the cloud already); a long back-off only delays the run's end."""
        return self.independent > 0.0 and self.mode is Mode.CRUISE

    @property
    def refusing_all(self) -> bool:
        """The cloud accepts nothing now: attempts spent meanwhile do not count against a row."""
        return self.mode is Mode.HELD_BACK

    def findings(self, elapsed: float) -> dict[str, object]:
        """What pacing found, for the summary, ``run_finished`` and the metrics."""
        accepted = self.accepted_total / elapsed if elapsed > 0 else 0.0
        found: dict[str, object] = {
            "accepted_per_second": round(accepted, 2),
            "pace_cuts": self.cuts,
            "rate_related_refusals": self.rate_related,
            "rate_independent_share": round(self.independent, 3),
            "held_by_rate": self._held_by_rate(accepted),
        }
        capacity = self._capacity_seen()
        if capacity is not None:
            found["capacity_per_second"] = round(capacity, 1)
        return found

    def _held_by_rate(self, accepted: float) -> bool:
        """Nothing was ever refused, and what got in came near ``--rate``: the run went as
        fast as it was let, and says nothing of how much faster the cloud would take. A run
        on the default 10/s reported "the cloud accepted ~10/s", which reads as the cloud's
        pace; a million rows at it take 28 hours."""
        held = accepted >= HELD_BY_RATE * self.ceiling
        return held and self.refused_seconds.none_refused

    def _capacity_seen(self) -> float | None:
        """The capacity found, no more than got in during a second the cloud refused in
        (:class:`RefusedSeconds`), and none where no such second was seen. The figure the
        pacer works by is a hypothesis, and a short run leaves it where the start-up put
        it, often read off a fifth of a second after a limiter's burst: 133-263/s was
        reported against a fixed window of 50 a second by a 120-row run at --rate 1000, up
        to 18× a window's quota in the simulator."""
        most = self.refused_seconds.most
        if self.capacity is None or most is None:
            return None
        return min(self.capacity, most)


def describe(findings: dict[str, object]) -> str:
    """One line for the summary: what the operator can set ``--rate`` to next time."""
    accepted = findings["accepted_per_second"]
    if not accepted:
        return "the cloud accepted nothing"
    parts = [f"the cloud accepted ~{_about(accepted)}/s"]
    if findings.get("held_by_rate"):
        parts.append("nothing was refused: --rate set the pace, a higher one may go faster")
    if "capacity_per_second" in findings:
        parts.append(f"capacity ~{_about(findings['capacity_per_second'])}/s")
    if "in_flight_cap" in findings:
        parts.append(f"it serves at most {findings['in_flight_cap']} requests at once")
    share = float(str(findings["rate_independent_share"]))
    if share > 0:
        parts.append(f"~{share:.0%} of requests refused whatever the rate (retried per row)")
    elif not findings["rate_related_refusals"] and findings["pace_cuts"]:
        parts.append("refusals were not rate-related")
    return "; ".join(parts)


def _about(rate: object) -> str:
    """A rate after "~": three figures at most (148, 49.6, 9.84, 0.31), never an exponent.
    The findings' own decimals (148.0, 49.58) claimed more than a run's average can say."""
    value = float(str(rate))
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
