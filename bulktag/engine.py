"""The engine: one task group owns the producer, the workers and the journal sink.

    rows (CSV; pipes in a thread) ─► producer ─ resume filter, in-run duplicates,
                                      │          invalid rows straight to the sink
                                      ▼
                               ImageScheduler ─ one request per image in flight; others
                                      │          parked (bounded stream = backpressure)
                                      ▼
                       N workers: gather (a row, or with IMS up to ten of one image's rows)
                                  token ─► Pacer (ceiling + the cloud's pace) ─► transport
                                  ─► policy.decide ─► settle | retry: the wait goes to a
                                     task of its own (a back-off holds no worker; requests
                                     in flight stay within --concurrency)
                                      │ sink.record(): a call (waits only when the writer
                                      ▼ is far behind)
                               JournalSink: tally, failure breaker; one writer task

Stopping. ``request_stop()`` (first SIGINT/SIGTERM, a time limit, ``max_outage`` with nothing
accepted) stops reading input at once and lets in-flight rows finish for up to
``grace_period`` seconds; rows waiting for a retry or for a pacer turn are left for the next
run. ``abort()`` (credentials refused, breaker, journal unwritable) and
``cancel_now()`` (second signal) cancel the workers at once. In every case the sink drains
what workers already settled and the journal is flushed: nothing settled is lost, and nothing
unsettled is recorded, so a resumed run simply sends it again (the PUT is idempotent).

Batches. With ``batch_size`` > 1 (IMS) a worker sends a row together with the rows of the same
image parked behind it — taken again just before the request goes, from a read-ahead of
``read_ahead`` rows (scheduler.py), so that rows far apart in the input still meet — as one
request; one answer settles them all, and every row still gets its own journal record (the
batch's status, request id and attempts). One request is one slot of the rate and one pacing
observation, whatever it carries. A batch the server refuses with a 400 is sent again row by
row, so one row it cannot take does not fail its siblings.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream as ObjectReceiveStream

from bulktag.admission import ALL, Admission, Api, Op, Shard
from bulktag.admission import Decision as Admit
from bulktag.auth import AuthRefused, TokenProvider
from bulktag.journal import JournalWriter, ResumeIndex
from bulktag.model import InvalidRow, Outcome, Result, Row, Tag
from bulktag.pacing import Pacer, PacingPolicy, Signal
from bulktag.policy import ACCEPTED as _ACCEPTED
from bulktag.policy import Abort, Answer, Decision, Retry, RetryPolicy, Settle, decide
from bulktag.scheduler import ImageScheduler
from bulktag.sink import JournalSink
from bulktag.source import Parsed, RowReader, fill
from bulktag.streams import get
from bulktag.summary import FailureBreaker, Tally

# Rows parsed per trip to the reader thread. Each trip is a thread hand-off (a lock, a
# wake-up, a GIL switch); at 512 rows a trip they were ~12% of the engine's CPU, at 2048 the
# engine costs ~18 instead of ~21 us a row (instant sender, 100k rows; more rows a trip gained
# nothing). A trip also ends with the first row read after _READ_LINGER has passed since its
# first row: rows from a slow producer on stdin wait for the next row at most, not for 2048.
# Only input that can wait on a producer goes to the thread (RowReader.may_wait): a file is
# read in the event loop, 2048 rows (~1 ms) at a time. The thread cost more than the reading
# itself — its GIL switches hold up the loop when answers are ready — against nginx, 107 ->
# 97 us of CPU a pair and +10% throughput (5 interleaved runs of 50k pairs, concurrency 64).
_READ_BATCH = 2048
_READ_LINGER = 0.05


_T = TypeVar("_T")
_SHORT_BACKOFF = 2.0  # seconds: a row's back-off cap while refusals are rate-independent

# Attempts a row may spend while the cloud accepts nothing, as a multiple of --max-attempts, on
# top of them: enough to ride out an outage, bounded so that a row refused on every try still
# ends as gave_up once the rest of the run is done.
_FREE_ATTEMPTS = 4


@dataclass(slots=True)
class _Attempts:
    """The attempts made so far for one request's rows."""

    started: float  # when the first attempt began (the record's elapsed_ms)
    base: int = 0  # attempts of a batch these rows were split from (recorded, not counted)
    made: int = 0
    free: int = 0  # made while the cloud accepted nothing: not counted against the rows
    refreshed: bool = False  # the token was renewed once already for these rows


