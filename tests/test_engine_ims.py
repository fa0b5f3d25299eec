"""The engine's IMS path against the fake IMS over real HTTP: an image's tags in one request
(never more than ten), overwrite, limits, Huawei's 429 and the shared pacing, removal, and
resume when batches are cut off mid-flight."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import image

from bulktag.engine import Engine
from bulktag.fake.glance import serve
from bulktag.fake.ims import FakeIms, FakeImsConfig
from bulktag.model import Op
from bulktag.pacing import Signal
from bulktag.policy import RetryPolicy
from bulktag.scheduler import ImageScheduler
from bulktag.source import ims_rules
from tests.engine_harness import TOKEN, Harness, ims_settings, kv_csv, outcomes, run_against


def fake(**config: Any) -> FakeIms:
    return FakeIms(FakeImsConfig(token=TOKEN, **config))


def kv_grid(images: int, tags: int, value: str = "v") -> list[tuple[str, str, str | None]]:
    """Rows grouped by image, the way inventories usually come."""
    return [(image(i), f"k{t}", f"{value}{t}") for i in range(images) for t in range(tags)]


def sizes(server: FakeIms, image_id: str) -> list[int]:
    """The batch sizes of the calls for one image, in the order they came."""
    return [len(call.keys) for call in server.calls if call.image_id == image_id]


async def test_an_images_tags_go_in_one_request_and_every_row_gets_its_own_record(
    tmp_path: Path,
) -> None:
    server = fake(latency=0.005)
    rows = kv_grid(images=30, tags=6)
    run = await run_against(server, tmp_path, kv_csv(rows), ims_settings())
    assert {"ok": len(rows)} == outcomes(run.records)
    assert [6] * 30 == server.batch_sizes  # one request per image
    assert 30 == run.report.tally.attempts
    assert 1 == server.max_in_flight_per_image
    assert server.max_in_flight > 1  # images still went in parallel
    for n in range(30):
        assert {f"k{t}": f"v{t}" for t in range(6)} == server.kv_of(image(n))
    first = [r for r in run.records if r["image_id"] == image(0)]
    assert 1 == len({r["request_id"] for r in first})  # the batch's answer, on every row
    assert {("ims", 204, 1)} == {(r["api"], r["status"], r["attempts"]) for r in first}
    assert {f"v{t}" for t in range(6)} == {r["value"] for r in first}


async def test_never_more_than_ten_tags_in_one_call(tmp_path: Path) -> None:
    server = fake(max_tags=100)  # a region that lets an image hold more than ten
    rows = kv_grid(images=3, tags=25)
    run = await run_against(server, tmp_path, kv_csv(rows), ims_settings())
    assert {"ok": 75} == outcomes(run.records)
    assert [[10, 10, 5]] * 3 == [sizes(server, image(n)) for n in range(3)]
    assert all(len(server.kv_of(image(n))) == 25 for n in range(3))


async def test_tags_per_call_is_a_setting(tmp_path: Path) -> None:
    server = fake()
    await run_against(
        server, tmp_path, kv_csv(kv_grid(images=2, tags=7)), ims_settings(batch_size=3)
    )
    assert [[3, 3, 1]] * 2 == [sizes(server, image(n)) for n in range(2)]


async def test_an_image_that_would_pass_ten_tags_fails_only_the_rows_that_do_not_fit(
    tmp_path: Path,
) -> None:
    """IMS refuses the whole batch; bulktag resends it row by row, so the rows that fit are ok
    and only the others fail, with IMS's own words."""
    server = fake()
    server.kv[image(0)] = {f"old{n}": "x" for n in range(8)}
    rows = [(image(0), f"new{n}", "v") for n in range(4)]
    run = await run_against(server, tmp_path, kv_csv(rows), ims_settings())
    by_key = {r["tag"]: r for r in run.records}
    assert ["ok", "ok", "failed", "failed"] == [by_key[f"new{n}"]["outcome"] for n in range(4)]
    assert "at most 10 tags" in by_key["new2"]["error"]
    assert {2} == {r["attempts"] for r in run.records}  # the batch, then its own request
    assert [4, 1, 1, 1, 1] == server.batch_sizes
    assert 10 == len(server.kv_of(image(0)))


