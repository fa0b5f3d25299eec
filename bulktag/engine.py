"""The engine: one task group owns the producer, the workers and the journal sink.

    rows (CSV; pipes in a thread) ─► producer ─ resume filter, in-run duplicates,
                                      │          invalid rows straight to the sink
                                      ▼
                               ImageScheduler ─ one request per image in flight; others
                                      │          parked (bounded stream = backpressure)
                                      ▼
                       N workers: gather (a row, or with IMS up to ten of one image's rows)
                                  token ─► Pacer (ceiling + pushback) ─► transport
                                  ─► policy.decide ─► sleep and retry | settle
                                      │ sink.record(): a call (waits only when the writer
                                      ▼ is far behind)
                               JournalSink: tally, failure breaker; one writer task

Stopping. ``request_stop()`` (first SIGINT/SIGTERM, a time limit) stops reading input at once
and lets in-flight rows finish for up to ``grace_period`` seconds; rows waiting for a retry are
left for the next run. ``abort()`` (credentials refused, breaker, journal unwritable) and
``cancel_now()`` (second signal) cancel the workers at once. In every case the sink drains
what workers already settled and the journal is flushed: nothing settled is lost, and nothing
unsettled is recorded, so a resumed run simply sends it again (the PUT is idempotent).

Batches. With ``batch_size`` > 1 (IMS) a worker sends a row together with the rows of the same
image parked behind it, as one request; one answer settles them all, and every row still gets
its own journal record (the batch's status, request id and attempts). One request is one
slot of the rate and one pacing observation, whatever it carries. A batch the server refuses
with a 400 is sent again row by row, so one row it cannot take does not fail its siblings.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream as ObjectReceiveStream

from bulktag.admission import ALL, Admission, Api, Op, Shard
from bulktag.admission import Decision as Admit
from bulktag.auth import AuthRefused, TokenProvider
from bulktag.journal import JournalWriter, ResumeIndex
from bulktag.model import InvalidRow, Outcome, Result, Row, Tag
from bulktag.pacing import Pacer, PacingPolicy
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

    @property
    def incomplete(self) -> bool:
        """Stopped by a limit with work left over (not by a signal or an abort)."""
        if self.stopped_by == "max_items":
            return self.left > 0
        return self.stopped_by == "max_duration"


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
        self.in_flight = 0

    # ── control ─────────────────────────────────────────────────────────────────────────

    def request_stop(self, reason: str = "signal") -> None:
        """Stop reading input; let in-flight rows finish within the grace period."""
        if self._stopped_by is None:
            self._stopped_by = reason
        self.stopping = True
        self._stop_requested.set()
        self._producer_scope.cancel()

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
        ready_send, ready_recv = anyio.create_memory_object_stream[Row](concurrency)
        scheduler = ImageScheduler(
            ready_send, self.settings.max_parked, serialize=self.settings.serialize_images
        )
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._sink.run)
            await outer.start(self._watch_stop)
            with ready_recv, self._work_scope:
                async with anyio.create_task_group() as work:
                    work.start_soon(self._produce, rows, scheduler)
                    for _ in range(concurrency):
                        work.start_soon(self._work, ready_recv.clone(), scheduler)
            self._finished = True
            self._sink.close()  # settled rows still waiting get written, then the journal closes
            self._watch_scope.cancel()
        return RunReport(
            tally=self.tally,
            elapsed=self._clock() - started,
            aborted=self._aborted,
            interrupted=self._stopped_by == "signal",
            stopped_by=self._stopped_by,
            left=self._left,
            pace_cuts=self.pacer.cuts,
        )

    async def _watch_stop(self, *, task_status: TaskStatus[None]) -> None:
        with self._watch_scope:
            task_status.started()
            await self._stop_requested.wait()
            await anyio.sleep(self.settings.grace_period)
            self._work_scope.cancel()  # grace is over: in-flight rows are left for the resume

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
        settings = self.settings
        batching = settings.batch_size > 1
        sink = self._sink
        with ready:
            while True:
                try:
                    first = await get(ready)
                except anyio.EndOfStream:
                    return
                row: Row | None = first
                while row is not None and not self.stopping:
                    if batching:
                        batch = await scheduler.gather(
                            row, settings.batch_size, settings.batch_linger
                        )
                    else:
                        batch = [row]
                    settled = await self._settle(batch)
                    for result in settled:
                        sink.record(result)
                    if sink.full:
                        await sink.room()
                    if len(settled) < len(batch):  # stopped or aborted: the rest left for resume
                        return
                    row = scheduler.release(row.image_id)
                if self.stopping:
                    return

    async def _settle(
        self, rows: list[Row], before: int = 0, started: float | None = None
    ) -> list[Result]:
        """Send ``rows`` (one image's, in one request) until they have an outcome.

        Returns their results, or fewer (none) if the run stopped first. ``before``: requests
        already sent for these rows in a batch that had to be split.
        """
        started = self._clock() if started is None else started
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            # Sync fast paths first (a valid token here, a free slot in _send): most requests
            # await nothing before the request itself, and each coroutine costs on every row.
            token = self._tokens.valid_now() or await self._current_token()
            if token is None:
                return []
            answer, sent_at = await self._send(rows, token)
            status = answer.status
            if status is not None and 200 <= status < 300:  # decide()'s first rule, inline
                decision: Decision = _ACCEPTED
            else:
                decision = decide(
                    self.settings.retry,
                    answer,
                    attempt,
                    self._wall(),
                    self._rng,
                    absent_is_ok=self._absent_is_ok,
                )
            if status is not None and not (decision is _ACCEPTED and self.pacer.calm):
                self._pace(decision, sent_at)  # an accepted answer changes nothing when calm
            if isinstance(decision, Settle):
                if len(rows) > 1 and decision.outcome is Outcome.FAILED and answer.status == 400:
                    return await self._one_by_one(rows, before + attempt, started)
                outcome, attempts = decision.outcome, before + attempt
                if len(rows) == 1:
                    return [self._result(rows[0], outcome, answer, attempts, started)]
                return [self._result(row, outcome, answer, attempts, started) for row in rows]
            if isinstance(decision, Abort):
                if refreshed or not await self._refresh(token):
                    return []
                refreshed = True
                continue
            if not await self._wait_or_stop(decision.delay):
                return []

    async def _one_by_one(self, rows: list[Row], before: int, started: float) -> list[Result]:
        """A batch was refused as a whole (400): find out which rows the server refuses."""
        settled: list[Result] = []
        for row in rows:
            results = await self._settle([row], before, started)
            settled += results
            if not results or self.stopping:
                break
        return settled

    async def _send(self, rows: list[Row], token: str) -> tuple[Answer, float]:
        sent_at = self.pacer.free_now()
        if sent_at is None:
            sent_at = await self.pacer.wait_turn()
        self.tally.attempts += 1
        self.in_flight += 1
        try:
            if len(rows) == 1:
                tags = [(rows[0].tag, rows[0].value)]
            else:
                tags = [(row.tag, row.value) for row in rows]
            answer = await self._send_one(rows[0].image_id, tags, token)
        finally:
            self.in_flight -= 1
        self.tally.answered(answer.status, answer.error)
        return answer, sent_at

    def _pace(self, decision: Decision, sent_at: float) -> None:
        """Tell the pacer about an answer (no answer at all says nothing about the load)."""
        if isinstance(decision, Abort):
            return
        pushback = decision.pushback
        asked = decision.server_asked if isinstance(decision, Retry) else None
        self.pacer.answered(sent_at=sent_at, pushback=pushback, retry_after=asked)

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
