"""The in-flight cap: a limit on requests *in service at once*, found from the level each
refusal left at.

A gateway or backend that serves N requests at once and refuses the rest (a concurrency limit)
takes N ÷ latency a second, but no rate matches it: latency and the event loop jitter, so an
evenly paced client meets refusals well below that rate (in real time, against 8 in service ×
40 ms: 0.15 % refused at 85 % of it, 6.4 % at 95 %). TCP pairs its pacing rate with a
congestion window for the same reason. So the pacer also notes the *level* each request left
at — how many of ours were on the wire then — and tests one more hypothesis, span by span
(≥ 0.5 s and ≥ 32 answers):

    no cap:  refusals at levels ≥ K only (K ≥ 4), none below, where ≥ 32 answers were
             accepted; their share up there stands out (≥ 10 %); and what is on the wire on
             average fits under K with half a level to spare (Little's law: Σ latency ÷ span
             ≤ K − ½), so a cap cannot slow what gets in
                 → cap the requests on the wire at K, and let the rate controller jump
                   towards what K lets through (K ÷ latency; half as much again as its
                   rate at most, see pacing.GIVE_WAY_AT_MOST), so the cap, not the rate, binds
    a cap:   a refusal below it                     → the hypothesis failed: no cap, learn again
             3 clean spans that reached it          → probe an eighth higher (one level at
                                                      least; each clean probe in a row twice
                                                      the last step, as the rate's probes grow);
                                                      a probe whose new levels are never used
                                                      is taken back (it tested nothing)
    probing: 4 refusals at the new levels           → back to the cap at once; the next probe
                                                      waits 10 spans (the limit is confirmed)

Any other limiter fails the test: a token bucket or a flaky backend refuses at every level, and
a refusal pattern that only looks like a level threshold fails Little's check. Refusals the cap
explains (at or above a confirmed or probed cap) are not the rate's business: the pacer keeps
them from the rate controller. Reads no clock: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPAN = 0.5  # seconds a span lasts at least before it is judged…
SPAN_ANSWERS = 32  # …and answers it holds; as many accepted below a level that becomes a cap
SPAN_MAX = 10.0  # a span that never gathered that much evidence starts over after this
REFUSALS_NEEDED = 8  # refusals at or above a level before it can be a cap…
STANDS_OUT = 0.1  # …and their share among the answers up there
MIN_CAP = 4  # the least cap the evidence can show (see _learn)
ROOM = 0.5  # the mean level must be this far under a cap-to-be (Little's law)
CLEAN_SPANS = 3  # clean spans at a cap before a probe above it
FAILED_PROBE_WAIT = 10  # clean spans before the next probe, once one brought refusals
PROBE_REFUSALS = 4  # refusals at a probe's new levels that end it at once


@dataclass(slots=True)
class _Span:
    start: float
    accepted: dict[int, int] = field(default_factory=dict)  # answers by level
    refused: dict[int, int] = field(default_factory=dict)
    answers: int = 0
    refusals: int = 0
    on_wire: float = 0.0  # Σ latency: ÷ the span's length, the mean level (Little's law)
    served: float = 0.0  # Σ latency of the accepted answers

    def add(self, level: int, refused: bool, latency: float) -> None:
        counts = self.refused if refused else self.accepted
        counts[level] = counts.get(level, 0) + 1
        self.answers += 1
        self.refusals += refused
        self.on_wire += latency
        if not refused:
            self.served += latency


def _below(counts: dict[int, int], level: int) -> int:
    return sum(n for at, n in counts.items() if at < level)


class InFlightCap:
    """Whether the cloud limits requests in service and, if so, to how many (``cap``)."""

    def __init__(self, now: float) -> None:
        self.cap: int | None = None
        self.found: int | None = None  # the cap last learned or confirmed, for the operator
        self.sustains: float | None = None  # requests/s the cap lets through, when found
        self._span = _Span(now)
        self._clean = 0  # clean spans at the cap
        self._wait = CLEAN_SPANS  # clean spans before the next probe
        self._probe_from: int | None = None  # the cap before the probe under way…
        self._probe_refused = 0  # …and the refusals at its new levels so far
        self._clean_probes = 0  # probes in a row that came back clean: each step is 2× the last

    def full(self, on_wire: int) -> bool:
        return self.cap is not None and on_wire >= self.cap

    def observe(self, now: float, level: int, latency: float, refused: bool) -> bool:
        """Fold in one answer to a request that left at ``level``; True if it is a refusal the
        cap explains (at or above it, or above a probe's starting point)."""
        span = self._span
        span.add(level, refused, latency)
        limit = self._probe_from if self._probe_from is not None else self.cap
        explained = refused and limit is not None and level >= limit
        elapsed = now - span.start
        if explained and self._probe_from is not None:
            self._probe_refused += 1
            if self._probe_refused >= PROBE_REFUSALS:  # the limit held: no need to wait
                self._probe_failed()
                self._span = _Span(now)
        elif elapsed >= SPAN and span.answers >= SPAN_ANSWERS and self._enough(span):
            self._judge(span, elapsed)
            self._span = _Span(now)
        elif elapsed >= SPAN_MAX:
            self._span = _Span(now)
        return explained

    def _enough(self, span: _Span) -> bool:
        """Enough to judge: with no cap, enough refusals to see where they come (the rate
        controller keeps them rare, so a span gathers them for up to ``SPAN_MAX``)."""
        return self.cap is not None or span.refusals >= REFUSALS_NEEDED

    def _judge(self, span: _Span, elapsed: float) -> None:
        if self.cap is None:
            self._learn(span, elapsed)
        elif _below(span.refused, self._probe_from or self.cap):
            self._failed(span, elapsed)
        elif self._probe_from is not None:
            self._end_probe(span)
        elif max(span.accepted, default=0) >= self.cap - 1:  # clean, and the cap was reached
            self._clean += 1
            if self._clean >= self._wait:
                self._probe_from = self.cap
                self._probe_refused = 0
                step = max(1, self.cap // 8) * 2**self._clean_probes
                self.cap += min(step, self.cap)

    def _learn(self, span: _Span, elapsed: float) -> None:
        refused = span.refusals
        if refused < REFUSALS_NEEDED:
            return
        level = min(span.refused)  # the lowest level a refusal left at
        if _below(span.accepted, level) < SPAN_ANSWERS:
            return  # too little seen below it to say refusals never happen there
        above = refused + sum(span.accepted.values()) - _below(span.accepted, level)
        if refused < STANDS_OUT * above:
            return
        if level < MIN_CAP or span.on_wire / elapsed > level - ROOM:
            # Too few levels to tell a limit on requests in service from a rate's refusals
            # that come when a burst raised the level; or what is on the wire now would not
            # fit well under the cap, which would then slow the run.
            return
        self.cap = self.found = level
        self._clean, self._wait, self._clean_probes = 0, CLEAN_SPANS, 0
        accepted = sum(span.accepted.values())
        self.sustains = level * accepted / span.served if span.served > 0 else None

    def _failed(self, span: _Span, elapsed: float) -> None:
        """Refused below the cap: the limit fell, or it was never about requests in service."""
        self.cap = self.found = self._probe_from = None
        self._learn(span, elapsed)

    def _end_probe(self, span: _Span) -> None:
        """A span at the probed cap, with fewer refusals at its new levels than fail it."""
        start = self._probe_from
        assert start is not None
        if span.refused:
            self._probe_failed()
        elif max(span.accepted, default=0) < start:
            # The new levels were never reached (the rate or the input held the run under
            # the cap): the probe says nothing, so it is taken back and tried again later.
            self.cap, self._probe_from = start, None
            self._clean = 0
        else:
            self._probe_from = None
            self._clean, self._wait = 0, CLEAN_SPANS
            self._clean_probes += 1

    def _probe_failed(self) -> None:
        """Refusals at the probe's new levels: the cap was the cloud's limit."""
        self.cap = self.found = self._probe_from
        self._probe_from = None
        self._clean, self._wait = 0, FAILED_PROBE_WAIT
        self._clean_probes = 0