async def test_a_new_value_overwrites_and_the_same_value_is_not_sent_again(
    tmp_path: Path,
) -> None:
    server = fake()
    harness_for = lambda: Harness(url, tmp_path / "j.jsonl")  # noqa: E731
    nights = ["prod", "staging", "staging", "prod"]
    sent = []
    async with serve(server) as url:
        for value in nights:
            before = len(server.calls)
            run = await harness_for().run(kv_csv([(image(0), "env", value)]), ims_settings())
            sent.append(len(server.calls) - before)
            assert {"env": value} == server.kv_of(image(0))
            assert all(r["outcome"] == "ok" for r in run.records)
    assert [1, 1, 0, 1] == sent  # the fourth night sets prod back: the image held staging


async def test_one_key_set_twice_in_one_input_goes_in_two_requests_in_input_order(
    tmp_path: Path,
) -> None:
    server = fake()
    rows = [(image(0), "env", "a"), (image(0), "team", "x"), (image(0), "env", "b")]
    run = await run_against(server, tmp_path, kv_csv(rows), ims_settings())
    assert {"ok": 3} == outcomes(run.records)
    assert [("env", "team"), ("env",)] == [call.keys for call in server.calls]
    assert {"env": "b", "team": "x"} == server.kv_of(image(0))


@pytest.mark.parametrize(
    ("row", "error"),
    [
        pytest.param(f"{image(1)},{'k' * 37},v", "key is 37 characters long", id="long-key"),
        pytest.param(f"{image(1)},env,{'v' * 44}", "value is 44 characters long", id="long-value"),
        pytest.param(f"{image(1)},a.b,v", "key contains '.'", id="charset"),
        pytest.param(f"{image(1)},env,a/b", "value contains '/'", id="value-charset"),
    ],
)
async def test_rows_outside_the_ims_limits_are_invalid_and_never_sent(
    tmp_path: Path, row: str, error: str
) -> None:
    server = fake()
    data = kv_csv([(image(0), "env", "prod")]) + (row + "\n").encode()
    run = await run_against(server, tmp_path, data, ims_settings())
    invalid = [r for r in run.records if r["outcome"] == "invalid"]
    assert 1 == len(invalid)
    assert error in invalid[0]["error"]
    assert "ims" == invalid[0]["api"]
    assert [("env",)] == [call.keys for call in server.calls]


async def test_the_relaxed_charset_lets_wider_keys_through(tmp_path: Path) -> None:
    server = fake()
    run = await run_against(
        server,
        tmp_path,
        kv_csv([(image(0), "app.tier", "web:1")]),
        ims_settings(),
        rules=ims_rules(charset="relaxed"),
    )
    assert {"ok": 1} == outcomes(run.records)
    assert {"app.tier": "web:1"} == server.kv_of(image(0))


async def test_huaweis_429_slows_the_whole_run_near_the_gateways_capacity(
    tmp_path: Path,
) -> None:
    server = fake(capacity=40.0)  # answers 429 APIGW.0308 above it
    rows = kv_grid(images=80, tags=2)
    observed: list[bool] = []
    async with serve(server) as url:
        harness = Harness(url, tmp_path / "j.jsonl")
        original = harness.engine

        def counting(*args: Any) -> Engine:
            engine = original(*args)
            answered = engine.pacer.answered

            def note(*, signal: Signal, **answer: Any) -> None:
                observed.append(signal is Signal.REFUSED)
                answered(signal=signal, **answer)

            engine.pacer.answered = note  # type: ignore[method-assign]
            return engine

        harness.engine = counting  # type: ignore[method-assign]
        # Real back-off, not FAST_RETRY: rows must outlast the seconds it takes to find the
        # pace (five tries within 0.2 s would give up on a loaded machine).
        patient = RetryPolicy(max_attempts=8, base_delay=0.2, max_delay=1.0)
        run = await harness.run(kv_csv(rows), ims_settings(rate=300.0, burst=10, retry=patient))
    statuses = Counter(r.status for r in server.requests)
    assert {"ok": len(rows)} == outcomes(run.records)
    assert 80 == statuses[204]  # one request per image got through
    assert statuses[429] > 0
    assert run.report.pace_cuts >= 1
    # ~90% without shared pacing. The wiring is checked here, in real time; how near the
    # capacity the pacer settles, in tests/test_pacing_sim.py and benchmarks/pacing_matrix.py.
    assert statuses[429] / sum(statuses.values()) < 0.5
    # One answer is one pacing observation, whatever the request carried: every 429 reaches
    # the pacer once (accepted answers while calm are skipped: they would change nothing).
    assert statuses[429] == sum(observed)
    assert len(observed) <= len(server.requests)
    assert statuses[429] == sum(observed)


