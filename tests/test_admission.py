"""Admission's inlined path for Glance adds must decide exactly as the general path does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bulktag.admission import Admission
from bulktag.journal import ResumeIndex, pair_key
from bulktag.model import InvalidRow, Row
from bulktag.summary import Tally

IMAGES = [f"00000000-0000-4000-8000-{n:012d}" for n in range(4)]
TAGS = ["a", "b", "c"]

pairs = st.tuples(st.sampled_from(IMAGES), st.sampled_from(TAGS))


def admissions(index: ResumeIndex, retry_failed: bool) -> tuple[Admission, Admission]:
    inlined = Admission(index, Tally(), retry_failed=retry_failed)
    general = Admission(index, Tally(), retry_failed=retry_failed)
    general._plain = False  # the path every other kind of row takes
    return inlined, general


@given(
    rows=st.lists(st.one_of(pairs, st.none()), max_size=30),  # None: an invalid row
    done=st.sets(pairs, max_size=6),
    failed=st.sets(pairs, max_size=6),
    retry_failed=st.booleans(),
)
def test_the_inlined_glance_path_decides_like_the_general_one(
    rows: list[tuple[str, str] | None],
    done: set[tuple[str, str]],
    failed: set[tuple[str, str]],
    retry_failed: bool,
) -> None:
    index = ResumeIndex({pair_key(*p) for p in done}, {pair_key(*p) for p in failed - done})
    inlined, general = admissions(index, retry_failed)
    assert inlined._plain
    for line, pair in enumerate(rows, start=2):
        item = Row(line, *pair) if pair else InvalidRow(line, "x", "y", "bad")
        assert general.decide(item) == inlined.decide(item)
    assert general._tally == inlined._tally
