"""Shared pacing: when the cloud pushes back (429, 503), every worker slows down, not one.

Every attempt passes one gate, :class:`Pacer`. It keeps the user's ``--rate`` as a hard
ceiling (a token bucket of ``--burst`` requests, below) and, when the cloud pushes back, slows
the run *below* it. The slowing is a pure value (:class:`PaceState`, in the manner of rclone's
``lib/pacer``), fed one answer at a time:

* ``share`` is a moving average of the fraction of answers that were pushback. An isolated 503
  from a flaky backend barely moves it; a server at capacity drives it up within a few answers.
* When ``share`` passes ``cut_share``, the allowed rate is cut to a little below what the
  server accepted *since it started refusing* — once a token bucket refuses, it admits exactly
  its refill rate, so that is the server's capacity, without the burst credit that inflates
  any earlier measurement. Until the refusals have lasted ``measure_for`` seconds there is
  nothing to measure yet, and the cut is a blind halving.
* A cut only happens for an answer to a request sent *after* the previous cut: the answers to
  requests already in flight describe the old rate.
* While nothing pushes back, the allowed rate grows back by ``growth_per_second``.
* A Retry-After that comes with a cut pauses everybody; an isolated one only delays its row.

    rate ▲  ceiling ───────┐            ┌────
         │                 │cut to    ╱  growth
         │                 │goodput ╱
         │                 └──────╱
         └──────────────────────────────────► time

The ceiling is a GCRA token bucket (the "virtual scheduling" form): ``_next_slot`` is when the
next request is due at the allowed rate; a caller may go up to ``burst - 1`` intervals early,
and each one moves the slot on by one interval. So at most ``burst + rate × t`` requests leave
in any span of ``t`` seconds, the achieved rate is the rate however late the event loop wakes
a waiter (slots are reserved, not re-measured), and a caller that may go at once costs a
comparison and an addition — a plain call, no await (:meth:`Pacer.free_now`). aiolimiter,
used before, cost ~13,000 instructions a request (benchmarks/instructions.py) and reads the
loop's clock, which uvloop keeps to the millisecond: at ``--burst 1`` it delivered 85% of
1,000/s (benchmarks/RESULTS.md at da74480; this bucket: 100.0%). While the pacer has slowed
the run (throttled) there is no burst: callers are spaced one interval apart, so a recovering
server is not hit by a clump.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import anyio


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    cut_share: float = 0.1  # pushback share (moving average) that triggers a cut
    share_weight: float = 0.05  # weight of the newest answer in that average (~ last 20)
    below_goodput: float = 0.9  # a cut sets the rate to this × the accepted rate
    blind_cut: float = 0.5  # cut factor while the refusals are too recent to measure
    measure_for: float = 0.05  # seconds of refusals before their goodput is trusted
    calm_after: float = 1.0  # seconds without pushback that end a refusal episode
    growth_per_second: float = 1.10  # while things go well, allowed rate ×= this per second
    min_rate: float = 0.2  # never slower than one request every five seconds


_NEGLIGIBLE = 1e-3


@dataclass(frozen=True, slots=True)
class PaceState:
    ceiling: float  # the user's --rate
    rate: float  # currently allowed requests per second, ≤ ceiling
    share: float = 0.0  # moving average of pushback among answers
    cut_at: float = float("-inf")  # monotonic time of the last cut
    paused_until: float = float("-inf")  # nobody sends before this (the server's Retry-After)
    updated_at: float = 0.0

    @property
    def throttled(self) -> bool:
        return self.rate < self.ceiling


def on_answer(
    state: PaceState,
    policy: PacingPolicy,
    *,
    pushback: bool,
    sent_at: float,
    now: float,
    accepted_rate: float,
    retry_after: float | None = None,
    may_cut: bool = True,
) -> PaceState:
    """Fold one answer from the server into the pacing state.

    ``accepted_rate``: the server's measured goodput (0: not known yet, cut blind);
    ``may_cut``: False holds a cut back (the caller allows one blind cut per measuring span).
    """
    if not pushback and not state.throttled and state.share < _NEGLIGIBLE:
        return state  # the hot path of a healthy run: nothing to change
    share = state.share + policy.share_weight * (float(pushback) - state.share)
    if pushback and may_cut and share >= policy.cut_share and sent_at >= state.cut_at:
        return _cut(
            state,
            policy,
            share=share,
            now=now,
            accepted_rate=accepted_rate,
            retry_after=retry_after,
        )
    rate = state.rate
    if not pushback and state.throttled:
        elapsed = max(0.0, now - state.updated_at)
        rate = min(state.ceiling, rate * policy.growth_per_second**elapsed)
    return replace(state, rate=rate, share=share, updated_at=now)


def _cut(
    state: PaceState,
    policy: PacingPolicy,
    *,
    share: float,
    now: float,
    accepted_rate: float,
    retry_after: float | None,
) -> PaceState:
    if accepted_rate > 0:
        target = min(state.rate, accepted_rate * policy.below_goodput)
        if target >= state.rate:  # already at or below the measured pace: nothing to cut
            return replace(state, share=0.0, updated_at=now)
    else:
        target = state.rate * policy.blind_cut
    paused_until = state.paused_until
    if retry_after is not None:
        paused_until = max(paused_until, now + retry_after)
    return PaceState(
        ceiling=state.ceiling,
        rate=max(min(policy.min_rate, state.ceiling), target),  # a cut never raises the rate
        share=0.0,  # start measuring afresh at the new rate
        cut_at=now,
        paused_until=paused_until,
        updated_at=now,
    )


class Pacer:
    """The async gate every attempt passes through. One instance is shared by all workers."""

    def __init__(
        self,
        ceiling: float,
        policy: PacingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        *,
        burst: int = 1,
    ) -> None:
        if burst < 1:
            raise ValueError(f"a burst is at least one request, not {burst}")
        self.policy = policy or PacingPolicy()
        self._clock = clock
        self._sleep = sleep
        self._interval = 1.0 / ceiling  # between slots at the ceiling
        # How early a caller may go, unthrottled; plus a nanosecond, so that float rounding in
        # the slot sums cannot refuse the last request of a burst.
        self._burst_credit = (burst - 1) / ceiling + 1e-9
        now = clock()
        self._refusing_since: float | None = None  # first pushback of this episode
        self.calm = True  # see _update_calm
        self.state = PaceState(ceiling=ceiling, rate=ceiling, updated_at=now)
        self._next_slot = now  # when the next request is due at the allowed rate
        self._accepted_since = 0  # answers accepted since then
        self._last_pushback = float("-inf")
        self.cuts = 0  # how many times pushback cut the rate (for the summary)

    @property
    def state(self) -> PaceState:
        return self._state

    @state.setter
    def state(self, state: PaceState) -> None:
        self._state = state
        self._update_calm()

    def _update_calm(self) -> None:
        """``calm``: full rate and no refusals lately. An accepted answer then changes nothing
        (the engine skips telling), and a caller may go at once unless a pause or a reserved
        slot is ahead (:meth:`free_now`). Both are plain attribute reads on every request."""
        state = self._state
        self.calm = (
            self._refusing_since is None and state.share < _NEGLIGIBLE and not state.throttled
        )

    def free_now(self) -> float | None:
        """Take a slot and return the time to send at, if a caller may send at once; else
        take nothing and return None (the caller then awaits :meth:`wait_turn`)."""
        if not self.calm:
            return None
        now = self._clock()
        slot = self._next_slot
        if now < slot - self._burst_credit or now < self._state.paused_until:
            return None
        self._next_slot = (slot if slot > now else now) + self._interval
        return now

    async def wait_turn(self) -> float:
        """Wait until this caller may send; return the (monotonic) time it sends at."""
        while True:
            now = self._clock()
            state = self.state
            credit = 0.0 if state.throttled else self._burst_credit
            start = max(now, state.paused_until, self._next_slot - credit)
            # Reserve the slot before sleeping, so waiters are spaced, not released at once.
            self._next_slot = max(self._next_slot, start) + 1.0 / state.rate
            if start <= now:
                return now
            await self._sleep(start - now)
            now = self._clock()
            if now >= self.state.paused_until:
                return now
            # A pause (Retry-After) began while we slept: queue again behind it.

    def answered(self, *, sent_at: float, pushback: bool, retry_after: float | None) -> None:
        """Feed the server's answer to a request that left at ``sent_at``."""
        state = self.state
        calm = not pushback and self._refusing_since is None and state.share < _NEGLIGIBLE
        if calm and not state.throttled:  # at full rate and calm: nothing to change
            return
        now = self._clock()
        goodput = self._goodput(now, pushback)
        # Blind (unmeasured) cuts at most once per measuring span: one per round trip on a
        # fast link would halve the rate to nothing before the first measurement.
        may_cut = goodput > 0 or now - self.state.cut_at >= self.policy.measure_for
        before = self.state.cut_at
        self.state = on_answer(
            self.state,
            self.policy,
            pushback=pushback,
            sent_at=sent_at,
            now=now,
            accepted_rate=goodput,
            retry_after=retry_after,
            may_cut=may_cut,
        )
        if self.state.cut_at != before:
            self.cuts += 1
        if pushback:
            self._last_pushback = now
        elif now - self._last_pushback >= self.policy.calm_after:
            self._refusing_since = None  # calm again: the next refusals are a new episode
        self._update_calm()

    def _goodput(self, now: float, pushback: bool) -> float:
        """Accepted answers per second since the server started refusing; 0 while unknown."""
        if not pushback:
            self._accepted_since += self._refusing_since is not None
            return 0.0
        if self._refusing_since is None:
            self._refusing_since, self._accepted_since = now, 0
        span = now - self._refusing_since
        if span < self.policy.measure_for:
            return 0.0
        # (n + 1) / span: with few answers counted, n / span undershoots (1 accepted in 90 ms
        # reads as 11/s from a 20/s server) and a cut would land far below the capacity.
        return (self._accepted_since + 1) / span
