"""Shared pacing: the controller (``PaceController``, driven by hand with explicit times) and
the async gate (``Pacer``, on a fake clock whose sleep only moves time forward). No real time
passes in this file; tests/test_pacing_sim.py runs the same code against whole server models."""

from __future__ import annotations

import itertools
import math
import random

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulktag.pacing import (
    Delays,
    Mode,
    PaceController,
    Pacer,
    PacingPolicy,
    RefusedSeconds,
    Sample,
    Signal,
    describe,
    limit_fits_better,
)

POLICY = PacingPolicy()
T = 1000.0


def answers(
    control: PaceController,
    start: float,
    seconds: float,
    rate: float,
    refused: float,
    *,
    retry_after: float | None = None,
) -> float:
    """Answers at ``rate`` per second for ``seconds``, the given share of them refused (spread
    evenly), each answered as it leaves, until the controller changes its rate or mode (the
    caller then sends at the new rate). Returns the time after the last one."""
    count = round(seconds * rate)
    debt = 0.0
    now = start
    before = (control.rate, control.mode)
    for n in range(count):
        if (control.rate, control.mode) != before:
            break
        now = start + n / rate
        debt += refused
        signal = Signal.ACCEPTED
        if debt >= 1.0 - 1e-9:
            debt -= 1.0
            signal = Signal.REFUSED
        control.observe(now, now, signal, retry_after if signal is Signal.REFUSED else None)
    return now + 1 / rate


# -- the controller --------------------------------------------------------------------------


def test_a_fresh_controller_is_calm_at_the_ceiling() -> None:
    control = PaceController(100.0, POLICY, T)
    assert (True, 100.0, Mode.CRUISE) == (control.calm, control.rate, control.mode)


def test_an_isolated_refusal_among_many_accepted_answers_changes_nothing() -> None:
    control = PaceController(100.0, POLICY, T)
    now = answers(control, T, 5.0, 100.0, refused=0.02)  # one in fifty: noise
    assert 100.0 == control.rate
    assert 0 == control.cuts
    answers(control, now, 1.0, 100.0, refused=0.0)
    assert control.calm


def test_refusals_above_the_noise_cut_the_rate_and_test_the_cut() -> None:
    control = PaceController(1000.0, POLICY, T)
    answers(control, T, 0.5, 1000.0, refused=0.4)  # a 600/s limit asked 1000/s
    assert 1 <= control.cuts
    assert Mode.TESTING == control.mode
    assert control.rate <= 0.85 * 1000.0


def test_a_capacity_that_drops_is_followed_by_what_gets_in_not_by_15_percent_steps() -> None:
    """200/s held clean, then the limit drops to 60/s. The horizon still remembers 200/s, so
    cuts measured over it are 15 % steps, five of them over 1.1 s, each an experiment whose
    two hypotheses differ by less than a window's noise (real time: one run in four read
    one as "not about the rate", and refused 13-14 %). A cut's window measures what gets in
    now: two cuts, 0.4 s."""
    control = PaceController(1000.0, POLICY, T)
    control.rate = control.good = 200.0
    now = T
    for _ in range(2):
        now = answers(control, now, 1.2, 200.0, refused=0.0)
        control.rate = control.good = 200.0  # no probe: the limit is 200/s
    dropped = now
    while control.rate > 1.1 * 60.0 and now - dropped < 5.0:
        rate = control.rate
        now = answers(control, now, 0.6, rate, refused=max(0.0, 1.0 - 60.0 / rate))
    assert now - dropped < 0.6
    assert 0.0 == control.independent


def test_a_pace_over_twice_what_gets_in_goes_under_it_before_the_window_ends() -> None:
    """A 200/s bucket with a burst of 20, asked 1,000/s: the burst is not read as capacity,
    and the cut comes after 32 answers past the first refusal, not after the window's 0.2 s
    (160 refusals)."""
    control = PaceController(1000.0, POLICY, T)
    for n in range(20):
        control.observe(T + n / 1000, T + n / 1000, Signal.ACCEPTED)
    now = answers(control, T + 0.02, 0.5, 1000.0, refused=0.8)
    assert now - T < 0.1
    assert (1, Mode.CRUISE, True) == (control.cuts, control.mode, control.rate_related)
    assert 0.95 * 200 * 0.9 <= control.rate <= 200.0


def test_failures_after_a_refusal_are_not_read_as_a_pace_over_twice_the_clouds() -> None:
    """502s and timeouts say nothing of the rate: after one refusal, three failures to every
    accepted answer are not "over half refused", and no early cut follows."""
    control = PaceController(1000.0, POLICY, T)
    now = answers(control, T, 0.005, 1000.0, refused=0.0)
    control.observe(now, now, Signal.REFUSED)
    for n in range(48):
        now += 0.001
        signal = Signal.ACCEPTED if n % 4 == 3 else Signal.FAILED
        control.observe(now, now, signal)
    assert (Mode.CRUISE, 1000.0) == (control.mode, control.rate)


def test_a_cut_that_makes_the_refusals_stop_confirms_a_capacity() -> None:
    control = PaceController(400.0, POLICY, T)
    now = answers(control, T, 0.3, 400.0, refused=0.5)  # 200 of 400/s got in
    assert Mode.TESTING == control.mode
    answers(control, now, 1.0, control.rate, refused=0.0)  # slower: everything gets in
    assert Mode.CRUISE == control.mode
    assert control.rate_related
    assert control.capacity is not None
    assert 150.0 <= control.capacity <= 250.0
    assert control.rate <= 0.95 * 250.0


def test_a_share_that_does_not_fall_with_the_rate_is_learned_and_the_rate_goes_back() -> None:
    control = PaceController(300.0, POLICY, T)
    now = answers(control, T, 0.3, 300.0, refused=0.3)
    assert Mode.TESTING == control.mode
    now = answers(control, now, 0.5, control.rate, refused=0.3)  # the same share, slower
    assert Mode.VERIFYING == control.mode
    assert 300.0 == control.rate  # back up, to check the accepted rate rises with it
    answers(control, now, 0.5, 300.0, refused=0.3)
    assert Mode.CRUISE == control.mode
    assert 300.0 == control.rate
    assert 0.3 == pytest.approx(control.independent, abs=0.05)
    assert not control.rate_related


def test_an_experiments_step_is_judged_on_its_windows_share_not_the_part_after_a_refusal() -> None:
    """A window of an experiment whose refusals came late in it (luck, at a share that does
    not depend on the rate): 17 % refused whole, 42 % after its first refusal. Stored at 42 %,
    the next step's 25 % read as the fall a limit makes and the run cut on (to 108/s here;
    in real time the 100-ms model, restored to 207/s where it could go at 300, got 243-252
    requests/s of 300). Stored at its own 17 %, the share stays, and the run goes back."""
    control = PaceController(300.0, POLICY, T)
    now = answers(control, T, 0.3, 300.0, refused=0.4)
    assert Mode.TESTING == control.mode
    tested = control.rate
    late = [
        Signal.REFUSED if k * 12 // 29 != (k + 1) * 12 // 29 else Signal.ACCEPTED for k in range(29)
    ]
    for n, signal in enumerate([Signal.ACCEPTED] * 40 + late):  # 12 of 69 refused, all late
        sent = now + n / (2 * tested)
        control.observe(sent, sent, signal)
        if control.rate != tested:
            break
    assert (Mode.TESTING, True) == (control.mode, control.rate < tested)  # fell: cut again
    answers(control, sent, 0.5, control.rate, refused=0.25)
    assert (Mode.VERIFYING, 300.0) == (control.mode, control.rate)


def test_a_share_that_no_limit_under_the_cut_explains_is_not_read_as_a_limits_fall() -> None:
    """30 % refused at 300/s, cut to what got in (200/s), 15 % there, cut again, 15 % again.
    Step by step, on the midpoint between the two predictions, the first 15 % read as a
    limit's fall (a limit that let 210/s in at 300/s refuses nothing at 200/s, and 15 % is
    nearer 0 % than 30 %), the second as a share that stayed, and the run was restored to
    200/s (a flaky 30 % backend served in 150 ms, simulated: to 145/s, not 300/s, and back
    17 s later). Taken together, no limit explains refusals at 162/s and 200/s alike and
    30 % at 300/s: back to 300/s."""
    control = PaceController(300.0, POLICY, T)
    now = answers(control, T, 0.3, 300.0, refused=0.3)
    assert (Mode.TESTING, 200.0) == (control.mode, round(control.rate))
    now = answers(control, now, 0.5, control.rate, refused=0.15)
    assert (Mode.TESTING, True) == (control.mode, control.rate < 200.0)
    answers(control, now, 0.5, control.rate, refused=0.15)
    assert (Mode.VERIFYING, 300.0) == (control.mode, control.rate)


