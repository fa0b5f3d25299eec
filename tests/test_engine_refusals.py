"""A refusal that is a fact about one image (403, 404, a full tag quota) settles that image's
other rows as failed without sending them, and does not trip the run's breaker: the breaker
is for failures across images (issue 15.10). Real engine, real HTTP, the fake Glance."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from support import csv_of, image

from bulktag.fake.glance import FakeGlance, FakeGlanceConfig
from bulktag.model import Op
from tests.engine_harness import TOKEN, run_against, settings

FULL = image(0)  # at its tag quota, or forbidden, or unknown: every row of it is refused
OTHERS = [image(n) for n in range(1, 31)]


def _pairs(order: str) -> list[tuple[str, str]]:
    full = [(FULL, f"t{n}") for n in range(150)]
    others = [(other, "t0") for other in OTHERS]
    if order == "grouped":  # the refused image's 150 rows first, then the others
        return full + others
    # interleaved: the refused image's rows keep coming between the others'
    mixed = []
    for n, pair in enumerate(full):
        mixed.append(pair)
        if n % 5 == 0 and others:
            mixed.append(others.pop())
    return mixed + others


def _server(refusal: str) -> FakeGlance:
    if refusal == "quota-413":  # quota 1: FULL already has its one tag, the others none
        server = FakeGlance(FakeGlanceConfig(token=TOKEN, tag_quota=1))
        server.tags[FULL] = ["already"]
        return server
    if refusal == "forbidden-403":
        return FakeGlance(FakeGlanceConfig(token=TOKEN, forbidden_images={FULL}))
    return FakeGlance(FakeGlanceConfig(token=TOKEN, known_images=set(OTHERS)))  # 404


STATUS = {"quota-413": 413, "forbidden-403": 403, "unknown-404": 404}


@pytest.mark.parametrize("order", ["grouped", "interleaved"])
@pytest.mark.parametrize("refusal", list(STATUS))
@pytest.mark.parametrize("op", [Op.ADD, Op.REMOVE])
async def test_one_refused_image_fails_its_rows_and_the_run_goes_on(
    tmp_path: Path, refusal: str, order: str, op: Op
) -> None:
    if op is Op.REMOVE and refusal == "quota-413":
        pytest.skip("removing never meets the quota")
    server = _server(refusal)
    pairs = _pairs(order)
    run = await run_against(
        server,
        tmp_path,
        csv_of(pairs),
        settings(max_consecutive_failures=100, concurrency=4, op=op),
    )
    assert run.report.aborted is None, run.report.aborted
    outcomes = Counter((r["image_id"] == FULL, r["outcome"]) for r in run.records)
    assert {(True, "failed"): 150, (False, "ok"): len(OTHERS)} == dict(outcomes)
    assert {STATUS[refusal]} == {r["status"] for r in run.records if r["image_id"] == FULL}
    sent_to_full = [r for r in server.requests if r.image_id == FULL and r.method != "GET"]
    assert 1 == len(sent_to_full), "the image's refusal should be asked once, not per row"
    not_sent = [r for r in run.records if r["image_id"] == FULL and r["attempts"] == 0]
    assert 149 == len(not_sent)
    assert all("not sent: the image refused row" in r["error"] for r in not_sent)


@pytest.mark.parametrize("tags_per_image", [1, 3], ids=["one-row-an-image", "several-rows"])
async def test_the_breaker_still_trips_on_refusals_across_images(
    tmp_path: Path, tags_per_image: int
) -> None:
    """Every image forbidden: that is the run pointed at the wrong project, stop it (also when
    each image's other rows are settled without being sent)."""
    images = [image(n) for n in range(60)]
    server = FakeGlance(FakeGlanceConfig(token=TOKEN, forbidden_images=set(images)))
    pairs = [(i, f"t{n}") for i in images for n in range(tags_per_image)]
    run = await run_against(
        server,
        tmp_path,
        csv_of(pairs),
        settings(max_consecutive_failures=20, concurrency=2, rate=500.0),
    )
    assert run.report.aborted is not None
    assert "HTTP 403" in run.report.aborted
    assert 20 <= len(run.records) < len(pairs)
    assert all(r["outcome"] == "failed" for r in run.records)


@pytest.mark.parametrize("tag", ["image-backup", "image", "no-image-found", "gold"])
async def test_removing_an_absent_tag_named_like_an_image_is_done(tmp_path: Path, tag: str) -> None:
    """Issue 15.8: `--op remove` of a tag not on the image is ok whatever the tag is called;
    an unknown image is still a failure."""
    known = [image(n) for n in range(1, 4)]
    server = FakeGlance(FakeGlanceConfig(token=TOKEN, known_images=set(known)))
    pairs = [(i, tag) for i in [*known, image(99)]]
    run = await run_against(server, tmp_path, csv_of(pairs), settings(op=Op.REMOVE))
    outcomes = {r["image_id"]: (r["outcome"], r["status"]) for r in run.records}
    assert {**dict.fromkeys(known, ("ok", 404)), image(99): ("failed", 404)} == outcomes
    assert [] == [r for r in server.requests if r.method == "GET"], "Glance's words sufficed"
