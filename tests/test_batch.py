"""Batch controls on the engine: --max-items, --shard, --op remove, --retry-failed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from support import csv_of, image

from bulktag.admission import Shard
from bulktag.fake.glance import FakeGlance, FakeGlanceConfig, serve
from bulktag.model import Op
from tests.engine_harness import TOKEN, Harness, grid, run_against, settings


def fake(**config: object) -> FakeGlance:
    return FakeGlance(FakeGlanceConfig(token=TOKEN, **config))  # type: ignore[arg-type]


async def test_max_items_sends_that_many_then_the_next_run_goes_on(tmp_path: Path) -> None:
    pairs = grid(images=25, tags=1)
    async with serve(fake()) as url:
        harness = Harness(url, tmp_path / "j.jsonl")
        first = await harness.run(csv_of(pairs), settings(max_items=10))
        second = await harness.run(csv_of(pairs), settings(max_items=10))
        third = await harness.run(csv_of(pairs), settings(max_items=10))
    assert (10, "max_items", 15, True) == (
        len(first.records),
        first.report.stopped_by,
        first.report.left,
        first.report.incomplete,
    )
    assert (10, 5) == (len(second.records), second.report.left)
    assert (5, False) == (len(third.records), third.report.incomplete)
    everything = first.records + second.records + third.records
    assert sorted(pairs) == sorted((r["image_id"], r["tag"]) for r in everything)


async def test_max_items_that_covers_the_input_is_complete(tmp_path: Path) -> None:
    run = await run_against(fake(), tmp_path, csv_of(grid(images=5, tags=1)), settings(max_items=5))
    assert (5, False) == (len(run.records), run.report.incomplete)


async def test_shards_split_the_work_by_image_and_cover_it_exactly_once(tmp_path: Path) -> None:
    pairs = grid(images=40, tags=3)
    seen: list[tuple[str, str]] = []
    per_shard = []
    async with serve(fake()) as url:
        for k in range(3):
            run = await Harness(url, tmp_path / f"shard{k}.jsonl").run(
                csv_of(pairs), settings(shard=Shard(k, 3))
            )
            seen += [(r["image_id"], r["tag"]) for r in run.records]
            per_shard.append({r["image_id"] for r in run.records})
    assert sorted(pairs) == sorted(seen)
    assert all(len(s) > 0 for s in per_shard)  # the hash spreads images over every shard
    assert set() == (per_shard[0] & per_shard[1]) | (per_shard[1] & per_shard[2])


@pytest.mark.parametrize(("text", "expected"), [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4))])
def test_shard_parses_k_of_n(text: str, expected: Shard) -> None:
    assert expected == Shard.parse(text)


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "a/b", "1", "1/2/3"])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="K"):
        Shard.parse(text)


async def test_remove_deletes_tags_and_an_absent_tag_counts_as_done(tmp_path: Path) -> None:
    server = fake(known_images={image(0), image(1)})
    server.tags[image(0)] = ["keep", "drop"]
    server.tags[image(1)] = ["keep"]
    pairs = [(image(0), "drop"), (image(1), "drop"), (image(2), "drop")]
    run = await run_against(server, tmp_path, csv_of(pairs), settings(op=Op.REMOVE))
    outcomes = {r["image_id"]: (r["outcome"], r["status"], r.get("op")) for r in run.records}
    assert {
        image(0): ("ok", 204, "remove"),
        image(1): ("ok", 404, "remove"),  # the tag was not there: nothing to do
        image(2): ("failed", 404, "remove"),  # the image is unknown: that is a failure
    } == outcomes
    assert ["keep"] == server.tags_of(image(0))


async def test_add_and_remove_of_one_pair_resume_separately(tmp_path: Path) -> None:
    pairs = [(image(0), "t")]
    server = fake()
    async with serve(server) as url:
        harness = Harness(url, tmp_path / "j.jsonl")
        added = await harness.run(csv_of(pairs))
        removed = await harness.run(csv_of(pairs), settings(op=Op.REMOVE))
        again = await harness.run(csv_of(pairs), settings(op=Op.REMOVE))
    assert ["ok"] == [r["outcome"] for r in added.records]
    assert [("ok", "remove")] == [(r["outcome"], r["op"]) for r in removed.records]
    assert [] == again.records
    assert [] == server.tags_of(image(0))


async def test_retry_failed_sends_failed_pairs_again(tmp_path: Path) -> None:
    pairs = [(image(0), "a"), (image(1), "b")]
    server = fake(forbidden_images={image(1)})
    async with serve(server) as url:
        harness = Harness(url, tmp_path / "j.jsonl")
        await harness.run(csv_of(pairs))
        plain = await harness.run(csv_of(pairs))
        server.config.forbidden_images = frozenset()  # the permission was fixed
        retried = await harness.run(csv_of(pairs), settings(retry_failed=True))
        after = await harness.run(csv_of(pairs), settings(retry_failed=True))
    assert [] == plain.records
    assert [(image(1), "b", "ok")] == [
        (r["image_id"], r["tag"], r["outcome"]) for r in retried.records
    ]
    assert [] == after.records
    puts = Counter((r.image_id, r.tag) for r in server.requests if r.method == "PUT")
    assert {(image(0), "a"): 1, (image(1), "b"): 2} == dict(puts)
