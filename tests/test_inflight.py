"""The in-flight cap's hypothesis test (bulktag/inflight.py), span by span, in virtual time;
and the pacer's gate holding requests at the cap. Whole runs against a concurrency limit are in
tests/test_pacing_sim.py (virtual time) and benchmarks/pacing_matrix.py (real time)."""

from __future__ import annotations

import random

import anyio
import pytest

from bulktag.inflight import FAILED_PROBE_WAIT, SPAN, InFlightCap
from bulktag.pacing import Pacer, Signal, describe

LATENCY = 0.04
LENGTH = SPAN * 1.01  # a span: judged at its last answer, whatever the float rounding


def span(
    cap: InFlightCap,
    start: float,
    levels: list[int],
    refused_from: int | None,
    *,
    latency: float = LATENCY,
    refused_at: set[int] | None = None,
) -> float:
    """One span's answers (120 a second), one request at each of ``levels`` in turn (and
    again, to fill the span); a request at a level ≥ ``refused_from`` (or at ``refused_at``'s
    levels) is refused. Returns the time after it."""
    count = 60
    for i in range(count):
        level = levels[i % len(levels)]
        refused = (refused_from is not None and level >= refused_from) or (
            refused_at is not None and level in refused_at
        )
        at = start + (i + 1) / count * LENGTH
        cap.observe(at, level, 0.001 if refused else latency, refused)
    return start + LENGTH


# Little's law holds for these: 120 answers a second, most of them 40 ms on the wire, a mean
# level of ~4-5; the levels themselves are what a client near a limit of 8 leaves at.
NEAR_EIGHT = [2, 3, 4, 5, 6, 7, 5, 6, 4, 8, 9, 3]


def test_refusals_only_above_a_level_make_it_the_cap() -> None:
    cap = InFlightCap(0.0)
    span(cap, 0.0, NEAR_EIGHT, refused_from=8)
    assert cap.cap == 8
    assert cap.sustains == pytest.approx(8 / LATENCY)


def test_refusals_at_every_level_are_not_a_cap() -> None:
    """A token bucket or a flaky backend refuses whatever is on the wire."""
    cap = InFlightCap(0.0)
    now = 0.0
    for _ in range(10):
        now = span(cap, now, NEAR_EIGHT, refused_from=None, refused_at={3, 6, 9})
    assert cap.cap is None


def test_a_level_the_mean_already_fills_is_not_a_cap() -> None:
    """Refusals above a level, but what is on the wire on average would not fit under it (a
    rate's refusals that come when a burst raised the level): a cap there would slow the run."""
    cap = InFlightCap(0.0)
    span(cap, 0.0, NEAR_EIGHT, refused_from=8, latency=0.09)  # a mean level of ~9
    assert cap.cap is None


def test_a_handful_of_levels_is_too_little_evidence() -> None:
    cap = InFlightCap(0.0)
    span(cap, 0.0, [0, 1, 2, 3, 0, 1], refused_from=3, latency=0.005)
    assert cap.cap is None


def test_a_refusal_below_the_cap_drops_it() -> None:
    cap = InFlightCap(0.0)
    now = span(cap, 0.0, NEAR_EIGHT, refused_from=8)
    span(cap, now, NEAR_EIGHT, refused_from=None, refused_at={2, 4, 6})
    assert cap.cap is None


def test_clean_spans_at_the_cap_probe_one_level_higher_and_refusals_there_end_it() -> None:
    cap = InFlightCap(0.0)
    now = span(cap, 0.0, NEAR_EIGHT, refused_from=8)
    under = [5, 6, 7, 7, 6, 7]
    for _ in range(3):
        now = span(cap, now, under, refused_from=None)
    assert cap.cap == 9  # the probe
    assert not cap.observe(now, 7, LATENCY, refused=False)
    explained = [cap.observe(now + 0.01 * i, 8, 0.001, refused=True) for i in range(4)]
    assert all(explained)  # refusals at the probe's new level are the cap's, not the rate's
    assert cap.cap == 8  # ended at the fourth refusal, not at the span's end
    assert cap.found == 8
    now += 0.03
    for _ in range(FAILED_PROBE_WAIT - 1):
        now = span(cap, now, under, refused_from=None)
    assert cap.cap == 8  # the next probe waits longer once the limit was confirmed
    span(cap, now, under, refused_from=None)
    assert cap.cap == 9


