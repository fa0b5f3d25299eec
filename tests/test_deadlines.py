"""The shared request timer: a request that outlives its limit is cancelled (never before the
limit), its task goes on as if nothing happened, and a cancellation from elsewhere is never
swallowed."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from bulktag.deadlines import Deadlines


async def request(deadlines: Deadlines, lasts: float) -> str:
    """What the transport does around a request: 'answered', or 'timeout' when expired."""
    task = deadlines.enter()
    try:
        await asyncio.sleep(lasts)
        return "answered"
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        return "timeout"
    finally:
        deadlines.leave(task)


async def test_a_request_that_outlives_the_limit_times_out_no_earlier_than_the_limit() -> None:
    deadlines = Deadlines(0.2, slack=0.05)
    started = time.monotonic()
    assert "timeout" == await request(deadlines, lasts=30)
    took = time.monotonic() - started
    assert 0.2 <= took < 5  # never early; late by at most the slack on an idle machine


async def test_the_task_goes_on_uncancelled_after_its_timeout() -> None:
    deadlines = Deadlines(0.1, slack=0.01)
    assert "timeout" == await request(deadlines, lasts=30)
    task = asyncio.current_task()
    assert task is not None
    assert 0 == task.cancelling()
    await asyncio.sleep(0.05)  # would raise CancelledError if the cancel were still pending
    assert "answered" == await request(deadlines, lasts=0)


async def test_requests_in_time_are_left_alone_and_no_timer_stays_armed() -> None:
    deadlines = Deadlines(0.3, slack=0.01)
    results = await asyncio.gather(*(request(deadlines, lasts=0.01 * n) for n in range(20)))
    assert ["answered"] * 20 == results
    assert 0 == deadlines.pending
    assert deadlines._timer is None  # nothing out: nothing that could fire on a closed loop


async def test_only_the_late_requests_of_many_time_out() -> None:
    deadlines = Deadlines(0.2, slack=0.02)
    lasts = [0.01, 5, 0.05, 5, 0.1]
    results = await asyncio.gather(*(request(deadlines, lasts=s) for s in lasts))
    assert ["answered", "timeout", "answered", "timeout", "answered"] == results


async def test_requests_that_start_later_get_their_own_full_limit() -> None:
    deadlines = Deadlines(0.3, slack=0.02)

    async def later(delay: float, lasts: float) -> str:
        await asyncio.sleep(delay)
        return await request(deadlines, lasts)

    # The timer is armed for the first request; the second starts 0.2 s later and lasts 0.25 s:
    # it must not be swept with the first one's deadline.
    results = await asyncio.gather(later(0, 5), later(0.2, 0.25))
    assert ["timeout", "answered"] == results


async def test_a_cancel_scope_cancelling_a_request_is_not_taken_for_a_timeout() -> None:
    deadlines = Deadlines(30)
    outcome = "not cancelled"
    with anyio.move_on_after(0.1) as scope:
        outcome = await request(deadlines, lasts=10)
    assert scope.cancelled_caught
    assert "not cancelled" == outcome
    assert 0 == deadlines.pending


async def test_a_scope_cancel_arriving_with_the_timeout_still_stops_the_task() -> None:
    deadlines = Deadlines(0.1, slack=0.0)
    with anyio.fail_after(5), anyio.CancelScope() as scope:  # fail_after: the cancel is lost
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, scope.cancel)  # as close to the sweep as the loop allows
        await request(deadlines, lasts=10)  # may answer "timeout" (the sweep came first)
        await anyio.sleep(10)  # ...then the scope's cancel must land here
    assert scope.cancel_called
    task = asyncio.current_task()
    assert task is not None
    assert 0 == task.cancelling()


def test_a_limit_must_be_positive_and_finite() -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive and finite"):
            Deadlines(bad)


def test_one_set_of_deadlines_serves_one_event_loop_after_another() -> None:
    """The loop is remembered while requests are out (asking for it costs a system call a
    request on Python 3.11); once none is out, a new loop — a new run — is picked up."""
    deadlines = Deadlines(0.1, slack=0.01)
    for _ in range(2):  # each asyncio.run() is a new loop
        assert "timeout" == asyncio.run(request(deadlines, lasts=30))
        assert "answered" == asyncio.run(request(deadlines, lasts=0))
        assert 0 == deadlines.pending
