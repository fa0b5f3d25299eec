"""Shared pacing: the pure arithmetic (``on_answer``), the rate meter, and the async gate driven
by a fake clock whose sleep only moves time forward — no real time passes in this file."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulktag.pacing import Pacer, PaceState, PacingPolicy, on_answer

POLICY = PacingPolicy()  # cut at 10 % share, weight 0.05, ×0.9 goodput, blind ×0.5, +10 %/s
T = 1000.0


def answer(
    state: PaceState,
    *,
    pushback: bool,
    sent_at: float = T,
    now: float = T,
    accepted_rate: float = 0.0,
    retry_after: float | None = None,
    policy: PacingPolicy = POLICY,
) -> PaceState:
    return on_answer(
        state,
        policy,
        pushback=pushback,
        sent_at=sent_at,
        now=now,
        accepted_rate=accepted_rate,
        retry_after=retry_after,
    )


# -- on_answer ---------------------------------------------------------------------------------


def test_a_healthy_answer_returns_the_very_same_state() -> None:
    state = PaceState(ceiling=10.0, rate=10.0, updated_at=T - 5)
    assert state is answer(state, pushback=False, now=T)


def test_an_isolated_pushback_only_nudges_the_share() -> None:
    state = PaceState(ceiling=10.0, rate=10.0)
    after = answer(state, pushback=True, accepted_rate=9.0, retry_after=30.0)
    assert PaceState(ceiling=10.0, rate=10.0, share=0.05, updated_at=T) == after


def test_isolated_pushbacks_among_many_ok_answers_never_cut() -> None:
    state = PaceState(ceiling=10.0, rate=10.0)
    for n in range(400):  # one 503 in 25 answers: a flaky backend, not overload
        state = answer(state, pushback=n % 25 == 0, now=T + n / 10, accepted_rate=9.0)
    assert 10.0 == state.rate
    assert float("-inf") == state.cut_at


@pytest.mark.parametrize(
    ("rate", "accepted_rate", "expected_rate"),
    [
        pytest.param(10.0, 6.0, 5.4, id="cut-to-0.9-of-goodput"),
        pytest.param(10.0, 0.0, 5.0, id="blind-cut-when-nothing-accepted"),
        pytest.param(10.0, 0.1, 0.2, id="floor-at-min-rate"),
        pytest.param(0.3, 0.0, 0.2, id="blind-cut-floored-at-min-rate"),
    ],
)
def test_a_pushback_over_the_cut_share_cuts_the_rate(
    rate: float, accepted_rate: float, expected_rate: float
) -> None:
    state = PaceState(ceiling=10.0, rate=rate, share=0.09, updated_at=T - 1)
    after = answer(state, pushback=True, accepted_rate=accepted_rate)
    assert PaceState(ceiling=10.0, rate=pytest.approx(expected_rate), cut_at=T, updated_at=T) == (
        after
    )


def test_a_measured_goodput_above_the_rate_neither_raises_nor_counts_as_a_cut() -> None:
    state = PaceState(ceiling=10.0, rate=10.0, share=0.09, updated_at=T - 1)
    after = answer(state, pushback=True, accepted_rate=50.0)
    assert PaceState(ceiling=10.0, rate=10.0, share=0.0, updated_at=T) == after


def test_the_share_crosses_the_cut_threshold_after_a_run_of_pushbacks() -> None:
    state = PaceState(ceiling=10.0, rate=10.0)
    shares = []
    for n in range(3):
        state = answer(state, pushback=True, now=T + n, sent_at=T + n, accepted_rate=4.0)
        shares.append(state.share)
    assert [pytest.approx(0.05), pytest.approx(0.0975), 0.0] == shares  # the third one cut
    assert pytest.approx(3.6) == state.rate


def test_a_pushback_for_a_request_sent_before_the_last_cut_never_cuts() -> None:
    state = PaceState(ceiling=10.0, rate=5.0, share=0.5, cut_at=T - 1, updated_at=T - 1)
    after = answer(state, pushback=True, sent_at=T - 1.5, accepted_rate=1.0)
    assert 5.0 == after.rate
    assert T - 1 == after.cut_at
    assert pytest.approx(0.525) == after.share


def test_a_pushback_for_a_request_sent_at_the_cut_instant_may_cut() -> None:
    state = PaceState(ceiling=10.0, rate=5.0, share=0.5, cut_at=T - 1, updated_at=T - 1)
    after = answer(state, pushback=True, sent_at=T - 1, accepted_rate=1.0)
    assert pytest.approx(0.9) == after.rate
    assert T == after.cut_at


@pytest.mark.parametrize(
    ("rate", "elapsed", "expected_rate"),
    [
        pytest.param(5.0, 1.0, 5.5, id="one-second"),
        pytest.param(5.0, 2.0, 6.05, id="compounds"),
        pytest.param(5.0, 0.5, 5.0 * 1.1**0.5, id="fraction-of-a-second"),
        pytest.param(9.9, 1.0, 10.0, id="capped-at-ceiling"),
        pytest.param(1.0, 100.0, 10.0, id="long-quiet-spell-capped"),
        pytest.param(5.0, 0.0, 5.0, id="no-time-no-growth"),
    ],
)
def test_an_ok_answer_grows_a_throttled_rate_towards_the_ceiling(
    rate: float, elapsed: float, expected_rate: float
) -> None:
    state = PaceState(ceiling=10.0, rate=rate, updated_at=T)
    after = answer(state, pushback=False, now=T + elapsed)
    assert pytest.approx(expected_rate) == after.rate
    assert T + elapsed == after.updated_at


def test_an_ok_answer_with_a_clock_going_backwards_does_not_shrink_the_rate() -> None:
    state = PaceState(ceiling=10.0, rate=5.0, updated_at=T)
    assert 5.0 == answer(state, pushback=False, now=T - 3).rate


def test_ok_answers_decay_the_share() -> None:
    state = PaceState(ceiling=10.0, rate=10.0, share=0.08)
    after = answer(state, pushback=False)
    assert pytest.approx(0.076) == after.share


@pytest.mark.parametrize(
    ("paused_until", "retry_after", "expected_paused_until"),
    [
        pytest.param(float("-inf"), 30.0, T + 30.0, id="cut-with-retry-after-pauses"),
        pytest.param(float("-inf"), None, float("-inf"), id="cut-without-retry-after"),
        pytest.param(T + 60.0, 30.0, T + 60.0, id="a-shorter-pause-never-shortens"),
        pytest.param(T + 10.0, 30.0, T + 30.0, id="a-longer-pause-extends"),
    ],
)
def test_a_retry_after_that_comes_with_a_cut_pauses_everybody(
    paused_until: float, retry_after: float | None, expected_paused_until: float
) -> None:
    state = PaceState(ceiling=10.0, rate=10.0, share=0.2, paused_until=paused_until)
    after = answer(state, pushback=True, accepted_rate=5.0, retry_after=retry_after)
    assert T == after.cut_at
    assert expected_paused_until == after.paused_until


def test_a_cut_never_raises_the_rate_above_the_ceiling() -> None:
    # `--rate 0.1` is a valid setting (minimum 0.001); a cut must not set 0.2 > ceiling.
    state = PaceState(ceiling=0.1, rate=0.1, share=0.5)
    after = answer(state, pushback=True, accepted_rate=0.1)
    assert after.rate <= 0.1


# -- Pacer (async, fake clock) -----------------------------------------------------------------


class FakeTime:
    """A clock and a sleep that moves it: the whole of time for a Pacer under test."""

    def __init__(self, start: float = T) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.during_sleep: list[object] = []  # callables run once, inside the next sleep

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds
        while self.during_sleep:
            action = self.during_sleep.pop(0)
            assert callable(action)
            action()


def pacer(ceiling: float, fake: FakeTime) -> Pacer:
    return Pacer(ceiling, clock=fake, sleep=fake.sleep)


@pytest.mark.asyncio
async def test_an_unthrottled_pacer_never_sleeps_within_its_burst() -> None:
    fake = FakeTime()
    gate = Pacer(10.0, clock=fake, sleep=fake.sleep, burst=50)
    sent = [await gate.wait_turn() for _ in range(50)]
    assert [] == fake.sleeps
    assert [T] * 50 == sent


@pytest.mark.asyncio
@pytest.mark.parametrize("rate", [0.5, 2.0, 8.0])
async def test_a_throttled_pacer_spaces_callers_one_over_rate_apart(rate: float) -> None:
    fake = FakeTime()
    gate = pacer(10.0, fake)
    gate.state = PaceState(ceiling=10.0, rate=rate, updated_at=T)
    sent = [await gate.wait_turn() for _ in range(6)]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert T == sent[0]
    assert [pytest.approx(1.0 / rate)] * 5 == gaps


@pytest.mark.asyncio
async def test_a_pause_delays_everyone_until_paused_until() -> None:
    fake = FakeTime()
    gate = Pacer(10.0, clock=fake, sleep=fake.sleep, burst=3)
    gate.state = PaceState(ceiling=10.0, rate=10.0, paused_until=T + 30.0, updated_at=T)
    sent = [await gate.wait_turn() for _ in range(3)]
    assert [T + 30.0] * 3 == sent
    assert [30.0] == fake.sleeps


@pytest.mark.asyncio
async def test_a_throttled_pause_releases_callers_spaced_after_it() -> None:
    fake = FakeTime()
    gate = pacer(10.0, fake)
    gate.state = PaceState(ceiling=10.0, rate=2.0, paused_until=T + 30.0, updated_at=T)
    sent = [await gate.wait_turn() for _ in range(3)]
    assert [T + 30.0, T + 30.5, T + 31.0] == sent


@pytest.mark.asyncio
async def test_a_pause_that_starts_while_waiting_queues_the_caller_behind_it() -> None:
    fake = FakeTime()
    gate = pacer(10.0, fake)
    gate.state = PaceState(ceiling=10.0, rate=1.0, updated_at=T)
    assert T == await gate.wait_turn()  # takes the first slot; the next one is at T + 1

    def another_worker_gets_a_retry_after() -> None:
        gate.answered(sent_at=T + 0.5, pushback=True, retry_after=20.0)

    gate.state = PaceState(ceiling=10.0, rate=1.0, share=0.5, updated_at=T)
    fake.during_sleep.append(another_worker_gets_a_retry_after)
    sent = await gate.wait_turn()
    assert T + 21.0 == gate.state.paused_until  # the answer came at T + 1, asking for 20 s
    assert T + 21.0 == sent


@pytest.mark.asyncio
async def test_answered_cuts_blind_first_then_to_the_goodput_since_refusals_began() -> None:
    fake = FakeTime()
    gate = pacer(100.0, fake)
    for n in range(20):  # a burst the server's bucket takes whole
        fake.now = T + n * 0.001
        gate.answered(sent_at=fake.now, pushback=False, retry_after=None)
    for _ in range(3):  # refusals begin: too recent to measure, so a blind halving
        gate.answered(sent_at=fake.now, pushback=True, retry_after=None)
    assert (1, 50.0) == (gate.cuts, gate.state.rate)
    start = fake.now
    for n in range(1, 41):  # 0.4 s more: the bucket now takes 20/s, refuses the rest
        fake.now = start + n * 0.01
        gate.answered(sent_at=fake.now, pushback=n % 5 != 0, retry_after=None)
    # One blind cut, then measured ones (the estimate wobbles as answers trickle in).
    assert 2 <= gate.cuts <= 8
    assert 13 <= gate.state.rate <= 24  # 90% of the ~20/s accepted while refusing


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("capacity", "ceiling"),
    [
        pytest.param(5, 50.0, id="capacity-5-asked-50"),
        pytest.param(20, 40.0, id="capacity-20-asked-40"),
        pytest.param(50, 500.0, id="capacity-50-asked-500"),
    ],
)
async def test_the_rate_settles_near_a_servers_capacity(capacity: int, ceiling: float) -> None:
    """One sender through the pacer, the user's ceiling enforced between sends (the limiter's
    job), a server accepting at most ``capacity`` requests in any one-second window."""
    fake = FakeTime()
    gate = pacer(ceiling, fake)
    accepted: deque[float] = deque()
    sent: list[float] = []
    while fake.now < T + 90:
        sent_at = await gate.wait_turn()
        sent.append(sent_at)
        while accepted and accepted[0] <= sent_at - 1.0:
            accepted.popleft()
        ok = len(accepted) < capacity
        if ok:
            accepted.append(sent_at)
        gate.answered(sent_at=sent_at, pushback=not ok, retry_after=None)
        fake.now = max(fake.now, sent_at + 1.0 / ceiling)
    settled = sum(1 for moment in sent if moment >= T + 30) / 60.0
    assert 0.8 * capacity <= settled <= 1.2 * capacity
    assert gate.cuts >= 1


def test_the_burst_a_bucket_allowed_before_refusing_does_not_inflate_the_cut() -> None:
    """A server taking 500/s after a 1-s burst credit, a client asking 5,000/s: the cut must
    land near 450/s (90% of the refill rate seen while refusing), not near the inflated
    rate the first second's accepted answers would suggest."""
    clock = [0.0]
    gate = Pacer(5000.0, clock=lambda: clock[0])
    for n in range(500):  # the bucket's credit: 500 accepted in 0.1 s
        clock[0] = n * 0.0002
        gate.answered(sent_at=clock[0], pushback=False, retry_after=None)
    refusing_from = clock[0]
    for n in range(1, 1001):  # then 1 in 10 accepted at 5,000/s: 500/s
        clock[0] = refusing_from + n * 0.0002
        gate.answered(sent_at=clock[0], pushback=n % 10 != 0, retry_after=None)
    assert 400 <= gate.state.rate <= 500