@dataclass(frozen=True, slots=True)
class _Retrying:
    rows: list[Row]
    attempts: _Attempts


def _signal(decision: Decision, answer: Answer) -> Signal | None:
    """What an answer says of the cloud's pace (None: nothing; the token was refused)."""
    if isinstance(decision, Abort):
        return None
    if decision.pushback:
        return Signal.REFUSED
    status = answer.status
    if status is None or status >= 500:
        return Signal.FAILED  # no answer, or a server fault: not about the rate, but not in
    return Signal.ACCEPTED  # done, or answered for the row (404, 403…): the cloud is up


class SendBatch(Protocol):
    """One request for one or more tags of one image: a transport's ``add_tags`` or
    ``remove_tags`` (Glance's take exactly one tag; the run's ``batch_size`` is then 1)."""

    def __call__(self, image_id: str, tags: Sequence[Tag], token: str) -> Awaitable[Answer]: ...


@dataclass(frozen=True, slots=True)
class EngineSettings:
    rate: float = 10.0  # requests per second, retries included: a hard ceiling
    burst: int = 1  # requests that may go at once above the steady rate
    concurrency: int = 16
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    pacing: PacingPolicy = field(default_factory=PacingPolicy)
    max_consecutive_failures: int = 100
    grace_period: float = 10.0
    retry_failed: bool = False
    op: Op = Op.ADD
    shard: Shard = ALL
    max_items: int | None = None  # send at most this many rows, then stop (resumable)
    serialize_images: bool = True  # False only for the race test's control run
    api: Api = Api.GLANCE  # which call the sender makes: keys the journal's records
    batch_size: int = 1  # rows of one image per request (IMS: at most 10); 1 = no batching
    batch_linger: float = 0.0  # seconds a batch may wait for siblings still being read
    # Batching: rows read ahead and held, so that an image's rows far apart in the input
    # still share a request (scheduler.py). Unused when batch_size is 1.
    read_ahead: int = 200_000
    # Stop (resumable) when the cloud has accepted nothing for this long; None: never.
    max_outage: float | None = 300.0

    @property
    def max_parked(self) -> int:
        return max(1024, 64 * self.concurrency)


@dataclass(slots=True)
class RunReport:
    tally: Tally
    elapsed: float
    aborted: str | None = None
    interrupted: bool = False  # by a signal
    stopped_by: str | None = None  # "signal", "max_duration", "max_items"
    left: int = 0  # rows a --max-items run left for the next run
    pace_cuts: int = 0
    pacing: dict[str, object] = field(default_factory=dict)  # what pacing found (pacing.py)

    @property
    def incomplete(self) -> bool:
        """Stopped by a limit with work left over (not by a signal or an abort)."""
        if self.stopped_by == "max_items":
            return self.left > 0
        return self.stopped_by == "max_duration"

    @property
    def outage(self) -> bool:
        """Stopped because the cloud accepted nothing for ``max_outage``: try again later."""
        return self.stopped_by == "outage"


def _take(rows: Iterator[Parsed], count: int, linger: float = _READ_LINGER) -> list[Parsed]:
    """Up to ``count`` rows, or fewer once ``linger`` seconds passed since the first one."""
    if isinstance(rows, RowReader):  # reads whole blocks of a file at once
        return rows.take(count, linger)
    return fill([], ([item] for item in rows), count, linger)  # any other iterator of rows


async def _next_batch(rows: Iterator[Parsed]) -> list[Parsed]:
    """The next batch of rows (an empty list at the end): from a file in the event loop,
    from anything else in the reader thread."""
    if isinstance(rows, RowReader) and not rows.may_wait:
        await anyio.lowlevel.checkpoint()  # a resume skips every row: others get their turn
        return rows.take(_READ_BATCH)
    return await anyio.to_thread.run_sync(_take, rows, _READ_BATCH, abandon_on_cancel=True)


