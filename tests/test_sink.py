"""The journal sink on its own: records written in order by one writer, nothing lost at close,
recorders held back when too much waits, the breaker fed, a write error stopping it all."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import anyio.lowlevel

from bulktag.journal import JournalWriter
from bulktag.model import Outcome, Result
from bulktag.sink import JournalSink
from bulktag.summary import FailureBreaker, Tally

IMAGE = "00000000-0000-4000-8000-000000000001"


def result(line: int, outcome: Outcome = Outcome.OK, status: int = 204) -> Result:
    return Result(line, IMAGE, f"t{line}", outcome, status=status, attempts=1)


class Aborts(list[str]):
    def __call__(self, reason: str) -> None:
        self.append(reason)


def sink_for(path: Path, threshold: int = 3, limit: int = 4096) -> tuple[JournalSink, Aborts]:
    aborts = Aborts()
    sink = JournalSink(JournalWriter(path), Tally(), FailureBreaker(threshold), aborts, limit)
    return sink, aborts


def lines_of(path: Path) -> list[int]:
    return [json.loads(text)["line"] for text in path.read_text().splitlines()]


async def test_every_record_is_written_in_order_by_the_time_the_writer_returns(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "j.jsonl"
    sink, aborts = sink_for(journal)
    async with anyio.create_task_group() as group:
        group.start_soon(sink.run)
        for n in range(1, 101):
            sink.record(result(n))
            if n % 7 == 0:
                await anyio.lowlevel.checkpoint()  # let the writer take what is there
        sink.close()
    assert list(range(1, 101)) == lines_of(journal)
    assert [] == aborts


async def test_recorders_wait_for_room_when_too_many_lines_wait(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    sink, _ = sink_for(journal, limit=5)
    async with anyio.create_task_group() as group:
        for n in range(1, 6):
            sink.record(result(n))
        assert sink.full
        group.start_soon(sink.run)
        with anyio.fail_after(5):
            await sink.room()  # returns once the writer took the five lines
        assert not sink.full
        sink.close()
    assert [1, 2, 3, 4, 5] == lines_of(journal)


async def test_an_ok_row_resets_the_breaker_between_failures(tmp_path: Path) -> None:
    sink, aborts = sink_for(tmp_path / "j.jsonl", threshold=3)
    failed = [result(n, Outcome.FAILED, 403) for n in range(1, 5)]
    async with anyio.create_task_group() as group:
        group.start_soon(sink.run)
        sink.record(failed[0])
        sink.record(failed[1])
        sink.record(result(9))  # an ok in between: the failures are not consecutive
        sink.record(failed[2])
        sink.record(failed[3])
        assert [] == aborts
        sink.record(result(10, Outcome.FAILED, 403))  # the third in a row
        assert 1 == len(aborts)
        sink.close()


class FullDisk(JournalWriter):
    def write_batch(self, lines: list[bytes]) -> None:
        raise OSError(28, "No space left on device")


async def test_a_write_error_aborts_once_and_nothing_more_is_counted(tmp_path: Path) -> None:
    aborts = Aborts()
    tally = Tally()
    sink = JournalSink(FullDisk(tmp_path / "j.jsonl"), tally, FailureBreaker(0), aborts)
    async with anyio.create_task_group() as group:
        group.start_soon(sink.run)
        sink.record(result(1))
        await anyio.sleep(0.05)
        sink.record(result(2))  # after the failed write: dropped, not counted
        sink.close()
    assert sink.broken
    assert 1 == len(aborts)
    assert "No space left on device" in aborts[0]
    assert 1 == tally.recorded
