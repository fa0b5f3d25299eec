"""The fake's gateway plays every limiter shape of bulktag.fake.limiters over real HTTP, and
``bulktag serve-fake`` exposes them (``--limiter``, ``--limiter-status``, ``--outage``), so an
operator can rehearse a run against each shape a cloud may have.

The models' own arithmetic is theirs to test; here: the right status and body, Retry-After,
a place freed when an answer is done, and times counted from the server's start. Where a test
needs time to pass it moves the fake's clock (``fake.started``) instead of sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from clitools import fake_glance, one_error_line, run_bulktag

from bulktag.fake.glance import FakeGlance, FakeGlanceConfig, serve
from bulktag.fake.ims import FakeImsConfig
from bulktag.fake.limiters import (
    ConcurrencyLimit,
    FixedWindow,
    Refusal,
    SlidingWindow,
    TokenBucket,
    parse_limiter,
)
from bulktag.fake.serve import add_serve_arguments, config_from_args

Answer = tuple[int, str | None]  # status, Retry-After


def gateway(spec: str, status: int = 503, **config: object) -> FakeGlance:
    limiter = parse_limiter(spec, Refusal(status))
    return FakeGlance(FakeGlanceConfig(limiter=limiter, **config))  # type: ignore[arg-type]


async def answers(base: str, count: int, tag: str = "t") -> list[Answer]:
    """``count`` PUTs sent at once, answers in the order they were sent."""
    async with aiohttp.ClientSession() as session:

        async def put(n: int) -> Answer:
            url = f"{base}/v2/images/img-{n}/tags/{tag}"
            async with session.put(url) as response:
                return response.status, response.headers.get("Retry-After")

        return list(await asyncio.gather(*(put(n) for n in range(count))))


def statuses(found: list[Answer]) -> list[int]:
    return sorted(status for status, _ in found)


# -- each shape through the gateway -------------------------------------------------------------


@pytest.mark.asyncio
async def test_bucket_admits_its_burst_then_refuses_with_503() -> None:
    fake = gateway("bucket:0.001:3")
    async with serve(fake) as base:
        found = await answers(base, 5)
    assert [204, 204, 204, 503, 503] == statuses(found)
    assert 3 == sum(len(tags) for tags in fake.tags.values())


@pytest.mark.asyncio
async def test_fixed_window_admits_its_limit_again_in_the_next_period() -> None:
    fake = gateway("fixed:2:60")
    async with serve(fake) as base:
        first = await answers(base, 3)
        fake.started -= 60  # the next window
        second = await answers(base, 3, tag="u")
    assert [204, 204, 503] == statuses(first)
    assert [204, 204, 503] == statuses(second)


@pytest.mark.asyncio
async def test_sliding_window_refusing_with_429_answers_like_huaweis_gateway() -> None:
    fake = gateway("sliding:2:60", status=429)
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        found = await answers(base, 2)
        async with session.put(f"{base}/v2/images/img-9/tags/t") as response:
            assert (429, None) == (response.status, response.headers.get("Retry-After"))
            assert "APIGW.0308" == (await response.json())["error_code"]
    assert [204, 204] == statuses(found)


@pytest.mark.asyncio
async def test_concurrency_limit_refuses_at_once_and_frees_the_place_when_answered() -> None:
    fake = gateway("concurrency:1:0.2")
    async with serve(fake) as base:
        started = time.monotonic()
        found = await answers(base, 2)
        elapsed = time.monotonic() - started
        again = await answers(base, 1, tag="u")
    assert [204, 503] == statuses(found)
    assert elapsed >= 0.2  # the one served took the service time
    assert [204] == statuses(again)


@pytest.mark.asyncio
async def test_queue_delays_what_it_can_serve_in_time_and_refuses_the_rest() -> None:
    fake = gateway("queue:10:0.15")  # 0.1 s a request; the third would wait 0.2 s
    async with serve(fake) as base:
        started = time.monotonic()
        found = await answers(base, 3)
        elapsed = time.monotonic() - started
    assert [204, 204, 503] == statuses(found)
    assert elapsed >= 0.2


@pytest.mark.asyncio
async def test_schedule_steps_count_from_the_servers_start() -> None:
    fake = gateway("schedule:0=1000,30=0.001")  # a burst of 100, then of one
    async with serve(fake) as base:
        before = await answers(base, 5)
        fake.started -= 30
        after = await answers(base, 3, tag="u")
    assert [204] * 5 == statuses(before)
    assert [204, 503, 503] == statuses(after)


@pytest.mark.asyncio
async def test_outage_refuses_everything_with_503_in_its_window_only() -> None:
    fake = FakeGlance(FakeGlanceConfig(outage=(30.0, 60.0), retry_after="4"))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        before = await answers(base, 2)
        fake.started -= 30
        during = await answers(base, 2, tag="u")
        async with session.get(f"{base}/v2/images") as response:
            assert 503 == response.status  # the whole service is down, not just the tag call
        fake.started -= 30
        after = await answers(base, 2, tag="v")
    assert [(204, None)] * 2 == before
    assert [(503, "4")] * 2 == during
    assert [(204, None)] * 2 == after


@pytest.mark.asyncio
async def test_random_faults_still_apply_behind_a_limiter_and_free_its_place() -> None:
    limiter = ConcurrencyLimit(1, service_time=0.0)
    fake = FakeGlance(FakeGlanceConfig(limiter=limiter, fail_503=1.0))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        for _ in range(2):  # the second is not refused by the limiter: the first left
            async with session.put(f"{base}/v2/images/img-1/tags/t") as response:
                assert 503 == response.status
                assert "injected" in await response.text()


# -- Retry-After --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_refusals_own_retry_after_wins_over_the_configured_one() -> None:
    own = SlidingWindow(1, 60, Refusal(503, retry_after=2.5))
    fake = FakeGlance(FakeGlanceConfig(limiter=own, retry_after="9"))
    async with serve(fake) as base:
        found = await answers(base, 2)
    assert [(204, None), (503, "2.5")] == sorted(found, key=lambda a: a[0])


@pytest.mark.asyncio
async def test_a_refusal_without_retry_after_falls_back_to_the_configured_one() -> None:
    fake = gateway("fixed:1:60", status=429, retry_after="1")
    async with serve(fake) as base:
        found = await answers(base, 2)
    assert [(204, None), (429, "1")] == sorted(found, key=lambda a: a[0])


@pytest.mark.asyncio
async def test_capacity_is_judged_first_and_its_refusals_cost_the_limiter_nothing() -> None:
    window = FixedWindow(2, 600, Refusal(429))
    fake = FakeGlance(FakeGlanceConfig(capacity=1, limiter=window))
    async with serve(fake) as base:
        first = await answers(base, 3)  # one capacity token
        fake.started -= 1  # one more
        second = await answers(base, 1, tag="u")  # the window's second place is still free
        fake.started -= 1
        third = await answers(base, 1, tag="v")  # a token, but the window is full
    assert [204, 503, 503] == statuses(first)
    assert [204] == statuses(second)
    assert [429] == statuses(third)


# -- `bulktag serve-fake` flags -----------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_limiter_flags_map_onto_the_config() -> None:
    args = parse("--limiter", "bucket:5:2", "--limiter-status", "429", "--outage", "10:20.5")
    config = config_from_args(args)
    assert isinstance(config.limiter, TokenBucket)
    assert (5.0, 2.0, Refusal(429)) == (
        config.limiter.rate,
        config.limiter.burst,
        config.limiter.refusal,
    )
    assert (429, (10.0, 20.5)) == (config.capacity_status, config.outage)


def test_limiter_status_defaults_to_each_fakes_own_refusal() -> None:
    glance = config_from_args(parse("--limiter", "fixed:3", "--capacity", "2"))
    ims = config_from_args(parse("--api", "ims", "--limiter", "fixed:3"))
    assert isinstance(ims, FakeImsConfig)
    assert (503, Refusal(503)) == (glance.capacity_status, glance.limiter.refusal)  # type: ignore[union-attr]
    assert (429, Refusal(429)) == (ims.capacity_status, ims.limiter.refusal)  # type: ignore[union-attr]


def test_outage_may_last_until_the_server_stops() -> None:
    assert (2.0, float("inf")) == config_from_args(parse("--outage", "2:inf")).outage


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--limiter", "leaky:5"], ("--limiter", "bad limiter 'leaky:5'")),
        (["--limiter", "bucket:-1"], ("--limiter", "bucket:RATE[:BURST]")),
        (["--limiter", "schedule:5=100"], ("--limiter", "schedule:T=RATE")),
        (["--limiter-status", "500"], ("--limiter-status", "500")),
        (["--outage", "20:10"], ("--outage", "'20:10'")),
        (["--outage", "soon"], ("--outage", "'soon'")),
    ],
)
def test_a_bad_gateway_flag_is_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], needles: tuple[str, ...]
) -> None:
    done = run_bulktag(argv, tmp_path, command="serve-fake", timeout=20)
    line = one_error_line(done, 2)
    assert all(needle in line for needle in (*needles, "error")), str(done)


def test_serve_fake_rehearses_a_429_window_with_retry_after(tmp_path: Path) -> None:
    """The real command, end to end: the flags reach the server it runs."""
    flags = ("--limiter", "fixed:2:600", "--limiter-status", "429", "--retry-after", "3")
    with fake_glance(tmp_path, *flags, token=None) as server:
        found = [_put(f"{server.url}/v2/images/img-{n}/tags/t") for n in range(3)]
    assert [(204, None, ""), (204, None, ""), (429, "3", "APIGW.0308")] == found


def test_serve_fake_outage_refuses_from_its_start(tmp_path: Path) -> None:
    with fake_glance(tmp_path, "--outage", "0:inf", token=None) as server:
        assert (503, None, "") == _put(f"{server.url}/v2/images/img-1/tags/t")


def _put(url: str) -> tuple[int, str | None, str]:
    """Status, Retry-After and a 429's error code, with the standard library alone."""
    request = urllib.request.Request(url, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Retry-After"), ""
    except urllib.error.HTTPError as error:
        body = error.read()
        code = json.loads(body)["error_code"] if error.code == 429 else ""
        return error.code, error.headers.get("Retry-After"), code
