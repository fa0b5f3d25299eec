"""benchmarks/report.py: a full run rewrites RESULTS.md's measured sections and keeps the
notes written after them. Pure string work; nothing here runs a benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# The benchmarks are scripts importing each other by name, not a package (as in
# test_bench_figures.py): appended, so none of their names shadows another test's imports.
sys.path.append(str(BENCHMARKS))

from report import NOTES_MARK, keeping_notes  # noqa: E402

NEW = "# bulktag benchmark results\n\n## 1. Throughput\n\nnew figures\n"


def test_a_full_run_keeps_the_notes_after_the_mark_and_replaces_what_is_before_it() -> None:
    before = f"# old\n\n## 1. Throughput\n\nold figures\n\n{NOTES_MARK}\n\n## 8. A note\n\nkept\n"
    after = keeping_notes(NEW, before)
    assert after.startswith(NEW.rstrip("\n"))
    assert "old figures" not in after
    assert after.endswith(f"{NOTES_MARK}\n\n## 8. A note\n\nkept\n")


def test_without_notes_or_a_file_before_the_document_is_written_as_it_is() -> None:
    assert NEW == keeping_notes(NEW, None)
    assert NEW == keeping_notes(NEW, "# a partial run's file, no notes\n")


def test_the_committed_results_mark_where_the_notes_begin_after_the_generated_sections() -> None:
    text = (BENCHMARKS / "RESULTS.md").read_text(encoding="utf-8")
    assert 1 == text.count(NOTES_MARK)
    mark = text.index(NOTES_MARK)
    assert text.index("\n## 7. ") < mark < text.index("\n## 8. ")
