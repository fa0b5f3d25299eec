"""How the engine takes rows: a file in the event loop, a batch at a time, with a turn for the
other tasks between batches; anything that can wait on a producer (a pipe on stdin) in the
reader thread, in big batches but never holding a slow producer's rows until a batch is full."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel

from bulktag.auth import StaticToken
from bulktag.engine import Engine, EngineSettings, _take
from bulktag.journal import JournalWriter, ResumeIndex, pair_key
from bulktag.model import Outcome, Row, Tag
from bulktag.policy import Answer
from bulktag.source import open_text, read_rows

U1 = "8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87"


def rows(n: int) -> Iterator[Row]:
    return (Row(line, U1, f"t{line}") for line in range(1, n + 1))


def arriving(gaps: list[float]) -> Iterator[Row]:
    """A row at once, then one more after each gap (seconds): a producer writing to a pipe."""
    yield Row(1, U1, "t1")
    for line, gap in enumerate(gaps, start=2):
        time.sleep(gap)
        yield Row(line, U1, f"t{line}")


def test_a_fast_input_fills_the_batch_and_the_rest_waits_for_the_next_trip() -> None:
    source = rows(10)
    assert [1, 2, 3, 4] == [row.line for row in _take(source, 4, linger=60.0)]
    assert [5, 6, 7, 8] == [row.line for row in _take(source, 4, linger=60.0)]
    assert [9, 10] == [row.line for row in _take(source, 4, linger=60.0)]
    assert [] == _take(source, 4, linger=60.0)


def test_a_slow_producer_ends_the_batch_with_the_first_row_after_the_linger() -> None:
    source = arriving([0.0, 0.0, 0.15, 0.0, 0.0])
    first = _take(source, 2048, linger=0.05)
    assert [1, 2, 3, 4] == [row.line for row in first]  # row 4 came after the linger
    assert [5, 6] == [row.line for row in _take(source, 2048, linger=0.05)]


# -- where the reading happens -------------------------------------------------------------


async def answer_204(image_id: str, tags: Sequence[Tag], token: str) -> Answer:
    return Answer(204)


def engine_over(tmp_path: Path, index: ResumeIndex) -> Engine:
    journal = JournalWriter(tmp_path / "journal.jsonl", fsync_interval=0)
    return Engine(EngineSettings(rate=1e6, burst=64), answer_204, StaticToken("t"), journal, index)


def image(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_a_file_is_read_in_the_loop_and_a_pipe_in_a_thread() -> None:
    read, write = os.pipe()
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        assert read_rows(open_text(pipe)).may_wait
    assert not read_rows(open_text(io.BytesIO(b"a,b\n"))).may_wait


async def test_a_stop_during_a_long_resume_of_a_file_is_heard_between_batches(
    tmp_path: Path,
) -> None:
    """A file is read in the event loop; a resume skips every row and never waits for
    anything else, so the loop must still give other tasks — a signal's stop — a turn."""
    pairs = [(image(n), "gold") for n in range(60_000)]
    data = "".join(f"{i},{t}\n" for i, t in pairs).encode()
    engine = engine_over(tmp_path, ResumeIndex({pair_key(*p) for p in pairs}, set()))

    async def stop_once_reading() -> None:
        while engine.tally.read == 0:
            await anyio.lowlevel.checkpoint()
        engine.request_stop("signal")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_once_reading)
        report = await engine.run(read_rows(open_text(io.BytesIO(data))))
    assert report.stopped_by == "signal"
    assert 0 < report.tally.read < len(pairs) // 2


async def test_a_pipe_waiting_for_its_producer_never_blocks_the_event_loop(
    tmp_path: Path,
) -> None:
    """A pipe is read in the reader thread: while its producer pauses, the loop goes on (here
    a ticker; in a run, answers, time limits and signals). Read in the loop, it would stall."""
    read, write = os.pipe()
    engine = engine_over(tmp_path, ResumeIndex.empty())
    ticks = 0

    def producer() -> None:
        with os.fdopen(write, "wb") as pipe:
            pipe.write(f"{image(1)},gold\n".encode())
            pipe.flush()
            time.sleep(0.5)
            pipe.write(f"{image(2)},gold\n".encode())

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    thread = threading.Thread(target=producer)
    thread.start()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ticker)
        with os.fdopen(read, "rb") as pipe:
            report = await engine.run(read_rows(open_text(pipe)))
        tasks.cancel_scope.cancel()
    thread.join()
    assert 2 == report.tally.outcomes[Outcome.OK]
    assert ticks >= 20  # ~50 in the half second the producer paused
