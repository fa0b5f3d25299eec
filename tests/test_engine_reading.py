"""How the engine takes rows from the reader thread: in big batches, but never holding rows
from a slow producer (a pipe on stdin) until a whole batch has arrived."""

from __future__ import annotations

import time
from collections.abc import Iterator

from bulktag.engine import _take
from bulktag.model import Row

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