@pytest.mark.parametrize(
    ("samples", "limit"),
    [
        # A limit of 200/s: a third refused at 300/s, none at 190/s.
        ([(300, 1 / 3, 32), (190, 0.0, 32)], True),
        # 18 % at 255/s is what a limit taking 210/s of 300/s refuses there.
        ([(300, 0.3, 32), (255, 0.18, 32)], True),
        # The same share at both, 15 % apart, in 32 answers each: too little to be sure it
        # is not a limit (LIMIT_FAVOURED); in 256 each, enough.
        ([(300, 0.3, 32), (255, 0.3, 32)], True),
        ([(300, 0.3, 256), (255, 0.3, 256)], False),
        # 16 % at 145/s: a limit that refuses any there let < 122/s in, so refuses over
        # half at 300/s, where a third was refused.
        ([(300, 1 / 3, 32), (145, 0.16, 32)], False),
        # A window that read high by luck (9 answers), a long-known 19 % and 28 % after the
        # cut: regression to the mean, not a limit.
        ([(300, 0.19, 128), (300, 2 / 3, 9), (255, 0.28, 32)], False),
    ],
)
def test_a_limit_is_told_from_a_steady_share_by_which_fits_the_samples_better(
    samples: list[tuple[float, float, int]], limit: bool
) -> None:
    assert limit == limit_fits_better([Sample(*sample) for sample in samples])


@given(
    capacity=st.floats(5.0, 5000.0),
    over=st.lists(st.floats(1.2, 4.0), min_size=1, max_size=3),
    under=st.floats(0.5, 0.95),
    answers=st.integers(32, 400),
)
def test_shares_exactly_as_a_limit_makes_them_fit_a_limit(
    capacity: float, over: list[float], under: float, answers: int
) -> None:
    """At each pace over a limit, 1 − capacity ÷ pace refused; none under it."""
    samples = [Sample(capacity * k, 1.0 - 1.0 / k, answers) for k in sorted(over, reverse=True)]
    samples.append(Sample(capacity * under, 0.0, answers))
    assert limit_fits_better(samples)


@given(
    share=st.floats(0.05, 0.8),
    pace=st.floats(5.0, 5000.0),
    cuts=st.lists(st.floats(0.3, 0.7), min_size=1, max_size=3),
    answers=st.integers(400, 1000),
)
def test_one_share_at_every_pace_does_not_fit_a_limit(
    share: float, pace: float, cuts: list[float], answers: int
) -> None:
    """The same share refused at paces a third apart or more, in 400 answers each at least:
    not about the rate. (Where most is refused, a limit's fall is small too: at 89 %
    refused, half the pace makes 78 %, and 128 answers each do not tell them apart.)"""
    paces = [pace * math.prod(cuts[:n]) for n in range(len(cuts) + 1)]
    assert not limit_fits_better([Sample(rate, share, answers) for rate in paces])


@given(
    st.lists(
        st.tuples(st.floats(0.2, 1e5), st.floats(0.0, 1.0), st.integers(0, 10_000)),
        min_size=1,
        max_size=6,
    )
)
def test_the_verdict_is_reached_for_any_samples(samples: list[tuple[float, float, int]]) -> None:
    """Nothing refused, everything refused, empty windows, paces far apart: a verdict, never
    a division by zero or a log of zero (the fits clamp their shares; the accepted rate is
    bisected inside the paces). And more of the same evidence never turns "not about the
    rate" into "a limit": the likelihoods grow with the answers, the lean to a limit does
    not."""
    verdict = limit_fits_better([Sample(*sample) for sample in samples])
    assert verdict in (True, False)
    more = limit_fits_better([Sample(rate, share, 4 * n) for rate, share, n in samples])
    assert verdict or not more


def test_a_share_steady_under_a_lucky_then_an_unlucky_window_goes_back_to_the_first_pace() -> None:
    """A backend refusing 30 % at any rate, whose next windows read 15 % (luck: read as a fall,
    so the run cuts again) and 50 % (luck the other way: risen, cut again), then 28 %. Every
    step the share now stands at, not fallen from, was one it holds at any rate: back to the
    first, the run's pace, not to the last step, which left the run to climb back by probes
    (a seeded 30 % server in real time: 199-236 requests/s of 300 in 3 of 10 runs)."""
    control = PaceController(300.0, POLICY, T)
    now = answers(control, T, 0.3, 300.0, refused=0.3)
    assert Mode.TESTING == control.mode
    cut = control.rate
    now = answers(control, now, 0.5, cut, refused=0.15)
    assert (Mode.TESTING, True) == (control.mode, control.rate < cut)
    cut = control.rate
    now = answers(control, now, 0.5, cut, refused=0.5)
    assert (Mode.TESTING, True) == (control.mode, control.rate < cut)
    answers(control, now, 0.5, control.rate, refused=0.28)
    assert (Mode.VERIFYING, 300.0) == (control.mode, control.rate)


def test_a_share_that_rose_as_the_pace_fell_marks_a_change_in_the_cloud() -> None:
    """A run at its limit alone (7 % refused at 200/s) that a second run joins in the middle
    of its experiment: 33 % refused after its cut (the newcomer's flood), then 6 % after the
    next. Neither hypothesis lets the share rise as the pace falls, so the first step is from
    another cloud; the two since fit a limit, and the run stays under it. Judged with the
    first, the three fit no limit: the run went back to 200/s and took the newcomer's share
    (VERIFYING there)."""
    control = PaceController(200.0, POLICY, T)
    now = answers(control, T, 0.5, 200.0, refused=0.07)
    assert Mode.TESTING == control.mode
    now = answers(control, now, 0.5, control.rate, refused=0.33)
    assert Mode.TESTING == control.mode
    third = control.rate
    answers(control, now, 0.5, third, refused=0.06)
    assert Mode.VERIFYING != control.mode
    assert control.rate <= third


def test_a_share_that_rose_after_a_cut_is_not_read_as_one_the_pace_does_not_change() -> None:
    """Two runs that joined one limit a moment apart: one read 27 % refused at 190/s, cut,
    and read 41 % at 146/s as the other's flood came in whole. A rise too small to mark a
    change in the cloud (1.7 standard deviations), but no limit explains it either, so the
    two steps fit "not about the rate" best: both runs went back up at once and flooded the
    limit, 25-50 % refused for 8 s, until the wall clock's 10-s mark dipped both (in real
    time). A share that rose since a step does not send the run back to it: cutting goes on,
    and the next step tells."""
    control = PaceController(190.0, POLICY, T)
    now = answers(control, T, 0.5, 190.0, refused=0.27)
    assert Mode.TESTING == control.mode
    cut = control.rate
    answers(control, now, 0.5, cut, refused=0.41)
    assert (Mode.TESTING, True) == (control.mode, control.rate < cut)


def _first_dip(control: PaceController, now: float, until: float, share: float) -> float:
    """Answers at the pace with ``share`` refused at any rate until the controller dips under
    it to check that share (RECHECKING); returns when, on its own clock."""
    while control.mode is not Mode.RECHECKING:
        assert now < until, "no dip"
        now = answers(control, now, 0.25, control.rate, refused=share)
    return now


def test_runs_that_started_apart_dip_together_on_the_wall_clocks_marks() -> None:
    """Two runs sharing a limit that either alone fills: a dip by one is filled by the other,
    so the dips must coincide. Started 2.5 s apart, one on a clock 500 s behind the wall.
    A fifth refused: a share under a quarter waits for the 10-s marks (see the next test)."""
    first = PaceController(300.0, POLICY, 1003.7)  # its clock is the wall clock
    second = PaceController(300.0, POLICY, 501.2, wall_offset=500.0)  # started at 1001.2
    first_dip = _first_dip(first, 1003.7, 1040.0, share=0.2)
    second_dip = _first_dip(second, 501.2, 540.0, share=0.2) + 500.0
    assert 0.2 == pytest.approx(first.independent, abs=0.05)  # the share was learned first
    assert 1010.0 <= first_dip < 1010.5
    assert 1010.0 <= second_dip < 1010.5


def _after_the_dip(control: PaceController, now: float, share: float) -> float:
    while control.mode is Mode.RECHECKING:
        now = answers(control, now, 0.25, control.rate, refused=share)
    return now


def test_a_large_rate_independent_share_is_checked_within_seconds_of_its_finding() -> None:
    """A share of a quarter or more, found by an experiment of a few dozen answers, may be
    two runs flooding one limit (each cut while the other did not): the first dip comes at a
    2-s mark, about a second after the finding, not at the next 10-s mark (6.1 and 8.6 s after
    these two runs' findings; a flood refuses 30-70 % meanwhile). The dips after it keep to
    the 10-s marks, where runs started apart meet."""
    first = PaceController(300.0, POLICY, 1003.7)
    second = PaceController(300.0, POLICY, 501.2, wall_offset=500.0)
    first_dip = _first_dip(first, 1003.7, 1040.0, share=0.3)
    second_dip = _first_dip(second, 501.2, 540.0, share=0.3) + 500.0
    assert 0.3 == pytest.approx(first.independent, abs=0.05)
    assert first_dip < 1005.5
    assert second_dip < 1003.0
    later = _after_the_dip(first, first_dip, 0.3)
    assert 1010.0 <= _first_dip(first, later, 1040.0, share=0.3) < 1010.5
    later = _after_the_dip(second, second_dip - 500.0, 0.3)
    assert 1010.0 <= _first_dip(second, later, 540.0, share=0.3) + 500.0 < 1010.5


