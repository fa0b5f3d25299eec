"""The async gate every attempt passes (:class:`Pacer`): the ``--rate`` ceiling, the allowed
rate a :class:`~bulktag.pacing.controller.PaceController` moves, the in-flight cap and the
opening window meet here."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio

from bulktag.inflight import InFlightCap
from bulktag.pacing.controller import PaceController
from bulktag.pacing.policy import PacingPolicy, Signal

# When a cap on requests in flight is found, the rate goes this far above what the cap lets
# through: the cap binds, and the rate is a guard a little above it…
GIVE_WAY = 1.1
# …but no more than this far above the rate it replaces: a cap can be read at a token bucket
# too, from a run's first flood (refusals at the high levels it reached) and the cut after it
# (acceptances at low ones), and what such a cap "lets through" is about twice the bucket's
# rate. A real cap that lets more through is reached by the probes from there.
GIVE_WAY_AT_MOST = 1.5

# Requests on the wire before any answer is back, in a slow start: TCP's initial window, but
# wider (RFC 6928 sets 10 segments). 16 held two runs started together at 600/s on one limit,
# 30 ms away, in their first round trip, and changed how they split it (simulated, 144 runs
# off the grid: 3 → 17 with a share under 35 %); at 32, 3 as before.
OPENING_WINDOW = 32

# A caller napping until its slot this long or longer is woken when the allowed rate rises.
WAKE_FOR = 0.01


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
        wall_clock: Callable[[], float] | None = None,
        slow_start_to: int | None = None,
    ) -> None:
        """``wall_clock``: a clock other processes share (``time.time``), if the pacer is to
        time its checks by it, as runs sharing a limit need (see PaceController._recheck_due);
        else ``clock`` is taken as shared (the simulator's clients have one).
        ``slow_start_to``: the run's own limit on requests at once (``--concurrency``); given,
        the pacer opens with a slow start (:meth:`_opening_full`) until its window is that
        wide. The engine gives it; the unit tests of the gate's other limits do not."""
        if burst < 1:
            raise ValueError(f"a burst is at least one request, not {burst}")
        self._clock = clock
        self._sleep = sleep
        now = clock()
        offset = wall_clock() - now if wall_clock else 0.0
        self.control = PaceController(ceiling, policy or PacingPolicy(), now, wall_offset=offset)
        self._interval = 1.0 / ceiling  # between slots at the ceiling
        # How early a caller may go, unthrottled; plus a nanosecond, so that float rounding in
        # the slot sums cannot refuse the last request of a burst.
        self._burst_credit = (burst - 1) / ceiling + 1e-9
        self._next_slot = now  # GCRA at the ceiling: when the next request is due
        self._last_grant = float("-inf")  # paced at the allowed rate from here, while throttled
        self._queue = anyio.Lock()  # waiters are served in order, one computing at a time
        self._head_waits = False  # the caller at the head of the queue waits for a slot or room
        self.calm = True  # at the ceiling with nothing refused lately (see answered)
        self._begun = False  # the first request has left (see PaceController.begin)
        # Requests on the wire (granted, not yet returned), the level the last one left at,
        # and what the cloud takes at once, if it limits that (bulktag/inflight.py).
        self.on_wire = 0
        self.level = 0
        self.in_flight = InFlightCap(now)
        self._room: anyio.Event | None = None  # set when a request returns under a full cap
        self._rate_rose: anyio.Event | None = None  # set when the allowed rate rises
        # The opening window holds the wire until it is this wide; None once it is over.
        self._slow_start_to = slow_start_to
        self._returned = 0  # requests back off the wire: the opening window widens by each

    @property
    def rate(self) -> float:
        return self.control.rate

    @property
    def throttled(self) -> bool:
        return self.control.rate < self.control.ceiling

    @property
    def cuts(self) -> int:
        return self.control.cuts

    @property
    def accepted_total(self) -> int:
        return self.control.accepted_total

    def free_now(self) -> float | None:
        """Take a slot and return the time to send at, if a caller may send at once; else
        take nothing and return None (the caller then awaits :meth:`wait_turn`)."""
        if not self.calm:
            return None
        now = self._clock()
        slot = self._next_slot
        # A caller waiting at the head of the queue goes first; callers merely queued behind
        # it, that can go at once, are no reason to queue too. Deferring to a held lock, a
        # queue that formed once (as the opening window fills) never drained: each worker back
        # from its answer found the lock held and queued behind the others, and half of every
        # run's requests passed through it one at a time, 1.6× the CPU a pair against a
        # server answering at once (0.5-0.6× a minimal client, not 0.9×; RESULTS section 41).
        if now < slot - self._burst_credit or self._head_waits:
            return None
        if now < self.control.paused_until:
            return None
        if self._slow_start_to is not None and self._opening_full():
            return None
        self._next_slot = (slot if slot > now else now) + self._interval
        self.level = self.on_wire
        self.on_wire += 1
        if not self._begun:
            self._begin(now)
        return now

    async def wait_turn(self) -> float:
        """Wait until this caller may send; return the (monotonic) time it sends at. The
        caller reads :attr:`level` next, before it awaits anything, and calls
        :meth:`returned` when the answer is in."""
        arrived = self._clock()
        async with self._queue:
            try:
                while True:
                    if self._full():
                        self._head_waits = True
                        self._room = room = anyio.Event()
                        await room.wait()
                    now = self._clock()
                    start = self.earliest(now)
                    if start <= now:
                        self.grant(self._due(arrived, now))
                        return now
                    self._head_waits = True
                    await self._nap(min(start - now, 0.1))
            finally:
                self._head_waits = False  # the next in the queue may go at once (free_now)

    async def _nap(self, seconds: float) -> None:
        """Sleep until the next slot, 0.1 s at most (``wait_turn`` looks again then), or until
        the allowed rate rises (:meth:`answered`), whichever comes first. A run that resumed
        after a hold-back (5/s, a slot every 0.2 s) sent its first request at its pace up to
        0.1 s late, so its first 0.2-s window sent half its pace, and what got in, halved,
        was read as the cloud's: a run whose limit a second one had just joined cut itself to
        56-79/s of 200 and kept about a third of the limit (real time, traced). A short nap
        is only slept: a rise during it costs a few milliseconds at most."""
        if seconds < WAKE_FOR:
            await self._sleep(seconds)
            return
        rose = self._rate_rose = anyio.Event()

        async def alarm() -> None:
            await self._sleep(seconds)
            rose.set()

        # An alarm task, not anyio.move_on_after: the nap keeps to the injected sleep, the
        # clock the tests and the simulator drive.
        try:
            async with anyio.create_task_group() as naps:
                naps.start_soon(alarm)
                await rose.wait()
                naps.cancel_scope.cancel()
        finally:
            self._rate_rose = None

    def _due(self, arrived: float, now: float) -> float:
        """The slot a caller that arrived at ``arrived`` and goes at ``now`` takes: the one it
        was due since it arrived, not a later one. A wake-up late by a millisecond (a busy
        event loop, or the caller ahead woken late) must not lower the achieved rate: at
        300/s, below the ceiling, each waiter a millisecond late cost a fifth of it. Never
        earlier than its arrival, so no caller catches up on time nobody waited in. Below the
        ceiling, no more than one interval back: when the rate jumps up after an outage, the
        callers queued at the old rate must not all leave at once."""
        due = self.earliest(arrived)
        if self.throttled:
            due = max(due, now - 1.0 / self.control.rate)
        return due

    def earliest(self, now: float) -> float:
        """When the next caller may send, judged at ``now`` (both limits, and any pause)."""
        if self._full():
            return math.inf  # until a request returns
        control = self.control
        start = max(now, control.paused_until, self._next_slot - self._burst_credit)
        if control.rate < control.ceiling:
            start = max(start, self._last_grant + 1.0 / control.rate)
        return start

    def _full(self) -> bool:
        """No more on the wire until one returns: the cloud's cap, or the opening window."""
        return self.in_flight.full(self.on_wire) or (
            self._slow_start_to is not None and self._opening_full()
        )

    def _opening_full(self) -> bool:
        """The opening window is full: as many on the wire as it holds, 32 plus one for each
        request back, so it doubles each round trip and the first sends no more than 32 blind.
        It closes for good once the controller moves the rate (the cloud's answers govern from
        then on) or once it is as wide as the run may send at once.

        Every answer widens it, refusals too: it bounds what goes out blind, and judging the
        refusals is the controller's work. Widened by the accepted only (tried, with 16), the
        simulated far clouds' worst runs from 5 s on were worse, for reasons not traced: 15.3 %
        refused at a concurrency limit and 15.9 % at a queueing server, against 9.2 and 5.4 %."""
        control, most = self.control, self._slow_start_to
        window = OPENING_WINDOW + self._returned
        if most is None or window >= most:
            self._slow_start_to = None
            return False
        if control.rate < control.ceiling:
            if not control.hold_in_doubt:
                self._slow_start_to = None
            return False  # the pace governs; a hold-back undone opens the window again
        return self.on_wire >= window

    def grant(self, now: float) -> None:
        """A caller sends at ``now``: move both limits on by one request."""
        self._next_slot = max(self._next_slot, now) + self._interval
        self._last_grant = now
        self.level = self.on_wire
        self.on_wire += 1
        if not self._begun:
            self._begin(now)

    def _begin(self, now: float) -> None:
        self._begun = True
        self.control.begin(now)

    def returned(self) -> None:
        """A granted request is off the wire (answered, failed or cancelled)."""
        self.on_wire -= 1
        self._returned += 1
        room = self._room
        if room is not None:
            self._room = None
            room.set()

    def answered(
        self,
        *,
        sent_at: float,
        signal: Signal,
        retry_after: float | None = None,
        fresh: bool = True,
        level: int | None = None,
    ) -> None:
        """Feed the server's answer to a request that left at ``sent_at`` with ``level``
        others on the wire (``fresh``: a row's first attempt). A refusal the in-flight cap
        explains is not the rate's: only the cap hears of it."""
        control = self.control
        now, before = self._clock(), control.rate
        explained = False
        if level is not None and signal is not Signal.FAILED:
            in_flight = self.in_flight
            capped = in_flight.cap is not None
            explained = in_flight.observe(now, level, now - sent_at, signal is Signal.REFUSED)
            if not capped and in_flight.cap is not None and in_flight.sustains:
                through = in_flight.sustains * GIVE_WAY
                control.give_way(now, min(through, GIVE_WAY_AT_MOST * control.rate))
        if explained:
            self.calm = False
        else:
            control.capped = self.in_flight.cap is not None
            control.cap_through = self.in_flight.sustains
            control.observe(now, sent_at, signal, retry_after, fresh=fresh)
            self.calm = control.calm and not control.capped
        if control.rate > before and self._rate_rose is not None:
            self._rate_rose.set()  # the caller napping at the old pace goes at the new one

    def accepted_while_calm(self, sent_at: float) -> None:
        """The engine's fast path, for an accepted answer while calm: it changes no rate, so
        it is only counted, and timed (see :class:`Delays`)."""
        control, now = self.control, self._clock()
        control.accepted_total += 1
        control.delays.add(now - sent_at, accepted=True)
        control.refused_seconds.add(now, Signal.ACCEPTED, control.rate)

    def silent_for(self) -> float:
        return self.control.silent_for(self._clock())

    def findings(self, elapsed: float) -> dict[str, object]:
        """What pacing found (:meth:`PaceController.findings`), and the cloud's limit on
        requests in service, if one was found."""
        found = self.control.findings(elapsed)
        if self.in_flight.found is not None:
            found["in_flight_cap"] = self.in_flight.found
        return found