# -- the sync fast path: calm and free_now ----------------------------------------------------


def test_a_fresh_pacer_is_calm_and_lets_a_caller_go_at_once() -> None:
    gate = pacer(10.0, FakeTime())
    assert gate.calm
    assert T == gate.free_now()


def test_pushback_ends_calm_and_callers_must_queue_through_wait_turn() -> None:
    gate = pacer(10.0, FakeTime())
    gate.answered(sent_at=T, pushback=True, retry_after=None)
    assert not gate.calm
    assert gate.free_now() is None


def test_a_pause_or_a_reserved_slot_ahead_sends_callers_through_wait_turn() -> None:
    gate = pacer(10.0, FakeTime())
    gate.state = PaceState(ceiling=10.0, rate=10.0, paused_until=T + 5.0, updated_at=T)
    assert gate.calm  # full rate, no refusals...
    assert gate.free_now() is None  # ...but nobody may send before the pause ends


def test_a_throttled_state_is_not_calm_however_it_was_set() -> None:
    gate = pacer(10.0, FakeTime())
    gate.state = PaceState(ceiling=10.0, rate=4.0, updated_at=T)
    assert not gate.calm
    gate.state = PaceState(ceiling=10.0, rate=10.0, updated_at=T)
    assert gate.calm


def test_calm_returns_once_the_refusals_are_over_and_the_rate_is_back() -> None:
    fake = FakeTime()
    gate = pacer(10.0, fake)
    gate.answered(sent_at=T, pushback=True, retry_after=None)
    for step in range(1, 2000):  # accepted answers, 10 ms apart: 20 s of good news
        fake.now = T + step * 0.01
        gate.answered(sent_at=fake.now, pushback=False, retry_after=None)
        if gate.calm:
            break
    assert gate.calm
    assert fake.now == gate.free_now()
    assert gate.state.rate == gate.state.ceiling


