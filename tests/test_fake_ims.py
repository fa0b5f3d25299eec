"""The fake IMS must behave like IMS where bulktag can go wrong — overwrite, the ten-tag limit,
the idempotent delete, the lost-update race, Huawei's 429 — or the engine's IMS tests prove
nothing. Driven over real HTTP with a plain aiohttp client."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp
import pytest

from bulktag.fake.glance import serve
from bulktag.fake.ims import FakeIms, FakeImsConfig, ImsCall
from bulktag.fake.serve import add_serve_arguments, config_from_args, make_fake

PROJECT = "p1"
IMAGE = "img-1"


def tags_url(base: str, image_id: str = IMAGE, action: bool = False, project: str = PROJECT) -> str:
    return f"{base}/v2/{project}/images/{image_id}/tags" + ("/action" if action else "")


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, json=body) as response:
        content = await response.read()
        json_body = response.content_type == "application/json"
        return response.status, (await response.json() if content and json_body else None)


def create(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"action": "create", "tags": [{"key": k, "value": v} for k, v in pairs]}


def delete(*pairs: tuple[str, str | None]) -> dict[str, Any]:
    tags = [{"key": k} if v is None else {"key": k, "value": v} for k, v in pairs]
    return {"action": "delete", "tags": tags}


async def test_one_tag_is_added_and_a_new_value_overwrites_it() -> None:
    fake = FakeIms()
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert (
            204 == (await post(session, tags_url(base), {"tag": {"key": "env", "value": "a"}}))[0]
        )
        assert (
            204 == (await post(session, tags_url(base), {"tag": {"key": "env", "value": "b"}}))[0]
        )
        async with session.get(tags_url(base)) as response:
            assert {"tags": [{"key": "env", "value": "b"}]} == await response.json()
    assert {"env": "b"} == fake.kv_of(IMAGE)
    assert [ImsCall(IMAGE, "add", ("env",), 204)] * 2 == fake.calls


async def test_a_batch_creates_and_deletes_and_a_missing_tag_deletes_fine() -> None:
    fake = FakeIms()
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        url = tags_url(base, action=True)
        assert 204 == (await post(session, url, create(("a", "1"), ("b", "2"), ("c", "3"))))[0]
        assert (
            204 == (await post(session, url, delete(("a", None), ("b", "other"), ("x", None))))[0]
        )
    assert {"b": "2", "c": "3"} == fake.kv_of(IMAGE)  # b kept: its value is not "other"
    assert [3, 3] == fake.batch_sizes


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(create(*[(f"k{n}", "v") for n in range(11)]), "at most 10 tags", id="eleven"),
        pytest.param(create(("k", "1"), ("k", "2")), "must be unique", id="key-twice"),
        pytest.param(create(("k" * 37, "v")), "is invalid", id="key-too-long"),
        pytest.param(create(("k", "v" * 44)), "too long", id="value-too-long"),
        pytest.param(create(("", "v")), "cannot be empty", id="empty-key"),
        pytest.param({"action": "create", "tags": [{"key": "k"}]}, "missing", id="no-value"),
        pytest.param({"action": "nope", "tags": []}, "create or delete", id="bad-action"),
    ],
)
async def test_a_request_ims_refuses_is_a_400_with_an_ims_body_and_changes_nothing(
    body: dict[str, Any], message: str
) -> None:
    fake = FakeIms()
    fake.kv[IMAGE] = {"old": "1"}
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        status, answer = await post(session, tags_url(base, action=True), body)
    assert 400 == status
    assert "IMG.0001" == answer["error"]["code"]
    assert message in answer["error"]["message"]
    assert {"old": "1"} == fake.kv_of(IMAGE)


async def test_an_image_holds_at_most_ten_tags_however_they_come() -> None:
    fake = FakeIms()
    fake.kv[IMAGE] = {f"k{n}": "v" for n in range(8)}
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        url = tags_url(base, action=True)
        assert 400 == (await post(session, url, create(("a", "1"), ("b", "2"), ("c", "3"))))[0]
        assert 204 == (await post(session, url, create(("a", "1"), ("b", "2"), ("k0", "new"))))[0]
    assert 10 == len(fake.kv_of(IMAGE))


async def test_overlapping_writes_on_one_image_lose_a_tag_as_the_real_race_does() -> None:
    fake = FakeIms(FakeImsConfig(latency=0.05))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        url = tags_url(base)
        await asyncio.gather(
            post(session, url, {"tag": {"key": "a", "value": "1"}}),
            post(session, url, {"tag": {"key": "b", "value": "2"}}),
        )
    assert 1 == len(fake.kv_of(IMAGE))
    assert 2 == fake.max_in_flight_per_image


async def test_above_capacity_the_gateway_answers_429_apigw_0308() -> None:
    fake = FakeIms(FakeImsConfig(capacity=2))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        answers = [await post(session, tags_url(base), {"tag": {"key": "a", "value": "1"}})
                   for _ in range(5)]  # fmt: skip
    assert 429 in {status for status, _ in answers}
    throttled = next(body for status, body in answers if status == 429)
    assert "APIGW.0308" == throttled["error_code"]


async def test_the_script_is_keyed_by_image_and_key() -> None:
    fake = FakeIms(FakeImsConfig(script={(IMAGE, "b"): [503, "429+ra:1"]}))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        url = tags_url(base, action=True)
        body = create(("a", "1"), ("b", "2"))
        assert [503, 429, 204] == [(await post(session, url, body))[0] for _ in range(3)]
    assert {"a": "1", "b": "2"} == fake.kv_of(IMAGE)


@pytest.mark.parametrize(
    ("config", "status"),
    [
        pytest.param({"known_images": set()}, 404, id="unknown-image"),
        pytest.param({"forbidden_images": {IMAGE}}, 403, id="forbidden-image"),
        pytest.param({"project_id": "another"}, 403, id="another-project"),
        pytest.param({"token": "secret"}, 401, id="no-token"),
        pytest.param({"fail_503": 1.0}, 503, id="gateway-503"),
    ],
)
async def test_per_image_and_per_request_failures(config: dict[str, Any], status: int) -> None:
    fake = FakeIms(FakeImsConfig(**config))
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        assert (
            status == (await post(session, tags_url(base), {"tag": {"key": "a", "value": "1"}}))[0]
        )
    assert {} == fake.kv_of(IMAGE)


async def test_the_project_tags_list_every_value_of_every_key() -> None:
    fake = FakeIms(FakeImsConfig(project_id=PROJECT))
    fake.kv = {"i1": {"env": "prod"}, "i2": {"env": "dev", "team": "web"}}
    async with serve(fake) as base, aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v2/{PROJECT}/images/tags") as response:
            assert 200 == response.status
            body = await response.json()
        async with session.get(f"{base}/v2/images?limit=1") as response:
            assert 200 == response.status  # the native Glance calls are served too
    expected = [{"key": "env", "values": ["dev", "prod"]}, {"key": "team", "values": ["web"]}]
    assert {"tags": expected} == body


def test_serve_fake_api_ims_builds_a_fake_ims_with_the_common_flags() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--api", "ims", "--project-id", "p", "--capacity", "5"])
    config = config_from_args(args)
    assert FakeImsConfig(project_id="p", capacity=5.0) == config
    assert isinstance(make_fake(config), FakeIms)
    assert 429 == config.capacity_status
