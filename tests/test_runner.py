"""The run's process-level plumbing that the CLI tests cannot see from outside."""

from __future__ import annotations

import gc

from bulktag.journal import load_index
from bulktag.runner import frozen_for_the_run


def _tracked(obj: object) -> bool:
    return any(held is obj for held in gc.get_objects())


def test_the_resume_index_is_out_of_the_collector_for_the_run_and_back_after() -> None:
    index = load_index([b'{"line": 2, "image_id": "a", "tag": "b", "outcome": "failed"}\n'])
    assert _tracked(index.done)
    with frozen_for_the_run():
        assert not _tracked(index.done)  # full collections no longer walk its keys
        assert gc.get_freeze_count() > 0
    assert _tracked(index.done)
    assert gc.get_freeze_count() == 0


def test_the_youngest_generation_is_collected_less_often_for_the_run_only() -> None:
    before = gc.get_threshold()
    with frozen_for_the_run():
        assert gc.get_threshold()[0] > before[0]
        assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_threshold() == before
