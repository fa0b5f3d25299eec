"""Shared pacing: find the pace the cloud takes, keep to it, and never pass ``--rate``.

Every attempt passes one gate, :class:`Pacer`. Its limits meet there:

* the **ceiling**, the user's ``--rate`` with ``--burst``: a GCRA token bucket (the "virtual
  scheduling" form) that no adaptive decision can loosen. At most ``burst + rate × t``
  requests leave in any span of ``t`` seconds, and because slots are reserved, not
  re-measured, a late wake-up of the event loop does not lower the achieved rate;
* the **allowed rate**, at or below the ceiling, which a :class:`PaceController` moves as the
  cloud answers. While it is below the ceiling, requests are spaced one interval apart with no
  burst, so a recovering server is not hit by a clump;
* the **in-flight cap**, when the cloud limits requests in service rather than per second (a
  concurrency limit, which no rate fits): :class:`bulktag.inflight.InFlightCap` finds it from
  how many of our requests were on the wire when each refused one left, and the gate then holds
  a caller until one returns. Refusals the cap explains never reach the controller;
* the **opening window**, TCP's slow start: until the controller first moves the rate, no more
  requests are on the wire than 32 plus those back already, so the window doubles each round
  trip. Near clouds never fill it (1,000/s answered in 5 ms is 5 on the wire); a far one is
  no longer sent ``--rate`` blind until its first window is judged (at 1,000/s, 300 ms away,
  that was 300 requests a round trip into a 200/s limit).

The controller treats every refusal (429, 503, 413 + Retry-After) as a *hypothesis* — "we are
going too fast" — and tests it, in the manner of TCP's slow start and BBR's probing but with
an experiment that congestion control never needs, because for it loss *is* overload:

    answers ─► windows (≥ 0.2 s and ≥ 8 answers) ─► refused share f (rows' first attempts),
                 │                                 accepted/s over ≥ 1 s
                 ├─ f within the rate-independent share p (+ noise): clean
                 │     below the last good pace → double back towards it
                 │     at it for a second and 32 answers → probe above: +2 %, +8 %, +32 %…
                 │     (+2 % each time up to 1.15 × a capacity a cut found: a burst hides
                 │     a small excess; not once nothing was refused for 2 s: a run that
                 │     shared the limit may have left) (half the way back, at least, to
                 │     the highest pace confirmed in the last minute: capacity that
                 │     dropped often comes back)
                 │     (plus a step shared by runs on one limit); one that brings refusals goes back
                 │     to the good pace, and for a few seconds the next probes go at most
                 │     half the way back to it (a binary search, as in BIC-TCP);
                 │     with p > 0, a probe is confirmed only if more got in
                 │     every 10 s with p > 0: dip under what gets in ((1 − p) × 0.9) for a
                 │     window, on the wall clock's marks (runs sharing a limit dip together;
                 │     the first after finding p ≥ ¼, on the next 2-s mark);
                 │     f fell → a limit was hiding in p: p := f, pace under what got in
                 ├─ over half refused, beyond doubt, before the window is out (a pace over
                 │     twice the cloud's): straight under what got in since the first refusal
                 │     (a limiter's burst before it is not capacity), no experiment needed;
                 │     a run's first window, once something got in, is read whole, a streak
                 │     in it no hold-back (runs started together on one limit split it evenly)
                 ├─ f above it: overload suspected → cut to 0.95 × accepted/s, by ≥ 15 %
                 │     (accepted/s since a hold-back ended, if that is later: not the trickle)
                 │     (by half at most, when a handful of answers is all there is to read)
                 │     the experiment, on answers to requests sent since the cut: do the
                 │     episode's shares fit one share at every pace (not about the rate) or
                 │     one accepted rate (a limit: what gets in stays flat) better? A limit
                 │     unless clearly not (e² times as likely): a shared one looks half like
                 │     it, and flooding it costs more than a cut the next steps take back
                 │     a limit → pace under what got in meanwhile (sooner, when nothing at
                 │     all was refused in a sample that makes the old excess unlikely)
                 │     not about the rate → p := f, rate restored; the next window checks
                 │     that the accepted share held there (else a limit after all)
                 └─ nothing accepted, and no longer by luck (a window spent, an outage)
                       hold back to a trickle (1/32 of the pace); after 1 s, 1 request/s
                       (and the server's Retry-After, when most refusals carry one);
                       the first accepted answer → straight back to the pace from before
                       (undone, to the pace before the hold-back, if the streak came
                       before its acceptances could: as many of the requests sent among
                       its refused ones got in as two for every three refused)

    rate ▲  ceiling ──┐              probe ┌┐   ┌─
         │            │cut: f fell? yes    │└───┘  hold a second, then probe
         │            └┐   ┌───────────────┘
         │             └───┘ confirmed
         └──────────────────────────────────────────► time

Why each part: a fixed one-second window admits a burst then refuses everything until the
second ends, so accepted/s is measured over at least a second and an all-refused stretch is
not read as "the cloud takes nothing". A backend that refuses 20 % at any rate keeps refusing
20 % when the rate falls: the experiment sees it and goes back up, so a flaky 20 % costs 20 %
more requests, not 80 % of the throughput. The experiment reads shares, not accepted/s, and
only answers to requests sent since the change: answers come back late and out of order, and
accepted/s lags the rate by their latency. Where acceptances clearly take longer than
refusals (the backend serves, the gateway refuses at once: :class:`Delays`), what got in is
counted over the sending whose acceptances can be back, not over the refusals that came
back first; a run's first window lasts until they can be, and a hold-back on a streak that
came before them is undone when they come (TCP's undo of a spurious cut). After an outage
the last good pace is resumed at once, as TCP resumes at ``ssthresh``. The controller reads
no clock (``now`` is passed in), so tests and the simulator (tests/pacing_sim.py) drive it
through hours in milliseconds.

The package: :mod:`~bulktag.pacing.policy` (signals, numbers, modes),
:mod:`~bulktag.pacing.evidence` (windows, delays, sends: what decisions are measured on),
:mod:`~bulktag.pacing.verdict` (the experiment's test), :mod:`~bulktag.pacing.controller`
(the clock-free controller) and :mod:`~bulktag.pacing.gate` (the async :class:`Pacer`).
"""

from bulktag.pacing.controller import CAP_GUARD, PaceController, describe
from bulktag.pacing.evidence import Delays, RefusedSeconds, Sending
from bulktag.pacing.gate import GIVE_WAY, GIVE_WAY_AT_MOST, OPENING_WINDOW, Pacer
from bulktag.pacing.policy import Mode, PacingPolicy, Signal
from bulktag.pacing.verdict import LIMIT_FAVOURED, Sample, limit_fits_better

__all__ = [
    "CAP_GUARD",
    "GIVE_WAY",
    "GIVE_WAY_AT_MOST",
    "LIMIT_FAVOURED",
    "OPENING_WINDOW",
    "Delays",
    "Mode",
    "PaceController",
    "Pacer",
    "PacingPolicy",
    "RefusedSeconds",
    "Sample",
    "Sending",
    "Signal",
    "describe",
    "limit_fits_better",
]