def test_a_dip_under_a_large_rate_independent_share_goes_under_what_gets_in() -> None:
    """Two runs flooding one limit each read 70-80 % refused and take it for the backend's.
    Dipping to half of each pace leaves the two well over the limit, and the share hardly
    falls: the dip goes under what gets in, (1 − share) × 0.9 of the pace."""
    control = PaceController(400.0, POLICY, T)
    now, pace = T, control.rate
    while control.mode is not Mode.RECHECKING:
        assert now < T + 20.0, "no dip"
        pace = control.rate
        now = answers(control, now, 0.25, pace, refused=0.75)
    assert control.independent >= 0.7
    assert 0.9 * 0.2 * pace <= control.rate <= 0.9 * 0.3 * pace


def test_a_dip_after_a_window_that_read_high_by_luck_does_not_find_a_limit() -> None:
    """A backend refusing 30 % at any rate: the window before a dip reads 42 % (luck, at
    sixty answers), the dip's 20 % (luck the other way). Judged against that one window, the
    share "fell" and the run was cut to under what got in, for good: in the simulator one
    dip in ten against flaky backends did so. Judged against the share known before, pooled
    with that window, and with the noise of both, it stayed: back to the pace."""
    control = PaceController(300.0, POLICY, T)
    now = answers(control, T, 0.3, 300.0, refused=0.3)
    now = answers(control, now, 0.5, control.rate, refused=0.3)
    now = answers(control, now, 0.5, 300.0, refused=0.3)
    assert 0.3 == pytest.approx(control.independent, abs=0.05)
    while now < T + 9.8:  # the dip is due at the wall clock's 10-s mark
        now = answers(control, now, 0.2, control.rate, refused=0.3)
    while control.mode is not Mode.RECHECKING:
        assert now < T + 11.0, "no dip"
        now = answers(control, now, 0.2, control.rate, refused=0.42)
    pace, cuts = control.rate, control.cuts
    while control.mode is Mode.RECHECKING:
        now = answers(control, now, 0.2, control.rate, refused=0.2)
    assert (Mode.CRUISE, cuts) == (control.mode, control.cuts)
    assert not control.rate_related
    assert control.rate > pace  # back up


def test_going_back_up_without_more_getting_in_is_a_limit_after_all() -> None:
    """The share looked steady while the rate fell (a limit moved during the test); back at
    the old rate, no more got in than at the tested one: a limit, paced under."""
    control = PaceController(300.0, POLICY, T)
    now = answers(control, T, 0.3, 300.0, refused=0.3)
    tested = control.rate
    now = answers(control, now, 0.5, tested, refused=0.3)
    assert Mode.VERIFYING == control.mode
    in_at_test = 0.7 * tested
    answers(control, now, 0.5, 300.0, refused=1 - in_at_test / 300.0)  # no more got in
    assert Mode.CRUISE == control.mode
    assert control.rate_related
    assert control.rate <= 0.96 * in_at_test
    assert 0.0 == control.independent


def test_going_back_up_where_nothing_gets_in_any_more_halves_the_pace() -> None:
    """The verdict of the window back at the restored pace, a limit after all, paces under
    what that window got in. Where it got nothing in (a queue the flood filled has not
    drained yet), that read 0/s: the run went to its floor, 0.2/s, whose probes come every
    160 s (a queueing server with answers after 50 ms: 21/s of its 200/s for four minutes,
    simulated). Too few in to measure by: halve, as a cut does."""
    control = PaceController(300.0, POLICY, T)
    now = answers(control, T, 0.3, 300.0, refused=0.3)
    now = answers(control, now, 0.5, control.rate, refused=0.3)
    assert Mode.VERIFYING == control.mode
    for n in range(3 * POLICY.test_answers):  # retries of refused rows: one in 20 gets in
        sent = now + n / 300.0
        control.observe(sent, sent, Signal.ACCEPTED if n % 20 == 19 else Signal.REFUSED,
                        fresh=False)  # fmt: skip
    assert (Mode.CRUISE, True) == (control.mode, control.rate_related)
    assert control.rate == pytest.approx(150.0)


def test_a_pace_the_run_does_not_fill_is_not_probed_above() -> None:
    """Something other than the pace held the sends back (a cap on requests in flight, too
    few workers, a slow input): a clean second says nothing of the pace, and probes would
    raise it, untested, up to --rate (RFC 7661). Probes wait until the run sends at the pace
    again, from when it does, however long it did not."""
    control = PaceController(1000.0, POLICY, T)
    control.rate = control.good = 200.0
    now = T
    for _ in range(5):  # five seconds at 150/s: three quarters of the pace
        now = answers(control, now, 1.0, 150.0, refused=0.0)
    assert 200.0 == control.rate
    now += 10.0  # nothing sent for ten seconds (the input stalled)
    answers(control, now, 1.2, 200.0, refused=0.0)  # at the pace again: a probe
    assert control.rate > 200.0


