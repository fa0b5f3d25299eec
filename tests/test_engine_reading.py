"""How the engine takes rows: a file in the event loop, a batch at a time, with a turn for the
other tasks between batches; anything that can wait on a producer (a pipe on stdin, a FIFO, any
iterator but a file's reader) in a thread of its own, whose rows are on their way as soon as
they are read — whatever the producer does next — and which a stop never waits for."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from bulktag import engine as engine_module
from bulktag.auth import StaticToken
from bulktag.engine import Engine, EngineSettings, RunReport
from bulktag.journal import JournalWriter, ResumeIndex, pair_key
from bulktag.model import Answer, Outcome, Row, Tag
from bulktag.source import open_text, read_rows, read_stream

PATIENCE = 20.0  # seconds a test waits for what must happen at once; only a hang reaches it


def image(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def lines(first: int, count: int) -> bytes:
    return "".join(f"{image(n)},gold\n" for n in range(first, first + count)).encode()


class Cloud:
    """A sender that answers 204 at once and remembers the images it was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._sent_more = anyio.Event()

    async def send(self, image_id: str, tags: Sequence[Tag], token: str) -> Answer:
        self.sent.append(image_id)
        self._sent_more.set()
        self._sent_more = anyio.Event()
        return Answer(204)

    async def until_sent(self, count: int) -> None:
        while len(self.sent) < count:
            await self._sent_more.wait()


def engine_over(
    tmp_path: Path, index: ResumeIndex, cloud: Cloud | None = None, **settings: object
) -> Engine:
    journal = JournalWriter(tmp_path / "journal.jsonl", fsync_interval=0)
    send = (cloud or Cloud()).send
    options = EngineSettings(rate=1e6, burst=64, **settings)  # type: ignore[arg-type]
    return Engine(options, send, StaticToken("t"), journal, index)


async def run_on_open_pipe(
    engine: Engine, data: bytes = b"", beside: Callable[[int], Awaitable[None]] | None = None
) -> RunReport:
    """Run ``engine`` over a pipe holding ``data`` whose write end stays open until the run has
    ended, ``beside(write_fd)`` going on meanwhile (its producer, a stop)."""
    read, write = os.pipe()
    os.write(write, data)
    try:
        with anyio.fail_after(PATIENCE):
            async with anyio.create_task_group() as tasks:
                if beside is not None:
                    tasks.start_soon(beside, write)
                return await engine.run(read_stream(io.FileIO(read, "rb")))
    finally:
        os.close(write)  # only now: the run ended with the producer still there


# -- where the reading happens -------------------------------------------------------------


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


# -- a row that has arrived is on its way; a stop does not wait for the producer -----------


@pytest.mark.parametrize("burst", [1, 5, 29, 3000])
async def test_rows_in_a_pipe_that_stays_open_are_sent_and_a_stop_does_not_wait(
    tmp_path: Path, burst: int
) -> None:
    """One row, then ``burst`` rows in one write, into a pipe its producer keeps open: every
    row is sent while the pipe is still open, and a stop ends the run with the pipe open."""
    cloud = Cloud()
    engine = engine_over(tmp_path, ResumeIndex.empty(), cloud)

    async def producer(write: int) -> None:
        os.write(write, lines(1, 1))
        await cloud.until_sent(1)
        await anyio.to_thread.run_sync(os.write, write, lines(2, burst))  # may fill the pipe
        await cloud.until_sent(1 + burst)
        engine.request_stop("signal")

    report = await run_on_open_pipe(engine, beside=producer)
    assert 1 + burst == report.tally.outcomes[Outcome.OK]
    assert [image(n) for n in range(1, 2 + burst)] == sorted(cloud.sent)


async def test_a_time_limit_on_a_silent_pipe_ends_the_run(tmp_path: Path) -> None:
    """A producer that writes nothing and never closes (``tail -f`` of an empty file)."""
    engine = engine_over(tmp_path, ResumeIndex.empty())

    async def time_limit(_: int) -> None:
        await anyio.sleep(0.2)
        engine.request_stop("max_duration")

    report = await run_on_open_pipe(engine, beside=time_limit)
    assert "max_duration" == report.stopped_by
    assert 0 == report.tally.read


async def test_max_items_on_a_pipe_that_stays_open_counts_what_came_and_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "_COUNT_WAIT", 0.2)
    engine = engine_over(tmp_path, ResumeIndex.empty(), max_items=2)
    report = await run_on_open_pipe(engine, lines(1, 5))
    assert (2, 3) == (report.tally.outcomes[Outcome.OK], report.left)
    assert report.incomplete


async def test_any_iterator_that_blocks_after_a_row_gets_that_row_sent_first(
    tmp_path: Path,
) -> None:
    """Not only pipes: rows from any iterator (which may block) go through the thread, and
    the row before a block is sent while the iterator still waits."""
    release = threading.Event()
    cloud = Cloud()
    engine = engine_over(tmp_path, ResumeIndex.empty(), cloud)

    def rows() -> Iterator[Row]:
        yield Row(1, image(1), "gold")
        release.wait(PATIENCE)
        yield Row(2, image(2), "gold")

    async def watcher() -> None:
        await cloud.until_sent(1)
        release.set()

    with anyio.fail_after(PATIENCE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watcher)
            report = await engine.run(rows())
    assert 2 == report.tally.outcomes[Outcome.OK]


async def test_an_error_reading_the_pipe_reaches_the_run(tmp_path: Path) -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError(5, "Input/output error")

    engine = engine_over(tmp_path, ResumeIndex.empty())
    with anyio.fail_after(PATIENCE), pytest.raises(BaseExceptionGroup) as caught:
        await engine.run(read_stream(Failing()))  # type: ignore[arg-type]
    assert caught.group_contains(OSError, match="Input/output error")


async def test_max_items_on_a_producer_that_never_ends_still_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``yes <row> | bulktag run --max-items 2``: the rows left are counted for a while, not
    for ever."""
    monkeypatch.setattr(engine_module, "_COUNT_LIMIT", 0.5)

    def endless() -> Iterator[Row]:
        line = 0
        while True:
            line += 1
            yield Row(line, image(line), "gold")

    engine = engine_over(tmp_path, ResumeIndex.empty(), max_items=2)
    with anyio.fail_after(PATIENCE):
        report = await engine.run(endless())
    assert 2 == report.tally.outcomes[Outcome.OK]
    assert report.left > 0