class Engine:
    def __init__(
        self,
        settings: EngineSettings,
        send: SendBatch,
        tokens: TokenProvider,
        journal: JournalWriter,
        index: ResumeIndex,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.settings = settings
        self.tally = Tally()
        self._send_one = send
        self._tokens = tokens
        self._admission = Admission(
            index,
            self.tally,
            op=settings.op,
            retry_failed=settings.retry_failed,
            shard=settings.shard,
            api=settings.api,
        )
        # Glance answers 404 to removing an absent tag; IMS's batch delete answers 204, so an
        # IMS 404 always means the image (or the project) is unknown.
        self._absent_is_ok = settings.op is Op.REMOVE and settings.api is Api.GLANCE
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self.pacer = Pacer(
            settings.rate, settings.pacing, clock=clock, sleep=sleep, burst=settings.burst
        )
        self._sink = JournalSink(
            journal, self.tally, FailureBreaker(settings.max_consecutive_failures), self.abort
        )
        self._op = settings.op.value  # for every Result: an enum's .value is a Python call
        self._api = settings.api.value
        self._stop_requested = anyio.Event()
        self.stopping = False  # set with _stop_requested; a plain bool for the per-row checks
        self._finished = False
        self._aborted: str | None = None
        self._stopped_by: str | None = None
        self._left = 0
        self._producer_scope = anyio.CancelScope()
        self._work_scope = anyio.CancelScope()
        self._watch_scope = anyio.CancelScope()
        self._outage_scope = anyio.CancelScope()
        self.in_flight = 0
        # Requests in flight never pass --concurrency: past it, a sender waits for a slot,
        # handed over in order by the request that finishes (see _send).
        self._room_waiters: deque[anyio.Event] = deque()
        # Rows whose retry waits in a task of its own, so that a back-off holds no worker.
        self._deferred = 0
        self._scheduler: ImageScheduler | None = None
        self._work_group: TaskGroup | None = None
        self._sleep = sleep
        self._stoppable: set[anyio.CancelScope] = set()  # waits that a stop ends
        # Retries of refusals that do not depend on the rate: the pace protects the cloud,
        # so a row's own back-off stays short (a 60 s wait for one row only delays the end).
        self._short_retry = replace(
            settings.retry, max_delay=min(settings.retry.max_delay, _SHORT_BACKOFF)
        )

    # ── control ─────────────────────────────────────────────────────────────────────────

    def request_stop(self, reason: str = "signal") -> None:
        """Stop reading input; let in-flight rows finish within the grace period."""
        if self._stopped_by is None:
            self._stopped_by = reason
        self.stopping = True
        self._stop_requested.set()
        self._producer_scope.cancel()
        for scope in self._stoppable:  # rows waiting for their turn: left for the resume
            scope.cancel()

    def cancel_now(self, reason: str = "signal") -> None:
        self.request_stop(reason)
        self._work_scope.cancel()

    def abort(self, reason: str) -> None:
        if self._aborted is None:
            self._aborted = reason
        self.cancel_now("abort")

    # ── the run ─────────────────────────────────────────────────────────────────────────

    async def run(self, rows: Iterator[Parsed]) -> RunReport:
        started = self._clock()
        concurrency = self.settings.concurrency
        read_ahead = self.settings.read_ahead if self.settings.batch_size > 1 else 0
        ready_send, ready_recv = anyio.create_memory_object_stream[Row](read_ahead or concurrency)
        scheduler = ImageScheduler(
            ready_send,
            self.settings.max_parked,
            serialize=self.settings.serialize_images,
            read_ahead=read_ahead,
        )
        self._scheduler = scheduler
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._sink.run)
            await outer.start(self._watch_stop)
            if self.settings.max_outage is not None:
                outer.start_soon(self._watch_outage, self.settings.max_outage)
            with ready_recv, self._work_scope:
                async with anyio.create_task_group() as work:
                    self._work_group = work
                    work.start_soon(self._produce, rows, scheduler)
                    for _ in range(concurrency):
                        work.start_soon(self._work, ready_recv.clone(), scheduler)
            self._finished = True
            self._sink.close()  # settled rows still waiting get written, then the journal closes
            self._watch_scope.cancel()
            self._outage_scope.cancel()
        elapsed = self._clock() - started
        return RunReport(
            tally=self.tally,
            elapsed=elapsed,
            aborted=self._aborted,
            interrupted=self._stopped_by == "signal",
            stopped_by=self._stopped_by,
            left=self._left,
            pace_cuts=self.pacer.cuts,
            pacing=self.pacer.control.findings(elapsed),
        )

    async def _watch_stop(self, *, task_status: TaskStatus[None]) -> None:
        with self._watch_scope:
            task_status.started()
            await self._stop_requested.wait()
            await anyio.sleep(self.settings.grace_period)
            self._work_scope.cancel()  # grace is over: in-flight rows are left for the resume

    async def _watch_outage(self, limit: float) -> None:
        """Stop the run (resumable, "try again later") once the cloud has accepted nothing for
        ``limit`` seconds: a night of 1-request-a-second probes helps nobody."""
        with self._outage_scope:
            while not self.stopping:
                silent = self.pacer.silent_for()
                if silent >= limit:
                    self.request_stop("outage")
                    return
                await self._sleep(min(1.0, max(limit - silent, 0.05)))

    # ── producer ────────────────────────────────────────────────────────────────────────

    async def _produce(self, rows: Iterator[Parsed], scheduler: ImageScheduler) -> None:
        with self._producer_scope:
            try:
                await self._feed(rows, scheduler)
            finally:
                scheduler.close()
        if self._stopped_by == "max_items":
            self._left += await anyio.to_thread.run_sync(self._count_left, rows)

    async def _feed(self, rows: Iterator[Parsed], scheduler: ImageScheduler) -> None:
        if self.settings.max_items is not None:
            await self._feed_counted(rows, scheduler, self.settings.max_items)
            return
        while batch := await _next_batch(rows):
            for item in self._admission.screen(batch):
                if isinstance(item, Row):
                    if not scheduler.submit_nowait(item):
                        await scheduler.submit_waiting(item)
                else:
                    await self._record(self._invalid_result(item))

    async def _feed_counted(
        self, rows: Iterator[Parsed], scheduler: ImageScheduler, budget: int
    ) -> None:
        """_feed with --max-items: row by row, to stop at the row that would be one too many
        (the rows after it are then counted, not marked as met)."""
        while batch := await _next_batch(rows):
            for n, item in enumerate(batch):
                if budget <= 0:
                    self._stopped_by = "max_items"
                    self._left = self._count_left(iter(batch[n:]))
                    return
                decision = self._admission.decide(item)
                if decision is Admit.RECORD_INVALID:
                    assert isinstance(item, InvalidRow)
                    await self._record(self._invalid_result(item))
                elif decision is Admit.SEND:
                    assert isinstance(item, Row)
                    if not scheduler.submit_nowait(item):
                        await scheduler.submit_waiting(item)
                    budget -= 1

    def _count_left(self, rows: Iterator[Parsed]) -> int:
        """After --max-items: how many of the remaining rows a next run would send."""
        return sum(1 for item in rows if self._admission.decide(item) is not Admit.SKIP)

    def _invalid_result(self, item: InvalidRow) -> Result:
        return Result(
            item.line,
            item.image_id,
            item.tag,
            Outcome.INVALID,
            error=item.error,
            at=self._wall(),
            value=item.value,
            api=self._api,
        )

    # ── workers ─────────────────────────────────────────────────────────────────────────

    async def _work(self, ready: ObjectReceiveStream[Row], scheduler: ImageScheduler) -> None:
        batching = self.settings.batch_size > 1  # only then do waiting rows count (read-ahead)
        with ready:
            while True:
                try:
                    first = await get(ready)
                except anyio.EndOfStream:
                    return
                if batching:
                    scheduler.taken()
                if not await self._serve_image(first, scheduler) or self.stopping:
                    return

    async def _serve_image(
        self, row: Row | None, scheduler: ImageScheduler, retrying: _Retrying | None = None
    ) -> bool:
        """Settle ``row``, then the rows of its image parked behind it, one request at a time.

        ``retrying``: carry on with a batch whose retry was deferred. Returns False when the run
        stopped or aborted with rows of this image unsettled (left for the resume).
        """
        settings = self.settings
        sink = self._sink
        may_defer = retrying is None  # a deferred retry's task already holds no worker
        while row is not None and not self.stopping:
            grow = False  # a batch not sent yet may take more rows of its image (_send)
            if retrying is not None:
                batch, attempts, retrying = retrying.rows, retrying.attempts, None
            elif settings.batch_size > 1:
                batch = await scheduler.gather(row, settings.batch_size, settings.batch_linger)
                attempts, grow = _Attempts(self._clock()), True
            else:
                batch, attempts = [row], _Attempts(self._clock())
            settled = await self._settle(batch, attempts, may_defer=may_defer, grow=grow)
            if settled is None:
                return True  # its retry waits in a task of its own, which carries on from here
            for result in settled:
                sink.record(result)
            if sink.full:
                await sink.room()
            if len(settled) < len(batch):  # stopped or aborted: the rest left for resume
                return False
            row = scheduler.release(row.image_id)
        return True

    async def _settle(
        self, rows: list[Row], attempts: _Attempts, *, may_defer: bool = False, grow: bool = False
    ) -> list[Result] | None:
        """Send ``rows`` (one image's, in one request) until they have an outcome.

        Returns their results, or fewer (none) if the run stopped first, or None if the next
        attempt was handed to a task of its own (``may_defer``), so the caller's worker can
        take other rows while this one waits out its back-off. ``grow``: a fresh batch, which
        takes the rows of its image that arrived while it waited for its turn.
        """
        while True:
            # Sync fast paths first (a valid token here, a free slot in _send): most requests
            # await nothing before the request itself, and each coroutine costs on every row.
            token = self._tokens.valid_now() or await self._current_token()
            if token is None:
                return []
            sent = await self._send(rows, token, grow and attempts.made == 0)
            if sent is None:
                return []  # the run stopped before this row's turn came: left for the resume
            answer, sent_at = sent
            attempts.made += 1
            status = answer.status
            if status is not None and 200 <= status < 300 and self.pacer.calm:
                # The hot path, inline (two calls less a request): accepted while calm only
                # counts for the pacer (see _pace).
                decision: Decision = _ACCEPTED
                self.pacer.control.accepted_total += 1
            else:
                decision = self._decide(answer, attempts)
                self._pace(decision, answer, sent_at, attempts)
            if isinstance(decision, Settle):
                if len(rows) > 1 and decision.outcome is Outcome.FAILED and answer.status == 400:
                    return await self._one_by_one(rows, attempts)
                outcome, made = decision.outcome, attempts.base + attempts.made
                if len(rows) == 1:
                    return [self._result(rows[0], outcome, answer, made, attempts.started)]
                return [self._result(row, outcome, answer, made, attempts.started) for row in rows]
            if isinstance(decision, Abort):
                if attempts.refreshed or not await self._refresh(token):
                    return []
                attempts.refreshed = True
                continue
            if may_defer and self._defer(rows, attempts, decision.delay):
                return None
            if not await self._wait_or_stop(decision.delay):
                return []

    def _decide(self, answer: Answer, attempts: _Attempts) -> Decision:
        status = answer.status
        if status is not None and 200 <= status < 300:  # decide()'s first rule, inline
            return _ACCEPTED
        policy = self.settings.retry
        if self.pacer.control.refusals_not_about_rate:
            policy = self._short_retry
        return decide(
            policy,
            answer,
            attempts.made - attempts.free,
            self._wall(),
            self._rng,
            absent_is_ok=self._absent_is_ok,
        )

    def _pace(
        self, decision: Decision, answer: Answer, sent_at: float, attempts: _Attempts
    ) -> None:
        """Tell the pacer what the answer says of the cloud's pace. While the cloud accepts
        nothing at all, the attempt is not counted against the row (up to a bound), so an
        outage does not burn rows as ``gave_up``: the outage limit ends such a run instead."""
        pacer = self.pacer
        if decision is _ACCEPTED and pacer.calm:
            pacer.control.accepted_total += 1  # an accepted answer changes nothing when calm
            return
        signal = _signal(decision, answer)
        if signal is None:
            return
        asked = decision.server_asked if isinstance(decision, Retry) else None
        pacer.answered(sent_at=sent_at, signal=signal, retry_after=asked, fresh=attempts.made == 1)
        free = signal is not Signal.ACCEPTED and pacer.control.refusing_all
        if free and attempts.free < _FREE_ATTEMPTS * self.settings.retry.max_attempts:
            attempts.free += 1

    def _defer(self, rows: list[Row], attempts: _Attempts, delay: float) -> bool:
        """Hand a row's retry to a task of its own, if the bound on such tasks allows."""
        if self._work_group is None or self._scheduler is None:
            return False
        if self._deferred >= self.settings.max_parked:
            return False  # bounded: past it, the worker waits out the back-off itself
        self._deferred += 1
        self._work_group.start_soon(
            self._retry_later, _Retrying(rows, attempts), delay, self._scheduler
        )
        return True

    async def _retry_later(
        self, retrying: _Retrying, delay: float, scheduler: ImageScheduler
    ) -> None:
        try:
            if await self._wait_or_stop(delay):
                await self._serve_image(retrying.rows[0], scheduler, retrying)
        finally:
            self._deferred -= 1

    async def _one_by_one(self, rows: list[Row], attempts: _Attempts) -> list[Result]:
        """A batch was refused as a whole (400): find out which rows the server refuses."""
        settled: list[Result] = []
        for row in rows:
            each = _Attempts(attempts.started, base=attempts.base + attempts.made)
            results = await self._settle([row], each)
            assert results is not None  # never deferred: the rows after it wait their turn
            settled += results
            if not results or self.stopping:
                break
        return settled

    async def _send(
        self, rows: list[Row], token: str, grow: bool = False
    ) -> tuple[Answer, float] | None:
        """Send one request when a slot and the pacer allow; None if the run stopped first
        (a stop does not wait for turns the pacer gives out at one a second). ``grow``: first
        add the rows of the image that arrived meanwhile (``rows`` grows in place)."""
        if self.in_flight >= self.settings.concurrency:
            if not await self._unless_stopped(self._wait_for_room):
                return None
        else:
            self.in_flight += 1
        try:
            sent_at = self.pacer.free_now()
            if sent_at is None:
                sent_at = await self._unless_stopped(self.pacer.wait_turn)
                if sent_at is None:
                    return None
            self.tally.attempts += 1
            if grow and self._scheduler is not None:
                self._scheduler.top_up(rows, self.settings.batch_size)
            if len(rows) == 1:
                tags = [(rows[0].tag, rows[0].value)]
            else:
                tags = [(row.tag, row.value) for row in rows]
            answer = await self._send_one(rows[0].image_id, tags, token)
        finally:
            if self._room_waiters:
                self._leave_flight()
            else:
                self.in_flight -= 1  # _leave_flight's common case, inline: a call less
        self.tally.answered(answer.status, answer.error)
        return answer, sent_at

    async def _unless_stopped(self, wait: Callable[[], Awaitable[_T]]) -> _T | None:
        """``await wait()``, or None once the run is asked to stop."""
        if self.stopping:
            return None
        with anyio.CancelScope() as scope:
            self._stoppable.add(scope)
            try:
                return await wait()
            finally:
                self._stoppable.discard(scope)
        return None

    async def _wait_for_room(self) -> bool:
        """Wait for a request slot; the request that frees one hands it over (FIFO)."""
        room = anyio.Event()
        self._room_waiters.append(room)
        try:
            await room.wait()
        except BaseException:
            if room.is_set():
                self._leave_flight()  # handed a slot we will not use: pass it on
            else:
                self._room_waiters.remove(room)
            raise
        return True

    def _leave_flight(self) -> None:
        if self._room_waiters:
            self._room_waiters.popleft().set()  # the slot goes straight to the next sender
        else:
            self.in_flight -= 1

    async def _current_token(self) -> str | None:
        """The token to send, renewed if due; None (and the run aborted) if renewal was refused."""
        try:
            return await self._tokens.token()
        except AuthRefused as exc:
            self.abort(str(exc))
            return None

    async def _refresh(self, rejected: str) -> bool:
        """The token was refused: get a new one once for everybody, or abort the run."""
        try:
            await self._tokens.refresh(rejected)
        except AuthRefused as exc:
            self.abort(str(exc))
            return False
        return True

    async def _wait_or_stop(self, delay: float) -> bool:
        """Sleep ``delay`` before a retry; False if the run was asked to stop meanwhile."""
        with anyio.move_on_after(delay):
            await self._stop_requested.wait()
            return False
        return True

    def _result(
        self, row: Row, outcome: Outcome, answer: Answer, attempts: int, started: float
    ) -> Result:
        error = None
        if outcome is not Outcome.OK:
            error = answer.error or f"HTTP {answer.status}"
        elapsed_ms = round((self._clock() - started) * 1000)
        # Positional, in Result's field order: keywords cost a dict per row.
        return Result(
            row.line, row.image_id, row.tag, outcome, answer.status, attempts, error,
            answer.request_id, self._wall(), elapsed_ms, self._op, row.value, self._api,
        )  # fmt: skip

    async def _record(self, result: Result) -> None:
        self._sink.record(result)
        if self._sink.full:
            await self._sink.room()