# -- the ceiling: a token bucket of `burst` requests at `rate` --------------------------------


async def take(gate: Pacer) -> float:
    """What a worker does for each attempt."""
    sent = gate.free_now()
    return sent if sent is not None else await gate.wait_turn()


@pytest.mark.asyncio
async def test_a_burst_goes_at_once_then_requests_are_spaced_at_the_rate() -> None:
    fake = FakeTime()
    gate = Pacer(10.0, clock=fake, sleep=fake.sleep, burst=4)
    sent = [await take(gate) for _ in range(8)]
    assert [T] * 4 == sent[:4]
    assert [pytest.approx(T + 0.1 * n) for n in range(1, 5)] == sent[4:]


@pytest.mark.asyncio
async def test_burst_one_spaces_every_request() -> None:
    fake = FakeTime()
    gate = Pacer(50.0, clock=fake, sleep=fake.sleep, burst=1)
    sent = [await take(gate) for _ in range(5)]
    assert [pytest.approx(T + 0.02 * n) for n in range(5)] == sent


@pytest.mark.asyncio
async def test_a_late_wake_up_does_not_lower_the_rate() -> None:
    """Slots are reserved: a waiter woken late does not push the next slot back."""
    fake = FakeTime()
    gate = Pacer(100.0, clock=fake, sleep=fake.sleep, burst=1)
    real_sleep = fake.sleep

    async def late_sleep(seconds: float) -> None:
        await real_sleep(seconds + 0.004)  # every wake-up 4 ms late (a busy loop)

    gate._sleep = late_sleep
    sent = [await take(gate) for _ in range(101)]
    assert pytest.approx(1.0, abs=0.01) == sent[-1] - sent[0]  # 100 intervals of 10 ms


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([5.0, 100.0, 1000.0]),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=0.05), min_size=1, max_size=120),
)
@pytest.mark.asyncio
async def test_no_span_ever_holds_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, gaps: list[float]
) -> None:
    fake = FakeTime()
    gate = Pacer(rate, clock=fake, sleep=fake.sleep, burst=burst)
    sent: list[float] = []
    for gap in gaps:  # callers arrive after these gaps, however the clock has moved since
        fake.now += gap
        sent.append(await take(gate))
    assert sent == sorted(sent)
    for i, j in itertools.combinations(range(len(sent)), 2):
        # j - i + 1 requests left within sent[j] - sent[i] seconds (give or take a nanosecond)
        assert sent[j] - sent[i] >= (j - i + 1 - burst) / rate - 1e-8


def test_a_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Pacer(10.0, burst=0)
