"""Progress counts rows settled, not rows read: the reader runs thousands of rows ahead of the
workers, so percent and ETA come from rows done or skipped, and the read-ahead is shown apart."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bulktag.model import Outcome
from bulktag.progress import count_lines, position, settled
from bulktag.summary import Tally


def tally(read: int, ok: int = 0, failed: int = 0, **skipped: int) -> Tally:
    outcomes: Counter[Outcome] = Counter({Outcome.OK: ok, Outcome.FAILED: failed})
    return Tally(outcomes=outcomes, read=read, **skipped)


def test_all_rows_read_but_few_done_is_not_100_percent() -> None:
    """Issue 14: 300 rows read of a 301-line file with 20 ok showed ``300/301 lines (100%)``."""
    assert "20/301 lines settled (7%) · 280 read ahead" == position(tally(300, ok=20), 301, 3.0)


def test_the_eta_comes_from_the_pace_of_settled_rows() -> None:
    """200k rows at 240 a second: 72,000 done after 300 s, 128,001 lines left -> 8:53 more.
    From rows read (all 200k, far ahead) it used to say far less than the ~14 minutes left."""
    text = position(tally(200_000, ok=72_000), 200_001, 300.0)
    assert "72,000/200,001 lines settled (36%, ETA 0:08:53) · 128,000 read ahead" == text


def test_skipped_rows_count_as_settled_but_do_not_speed_up_the_eta() -> None:
    """A resume: 90,000 rows skipped at once, 1,000 sent in 100 s: 9,000 lines left at 10/s."""
    resumed = tally(91_000, ok=1_000, skipped_done=90_000)
    assert 91_000 == settled(resumed)
    assert "91,000/100,000 lines settled (91%, ETA 0:15:00)" == position(resumed, 100_000, 100.0)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        pytest.param({"read": 10, "ok": 4}, "4 settled · 6 read ahead", id="ahead"),
        pytest.param({"read": 10, "ok": 8, "failed": 2}, "10 settled", id="caught-up"),
        pytest.param(
            {"read": 9, "ok": 1, "skipped_duplicate": 2, "skipped_other_shard": 3,
             "skipped_still_bad": 1}, "7 settled · 2 read ahead", id="every-skip",
        ),
    ],
)  # fmt: skip
def test_without_a_line_count_settled_and_read_ahead_are_shown(
    counts: dict[str, int], expected: str
) -> None:
    """stdin, a pipe or a FIFO: no total (counting it would consume it)."""
    assert expected == position(tally(**counts), None, 60.0)


def test_count_lines_counts_a_last_line_without_newline(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"x\ny\nz")
    assert 3 == count_lines(tmp_path / "a.csv")