async def test_remove_deletes_keys_and_a_missing_tag_is_done(tmp_path: Path) -> None:
    server = fake()
    server.kv[image(0)] = {"env": "prod", "team": "web", "keep": "1"}
    server.kv[image(1)] = {"env": "dev"}
    rows = [
        (image(0), "env", None),  # whatever its value
        (image(0), "team", "web"),
        (image(0), "gone", None),  # not there: deleting it succeeds
        (image(1), "env", None),
    ]
    run = await run_against(server, tmp_path, kv_csv(rows), ims_settings(op=Op.REMOVE))
    assert {"ok": 4} == outcomes(run.records)
    assert {"keep": "1"} == server.kv_of(image(0))
    assert {} == server.kv_of(image(1))
    assert {"delete"} == {call.action for call in server.calls}
    assert [3, 1] == server.batch_sizes
    assert {"remove"} == {r["op"] for r in run.records}


async def test_removing_from_an_unknown_image_fails(tmp_path: Path) -> None:
    """IMS's delete is idempotent for tags, so a 404 names the image: not done."""
    server = fake(known_images=set())
    run = await run_against(
        server, tmp_path, kv_csv([(image(0), "env", None)]), ims_settings(op=Op.REMOVE)
    )
    assert [("failed", 404)] == [(r["outcome"], r["status"]) for r in run.records]


async def test_retryable_answers_retry_the_whole_batch(tmp_path: Path) -> None:
    server = fake(script={(image(0), "k0"): [503, "429+ra:0", "drop"]})
    run = await run_against(server, tmp_path, kv_csv(kv_grid(images=1, tags=3)), ims_settings())
    assert {(204, 4)} == {(r["status"], r["attempts"]) for r in run.records}
    assert {"ok": 3} == outcomes(run.records)


async def test_batches_cut_off_mid_flight_are_sent_again_and_each_row_ends_once(
    tmp_path: Path,
) -> None:
    """Stop the run at once (as a second Ctrl-C or kill does) while batches are in flight: the
    rows of those batches are not recorded, the next run sends them, and across both runs
    every row has exactly one record — none recorded ok twice."""
    server = fake(latency=0.05)
    rows = kv_grid(images=60, tags=4)
    data = kv_csv(rows)
    async with serve(server) as url:
        harness = Harness(url, tmp_path / "j.jsonl")
        original = harness.engine
        engines: list[Engine] = []

        def capture(*args: Any) -> Engine:
            engines.append(original(*args))
            return engines[-1]

        harness.engine = capture  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:

            async def cut_off() -> None:
                for _ in range(1000):  # until batches are in flight
                    if engines and engines[0].in_flight >= 3:
                        break
                    await anyio.sleep(0.005)
                await anyio.sleep(0.1)
                engines[0].cancel_now()

            tg.start_soon(cut_off)
            first = await harness.run(data, ims_settings(concurrency=4, rate=200.0))
        in_flight_at_cut = [c for c in server.calls if c.status == 0]
        second = await Harness(url, tmp_path / "j.jsonl").run(data, ims_settings())
    assert 0 < len(first.records) < len(rows)
    assert in_flight_at_cut or len(server.calls) > 60  # batches were cut and sent again
    everything = first.records + second.records
    assert {"ok": len(rows)} == outcomes(everything)
    keys = Counter((r["image_id"], r["tag"]) for r in everything)
    assert {1} == set(keys.values())
    assert len(rows) == len(keys)
    assert second.report.tally.skipped_done == len(first.records)
    for n in range(60):
        assert {f"k{t}": f"v{t}" for t in range(4)} == server.kv_of(image(n))


