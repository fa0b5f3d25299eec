"""kill -9 in the middle of a run against real Glance, then resume with the same journal."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import grouped, read_journal, write_csv

from .bulktag_cli import Invocation, describe, wait_for_records
from .conftest import Cloud

pytestmark = pytest.mark.integration

IMAGES = 50


def settled_count(count: Callable[[], int], quiet: float = 1.5, limit: float = 30.0) -> int:
    """The count once it stopped moving for ``quiet`` seconds (a loaded machine can take
    longer than any fixed sleep to finish the requests still in flight)."""
    deadline = time.monotonic() + limit
    last = count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = count()
        if now == last:
            return now
        last = now
    return last


TAGS_PER_IMAGE = 8


def test_kill_9_then_resume_completes_every_row_once(
    cloud: Cloud, bulktag: Callable[..., Invocation], tmp_path: Path
) -> None:
    images = cloud.open().create_images("killed", IMAGES)
    rows = grouped(images, TAGS_PER_IMAGE)
    journal = tmp_path / "journal.jsonl"
    args = (
        str(write_csv(tmp_path / "input.csv", rows)),
        *cloud.open_glance_args(),
        "--results",
        str(journal),
        "--concurrency",
        "16",
    )

    proc = bulktag(*args).start(tmp_path / "killed.out")
    try:
        wait_for_records(journal, len(rows) // 4, proc)
        proc.send_signal(signal.SIGKILL)  # no handler, no flush, no goodbye
    finally:
        proc.kill()
        proc.wait()
    # Requests in flight at the kill still complete inside Glance; let them land in its
    # access log before counting what the first run sent.
    sent_by_first = settled_count(lambda: len(cloud.glance_open.tag_puts(images)))
    before = read_journal(journal, torn_tail=True)
    settled_before = {(r["image_id"], r["tag"]) for r in before if r["outcome"] == "ok"}
    assert {r["outcome"] for r in before} == {"ok"}, before
    assert len(settled_before) < len(rows), "the run ended before the kill: nothing shown"
    # Whether the kill landed mid-write is luck: make sure the resume meets a torn last line.
    with journal.open("a") as tail:
        tail.write('{"line": 2, "image_id": "')

    done = bulktag(*args).run()

    assert done.returncode == 0, describe(done)
    after = read_journal(journal, torn_tail=True)
    assert after[: len(before)] == before, "the resumed run rewrote earlier records"
    resumed = after[len(before) :]
    assert {r["outcome"] for r in resumed} == {"ok"}, resumed
    # The resumed run settles exactly the rows the journal had not settled, each once: none
    # that was recorded is sent again, none is skipped (those in flight at the kill are sent
    # again: harmless, the PUT is idempotent).
    unsettled = set(rows) - settled_before
    assert sorted((r["image_id"], r["tag"]) for r in resumed) == sorted(unsettled)
    sent_by_resume = len(cloud.glance_open.tag_puts(images)) - sent_by_first
    assert len(unsettled) <= sent_by_resume <= sum(r["attempts"] for r in resumed)
    stored = cloud.open().all_tags(images)
    lost = [(image, tag) for image, tag in rows if tag not in stored[image]]
    assert not lost, f"{len(lost)} tags missing on read-back, e.g. {lost[:5]}"