def test_a_probe_whose_new_level_is_never_used_is_taken_back() -> None:
    cap = InFlightCap(0.0)
    now = span(cap, 0.0, NEAR_EIGHT, refused_from=8)
    for _ in range(3):
        now = span(cap, now, [6, 7], refused_from=None)
    assert cap.cap == 9
    span(cap, now, [3, 4, 5], refused_from=None)  # the rate, not the cap, held the run
    assert cap.cap == 8


def test_a_limit_that_rose_is_followed_by_probes() -> None:
    cap = InFlightCap(0.0)
    now = span(cap, 0.0, NEAR_EIGHT, refused_from=8)
    for _ in range(24):  # the cloud now serves 24 at once
        level = cap.cap
        assert level is not None
        now = span(cap, now, list(range(level - 3, level)), refused_from=24)
    # 8 → 9 → 11 → 15 → 23, clean probes growing; then 39 brings refusals: back to 23
    assert cap.cap == 23


def test_findings_name_the_cap() -> None:
    found = {"accepted_per_second": 190.0, "pace_cuts": 1, "rate_related_refusals": True}
    line = describe({**found, "rate_independent_share": 0.0, "in_flight_cap": 8})
    assert "it serves at most 8 requests at once" in line


# ── the gate ─────────────────────────────────────────────────────────────────────────────────


async def test_the_gate_holds_a_request_until_one_returns_under_a_full_cap() -> None:
    pacer = Pacer(1000.0, burst=10)
    pacer.in_flight.cap = 2
    pacer.calm = False  # as it is whenever a cap is set
    for level in (0, 1):
        await pacer.wait_turn()
        assert pacer.level == level
    went: list[int] = []

    async def third() -> None:
        await pacer.wait_turn()
        went.append(pacer.level)

    async with anyio.create_task_group() as group:
        group.start_soon(third)
        await anyio.sleep(0.05)
        assert went == []  # two on the wire: the third waits, however free the rate is
        pacer.returned()
        await anyio.sleep(0.05)
        assert went == [1]
    assert pacer.on_wire == 2


def test_refusals_that_come_by_time_not_by_level_are_not_a_cap() -> None:
    """Shuffled levels with refusals by time alone (a bucket empties now and then)."""
    rng = random.Random(3)
    cap = InFlightCap(0.0)
    now = 0.0
    for _ in range(2000):
        now += 0.01
        level = rng.randint(0, 12)
        cap.observe(now, level, LATENCY, refused=int(now) % 3 == 0)
    assert cap.cap is None


def test_a_cap_raises_the_rate_by_half_at_most() -> None:
    """A run's first flood at a token bucket: refusals at the high levels it reached, then,
    under the cut that followed, acceptances at low ones — in one span, a cap on requests in
    service, letting through twice what the bucket takes. Given way to in full, the rate jumped
    back over the limit it had just found (in the simulator, two runs sharing one bucket: one
    starved for two minutes). Half as much again at most; the probes go on from there."""
    clock = [0.0]
    pacer = Pacer(1000.0, clock=lambda: clock[0])
    pacer.control.rate = pacer.control.good = 180.0  # under what got in, after a cut
    for n in range(20):  # the flood's last answers: refused at levels 8-27
        clock[0] += 0.005
        pacer.answered(sent_at=clock[0] - 0.001, signal=Signal.REFUSED, level=8 + n)
    before = pacer.rate  # (the controller cut again on the flood's refusals)
    for n in range(60):  # the cut's: accepted at levels 1-3
        clock[0] += 0.01
        if pacer.in_flight.cap is None:
            before = pacer.rate
        pacer.answered(sent_at=clock[0] - LATENCY, signal=Signal.ACCEPTED, level=1 + n % 3)
    assert pacer.in_flight.cap == 8
    assert pacer.in_flight.sustains == pytest.approx(8 / LATENCY)
    assert before < pacer.rate <= 1.5 * before < 8 / LATENCY
