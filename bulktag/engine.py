"""The engine: one task group owns the producer, the workers and the journal sink.

    rows (CSV; pipes in a thread) ─► producer ─ resume filter, in-run duplicates,
                                      │          invalid rows straight to the sink
                                      ▼
                               ImageScheduler ─ one request per image in flight; others
                                      │          parked (bounded stream = backpressure)
                                      ▼
                       N workers: gather (a row, or with IMS up to ten of one image's rows),
                                  then the attempt loop (bulktag.attempt, shared with verify):
                                  token ─► Pacer (ceiling + the cloud's pace) ─► transport
                                  ─► policy.decide ─► settle | retry: the wait goes to a
                                     task of its own (a back-off holds no worker; requests
                                     in flight stay within --concurrency)
                                      │ sink.record(): a call (waits only when the writer
                                      ▼ is far behind)
                               JournalSink: tally, failure breaker; one writer task

Stopping. ``request_stop()`` (first SIGINT/SIGTERM, a time limit, ``max_outage`` with nothing
accepted) stops reading input at once (a pipe's reader thread is left to its read, never
waited for: the producer may keep the pipe open forever) and lets in-flight rows finish for up to
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

import contextlib
import random
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream as ObjectReceiveStream

from bulktag.admission import ALL, Admission, Shard
from bulktag.admission import Decision as Admit
from bulktag.attempt import AttemptLoop, Attempts, Sent
from bulktag.auth import TokenProvider
from bulktag.journal import JournalWriter, ResumeIndex
from bulktag.model import Answer, Api, InvalidRow, Op, Outcome, Result, Row, Tag, built
from bulktag.pacing import Pacer, PacingPolicy
from bulktag.policy import RetryPolicy, Settle
from bulktag.scheduler import ImageScheduler
from bulktag.sink import JournalSink
from bulktag.source import Parsed, RowReader
from bulktag.streams import ThreadFeed, get
from bulktag.summary import FailureBreaker, Tally

# Rows the producer takes at once. A file is read in the event loop, 2048 rows at a time: a
# thread cost more than the reading itself — its GIL switches hold up the loop when answers
# are ready, so reading in the loop costs less CPU a pair and gives more throughput. Only
# input that can wait on a producer (RowReader.may_wait: a pipe, a FIFO, a terminal) is read
# in a thread (ThreadFeed), which hands over the rows of each read at once: a row that has
# arrived never waits for the next one. The producer then takes what has come, up to
# _READ_BATCH rows, and never waits for more.
_READ_BATCH = 2048
# After --max-items, the rows left in a pipe are counted while they keep coming: a producer
# silent for _COUNT_WAIT (tail -f), one that never ends (yes), or a stop ends the count, which
# is then a lower bound. A stop must not wait for a producer.
_COUNT_WAIT = 1.0
_COUNT_LIMIT = 10.0

_Source = RowReader | ThreadFeed[Parsed]


_T = TypeVar("_T")
# Answers that are facts about the image, not the row (API-FACTS.md): not allowed to modify
# it (403), no such image (404; a tag already absent is settled ok before this), its tag quota
# (413 without Retry-After). Every other row of that image would get the same answer.
_IMAGE_REFUSALS = frozenset({403, 404, 413})
_REFUSED_IMAGES_KEPT = 4096  # images remembered as refused: bounded, oldest forgotten first


@dataclass(frozen=True, slots=True)
class _Retrying:
    rows: list[Row]
    attempts: Attempts


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
    pacing: dict[str, object] = field(default_factory=dict)  # what pacing found (bulktag/pacing)

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


def _source(rows: Iterator[Parsed]) -> _Source:
    """Where the rows are read: a file's in the event loop; anything that can wait on a
    producer — a pipe's, or any iterator but a file's RowReader — in a thread of its own."""
    if isinstance(rows, RowReader) and not rows.may_wait:
        return rows
    if isinstance(rows, RowReader):
        return ThreadFeed(rows.chunks())
    return ThreadFeed([item] for item in rows)


async def _next_batch(rows: _Source) -> list[Parsed]:
    """The next batch of rows (an empty list at the end)."""
    if isinstance(rows, ThreadFeed):
        return await rows.next_batch(_READ_BATCH)
    await anyio.lowlevel.checkpoint()  # a resume skips every row: others get their turn
    return rows.take(_READ_BATCH)


class Engine(AttemptLoop[list[Row], list[Result]]):
    """Runs rows to their outcomes; each request goes through :class:`AttemptLoop`."""

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
        pacer = Pacer(
            settings.rate,
            settings.pacing,
            clock=clock,
            sleep=sleep,
            burst=settings.burst,
            wall_clock=wall,
            slow_start_to=settings.concurrency,
        )
        # Glance answers 404 to removing an absent tag; IMS's batch delete answers 204, so an
        # IMS 404 always means the image (or the project) is unknown.
        absent_is_ok = settings.op is Op.REMOVE and settings.api is Api.GLANCE
        rng = rng or random.Random()
        super().__init__(
            pacer, tokens, settings.retry, wall=wall, rng=rng, absent_is_ok=absent_is_ok
        )
        self.settings = settings
        self.tally = Tally()
        self._send_one = send
        self._admission = Admission(
            index,
            self.tally,
            op=settings.op,
            retry_failed=settings.retry_failed,
            shard=settings.shard,
            api=settings.api,
        )
        self._clock = clock
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
        self._admitted = 0  # rows the producer took on (to send, or invalid to record)
        self._undecided: tuple[list[Parsed], int] = ([], 0)  # --max-items: a batch's rest
        self._counting = False  # counting the rows left; a second signal cuts it short
        self._producer_scope = anyio.CancelScope()
        self._work_scope = anyio.CancelScope()
        self._watch_scope = anyio.CancelScope()
        self._outage_scope = anyio.CancelScope()
        self.in_flight = 0
        # Requests in flight never pass --concurrency: past it, a sender waits for a slot,
        # handed over in order by the request that finishes (see send).
        self._room_waiters: deque[anyio.Event] = deque()
        # Rows whose retry waits in a task of its own, so that a back-off holds no worker.
        self._deferred = 0
        self._scheduler: ImageScheduler | None = None
        self._work_group: TaskGroup | None = None
        self._sleep = sleep
        self._stoppable: set[anyio.CancelScope] = set()  # waits that a stop ends
        # Images the server refused for good this run → the answer that said so: their other
        # rows are settled failed without a request (and without feeding the breaker).
        self._refused: dict[str, Result] = {}

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
        self._counting = False

    def abort(self, reason: str) -> None:
        if self._aborted is None:
            self._aborted = reason
        self.cancel_now("abort")

    # ── the run ─────────────────────────────────────────────────────────────────────────

    async def run(self, rows: Iterator[Parsed]) -> RunReport:
        started = self._clock()
        concurrency = self.settings.concurrency
        read_ahead = self.settings.read_ahead if self.settings.batch_size > 1 else 0
        # rows, or with read_ahead one marker an image (scheduler.taken gives its first row)
        ready_send, ready_recv = anyio.create_memory_object_stream[Row | str](
            read_ahead or concurrency
        )
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
                    work.start_soon(self._produce, _source(rows), scheduler)
                    for _ in range(concurrency):
                        work.start_soon(self._work, ready_recv.clone(), scheduler)
            self._finished = True
            self._sink.close()  # settled rows still waiting get written, then the journal closes
            self._watch_scope.cancel()
            self._outage_scope.cancel()
            await self._count_rows_left(rows)
        elapsed = self._clock() - started
        return RunReport(
            tally=self.tally,
            elapsed=elapsed,
            aborted=self._aborted,
            interrupted=self._stopped_by == "signal",
            stopped_by=self._stopped_by,
            left=self._left,
            pace_cuts=self.pacer.cuts,
            pacing=self.pacer.findings(elapsed),
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

    async def _count_rows_left(self, rows: Iterator[Parsed]) -> None:
        """What a next run would still do: the rows taken on and not settled (in flight, in a
        back-off, parked, or not yet handed over when the run stopped), plus — after a stop
        or an abort — the rest of a file input. A pipe's rest is not waited for (it may never
        end); a second signal cuts the count short."""
        self._left += self._admitted - self.tally.recorded
        stopped_early = self._stopped_by not in (None, "max_items")
        if not stopped_early:
            return
        batch, start = self._undecided
        self._left += self._count_quietly(iter(batch[start:]))
        if isinstance(rows, RowReader) and not rows.may_wait:
            self._counting = True
            self._left += await anyio.to_thread.run_sync(self._count_quietly, rows)

    def _count_quietly(self, rows: Iterator[Parsed]) -> int:
        """_count_left, with the tally's input counters left as they were: after a stop the
        summary says what this run read, not what it only counted."""
        tally = self.tally
        saved = (tally.read, tally.skipped_done, tally.skipped_still_bad)
        others = (tally.skipped_duplicate, tally.skipped_other_shard)
        try:
            return self._count_left(rows)
        finally:
            tally.read, tally.skipped_done, tally.skipped_still_bad = saved
            tally.skipped_duplicate, tally.skipped_other_shard = others

    # ── producer ────────────────────────────────────────────────────────────────────────

    async def _produce(self, rows: _Source, scheduler: ImageScheduler) -> None:
        try:
            with self._producer_scope:
                try:
                    await self._feed(rows, scheduler)
                finally:
                    scheduler.close()
            if self._stopped_by == "max_items":
                await self._count_rest(rows)
        finally:
            if isinstance(rows, ThreadFeed):
                rows.close()  # its thread ends at its next read; nobody waits for it

    async def _count_rest(self, rows: _Source) -> None:
        if isinstance(rows, RowReader):  # a file: to its end
            self._left += await anyio.to_thread.run_sync(self._count_left, rows)
            return
        with anyio.move_on_after(_COUNT_LIMIT):
            while not self.stopping and (batch := await rows.next_batch(_READ_BATCH, _COUNT_WAIT)):
                self._left += self._count_left(iter(batch))

    async def _feed(self, rows: _Source, scheduler: ImageScheduler) -> None:
        """Hand the input's rows to the scheduler and its invalid rows to the sink, a batch at a
        time. With --max-items a batch is screened in parts no longer than what is left of the
        budget (a part can send no more than that), so the feed stops at the row that would be
        one too many: the rows after it are then counted, not marked as met."""
        budget = self.settings.max_items
        left = sys.maxsize if budget is None else budget
        while batch := await _next_batch(rows):
            start = 0
            while start < len(batch):
                if left <= 0:
                    self._stopped_by = "max_items"
                    self._left = self._count_left(iter(batch[start:]))
                    return
                end = min(len(batch), start + left)
                items = self._admission.screen(
                    batch[start:end] if start or end < len(batch) else batch
                )
                self._admitted += len(items)
                self._undecided = batch, end  # the rows after these: counted if the run stops
                for item in items:
                    if isinstance(item, Row):
                        if not scheduler.submit_nowait(item):
                            await scheduler.submit_waiting(item)
                        left -= 1
                    else:
                        await self._record(self._invalid_result(item))
                start = end
            self._undecided = [], 0

    def _count_left(self, rows: Iterator[Parsed]) -> int:
        """How many of the remaining rows a next run would send (or record as invalid)."""
        decide, skip, left = self._admission.decide, Admit.SKIP, 0
        for n, item in enumerate(rows):
            if decide(item) is not skip:
                left += 1
            if n % 4096 == 4095 and not self._counting and self._stopped_by != "max_items":
                break  # a second signal: stop now rather than count to the end
        return left

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

    async def _work(self, ready: ObjectReceiveStream[Row | str], scheduler: ImageScheduler) -> None:
        with ready, contextlib.suppress(anyio.EndOfStream):  # all rows handed out: done
            await self._serve(None, scheduler, ready=ready)

    async def _serve(
        self,
        row: Row | None,
        scheduler: ImageScheduler,
        retrying: _Retrying | None = None,
        ready: ObjectReceiveStream[Row | str] | None = None,
    ) -> None:
        """Settle ``row``, then the rows of its image parked behind it, one request at a time;
        a worker (``ready``) then takes the next image from the stream, until it ends
        (``anyio.EndOfStream``). One coroutine for all of a worker's rows: a coroutine per row
        cost on every row.

        ``retrying``: carry on with a batch whose retry was deferred. Ends as soon as the run
        stops or aborts, rows of this image unsettled or not (left for the resume).
        """
        settings = self.settings
        sink = self._sink
        batching = settings.batch_size > 1  # only then do waiting rows count (read-ahead)
        may_defer = retrying is None  # a deferred retry's task already holds no worker
        while not self.stopping:
            if row is None:
                if ready is None:
                    return
                item = await get(ready)
                # batching: the next image of the window (taken gives its first row); else the row
                row = scheduler.taken(item) if batching else cast(Row, item)
            if self._refused and row.image_id in self._refused:
                row = await self._settle_refused(row, scheduler)
                continue
            grow = False  # a batch not sent yet may take more rows of its image (send)
            if retrying is not None:
                batch, attempts, retrying = retrying.rows, retrying.attempts, None
            elif batching:
                batch = await scheduler.gather(row, settings.batch_size, settings.batch_linger)
                attempts, grow = Attempts(self._clock()), True
            else:
                batch, attempts = [row], Attempts(self._clock())
            settled = await self.attempt(batch, attempts, may_defer=may_defer, grow=grow)
            if settled is None:  # its retry waits in a task of its own, which carries on there
                row = None
                continue
            for result in settled:
                sink.record(result)
            if sink.full:
                await sink.room()
            if len(settled) < len(batch):  # stopped or aborted: the rest left for resume
                return
            last = settled[-1]
            if last.outcome is Outcome.FAILED and last.status in _IMAGE_REFUSALS:
                self._remember_refused(row.image_id, last)
            row = scheduler.release(row.image_id)

    def _remember_refused(self, image_id: str, cause: Result) -> None:
        refused = self._refused
        if len(refused) >= _REFUSED_IMAGES_KEPT:
            del refused[next(iter(refused))]
        refused[image_id] = cause

    async def _settle_refused(self, row: Row, scheduler: ImageScheduler) -> Row | None:
        """Record ``row`` failed as its image's earlier answer says, without a request; return
        the image's next row. attempts=0: a row not sent tells the breaker nothing."""
        cause = self._refused[row.image_id]
        error = f"not sent: the image refused row {cause.line} with HTTP {cause.status}"
        if cause.error:
            error += f" ({cause.error})"
        result = Result(row.line, row.image_id, row.tag, Outcome.FAILED, cause.status, 0, error)
        await self._record(
            result._replace(
                request_id=cause.request_id,
                at=self._wall(),
                op=self._op,
                value=row.value,
                api=self._api,
            )
        )
        return scheduler.release(row.image_id)

    def settled(
        self, rows: list[Row], decision: Settle, answer: Answer, attempts: Attempts
    ) -> list[Result] | None:
        """Every row's result, with the answer that settled them; None for a batch the server
        refused as a whole (400): its rows go one by one, to find which one it refuses."""
        if len(rows) > 1 and decision.outcome is Outcome.FAILED and answer.status == 400:
            return None
        outcome, made = decision.outcome, attempts.base + attempts.made
        if len(rows) == 1:  # the common case without a comprehension's call (engine_overhead)
            return [self._result(rows[0], outcome, answer, made, attempts.started)]
        return [self._result(row, outcome, answer, made, attempts.started) for row in rows]

    def unsettled(self) -> list[Result]:
        return []  # stopped or aborted first: the rows are left for the resume

    def defer(self, rows: list[Row], attempts: Attempts, delay: float) -> bool:
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
            if await self.wait_or_stop(delay):
                await self._serve(retrying.rows[0], scheduler, retrying)
        finally:
            self._deferred -= 1

    async def one_by_one(self, rows: list[Row], attempts: Attempts) -> list[Result]:
        """A batch was refused as a whole (400): find out which rows the server refuses."""
        settled: list[Result] = []
        for row in rows:
            each = Attempts(attempts.started, base=attempts.base + attempts.made)
            results = await self.attempt([row], each)
            assert results is not None  # never deferred: the rows after it wait their turn
            settled += results
            if not results or self.stopping:
                break
        return settled

    async def send(self, rows: list[Row], token: str, grow: bool = False) -> Sent | None:
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
            level = self.pacer.level
            self.tally.attempts += 1
            if grow and self._scheduler is not None:
                self._scheduler.top_up(rows, self.settings.batch_size)
            if len(rows) == 1:  # as in settled: measurably cheaper for the common case
                tags = [(rows[0].tag, rows[0].value)]
            else:
                tags = [(row.tag, row.value) for row in rows]
            try:
                answer = await self._send_one(rows[0].image_id, tags, token)
            finally:
                self.pacer.returned()
        finally:
            if self._room_waiters:
                self._leave_flight()
            else:
                self.in_flight -= 1  # _leave_flight's common case, inline: a call less
        self.tally.answered(answer.status, answer.error)
        return answer, sent_at, level

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

    async def wait_or_stop(self, delay: float) -> bool:
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
        return built(Result, (
            row.line, row.image_id, row.tag, outcome, answer.status, attempts, error,
            answer.request_id, self._wall(), elapsed_ms, self._op, row.value, self._api,
        ))  # fmt: skip

    async def _record(self, result: Result) -> None:
        self._sink.record(result)
        if self._sink.full:
            await self._sink.room()