async def test_without_per_image_serialization_ims_loses_tags_too(tmp_path: Path) -> None:
    """The control: the fake IMS (like IMS) loses overlapping writes, so sending an image's
    batches one at a time is what keeps every tag."""
    server = fake(latency=0.01)
    rows = kv_grid(images=5, tags=6)
    await run_against(
        server, tmp_path, kv_csv(rows), ims_settings(serialize_images=False, batch_size=1)
    )
    assert server.overlaps > 0
    assert sum(len(server.kv_of(image(n))) for n in range(5)) < len(rows)


# ── grouping an image's rows across the read-ahead window, whatever the input order ────────


def inventory(images: int, tags_of: Callable[[int], int]) -> list[tuple[str, str, str]]:
    """Image n gets tags_of(n) keys, grouped by image."""
    return [(image(n), f"k{t}", f"v{n}-{t}") for n in range(images) for t in range(tags_of(n))]


def in_order(rows: list[tuple[str, str, str]], order: str) -> list[tuple[str, str, str]]:
    if order == "by-key":  # an inventory built per tag: every image's k0, then k1, ...
        return sorted(rows, key=lambda r: (int(r[1][1:]), r[0]))
    if order == "shuffled":
        shuffled = list(rows)
        random.Random(18).shuffle(shuffled)
        return shuffled
    return rows


