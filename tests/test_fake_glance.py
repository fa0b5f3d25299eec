"""The fake Glance must behave like the real one where bulktag can go wrong, or the engine's
tests prove nothing. These tests drive it over real HTTP with a plain aiohttp client."""

# The project's convention is `assert expected == actual`, which ruff's SIM300 calls a Yoda
# condition whenever `expected` is a literal.

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bulktag.fake.glance import (
    REQUEST_ID_HEADER,
    STATS_PATH,
    FakeGlance,
    FakeGlanceConfig,
    serve,
)
from bulktag.fake.serve import add_serve_arguments, config_from_args, serve_forever

REQ_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def tag_url(base: str, image_id: str, tag: str) -> str:
    return f"{base}/v2/images/{image_id}/tags/{tag}"


async def put(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> int:
    async with session.put(url, headers=headers) as response:
        return response.status


async def put_in_turn(fake: FakeGlance, image_id: str, *tags: str) -> list[int]:
    """Serve ``fake`` and PUT ``tags`` on ``image_id`` one after the other: their statuses."""
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        return [await put(session, tag_url(base, image_id, tag)) for tag in tags]


@asynccontextmanager
async def gold_put(fake: FakeGlance, **request: Any) -> AsyncIterator[aiohttp.ClientResponse]:
    """Serve ``fake`` and PUT the tag gold on img-1 (``request``: more of aiohttp's arguments)."""
    async with (
        serve(fake) as base,
        aiohttp.ClientSession() as session,
        session.put(tag_url(base, "img-1", "gold"), **request) as response,
    ):
        yield response


# -- the happy paths ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_put_tag_answers_204_without_body_and_stores_the_tag() -> None:
    fake = FakeGlance()
    async with gold_put(fake) as response:
        assert 204 == response.status
        assert b"" == await response.read()
        assert REQ_ID.match(response.headers[REQUEST_ID_HEADER])
    assert ["gold"] == fake.tags_of("img-1")


@pytest.mark.asyncio
async def test_put_of_a_tag_already_there_is_a_204_no_op() -> None:
    fake = FakeGlance()
    fake.tags["img-1"] = ["gold", "silver"]
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert 204 == await put(session, tag_url(base, "img-1", "gold"))
    assert ["gold", "silver"] == fake.tags_of("img-1")


@pytest.mark.asyncio
async def test_serve_yields_a_base_url_without_trailing_slash_or_version() -> None:
    async with serve(FakeGlance()) as base:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
        assert not base.endswith(":0")


@pytest.mark.asyncio
async def test_request_ids_differ_between_requests() -> None:
    async with serve(FakeGlance()) as base, aiohttp.ClientSession() as session:
        ids = set()
        for _ in range(3):
            async with session.get(f"{base}/v2/images/img-1") as response:
                ids.add(response.headers[REQUEST_ID_HEADER])
    assert 3 == len(ids)


@pytest.mark.asyncio
async def test_delete_removes_a_tag_then_answers_404_once_it_is_absent() -> None:
    fake = FakeGlance()
    fake.tags["img-1"] = ["gold", "silver"]
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        async with session.delete(tag_url(base, "img-1", "gold")) as response:
            assert 204 == response.status
        assert ["silver"] == fake.tags_of("img-1")
        async with session.delete(tag_url(base, "img-1", "gold")) as response:
            assert 404 == response.status
            assert REQ_ID.match(response.headers[REQUEST_ID_HEADER])
    assert ["silver"] == fake.tags_of("img-1")


@pytest.mark.asyncio
async def test_get_image_returns_its_tags() -> None:
    fake = FakeGlance()
    fake.tags["img-1"] = ["gold"]
    async with (
        serve(fake) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/v2/images/img-1") as response,
    ):
        assert 200 == response.status
        body = await response.json()
    assert {"id": "img-1", "tags": ["gold"], "status": "active"} == {
        key: body[key] for key in ("id", "tags", "status")
    }
    assert isinstance(body["name"], str)


@pytest.mark.asyncio
async def test_list_images_honours_limit_with_or_without_trailing_slash() -> None:
    fake = FakeGlance(FakeGlanceConfig(known_images={"a", "b", "c"}))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v2/images", params={"limit": "2"}) as response:
            assert 200 == response.status
            assert ["a", "b"] == [image["id"] for image in (await response.json())["images"]]
        async with session.get(f"{base}/v2/images/") as response:
            assert ["a", "b", "c"] == [image["id"] for image in (await response.json())["images"]]
        async with session.get(f"{base}/v2/images", params={"limit": "x"}) as response:
            assert 400 == response.status


@pytest.mark.asyncio
async def test_unrouted_path_is_404() -> None:
    async with (
        serve(FakeGlance()) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/v1/images") as response,
    ):
        assert 404 == response.status


# -- per-image and per-tag refusals ------------------------------------------------------------


async def put_delete_get(session: aiohttp.ClientSession, base: str, image_id: str) -> list[int]:
    """The statuses of a PUT and a DELETE of the tag gold on ``image_id``, then a GET of it."""
    statuses = [await put(session, tag_url(base, image_id, "gold"))]
    async with session.delete(tag_url(base, image_id, "gold")) as response:
        statuses.append(response.status)
    async with session.get(f"{base}/v2/images/{image_id}") as response:
        statuses.append(response.status)
    return statuses


@pytest.mark.asyncio
async def test_unknown_image_is_404_on_every_endpoint() -> None:
    fake = FakeGlance(FakeGlanceConfig(known_images={"img-1"}))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert [404, 404, 404] == await put_delete_get(session, base, "ghost")
        assert 204 == await put(session, tag_url(base, "img-1", "gold"))
    assert "ghost" not in fake.tags


@pytest.mark.asyncio
async def test_unknown_every_makes_every_nth_new_image_unknown_for_good() -> None:
    fake = FakeGlance(FakeGlanceConfig(unknown_every=2))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        first = [await put(session, tag_url(base, f"img-{n}", "t")) for n in range(4)]
        again = [await put(session, tag_url(base, f"img-{n}", "t")) for n in range(4)]
    assert [204, 404, 204, 404] == first
    assert [204, 404, 204, 404] == again


@pytest.mark.asyncio
async def test_forbidden_image_is_403_on_writes_but_readable() -> None:
    fake = FakeGlance(FakeGlanceConfig(forbidden_images=frozenset({"shared"})))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert [403, 403, 200] == await put_delete_get(session, base, "shared")
    assert [] == fake.tags_of("shared")


@pytest.mark.asyncio
async def test_tag_longer_than_the_limit_is_400() -> None:
    fake = FakeGlance(FakeGlanceConfig(max_tag_length=5))
    assert [400, 204] == await put_in_turn(fake, "img-1", "sixsix", "fivec")
    assert ["fivec"] == fake.tags_of("img-1")


@pytest.mark.asyncio
async def test_tag_quota_is_413_without_retry_after_but_existing_tags_still_204() -> None:
    fake = FakeGlance(FakeGlanceConfig(tag_quota=2, retry_after="5"))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert 204 == await put(session, tag_url(base, "img-1", "a"))
        assert 204 == await put(session, tag_url(base, "img-1", "b"))
        async with session.put(tag_url(base, "img-1", "c")) as response:
            assert 413 == response.status
            assert "Retry-After" not in response.headers
        assert 204 == await put(session, tag_url(base, "img-1", "a"))
    assert ["a", "b"] == fake.tags_of("img-1")


@pytest.mark.asyncio
async def test_put_with_a_content_length_body_is_400() -> None:
    fake = FakeGlance()
    async with gold_put(fake, data=b"{}") as response:
        assert 400 == response.status
        assert "A body is not expected with this request." in await response.text()
    assert [] == fake.tags_of("img-1")


@pytest.mark.asyncio
async def test_put_with_transfer_encoding_is_400_even_if_empty() -> None:
    async def empty_chunks() -> AsyncIterator[bytes]:
        yield b""

    fake = FakeGlance()
    async with gold_put(fake, data=empty_chunks()) as response:
        assert "chunked" == response.request_info.headers["Transfer-Encoding"]
        assert 400 == response.status
    assert [] == fake.tags_of("img-1")


# -- keystone ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_missing_or_wrong_token_is_a_bare_401() -> None:
    fake = FakeGlance(FakeGlanceConfig(token="s3cret"))
    url = None
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        url = tag_url(base, "img-1", "gold")
        for headers in ({}, {"X-Auth-Token": "wrong"}):
            async with session.put(url, headers=headers) as response:
                assert 401 == response.status
                assert 'Keystone uri="http://127.0.0.1"' == response.headers["WWW-Authenticate"]
                assert REQUEST_ID_HEADER not in response.headers
        assert 204 == await put(session, url, headers={"X-Auth-Token": "s3cret"})
    assert [401, 401, 204] == [record.status for record in fake.requests]


@pytest.mark.asyncio
async def test_token_validator_decides_instead_of_the_fixed_token() -> None:
    valid = {"fresh"}
    fake = FakeGlance(FakeGlanceConfig(token="ignored", token_validator=valid.__contains__))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        url = tag_url(base, "img-1", "gold")
        assert 204 == await put(session, url, headers={"X-Auth-Token": "fresh"})
        valid.clear()  # the token expires
        assert 401 == await put(session, url, headers={"X-Auth-Token": "fresh"})
        assert 401 == await put(session, url, headers={"X-Auth-Token": "ignored"})


# -- the gateway -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_capacity_admits_a_burst_of_its_rate_then_answers_503() -> None:
    fake = FakeGlance(FakeGlanceConfig(capacity=3, retry_after="1"))
    async with serve(fake) as base, aiohttp.ClientSession() as session:

        async def get() -> tuple[int, str | None]:
            async with session.get(f"{base}/v2/images/img-1") as response:
                return response.status, response.headers.get("Retry-After")

        answers = await asyncio.gather(*(get() for _ in range(6)))
        await asyncio.sleep(0.4)  # refills one token at 3 per second
        assert (200, None) == await get()
    assert [(200, None)] * 3 + [(503, "1")] * 3 == sorted(answers, key=lambda a: a[0])


@pytest.mark.asyncio
async def test_fail_503_and_fail_429_replace_the_work_with_retry_after() -> None:
    only_503 = FakeGlance(FakeGlanceConfig(fail_503=1.0, retry_after="2"))
    only_429 = FakeGlance(FakeGlanceConfig(fail_429=1.0))
    async with gold_put(only_503) as response:
        assert (503, "2") == (response.status, response.headers.get("Retry-After"))
    async with gold_put(only_429) as response:
        assert (429, None) == (response.status, response.headers.get("Retry-After"))
        assert "APIGW.0308" == (await response.json())["error_code"]
    assert [] == only_503.tags_of("img-1")
    assert [] == only_429.tags_of("img-1")


@pytest.mark.asyncio
async def test_random_failures_are_reproducible_with_a_seed() -> None:
    async def statuses() -> list[int]:
        fake = FakeGlance(FakeGlanceConfig(fail_503=0.3, fail_429=0.3, seed=7))
        async with serve(fake) as base, aiohttp.ClientSession() as session:
            return [await put(session, tag_url(base, "img-1", f"t{n}")) for n in range(20)]

    first, second = await statuses(), await statuses()
    assert first == second
    assert {204, 429, 503} == set(first)


# -- the script --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_script_statuses_are_consumed_in_order_then_the_pair_behaves_normally() -> None:
    script: dict[tuple[str, str], list[int | str]] = {
        ("img-1", "gold"): [503, 500, 429, 413, 404, "503+ra:7", "413+ra:3"]
    }
    fake = FakeGlance(FakeGlanceConfig(script=script, retry_after="9"))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        answers = []
        for _ in range(8):
            async with session.put(tag_url(base, "img-1", "gold")) as response:
                answers.append((response.status, response.headers.get("Retry-After")))
                assert REQ_ID.match(response.headers[REQUEST_ID_HEADER])
                if response.status == 413:
                    assert [] == fake.tags_of("img-1")  # the work was not done
        assert 204 == await put(session, tag_url(base, "img-1", "silver"))  # other pair: normal
    expected = [
        (503, "9"),
        (500, None),
        (429, "9"),
        (413, "9"),
        (404, None),
        (503, "7"),
        (413, "3"),
        (204, None),
    ]
    assert expected == answers
    assert ["gold", "silver"] == fake.tags_of("img-1")
    assert [503, 500, 429, 413] == script[("img-1", "gold")][:4]  # the caller's list is untouched


@pytest.mark.asyncio
async def test_script_drop_closes_the_connection_without_an_answer() -> None:
    script: dict[tuple[str, str], list[int | str]] = {("img-1", "gold"): ["drop", "drop"]}
    fake = FakeGlance(FakeGlanceConfig(script=script))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await put(session, tag_url(base, "img-1", "gold"))
        assert 204 == await put(session, tag_url(base, "img-1", "gold"))
    # aiohttp resends an idempotent request once after a disconnect, so one PUT = two drops.
    assert [0, 0, 204] == [record.status for record in fake.requests]
    assert ["gold"] == fake.tags_of("img-1")


@pytest.mark.asyncio
async def test_a_single_drop_is_hidden_by_aiohttps_own_resend() -> None:
    script: dict[tuple[str, str], list[int | str]] = {("img-1", "gold"): ["drop"]}
    fake = FakeGlance(FakeGlanceConfig(script=script))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert 204 == await put(session, tag_url(base, "img-1", "gold"))
    assert [0, 204] == [record.status for record in fake.requests]


@pytest.mark.asyncio
async def test_script_slow_delays_then_does_the_work() -> None:
    script: dict[tuple[str, str], list[int | str]] = {("img-1", "gold"): ["slow:0.2"]}
    fake = FakeGlance(FakeGlanceConfig(script=script))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        started = time.monotonic()
        assert 204 == await put(session, tag_url(base, "img-1", "gold"))
        slow = time.monotonic() - started
        started = time.monotonic()
        assert 204 == await put(session, tag_url(base, "img-1", "gold"))
        fast = time.monotonic() - started
    assert slow >= 0.2
    assert fast < 0.2
    assert ["gold"] == fake.tags_of("img-1")


@pytest.mark.parametrize("entry", ["fast", "slow:x", "slow:-1", "99", "503+ra:", 700])
def test_bad_script_entries_are_refused_at_construction(entry: int | str) -> None:
    with pytest.raises(ValueError, match="script"):
        FakeGlanceConfig(script={("img-1", "gold"): [entry]})


# -- the lost-update race and the concurrency counters ----------------------------------------


def concurrency(fake: FakeGlance) -> tuple[int, int, int]:
    """What the fake saw: (overlapping PUTs on one image, most in flight on one image, most in
    flight at all)."""
    return fake.overlaps, fake.max_in_flight_per_image, fake.max_in_flight


@pytest.mark.asyncio
async def test_overlapping_puts_on_one_image_lose_a_tag_like_real_glance() -> None:
    fake = FakeGlance(FakeGlanceConfig(latency=0.05))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(
            put(session, tag_url(base, "img-1", "a")), put(session, tag_url(base, "img-1", "b"))
        )
    assert [204, 204] == list(statuses)  # both were told "done"...
    survivor = fake.requests[-1].tag  # ...but the write that finished last overwrote the other
    assert [survivor] == fake.tags_of("img-1")
    assert (1, 2, 2) == concurrency(fake)


@pytest.mark.asyncio
async def test_sequential_puts_on_one_image_keep_every_tag() -> None:
    fake = FakeGlance(FakeGlanceConfig(latency=0.05))
    assert [204, 204] == await put_in_turn(fake, "img-1", "a", "b")
    assert ["a", "b"] == fake.tags_of("img-1")
    assert (0, 1, 1) == concurrency(fake)


@pytest.mark.asyncio
async def test_concurrency_on_different_images_is_not_an_overlap() -> None:
    fake = FakeGlance(FakeGlanceConfig(latency=0.05))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        await asyncio.gather(*(put(session, tag_url(base, f"img-{n}", "a")) for n in range(3)))
    assert (0, 1, 3) == concurrency(fake)
    assert [["a"]] * 3 == [fake.tags_of(f"img-{n}") for n in range(3)]


@pytest.mark.asyncio
async def test_requests_are_recorded_when_answered() -> None:
    fake = FakeGlance()
    before = time.monotonic()
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert 204 == await put(session, tag_url(base, "img-1", "gold"))
        async with session.get(f"{base}/v2/images", params={"limit": "1"}) as response:
            assert 200 == response.status
    expected = [("PUT", "img-1", "gold", 204), ("GET", None, None, 200)]
    assert expected == [(r.method, r.image_id, r.tag, r.status) for r in fake.requests]
    assert before <= fake.requests[0].at <= fake.requests[1].at


@pytest.mark.asyncio
async def test_the_stats_route_says_what_the_fake_saw_past_gateway_and_token() -> None:
    """An outage and a token: the stats still answer (no token, no refusal), and they count the
    tag calls, not themselves."""
    fake = FakeGlance(FakeGlanceConfig(token="t", outage=(0.0, 3600.0)))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert 503 == await put(session, tag_url(base, "img-1", "gold"), {"X-Auth-Token": "t"})
        for _ in range(2):
            async with session.get(base + STATS_PATH) as response:
                assert 200 == response.status
                seen = await response.json()
    assert {"requests": 1, "put": 1, "get": 0, "tag_writes_ok": 0} == {
        key: seen[key] for key in ("requests", "put", "get", "tag_writes_ok")
    }
    assert fake.stats() == seen


@pytest.mark.asyncio
async def test_write_latency_slows_the_tag_writes_and_not_the_reads() -> None:
    """A slow database: a PUT still in its write while a GET of the same image comes back.
    Stopping the server does not wait the write out (aiohttp's default would, for up to a
    minute): the write is abandoned, as a killed server's would be."""
    fake = FakeGlance(FakeGlanceConfig(write_latency=30.0))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        writing = asyncio.ensure_future(put(session, tag_url(base, "img-1", "gold")))
        async with session.get(f"{base}/v2/images/img-1") as response:
            assert 200 == response.status
        assert not writing.done()
        assert (2, 1) == (fake.max_in_flight_per_image, fake.stats()["get"])  # both on img-1
        writing.cancel()
    assert [] == fake.tags_of("img-1")


# -- `bulktag serve-fake` -----------------------------------------------------------------------


def test_serve_arguments_default_to_a_well_behaved_server_on_9292() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([])
    assert ("127.0.0.1", 9292) == (args.host, args.port)
    assert FakeGlanceConfig() == config_from_args(args)


# A flag of `bulktag serve-fake`, the text it is given, and the config field that text sets
# (with the value it must be read as).
SERVE_FLAGS = [
    ("--token", "t", "token", "t"),
    ("--latency", "0.1", "latency", 0.1),
    ("--write-latency", "0.5", "write_latency", 0.5),
    ("--fail-503", "0.2", "fail_503", 0.2),
    ("--fail-429", "0.3", "fail_429", 0.3),
    ("--retry-after", "4", "retry_after", "4"),
    ("--capacity", "5", "capacity", 5.0),
    ("--unknown-every", "6", "unknown_every", 6),
    ("--seed", "7", "seed", 7),
]


def test_serve_arguments_map_onto_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    argv = [word for flag, text, _, _ in SERVE_FLAGS for word in (flag, text)]
    expected = FakeGlanceConfig(**{field: value for _, _, field, value in SERVE_FLAGS})
    assert expected == config_from_args(parser.parse_args(argv))


@pytest.mark.asyncio
async def test_serve_forever_announces_its_url_and_serves_until_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = asyncio.create_task(serve_forever(FakeGlanceConfig(token="t"), "127.0.0.1", 0))
    line = ""
    for _ in range(100):
        await asyncio.sleep(0.01)
        line += capsys.readouterr().err
        if line:
            break
    match = re.fullmatch(
        r"fake Glance listening on (http://127\.0\.0\.1:\d+) \(token: required\)\n", line
    )
    assert match is not None, line
    async with aiohttp.ClientSession() as session:
        url = tag_url(match.group(1), "img-1", "gold")
        assert 204 == await put(session, url, headers={"X-Auth-Token": "t"})
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
