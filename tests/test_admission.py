"""Admission's fast lane for batches of Glance adds (screen) must keep exactly what deciding
row by row keeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bulktag.admission import Admission, Decision
from bulktag.journal import ResumeIndex, pair_key
from bulktag.model import InvalidRow, Row
from bulktag.summary import Tally

IMAGES = [f"00000000-0000-4000-8000-{n:012d}" for n in range(4)]
TAGS = ["a", "b", "c"]

pairs = st.tuples(st.sampled_from(IMAGES), st.sampled_from(TAGS))


def admissions(index: ResumeIndex, retry_failed: bool) -> tuple[Admission, Admission]:
    return (
        Admission(index, Tally(), retry_failed=retry_failed),
        Admission(index, Tally(), retry_failed=retry_failed),
    )


@given(
    batches=st.lists(st.lists(st.one_of(pairs, pairs, st.none()), max_size=12), max_size=4),
    done=st.sets(pairs, max_size=6),
    failed=st.sets(pairs, max_size=6),
    retry_failed=st.booleans(),
)
def test_screening_a_batch_keeps_exactly_what_deciding_row_by_row_keeps(
    batches: list[list[tuple[str, str] | None]],
    done: set[tuple[str, str]],
    failed: set[tuple[str, str]],
    retry_failed: bool,
) -> None:
    """screen() is decide() for a batch: the same items kept, in order, the same tallies, and
    the same memory of rows met (a duplicate in a later batch is still one)."""
    index = ResumeIndex({pair_key(*p) for p in done}, {pair_key(*p) for p in failed - done})
    screening, deciding = admissions(index, retry_failed)
    assert screening._plain  # the fast lane is taken (for batches without an invalid row)
    line = 1
    for pairs_of_batch in batches:
        batch: list[Row | InvalidRow] = []
        for pair in pairs_of_batch:
            line += 1
            batch.append(Row(line, *pair) if pair else InvalidRow(line, "x", "y", "bad"))
        kept = [item for item in batch if deciding.decide(item) is not Decision.SKIP]
        assert kept == screening.screen(batch)
    assert deciding._tally == screening._tally


def test_screening_a_resumed_batch_keeps_only_what_is_not_done() -> None:
    rows = [Row(n, IMAGES[n % 4], TAGS[n % 3]) for n in range(2, 14)]
    index = ResumeIndex({pair_key(r.image_id, r.tag) for r in rows[:9]}, set())
    tally = Tally()
    assert rows[9:] == Admission(index, tally).screen(rows)
    assert (12, 9, 0) == (tally.read, tally.skipped_done, tally.skipped_duplicate)


def test_screening_a_batch_that_is_all_done_keeps_nothing_and_counts_it_all() -> None:
    rows = [Row(n, IMAGES[n % 4], TAGS[n % 3]) for n in range(2, 14)]
    index = ResumeIndex({pair_key(r.image_id, r.tag) for r in rows}, set())
    tally = Tally()
    admission = Admission(index, tally)
    assert [] == admission.screen(rows)
    assert [] == admission.screen(rows[:5])
    assert (17, 17) == (tally.read, tally.skipped_done)
