"""The IMS half of the HTTP edge: which call carries which body, and that its answers map to
Answers exactly as Glance's do (it is the same mapping code)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from aiohttp import web

from bulktag.model import Answer
from bulktag.transport import IMS_MAX_TAGS, ImsTransport, make_session
from tests.test_transport import Handler, server

IMAGE = "8a3f1c2e-0000-4000-8000-000000000001"
PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"X-Request-Id": "gw-1"})


async def call(
    tags: Sequence[tuple[str, str | None]],
    remove: bool = False,
    handler: Handler = no_content,
    timeout: float = 5.0,
    endpoint_suffix: str = "",
) -> tuple[Answer, list[web.Request], list[object]]:
    seen: list[web.Request] = []
    async with server(handler, seen) as url, make_session(2, timeout) as session:
        transport = ImsTransport(session, url + endpoint_suffix, PROJECT, timeout)
        send = transport.remove_tags if remove else transport.add_tags
        answer = await send(IMAGE, tags, "tok")
    bodies = [json.loads(await request.read()) for request in seen]
    return answer, seen, bodies


async def test_one_tag_is_added_with_the_single_tag_call() -> None:
    answer, [request], [body] = await call([("env", "prod")])
    assert Answer(status=204, request_id="gw-1") == answer
    assert ("POST", f"/v2/{PROJECT}/images/{IMAGE}/tags") == (request.method, request.path)
    assert "tok" == request.headers["X-Auth-Token"]
    assert {"tag": {"key": "env", "value": "prod"}} == body


async def test_several_tags_go_in_one_batch_create() -> None:
    _, [request], [body] = await call([("env", "prod"), ("team", "web"), ("empty", "")])
    assert f"/v2/{PROJECT}/images/{IMAGE}/tags/action" == request.path
    assert {
        "action": "create",
        "tags": [
            {"key": "env", "value": "prod"},
            {"key": "team", "value": "web"},
            {"key": "empty", "value": ""},
        ],
    } == body


async def test_a_bare_key_is_added_with_the_empty_value_and_removed_whatever_its_value() -> None:
    _, _, [added] = await call([("env", None)])
    _, [request], [removed] = await call([("env", None), ("team", "web")], remove=True)
    assert {"tag": {"key": "env", "value": ""}} == added
    assert f"/v2/{PROJECT}/images/{IMAGE}/tags/action" == request.path
    assert {"action": "delete", "tags": [{"key": "env"}, {"key": "team", "value": "web"}]} == (
        removed
    )


async def test_one_tag_is_removed_with_the_idempotent_batch_delete() -> None:
    _, [request], [body] = await call([("env", "prod")], remove=True)
    assert request.path.endswith("/tags/action")
    assert {"action": "delete", "tags": [{"key": "env", "value": "prod"}]} == body


@pytest.mark.parametrize("suffix", ["", "/", "/v2", f"/v2/{PROJECT}", f"/v2/{PROJECT}/"])
async def test_the_endpoint_may_come_with_or_without_v2_and_the_project(suffix: str) -> None:
    _, [request], _ = await call([("env", "prod")], endpoint_suffix=suffix)
    assert f"/v2/{PROJECT}/images/{IMAGE}/tags" == request.path


async def test_more_tags_than_ims_takes_in_one_call_are_never_sent() -> None:
    tags = [(f"k{n}", "v") for n in range(IMS_MAX_TAGS + 1)]
    with pytest.raises(ValueError, match="1 to 10 tags"):
        await call(tags)


async def test_a_gateway_429_keeps_status_retry_after_and_huaweis_words() -> None:
    async def throttled(request: web.Request) -> web.Response:
        body = {"error_code": "APIGW.0308", "error_msg": "throttling threshold reached"}
        return web.json_response(body, status=429, headers={"Retry-After": "2"})

    answer, _, _ = await call([("env", "prod"), ("a", "b")], handler=throttled)
    assert (429, "2") == (answer.status, answer.retry_after)
    assert "APIGW.0308" in (answer.error or "")


async def test_a_timeout_maps_as_for_glance() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(status=204)

    answer, _, _ = await call([("env", "prod")], handler=slow, timeout=0.2)
    assert Answer(status=None, error="timeout after 0.2 s") == answer


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, {"tags": []}, None),
        (200, {"images": []}, "the answer is not a tag list"),
        (403, {"error": {"message": "no", "code": "IMG.0001"}}, '{"error": {"message": "no"'),
    ],
)
async def test_preflight_reads_the_projects_tags(
    status: int, body: object, error: str | None
) -> None:
    async def tags(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    seen: list[web.Request] = []
    async with server(tags, seen) as url, make_session(1, 5.0) as session:
        answer = await ImsTransport(session, url, PROJECT, 5.0).preflight("tok")
    assert ("GET", f"/v2/{PROJECT}/images/tags") == (seen[0].method, seen[0].path)
    assert status == answer.status
    assert (error is None) == (answer.error is None)
    if error is not None:
        assert (answer.error or "").startswith(error)