def ideal_requests(rows: list[tuple[str, str, str]], per_call: int = 10) -> int:
    return sum(-(-count // per_call) for count in Counter(r[0] for r in rows).values())


def journal_modulo_order(records: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    fields = ("image_id", "tag", "value", "outcome", "status", "attempts", "api", "op")
    return Counter(tuple(r.get(f) for f in fields) for r in records)


INVENTORIES: dict[str, tuple[int, Callable[[int], int]]] = {
    "60x4": (60, lambda n: 4),  # the case
    "mixed-1-to-13": (90, lambda n: 1 + n % 13),  # one tag, exactly ten, more than ten
}


@pytest.mark.parametrize("shape", INVENTORIES)
@pytest.mark.parametrize("op", [Op.ADD, Op.REMOVE])
async def test_every_input_order_gives_the_same_state_journal_and_one_request_per_image(
    tmp_path: Path, shape: str, op: Op
) -> None:
    """An inventory that fits the read-ahead window costs images × ⌈tags/10⌉ requests in
    any order, and ends in the same stored tags and the same journal records."""
    images, tags_of = INVENTORIES[shape]
    rows = inventory(images, tags_of)
    seen: dict[str, tuple[Any, ...]] = {}
    for order in ("by-image", "by-key", "shuffled"):
        server = fake(max_tags=100)
        if op is Op.REMOVE:
            for image_id, key, value in rows:
                server.kv.setdefault(image_id, {"keep": "1"})[key] = value
        async with serve(server) as url:
            run = await Harness(url, tmp_path / f"{order}.jsonl").run(
                kv_csv(in_order(rows, order)), ims_settings(op=op)
            )
        state = {n: server.kv_of(image(n)) for n in range(images)}
        seen[order] = (state, journal_modulo_order(run.records))
        assert ideal_requests(rows) == len(server.calls), order
        assert all(size <= 10 for size in server.batch_sizes)
        assert 1 == server.max_in_flight_per_image
        assert {"ok": len(rows)} == outcomes(run.records)
    assert seen["by-image"] == seen["by-key"] == seen["shuffled"]
    expected = {n: {"keep": "1"} for n in range(images)}
    if op is Op.ADD:
        expected = {n: {f"k{t}": f"v{n}-{t}" for t in range(tags_of(n))} for n in range(images)}
    assert expected == seen["shuffled"][0]


LATER_VALUE_WINS = {
    # name: rows of image 0 (key, value), spread among image 1's rows; the values it ends with
    "far-apart": ([("env", "a"), ("team", "x"), ("env", "b")], {"env": "b", "team": "x"}),
    "three-values": ([("env", "a"), ("env", "b"), ("env", "c")], {"env": "c"}),
    "back-to-first": (
        [("env", "a"), ("tier", "1"), ("env", "b"), ("tier", "2"), ("env", "a")],
        {"env": "a", "tier": "2"},
    ),
}


@pytest.mark.parametrize("case", LATER_VALUE_WINS)
async def test_a_key_set_twice_in_one_window_ends_with_the_later_rows_value(
    tmp_path: Path, case: str
) -> None:
    ours, expected = LATER_VALUE_WINS[case]
    rows: list[tuple[str, str, str | None]] = []
    for n, (key, value) in enumerate(ours):
        rows += [(image(0), key, value), (image(1), f"k{n}", "x"), (image(2 + n), "k", "y")]
    server = fake()
    run = await run_against(server, tmp_path, kv_csv(rows), ims_settings())
    assert expected == server.kv_of(image(0))
    assert {"ok": len(rows)} == outcomes(run.records)
    for call in server.calls:
        assert len(set(call.keys)) == len(call.keys)  # never a key twice in one call


async def test_a_long_shuffled_input_never_holds_more_rows_than_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 64
    rows = in_order(inventory(600, lambda n: 5), "shuffled")
    held: list[int] = []  # as each request leaves, and as each row is handed in
    # Read as the producer hands rows in, too: it fills the window before it yields, where a
    # request may leave before it does (the window at each send was 63 at most in a loaded
    # CI run).
    submit_nowait = ImageScheduler.submit_nowait

    def handing_in(scheduler: ImageScheduler, row: Any) -> bool:
        taken = submit_nowait(scheduler, row)
        held.append(scheduler.held)
        return taken

    monkeypatch.setattr(ImageScheduler, "submit_nowait", handing_in)
    server = fake()
    async with serve(server) as url:
        harness = Harness(url, tmp_path / "j.jsonl")
        original = harness.engine

        def watching(*args: Any) -> Engine:
            engine = original(*args)
            send = engine._send_one

            async def send_and_look(image_id: str, tags: Any, token: str) -> Any:
                assert engine._scheduler is not None
                held.append(engine._scheduler.held)
                return await send(image_id, tags, token)

            engine._send_one = send_and_look
            return engine

        harness.engine = watching  # type: ignore[method-assign]
        run = await harness.run(kv_csv(rows), ims_settings(read_ahead=window))
    assert {"ok": len(rows)} == outcomes(run.records)
    assert window == max(held)  # the window filled, and never went past its size
    scheduler = run.engine._scheduler
    assert scheduler is not None
    assert 0 == scheduler.held  # every row settled: the window emptied


async def test_a_shuffled_run_cut_short_resumes_to_the_same_state_with_one_ok_per_row(
    tmp_path: Path,
) -> None:
    """Value-aware resume is unchanged by grouping: the rows the first run settled (in
    requests that mixed rows from all over the input) are skipped, the rest sent, and a key
    set twice still ends with the later value."""
    rows = in_order(inventory(60, lambda n: 4), "shuffled")
    rows += [(image(0), "k0", "later")]  # the same key again, last: it must win
    server = fake()
    async with serve(server) as url:
        harness = Harness(url, tmp_path / "j.jsonl")
        first = await harness.run(kv_csv(rows), ims_settings(max_items=100))
        second = await harness.run(kv_csv(rows), ims_settings())
    assert 100 == len(first.records)
    assert first.report.left > 0
    records = first.records + second.records
    assert len(rows) == len(records)  # every row once, across the two runs
    assert {"ok": len(rows)} == outcomes(records)
    expected = {n: {f"k{t}": f"v{n}-{t}" for t in range(4)} for n in range(60)}
    expected[0]["k0"] = "later"
    assert expected == {n: server.kv_of(image(n)) for n in range(60)}
