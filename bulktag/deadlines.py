"""Time limits for requests, kept by one timer for all of them instead of one per request.

aiohttp enforces a request's ``total`` timeout with a timer of its own for every request (a
``TimerHandle`` armed, then cancelled, plus a ``TimerContext`` around the reads): a sizeable
share of the CPU a tag PUT costs (measured by ``benchmarks/instructions.py``). A time limit of
tens of seconds needs no per-request precision, so this keeps the deadlines in a dict and one
timer that sweeps them, in the manner of a coarse timer wheel: a request costs a dict insert
and a dict delete; the timer fires at most once per ``slack`` seconds while requests are out;
a request is cancelled no earlier than its limit and at most ``slack`` later.

Cancelling: the sweep cancels the task that is awaiting the request. The task is then
suspended inside the request (it registers right before the request's first await and leaves
right after its last, and the sweep runs on the same event loop), so the ``CancelledError``
arrives there, where the caller catches it, asks :meth:`Deadlines.expired`, and either turns it
into a timeout answer or lets a cancellation that came from elsewhere propagate.
:meth:`Deadlines.leave` withdraws the sweep's cancel request (``Task.uncancel``), so the task
goes on as if nothing happened — and a cancellation from a cancel scope that came at the same
time is still delivered at its next await, because anyio repeats it until the task leaves the
scope.
"""

from __future__ import annotations

import asyncio
import math

Task = asyncio.Task[object]


class Deadlines:
    def __init__(self, limit: float, slack: float | None = None) -> None:
        if not 0 < limit < math.inf:
            raise ValueError(f"a time limit must be positive and finite, not {limit!r}")
        self.limit = limit
        self.slack = min(1.0, limit / 10) if slack is None else slack
        self._due: dict[Task, float] = {}  # request's task → when its time is up (loop clock)
        self._expired: set[Task] = set()  # tasks the sweep cancelled, until they leave
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the requests out

    @property
    def pending(self) -> int:
        return len(self._due)

    def enter(self) -> Task:
        """The calling task starts a request; call :meth:`leave` with the result when it ends."""
        loop = self._loop
        if loop is None or not self._due:  # nothing out: it may be a new loop (a new run)
            loop = self._loop = asyncio.get_running_loop()
        # current_task() without its loop asks for the running loop, and on Python 3.11 that
        # makes a getpid() system call: one more per request than the request itself makes.
        task: Task = asyncio.current_task(loop)  # type: ignore[assignment]
        due = loop.time() + self.limit
        self._due[task] = due
        if self._timer is None:
            self._timer = loop.call_at(due, self._sweep, loop)
        return task

    def expired(self, task: Task) -> bool:
        """Was ``task`` cancelled because its request ran out of time?"""
        return task in self._expired

    def leave(self, task: Task) -> None:
        """The request of ``task`` ended, one way or another (call it in a ``finally``)."""
        del self._due[task]
        if self._expired and task in self._expired:
            self._expired.discard(task)
            if task.cancelling():
                task.uncancel()
        if not self._due:  # nothing out: no timer (and none left behind on a closed loop)
            self.close()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        nearest = math.inf
        for task, due in self._due.items():
            if due <= now:
                if task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
            elif due < nearest:
                nearest = due
        if nearest < math.inf:
            self._timer = loop.call_at(max(nearest, now + self.slack), self._sweep, loop)

    def close(self) -> None:
        """Disarm the timer; the next :meth:`enter` arms it again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