def test_a_streak_of_refusals_holds_back_to_a_trickle_and_the_first_accepted_resumes() -> None:
    control = PaceController(1000.0, POLICY, T)
    now = answers(control, T, 0.2, 1000.0, refused=0.0)  # a window's quota: 200 in 0.2 s
    for n in range(POLICY.quick_refusals):
        control.observe(now + n * 0.001, now + n * 0.001, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode
    assert control.refusing_all
    assert control.rate <= 1000.0 * POLICY.held_back_rate_share
    control.observe(now + 0.8, now + 0.8, Signal.ACCEPTED)  # the next window opens
    assert Mode.CRUISE == control.mode
    assert 0.95 * 500.0 <= control.rate <= 1000.0  # the pace from before


def test_refusals_of_requests_sent_before_the_pace_resumed_do_not_hold_it_back_again() -> None:
    """Requests in flight when the pace resumes left at the pace that spent the window; their
    refusals, answered after the resume, say nothing against the resumed pace (real servers
    answer tens of milliseconds late, so a streak of them follows every resume)."""
    control = PaceController(1000.0, POLICY, T)
    now = answers(control, T, 0.2, 1000.0, refused=0.0)
    for n in range(POLICY.quick_refusals):
        control.observe(now + n * 0.001, now + n * 0.001, Signal.REFUSED)
    resumed_at = now + 0.3
    control.observe(resumed_at, resumed_at - 0.01, Signal.ACCEPTED)
    resumed = control.rate
    for n in range(4 * POLICY.quick_refusals):  # sent before the resume, answered after it
        control.observe(resumed_at + 0.001 * (n + 1), resumed_at - 0.005, Signal.REFUSED)
    assert (Mode.CRUISE, resumed) == (control.mode, control.rate)
    for n in range(45):  # sent after it: evidence again (as many as a first resume needs)
        sent = resumed_at + 0.05 + n * 0.001
        control.observe(sent, sent, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode


# When a run's first answers arrive after its first window's time (connections still opening,
# a cloud far away): a streak among them is read as one, not as the window's to judge.
LATE_FIRST = T + POLICY.window + 0.02


def held_back_at_once(control: PaceController) -> float:
    """A run's first answers, late: one accepted, then a streak; held back, it resumes at
    once on an accepted answer. Returns when it resumed."""
    control.begin(T)
    for n, signal in enumerate([Signal.ACCEPTED] + [Signal.REFUSED] * POLICY.quick_refusals):
        control.observe(LATE_FIRST + n * 0.001, T + 0.001 * n, signal)
    assert Mode.HELD_BACK == control.mode
    control.observe(LATE_FIRST + 0.03, LATE_FIRST + 0.025, Signal.ACCEPTED)
    assert Mode.CRUISE == control.mode
    return LATE_FIRST + 0.03


@pytest.mark.parametrize(
    ("got_in", "streak", "held_back"),
    [
        pytest.param(0, 10, False, id="ten-refused-at-once-are-luck"),
        pytest.param(0, 45, True, id="forty-five-are-not"),
        pytest.param(POLICY.window_answers, POLICY.quick_refusals, True,
                     id="after-a-window-got-in-five-are-a-quota-spent-again"),
    ],
)  # fmt: skip
def test_right_after_a_first_resume_a_short_streak_is_luck(
    got_in: int, streak: int, held_back: bool
) -> None:
    """The first resume's pace is a guess from the run's first tenth of a second. Two runs
    started together on one limit see 80 % refused then: five in a row are common, and one
    that held back again, to a quarter, left the other the whole limit for the rest of the
    run. A fixed window spent again comes after a window's worth got in: read at once."""
    control = PaceController(1000.0, POLICY, T)
    now = held_back_at_once(control)
    for n in range(got_in):
        control.observe(now + 0.002 * n, now + 0.002 * n, Signal.ACCEPTED)
    now += 0.002 * got_in
    for n in range(streak):
        control.observe(now + 0.002 * n, now + 0.002 * n, Signal.REFUSED)
    assert held_back == (Mode.HELD_BACK == control.mode)


def test_spent_again_in_a_runs_first_second_it_resumes_at_what_got_in_so_far() -> None:
    """Spent again 0.13 s after its first request, with 22 got in: over a full second that
    reads 22/s, and the run resumed at a quarter of its pace (62/s) where it had got 169/s in;
    sharing a limit with a run that did not hold back, it kept that share. Over the time it
    has run, it resumes near what got in."""
    control = PaceController(1000.0, POLICY, T)
    now = held_back_at_once(control)
    assert 250.0 == pytest.approx(control.rate)  # one of six got in: a quarter, at least
    for n in range(20):
        control.observe(now + 0.004 * n, now + 0.004 * n, Signal.ACCEPTED)
    now += 0.08
    for n in range(POLICY.quick_refusals):
        control.observe(now + 0.001 * n, now + 0.001 * n, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode
    control.observe(now + 0.1, now + 0.095, Signal.ACCEPTED)
    got_in = 22 / (now - 0.004 - T)
    assert 0.9 * got_in <= control.rate <= 250.0


def test_nothing_accepted_for_a_while_is_an_outage_probed_once_a_second() -> None:
    control = PaceController(200.0, POLICY, T)
    now = answers(control, T, 2.0, 200.0, refused=0.0)
    for n in range(40):
        control.observe(now + n * 0.1, now + n * 0.1, Signal.FAILED)  # connection refused
    assert POLICY.silent_rate == control.rate
    assert control.silent_for(now + 3.9) >= 3.9
    control.observe(now + 4.0, now + 4.0, Signal.ACCEPTED)
    assert 0.0 == control.silent_for(now + 4.0)
    assert control.rate >= 0.9 * 190.0  # straight back to the last good pace


def test_retry_after_on_most_refusals_while_nothing_gets_in_pauses_everyone() -> None:
    control = PaceController(100.0, POLICY, T)
    control.observe(T, T, Signal.ACCEPTED)
    now = T + POLICY.window  # past the run's first window (see the first-window tests)
    for n in range(10):
        control.observe(now + n * 0.01, now + n * 0.01, Signal.REFUSED, retry_after=7.0)
    assert now + 7.0 <= control.paused_until <= now + 7.2


def test_an_isolated_retry_after_never_pauses_the_run() -> None:
    control = PaceController(100.0, POLICY, T)
    answers(control, T, 3.0, 100.0, refused=0.02, retry_after=30.0)
    assert float("-inf") == control.paused_until


def test_rate_independent_refusals_need_a_longer_streak_to_hold_back() -> None:
    """Half refused at any rate: five refusals in a row are common, not an outage."""
    control = PaceController(300.0, POLICY, T)
    control.observe(T, T, Signal.ACCEPTED)
    control.independent = 0.5
    for n in range(10):
        control.observe(T + n * 0.003, T + n * 0.003, Signal.REFUSED)
    assert Mode.HELD_BACK != control.mode


def test_a_clean_pace_is_probed_upwards_after_a_horizon_and_taken_back_on_refusals() -> None:
    control = PaceController(1000.0, POLICY, T)
    control.rate = control.good = 100.0
    now = answers(control, T, 1.2, 100.0, refused=0.0)
    assert control.rate > 100.0  # a probe
    probed = control.rate
    answers(control, now, 1.2, probed, refused=0.03)  # it brought a few refusals
    assert 100.0 == control.rate


def test_probes_after_an_overshoot_go_at_most_half_the_way_back_to_it() -> None:
    """A binary search between the good pace and the one that brought refusals, not a step
    that grows past the overshoot again."""
    control = PaceController(1000.0, POLICY, T)
    control.rate = control.good = 100.0
    now = T
    while control.rate < 130.0:  # clean probes: 2 %, then 4× larger each time
        now = answers(control, now, 1.2, control.rate, refused=0.0)
    overshot, good = control.rate, control.good
    now = answers(control, now, 1.2, overshot, refused=0.1)  # too far
    assert good == control.rate
    for _ in range(2):
        before = control.rate
        now = answers(control, now, 1.2, control.rate, refused=0.0)
        assert before < control.rate <= (before + overshot) / 2 + 1e-9


def _clean_probe_steps(
    capacity: float | None,
    until: float,
    *,
    independent: float = 0.0,
    limit: bool = False,
    refused_lately: bool = True,
) -> list[tuple[float, float]]:
    """``(pace, step)`` of each clean probe from 190/s up to ``until``, a cut having found
    ``capacity`` (or none); with ``independent``, that share refused at every pace (a limit
    confirmed too, if ``limit``). ``refused_lately``: before each probe's answers, a late one
    to a request sent before the pace changed comes back refused, as near a limit that is
    still there (see PaceController._stale); without it, nothing is refused at all."""
    control = PaceController(1000.0, POLICY, T)
    control.rate = control.good = 190.0
    control.capacity = capacity
    control.independent, control.rate_related = independent, limit
    now, steps = T, []
    while control.rate < until and len(steps) < 12:
        before = control.rate
        if refused_lately:
            control.observe(now, control.changed_at - 0.1, Signal.REFUSED)
        now = answers(control, now, 1.2, before, refused=independent)
        steps.append((before, control.rate - before))
    return steps


def test_probes_near_a_confirmed_capacity_keep_their_first_step() -> None:
    """A bucket's burst hides a small excess over its rate for a second or two: a probe just
    over the limit reads clean, and a 4× step after it overshoots by a third. Up to 15 %
    over the capacity a cut found, each probe steps as the first does; past that, clean
    probes say the capacity grew, and the steps grow again."""
    shared = 0.25 * POLICY.probe_step * 1000.0
    steps = _clean_probe_steps(200.0, 300.0)
    plateau = [step for pace, step in steps if pace < POLICY.plateau * 200.0]
    beyond = [step for pace, step in steps if pace >= POLICY.plateau * 200.0]
    assert len(plateau) >= 4
    assert all(
        step == pytest.approx(POLICY.probe_step * pace + shared)
        for (pace, step) in steps[: len(plateau)]
    )
    assert len(beyond) >= 2
    assert beyond[1] >= 3.0 * beyond[0]
    # Without a capacity found, the second clean probe's step is already 4× the first's.
    first, second = (step for _, step in _clean_probe_steps(None, 230.0)[:2])
    assert second >= 3.5 * first


def test_probes_near_a_capacity_grow_again_once_nothing_was_refused_for_a_while() -> None:
    """The run left alone when another on the same limit finishes keeps the capacity it
    measured as its share: 2 % steps up to 1.15 × that took 10 s in a traced start. Nothing
    refused for two seconds (and 64 answers), the plateau lifts, and the steps grow from the
    first stale probe on: the second, 2.2 s into a clean stretch and still under 1.15 × the
    capacity, steps 4× the first, as the plateau's step would after a clean probe, and the
    steps after it go on growing."""
    steps = _clean_probe_steps(200.0, 300.0, refused_lately=False)
    assert all(pace < POLICY.plateau * 200.0 for pace, _ in steps[:2])
    shared = 0.25 * POLICY.probe_step * 1000.0
    first = steps[0][1]
    assert first == pytest.approx(POLICY.probe_step * 190.0 + shared)  # 1.0 s in: not stale
    assert steps[1][1] >= 3.5 * first
    assert all(later[1] >= 3.5 * first for later in steps[2:])
    assert steps[-1][1] >= 12.0 * first


def test_a_stale_pace_first_probe_steps_4x_up_to_a_quarter_of_the_pace() -> None:
    """At --rate 20000 the common step alone was 100/s: 4× it doubled a lone run's pace at its
    own 200/s limit each time it went stale (up to 5.9 % refused in the simulator, from
    2.9 %). The first stale probe steps 4× at most, and no more than a quarter of the pace.
    The common step is now figured on ``common_within`` × the most the cloud took at most
    (see the next test): at --rate 20000, 19/s here, and 4× the step is over the quarter."""

    def first_stale_step(ceiling: float) -> float:
        control = PaceController(ceiling, POLICY, T - 10.0)  # nothing refused for 10 s…
        answers(control, T - 10.0, 0.5, 1000.0, refused=0.81)  # …since 190/s got in of 1000
        control.rate = control.good = 190.0
        control.capacity = 200.0
        answers(control, T, 1.2, 190.0, refused=0.0)
        return control.rate - 190.0

    assert first_stale_step(20000.0) == pytest.approx(POLICY.stale_kick * 190.0)
    base = POLICY.probe_step * 190.0 + 0.25 * POLICY.probe_step * 600.0
    assert first_stale_step(600.0) == pytest.approx(4.0 * base)  # 4× it: under a quarter


def test_the_common_step_of_a_probe_is_bounded_by_what_the_cloud_took() -> None:
    """The part of a probe's step that runs sharing a limit have in common is figured on
    --rate, up to ``common_within`` × the most accepted/s the run saw: at --rate 20000 on a
    cloud that took 190/s, as at --rate 3800; at --rate 600, on 600."""

    def first_step(ceiling: float) -> float:
        control = PaceController(ceiling, POLICY, T)
        answers(control, T, 0.5, 1000.0, refused=0.81)  # overwhelmed: 190/s got in
        control.rate = control.good = 180.0
        control.capacity = None  # no plateau: the probes' steps grow
        answers(control, T + 0.6, 1.05, 180.0, refused=0.0)  # not stale: refused 1-2 s ago
        return control.rate - 180.0

    step = POLICY.probe_step * 180.0
    common = 0.25 * POLICY.probe_step * POLICY.common_within * 190.0
    assert first_step(20000.0) == pytest.approx(step + common, rel=0.05)
    assert first_step(600.0) == pytest.approx(step + 0.25 * POLICY.probe_step * 600.0)


def test_probes_near_a_confirmed_limit_keep_their_first_step_with_refusals_at_any_rate() -> None:
    """A run sharing a limit reads a few percent of the other run's probes as refusals not
    about the rate. Its own probes grew 4× past the limit all the same, each one refused to
    the other run, which cut itself to a few requests a second (1 of 24 long two-run starts
    in the simulator). Once a limit was confirmed, the plateau holds with such a share too;
    with refusals at any rate and no limit found, probes still grow (see _near_capacity)."""
    near_limit = _clean_probe_steps(200.0, 230.0, independent=0.05, limit=True)
    assert len(near_limit) >= 4
    assert near_limit[3][1] == pytest.approx(near_limit[0][1], rel=0.1)
    flaky = _clean_probe_steps(200.0, 230.0, independent=0.05, limit=False)
    assert flaky[1][1] >= 3.5 * flaky[0][1]


def _probe_after_a_cut(later: float) -> float:
    """200/s confirmed by a clean horizon, then cut to 60/s (a capacity that dropped); from
    ``later`` seconds after that, clean answers at 60/s until the next probe: its pace."""
    control = PaceController(1000.0, POLICY, T)
    control.rate = control.good = 200.0
    now = answers(control, T, 1.2, 200.0, refused=0.0)
    assert control.rate > 200.0  # the probe that confirmed 200/s
    control.rate = control.good = 60.0
    control.changed_at = now
    answers(control, now + later, 1.2, 60.0, refused=0.0)
    return control.rate


def test_a_clean_pace_under_a_recently_confirmed_one_probes_half_the_way_back() -> None:
    """Capacity that came back (200 → 60 → 200/s): the first probe goes to 130/s, where a
    step of 2 % growing 4× a probe takes five probes to get there."""
    assert 130.0 == pytest.approx(_probe_after_a_cut(0.0))


def test_a_pace_confirmed_over_a_minute_ago_draws_no_probe_back_to_it() -> None:
    assert _probe_after_a_cut(POLICY.peak_memory + 1.0) < 100.0  # the growing step: 84.8


def test_two_clean_halvings_say_the_capacity_rose_past_the_overshoot() -> None:
    """A limit that rose right after the overshoot (200 → 60 → 200/s): the search stops
    halving towards the old overshoot and grows again, within its five seconds."""
    control = PaceController(1000.0, POLICY, T)
    control.rate = control.good = 100.0
    now = T
    while control.rate < 130.0:
        now = answers(control, now, 1.05, control.rate, refused=0.0)
    overshot = control.rate
    now = answers(control, now, 1.05, overshot, refused=0.1)
    start = now
    while control.rate <= overshot and now - start < 10.0:
        now = answers(control, now, 1.05, control.rate, refused=0.0)
    assert control.rate > overshot
    assert now - start < 4.5  # halving until the overshoot is old took 5.1 s


def test_accepted_answers_counted_only_by_the_fast_path_are_part_of_the_share() -> None:
    """While calm the engine counts accepted answers without calling observe(); the window in
    which calm ends reads its first refusals against them too, not against the few accepted
    answers observed after it (6 refused of 146 is noise; 6 of 46 would be overload)."""
    control = PaceController(1000.0, POLICY, T)
    control.accepted_total += 100  # the fast path, at the ceiling
    now = T + 0.1
    for n in range(46):
        signal = Signal.REFUSED if n % 8 == 0 else Signal.ACCEPTED
        control.observe(now + n * 0.001, now + n * 0.001, signal)
    control.observe(now + 0.2, now + 0.2, Signal.ACCEPTED)
    assert (0, 1000.0) == (control.cuts, control.rate)


def test_a_streak_in_a_runs_first_window_does_not_hold_it_back_once_something_got_in() -> None:
    """Two runs started together at 600/s on one 200/s limit each see five in six refused at
    first, and five in a row among their first answers. The run whose streak came first held
    back, resumed on a guess while the other took the whole limit, and the split lasted (the
    smaller run got 19-32 % of the limit in 5 of 9 real-time runs). Once something got in,
    the first window is read whole: at its end, straight under what got in after the first
    refusal — a hundred a second here, as for the other run."""
    control = PaceController(600.0, POLICY, T)
    control.begin(T)
    for n in range(3):  # the bucket's burst
        control.observe(T + 0.01 + n * 0.001, T + n * 0.001, Signal.ACCEPTED)
    for n in range(130):  # then one in six gets in, the first five refused in a row
        sent = T + 0.005 + n / 600
        control.observe(sent + 0.01, sent, Signal.ACCEPTED if n % 6 == 5 else Signal.REFUSED)
        if n == 10:
            assert (Mode.CRUISE, 600.0) == (control.mode, control.rate)
        if control.cuts:
            break
    assert Mode.CRUISE == control.mode
    assert control.rate_related
    assert 0.9 * 95.0 <= control.rate <= 1.1 * 95.0


def test_nothing_got_in_five_refused_in_a_runs_first_window_still_hold_it_back() -> None:
    """An outage, or a quota already spent, when the run starts: no reason to wait out the
    window at the ceiling."""
    control = PaceController(600.0, POLICY, T)
    control.begin(T)
    for n in range(POLICY.quick_refusals):
        control.observe(T + 0.01 + n * 0.001, T + n * 0.001, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode


SERVED = 0.1  # a backend behind the gateway serves in 100 ms; the gateway refuses at once
FLAKY_START = (1, 4, 6, 9, 12)  # the requests refused among a run's first 13, at 300/s


def flaky_start(control: PaceController) -> None:
    """A run's first 13 requests at 300/s to a gateway that refuses a fifth of everything
    at once and passes the rest to a backend serving in 100 ms: the five refusals are back
    before any acceptance, a streak in arrival order, not in the order sent. Held back."""
    control.begin(T)
    for n in FLAKY_START:
        control.observe(T + n / 300 + 0.002, T + n / 300, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode


def test_a_first_streak_that_its_own_acceptances_contradict_is_undone() -> None:
    """Acceptances of requests sent among the streak's refused ones, as many as two for
    every three of those refused, say the cloud took requests all along: the hold-back was
    a misreading (TCP's undo of a spurious cut) and the run goes back to its pace. Held back
    and resumed at a quarter of --rate, such a backend was sent 81-88 % of it in the
    simulator, 58 % in real time."""
    control = PaceController(300.0, POLICY, T)
    flaky_start(control)
    # The first acceptance back answers the first request, sent before the streak began: no
    # evidence against it, so the hold-back ends as any does, at the pace it guessed.
    control.observe(T + SERVED, T, Signal.ACCEPTED)
    assert (Mode.CRUISE, 75.0, 1) == (control.mode, control.rate, control.cuts)
    for n in (2, 3, 5):  # sent between the refused ones: three of five is not enough yet
        control.observe(T + n / 300 + SERVED, T + n / 300, Signal.ACCEPTED)
        assert (75.0, 1) == (control.rate, control.cuts)
    control.observe(T + 7 / 300 + SERVED, T + 7 / 300, Signal.ACCEPTED)
    assert (Mode.CRUISE, 300.0, 300.0, 0) == (
        control.mode,
        control.rate,
        control.good,
        control.cuts,
    )
    assert not control.rate_related
    assert control.capacity is None


def test_a_runs_first_window_is_read_once_its_acceptances_can_be_back() -> None:
    """A fifth refused at once, the rest served in 75-225 ms: at 0.2 s, the first window's
    answers were every refusal and the quickest acceptances, and the time acceptances take
    over refusals was read from those quickest only. It read 37 % refused and cut the run
    to 113/s. It now lasts twice the longest an acceptance took over a refusal, and reads
    21 %: the experiment's cut, which finds the share does not fall."""
    control = PaceController(300.0, POLICY, T)
    control.begin(T)
    answers = []
    for n in range(600):
        sent = T + n / 300
        if n % 5 == 2:
            answers.append((sent + 0.002, sent, Signal.REFUSED))
        else:
            answers.append((sent + 0.075 + 0.15 * ((n * 37) % 100) / 100, sent, Signal.ACCEPTED))
    for now, sent, signal in sorted(answers):
        control.observe(now, sent, signal)
        if control.cuts and control.mode is not Mode.HELD_BACK:
            break
    assert control.rate >= 0.75 * 300  # a cut of 15 %, for the experiment; not to 113/s


def test_a_limiters_burst_sent_before_a_streak_does_not_undo_its_hold_back() -> None:
    """A bucket's tokens, a window's quota, the requests a concurrency limit holds: what
    got in was sent before the streak, and of what was sent after its first refusal a
    bucket's refill lets in one in five at five times its pace. The hold-back stands, and
    resumes at the share that got in."""
    control = PaceController(1000.0, POLICY, T)
    control.begin(T)
    for n in range(20, 25):  # the burst, 0-19, is being served; 20-24 are refused at once
        control.observe(T + n / 1000 + 0.002, T + n / 1000, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode
    for n in range(20):
        control.observe(T + n / 1000 + SERVED, T + n / 1000, Signal.ACCEPTED)
    assert (Mode.CRUISE, 1) == (control.mode, control.cuts)
    for n in range(25, 40):  # the refill: one in five sent meanwhile got in
        signal = Signal.ACCEPTED if n % 5 == 0 else Signal.REFUSED
        delay = SERVED if signal is Signal.ACCEPTED else 0.002
        control.observe(T + n / 1000 + delay, T + n / 1000, signal)
    assert control.cuts >= 1
    assert control.rate < 1000.0


def test_a_hold_back_from_a_pace_windows_judged_is_not_undone() -> None:
    """A queueing server holds requests before it refuses: acceptances of a streak's
    requests come back late, from its queue. The windows had judged the pace before the
    streak; undone, each hold-back there was followed by another flood of the queue."""
    control = PaceController(300.0, POLICY, T)
    control.begin(T)
    now = T
    for n in range(90):  # 0.3 s, every answer accepted after 100 ms: windows judge 300/s
        now = T + n / 300
        control.observe(now + SERVED, now, Signal.ACCEPTED)
    sent = now + SERVED
    for n in range(POLICY.quick_refusals):  # the queue fills: refused at once, in a row
        control.observe(sent + n / 300 + 0.002, sent + n / 300, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode
    for n in range(4):  # sent between the refused ones, taken by the queue, back late
        control.observe(sent + 0.5 + n * 0.001, sent + (n + 0.5) / 300, Signal.ACCEPTED)
    assert (Mode.CRUISE, 1) == (control.mode, control.cuts)
    assert control.rate < 300.0


@pytest.mark.parametrize(("accepted", "resumed"), [(2, 1000 * 2 / 7), (1, 250.0), (0, 250.0)])
def test_a_hold_back_before_a_rate_could_be_measured_resumes_at_the_share_that_got_in(
    accepted: int, resumed: float
) -> None:
    """Two accepted, then five refused, a run's first answers (late and out of order,
    connections still opening): too little to read a rate from — 2 ÷ 0.22 s × 0.95 =
    9/s would be a guess — but the share that got in says how far over the cloud's pace the
    run was: 2 of 7 at 1,000/s resumes at 286/s, not at 1,000/s for five more refusals (a
    cloud that takes 10/s lost a tenth of a short run to that). A quarter of the pace at
    least: the windows that follow measure."""
    control = PaceController(1000.0, POLICY, T)
    control.begin(T)
    for n, signal in enumerate([Signal.ACCEPTED] * accepted + [Signal.REFUSED] * 5):
        control.observe(LATE_FIRST + n * 0.001, T + 0.001 * n, signal)
    assert Mode.HELD_BACK == control.mode
    control.observe(LATE_FIRST + 0.02, LATE_FIRST + 0.015, Signal.ACCEPTED)
    assert Mode.CRUISE == control.mode
    assert resumed == pytest.approx(control.rate)


def test_a_cut_read_from_two_or_three_accepted_answers_halves_the_rate_at_most() -> None:
    """At 25/s against a cloud that takes 5/s, two got in over the last second: 0.95 × 2/s
    would be a guess. Halve, and let the experiment's windows measure from there."""
    control = PaceController(100.0, POLICY, T)
    control.begin(T)
    control.rate = control.good = 25.0
    now = T + 2.0
    for n, refused in enumerate([1, 1, 0, 1, 1, 0, 1, 1]):
        signal = Signal.REFUSED if refused else Signal.ACCEPTED
        control.observe(now + 0.04 * n, now + 0.04 * n, signal)
    assert Mode.TESTING == control.mode
    assert 12.5 == pytest.approx(control.rate)


def test_after_a_cut_a_window_with_no_refusal_confirms_it_before_the_full_sample() -> None:
    """80 % refused began the episode; ten answers in a row accepted after the cut would
    happen less than once in a hundred if even half that excess remained."""
    control = PaceController(100.0, POLICY, T)
    now = answers(control, T, 0.21, 100.0, refused=0.0)  # the run's first window, clean
    now = answers(control, now, 0.3, 100.0, refused=0.8)  # 20 answers: an ordinary window
    assert Mode.TESTING == control.mode
    cut = control.rate
    for n in range(10):
        control.observe(now + 0.03 * n, now + 0.03 * n, Signal.ACCEPTED)
    assert Mode.CRUISE == control.mode
    assert control.rate_related
    assert control.rate <= cut


def test_the_rate_never_leaves_its_bounds() -> None:
    control = PaceController(50.0, POLICY, T)
    now = T
    for _ in range(30):
        now = answers(control, now, 0.5, max(control.rate, 2.0), refused=1.0)
    assert min(POLICY.min_rate, 50.0) <= control.rate <= 50.0


def test_findings_say_what_the_cloud_took() -> None:
    control = PaceController(400.0, POLICY, T)
    now = answers(control, T, 0.3, 400.0, refused=0.5)
    while now < T + 2.3:  # clean at each pace the controller moves to
        now = answers(control, now, 2.0, control.rate, refused=0.0)
    found = control.findings(elapsed=now - T)
    assert found["rate_related_refusals"] is True
    assert "capacity ~" in describe(found)
    flaky = {"accepted_per_second": 148.0, "pace_cuts": 1, "rate_related_refusals": False}
    line = describe({**flaky, "rate_independent_share": 0.2})
    assert "the cloud accepted ~148/s;" in line  # as the README shows it
    assert "20% of requests refused whatever the rate" in line
    assert "the cloud accepted nothing" == describe({**flaky, "accepted_per_second": 0.0})


@pytest.mark.parametrize(
    ("refused", "sent_at", "held"),
    [
        (0.0, 1.0, True),  # at --rate, nothing refused: --rate held it
        (0.0, 0.5, False),  # at half of it: something else did (the input, the latency)
        (0.01, 1.0, False),  # one refused in a hundred: the cloud spoke
    ],
)
def test_a_run_held_back_by_its_own_rate_says_so(
    refused: float, sent_at: float, held: bool
) -> None:
    """A run on the default 10/s said "the cloud accepted ~10/s", which reads as the cloud's
    pace: nothing was refused, so a higher --rate may go faster, and the line says so."""
    control = PaceController(100.0, POLICY, T)
    answers(control, T, 10.0, 100.0 * sent_at, refused=refused)
    found = control.findings(elapsed=10.0)
    assert held is found["held_by_rate"]
    assert held is ("a higher one may go faster" in describe(found))


@pytest.mark.parametrize(
    ("accepted", "capacity", "says"),
    [
        (49.58, 44.0, "the cloud accepted ~49.6/s; capacity ~44/s"),
        (1234.56, 1250.0, "the cloud accepted ~1235/s; capacity ~1250/s"),
        (9.84, 9.6, "the cloud accepted ~9.84/s; capacity ~9.6/s"),
        (0.31, 0.3, "the cloud accepted ~0.31/s; capacity ~0.3/s"),
    ],
)
def test_the_pace_found_is_said_in_three_figures_at_most(
    accepted: float, capacity: float, says: str
) -> None:
    """A run's average pace is good to a few percent: "~49.58/s" claimed more than that, and
    "~148.0/s" did not match the README's "~148/s"."""
    found = {
        "accepted_per_second": accepted,
        "capacity_per_second": capacity,
        "pace_cuts": 2,
        "rate_related_refusals": True,
        "rate_independent_share": 0.0,
    }
    assert says == describe(found)


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
    gate.control.rate = rate
    sent = [await gate.wait_turn() for _ in range(6)]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert T == sent[0]
    assert [pytest.approx(1.0 / rate)] * 5 == gaps


class StalledTime(FakeTime):
    """A fake clock whose sleeps, once ``stalled``, never end: a caller then goes only if
    something wakes it."""

    stalled = False

    async def sleep(self, seconds: float) -> None:
        if self.stalled:
            self.sleeps.append(seconds)
            await anyio.sleep_forever()
        await super().sleep(seconds)


@pytest.mark.asyncio
async def test_a_caller_napping_at_a_held_back_pace_goes_when_the_pace_resumes() -> None:
    """Held back (nothing accepted: a few requests a second), the caller at the head naps
    until its slot. When an acceptance resumes the pace, it must go then, not when its nap
    ends: up to 0.1 s late, a resumed run sent half its pace in its first 0.2-s window, and
    read the half that got in as the cloud's pace (see Pacer._nap)."""
    fake = StalledTime()
    gate = Pacer(200.0, clock=fake, sleep=fake.sleep)
    sent = [await gate.wait_turn() for _ in range(8)]
    for at in sent:
        gate.returned()
        gate.answered(sent_at=at, signal=Signal.REFUSED)
    assert Mode.HELD_BACK == gate.control.mode
    held = gate.rate
    fake.stalled = True
    async with anyio.create_task_group() as callers:
        turn: list[float] = []
        went = anyio.Event()

        async def caller() -> None:
            turn.append(await gate.wait_turn())
            went.set()

        callers.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        assert ([], True) == (turn, bool(fake.sleeps))  # napping, and its nap never ends
        fake.now += 0.05  # under its nap: the slot at the held-back pace is 0.16 s away
        gate.answered(sent_at=fake.now, signal=Signal.ACCEPTED)
        assert gate.rate > held
        with anyio.fail_after(5.0):  # real seconds: the caller is woken, or never goes
            await went.wait()
    assert [fake.now] == turn


@pytest.mark.asyncio
async def test_a_pause_delays_everyone_until_paused_until() -> None:
    fake = FakeTime()
    gate = Pacer(10.0, clock=fake, sleep=fake.sleep, burst=3)
    gate.control.paused_until = T + 30.0
    sent = [await gate.wait_turn() for _ in range(3)]
    assert [T + 30.0] * 3 == sent
    assert pytest.approx(30.0) == sum(fake.sleeps)


@pytest.mark.asyncio
async def test_a_throttled_pause_releases_callers_spaced_after_it() -> None:
    fake = FakeTime()
    gate = pacer(10.0, fake)
    gate.control.rate, gate.control.paused_until = 2.0, T + 30.0
    sent = [await gate.wait_turn() for _ in range(3)]
    assert [T + 30.0, T + 30.5, T + 31.0] == sent


@pytest.mark.asyncio
async def test_a_pause_that_starts_while_waiting_queues_the_caller_behind_it() -> None:
    fake = FakeTime()
    gate = pacer(10.0, fake)
    gate.control.rate = 1.0
    assert T == await gate.wait_turn()  # takes the first slot; the next one is at T + 1

    def the_cloud_asks_everyone_to_wait() -> None:
        gate.control.paused_until = T + 21.0

    fake.during_sleep.append(the_cloud_asks_everyone_to_wait)
    assert T + 21.0 == await gate.wait_turn()


@pytest.mark.asyncio
async def test_a_waiter_at_a_low_rate_goes_sooner_when_the_rate_rises() -> None:
    """After an outage the rate jumps back up: a caller queued at 1/s must not sleep out the
    old one-second gap (wait_turn naps at most 0.1 s and looks again)."""
    fake = FakeTime()
    gate = pacer(100.0, fake)
    gate.control.rate = 1.0
    assert T == await gate.wait_turn()

    def the_cloud_came_back() -> None:
        gate.control.rate = 100.0

    fake.during_sleep.append(the_cloud_came_back)
    assert await gate.wait_turn() <= T + 0.1 + 1e-9


# -- the sync fast path: calm and free_now ----------------------------------------------------


def test_a_fresh_pacer_is_calm_and_lets_a_caller_go_at_once() -> None:
    gate = pacer(10.0, FakeTime())
    assert gate.calm
    assert T == gate.free_now()


def test_pushback_ends_calm_and_callers_must_queue_through_wait_turn() -> None:
    gate = pacer(10.0, FakeTime())
    gate.answered(sent_at=T, signal=Signal.REFUSED)
    assert not gate.calm
    assert gate.free_now() is None


def test_a_pause_or_a_reserved_slot_ahead_sends_callers_through_wait_turn() -> None:
    gate = pacer(10.0, FakeTime())
    gate.control.paused_until = T + 5.0
    assert gate.calm  # full rate, no refusals...
    assert gate.free_now() is None  # ...but nobody may send before the pause ends


def test_calm_returns_once_the_refusals_are_over() -> None:
    fake = FakeTime()
    gate = pacer(10.0, fake)
    gate.answered(sent_at=T, signal=Signal.REFUSED)
    for step in range(1, 2000):  # accepted answers, 10 ms apart: 20 s of good news
        fake.now = T + step * 0.01
        gate.answered(sent_at=fake.now, signal=Signal.ACCEPTED)
        if gate.calm:
            break
    assert gate.calm
    assert fake.now == gate.free_now()
    assert 10.0 == gate.rate


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


@pytest.mark.asyncio
async def test_a_late_wake_up_does_not_lower_the_allowed_rate_below_the_ceiling() -> None:
    """The same below the ceiling: at an allowed 100/s, every wake-up 4 ms late used to
    space requests 14 ms apart (71/s)."""
    fake = FakeTime()
    gate = Pacer(1000.0, clock=fake, sleep=fake.sleep, burst=1)
    gate.control.rate = 100.0
    real_sleep = fake.sleep

    async def late_sleep(seconds: float) -> None:
        await real_sleep(seconds + 0.004)

    gate._sleep = late_sleep
    sent = [await gate.wait_turn() for _ in range(101)]  # throttled: never the fast path
    assert pytest.approx(1.0, abs=0.01) == sent[-1] - sent[0]


@pytest.mark.asyncio
async def test_callers_queued_at_a_low_rate_do_not_leave_in_a_clump_when_it_rises() -> None:
    """Catching up a late wake-up goes back one interval at most: after a second at 1/s, a
    rise to 100/s lets the queued callers go 10 ms apart, not all at once."""
    fake = FakeTime()
    gate = pacer(1000.0, fake)
    gate.control.rate = 1.0
    assert T == await gate.wait_turn()
    fake.now = T + 0.9
    gate.control.rate = 100.0
    sent = [await gate.wait_turn() for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(gap >= 0.01 - 1e-9 for gap in gaps)


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


def test_a_cut_measured_from_one_accepted_answer_after_a_resume_halves_at_most() -> None:
    """Resumed on its first tenth of a second's guess, a run reads the next streaks as luck;
    its next window holds 1 accepted answer among 27 refused (a sliding window not yet slid).
    What got in since the resume, 1 in 0.2 s, is no capacity: cut to 0.95 × 5/s, then
    confirmed there by the next clean window, the run crawled for 20 s. Halve, as TCP does,
    and confirm no lower than the pace the clean window found."""
    control = PaceController(600.0, POLICY, T)
    control.begin(T)
    for n, signal in enumerate([Signal.ACCEPTED] * 8 + [Signal.REFUSED] * 5):
        control.observe(LATE_FIRST + n * 0.001, T + n * 0.001, signal)
    assert Mode.HELD_BACK == control.mode
    control.observe(LATE_FIRST + 0.03, LATE_FIRST + 0.029, Signal.ACCEPTED)
    resumed = control.rate
    now = LATE_FIRST + 0.04
    for n in range(28):
        signal = Signal.ACCEPTED if n == 20 else Signal.REFUSED
        control.observe(now + 0.008 * n, now + 0.008 * n, signal)
        if control.mode is not Mode.CRUISE:
            break
    assert Mode.TESTING == control.mode
    assert control.rate >= 0.5 * resumed
    cut = control.rate
    answers(control, now + 0.3, 0.5, cut, refused=0.0)  # nothing refused at the cut: it helped
    assert Mode.CRUISE == control.mode
    assert control.rate >= cut


# ── the opening window: a slow start ───────────────────────────────────────────────────────


def slow_starting(fake: FakeTime, most: int = 256) -> Pacer:
    """A gate at a ceiling far above what the test sends, with no wait between turns."""
    return Pacer(100_000.0, clock=fake, sleep=fake.sleep, burst=1000, slow_start_to=most)


def send_while_allowed(gate: Pacer, fake: FakeTime) -> int:
    """Grant every turn the gate gives at once; how many it gave."""
    sent = 0
    while gate.earliest(fake.now) <= fake.now:
        gate.grant(fake.now)
        sent += 1
    return sent


def test_a_slow_start_sends_32_before_any_answer_and_one_more_for_each_back() -> None:
    fake = FakeTime()
    gate = slow_starting(fake)
    assert 32 == send_while_allowed(gate, fake)
    assert gate.free_now() is None  # the engine's fast path waits too
    for _ in range(5):
        gate.returned()
    # Five back: five places for them, and five more: the window doubles each round trip.
    assert 10 == send_while_allowed(gate, fake)
    assert 37 == gate.on_wire


def test_a_slow_start_ends_when_the_controller_moves_the_rate() -> None:
    fake = FakeTime()
    gate = slow_starting(fake)
    send_while_allowed(gate, fake)
    assert math.inf == gate.earliest(fake.now)
    gate.control.rate = 50_000.0  # a cut: the cloud's answers govern from here, not the window
    for _ in range(100):  # and no answer came back meanwhile
        fake.now = gate.earliest(fake.now)
        gate.grant(fake.now)
    assert 132 == gate.on_wire


def test_a_slow_start_holds_again_once_a_hold_back_in_its_first_round_trip_is_undone() -> None:
    """A hold-back an acceptance may yet undo does not end the opening window: undone, the
    run is back at --rate with nothing judged, and a far cloud would be sent it blind (191
    requests in the first half second at 300 ms, simulated, where the window allows 96)."""
    fake = FakeTime()
    gate = slow_starting(fake)
    assert 32 == send_while_allowed(gate, fake)
    control = gate.control
    for n in FLAKY_START:
        gate.returned()
        control.observe(T + n * 1e-5 + 0.002, T + n * 1e-5, Signal.REFUSED)
    assert Mode.HELD_BACK == control.mode
    fake.now += SERVED
    for n in (2, 3, 5, 7):  # sent among the refused ones
        gate.returned()
        control.observe(fake.now, T + n * 1e-5, Signal.ACCEPTED)
    assert (Mode.CRUISE, 100_000.0) == (control.mode, control.rate)
    assert 18 == send_while_allowed(gate, fake)  # 32 + 9 back wide, 23 on the wire


def test_a_slow_start_ends_when_its_window_is_as_wide_as_the_run_may_send() -> None:
    fake = FakeTime()
    gate = slow_starting(fake, most=40)
    send_while_allowed(gate, fake)
    for _ in range(8):
        gate.returned()  # 32 + 8: as wide as --concurrency 40, so it holds nothing any more
    # The rest of the burst goes at once (in the window, 16 would: 40 less the 24 on the wire).
    assert 1000 - 32 == send_while_allowed(gate, fake)


@pytest.mark.asyncio
async def test_callers_queued_while_the_opening_window_was_full_do_not_queue_the_rest() -> None:
    """64 workers against a cloud that answers at once, as the engine sends: the fast path
    (free_now) if it gives a turn, else the queue (wait_turn). Those the opening window held
    queue once; once it is over, a worker back from its answer must not queue behind them
    just because the queue's lock is held. It did: every worker found the lock held by the
    one ahead, the queue never drained, and every other request of the run went through it
    one at a time, 1.6× the CPU a pair (0.5-0.6× a minimal client against nginx)."""
    fake = FakeTime()
    gate = slow_starting(fake, most=64)
    queued = 0

    async def worker() -> None:
        nonlocal queued
        for _ in range(30):
            sent = gate.free_now()
            if sent is None:
                queued += 1
                sent = await gate.wait_turn()
            await anyio.lowlevel.checkpoint()  # the answer, back at once…
            fake.now += 1e-4  # …10,000 a second, under the ceiling of 100,000
            gate.returned()
            gate.accepted_while_calm(sent)

    async with anyio.create_task_group() as workers:
        for _ in range(64):
            workers.start_soon(worker)
    assert 64 * 30 == gate.accepted_total
    assert queued <= 64


def test_without_a_slow_start_the_gate_gives_its_whole_burst_at_once() -> None:
    fake = FakeTime()
    gate = Pacer(100_000.0, clock=fake, sleep=fake.sleep, burst=1000)
    assert 1000 == send_while_allowed(gate, fake)


# ── the capacity the operator is told of ──────────────────────────────────────────────────


def second_of_answers(
    seconds: RefusedSeconds, start: float, accepted: int, refused: int, pace: float = 40.0
) -> None:
    """One second of answers from ``start``: the acceptances first (a window's quota), then
    the refusals."""
    count = accepted + refused
    for n in range(count):
        signal = Signal.ACCEPTED if n < accepted else Signal.REFUSED
        seconds.add(start + n / count, signal, pace)


def test_the_seconds_a_capacity_is_checked_on_start_at_the_first_refusal() -> None:
    """A fresh limiter's first second lets more in (a window and the start of the next, a
    full bucket): it is not counted; nor is a second with nothing refused, or the second
    under way."""
    seconds = RefusedSeconds()
    # The run's first second: a window, the next one's quota, and the first refusal at its
    # end (T + 0.9875), from which seconds are counted.
    second_of_answers(seconds, T, accepted=79, refused=1)
    second_of_answers(seconds, T + 1.0, accepted=40, refused=30)
    second_of_answers(seconds, T + 2.0, accepted=79, refused=0)  # nothing refused
    second_of_answers(seconds, T + 3.0, accepted=60, refused=10)  # under way
    assert 40 == seconds.most


@pytest.mark.parametrize(
    ("accepted", "refused", "pace", "counted"),
    [
        (40, 30, 40.0, True),
        (6, 1, 40.0, False),  # a retry tail: 7 answers, under half the pace
        (10, 2, 40.0, False),  # 12: still under half of it
        (0, 70, 40.0, False),  # nothing got in: the cloud was away (an outage, a spent quota)
        (5, 3, 4.0, True),  # a slow pace: eight answers say what the cloud let in
        (4, 3, 4.0, False),  # seven do not
    ],
)
def test_a_second_counts_only_if_the_run_sent_at_its_pace_and_the_cloud_took_some(
    accepted: int, refused: int, pace: float, counted: bool
) -> None:
    seconds = RefusedSeconds()
    seconds.add(T, Signal.REFUSED, pace)
    second_of_answers(seconds, T + 1.0, accepted, refused, pace)
    seconds.add(T + 2.5, Signal.ACCEPTED, pace)
    assert (accepted if counted else None) == seconds.most


def test_a_capacity_found_is_reported_no_higher_than_got_in_while_refused() -> None:
    """A cut read off a fifth of a second (200 accepted/s after a burst) against a cloud that
    took 40 a second while refusing: the operator is told 40, and the pacer keeps its own
    figure. With no such second seen, no figure at all."""
    control = PaceController(1000.0, POLICY, T)
    control.capacity = 200.0
    assert "capacity_per_second" not in control.findings(elapsed=3.0)
    control.refused_seconds.most = 40
    assert 40.0 == control.findings(elapsed=3.0)["capacity_per_second"]
    assert 200.0 == control.capacity
    control.refused_seconds.most = 250
    assert 200.0 == control.findings(elapsed=3.0)["capacity_per_second"]


# ── answers that come back at different speeds ─────────────────────────────────────────────


@pytest.mark.parametrize("seed", range(4))
def test_acceptances_that_come_back_as_refusals_do_read_as_alike(seed: int) -> None:
    """5 ms, up to 2 ms off, plus 20 ms late on average, for both kinds: whatever the luck
    of the last few dozen, no extra delay (the windows read their answers as before)."""
    rng = random.Random(seed)
    delays = Delays()
    for _ in range(3000):
        delay = 0.005 + rng.uniform(0.0, 0.002) + rng.expovariate(1 / 0.02)
        delays.add(delay, accepted=rng.random() < 0.7)
        assert delays.extra == 0.0


def test_acceptances_clearly_slower_than_refusals_read_as_their_extra_delay() -> None:
    """Refused in 5 ms, served in 100 ms ± 50 %: two acceptances slower than 20 refusals
    are evidence (one is not: one in 21 by chance), and the extra delay is read from the
    means once there are more."""
    rng = random.Random(1)
    delays = Delays()
    for _ in range(20):
        delays.add(0.005, accepted=False)
    delays.add(0.005 + rng.uniform(0.05, 0.15), accepted=True)
    assert delays.extra == 0.0
    delays.add(0.005 + rng.uniform(0.05, 0.15), accepted=True)
    assert delays.extra > 0.05
    for _ in range(200):
        delays.add(0.005 + rng.uniform(0.05, 0.15), accepted=True)
        delays.add(0.005, accepted=False)
    assert 0.08 <= delays.extra <= 0.12


def test_acceptances_the_fast_path_counts_while_calm_are_timed_too() -> None:
    """Timed only once calm ended, the first acceptances timed would be the calm flood's
    stragglers, slow by selection; and a limit's first round trip, all accepted, is what
    says how long serving takes before anything is refused."""
    fake = FakeTime()
    gate = Pacer(1000.0, clock=fake, sleep=fake.sleep)
    assert gate.calm
    sent_at = fake.now
    fake.now += 0.1
    gate.accepted_while_calm(sent_at)
    assert 1 == gate.accepted_total
    assert [pytest.approx(0.1)] == list(gate.control.delays.accepted)
    for _ in range(20):
        gate.answered(sent_at=fake.now - 0.005, signal=Signal.REFUSED)
    gate.accepted_while_calm(fake.now - 0.1)  # (as the engine would not: it is not calm now)
    assert gate.control.delays.extra == pytest.approx(0.095)
