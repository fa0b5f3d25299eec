"""The HTTP edge in isolation: what goes on the wire, and how failures map to Answers.

A tiny aiohttp.web server on loopback records each request and answers what the test scripts.
(aioresponses would patch aiohttp's internals instead; its 0.7.9 does not work with aiohttp
3.14, and a real socket tests more anyway.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from bulktag.model import Answer
from bulktag.transport import GlanceTransport, make_session, normalize_endpoint

IMAGE = "8a3f1c2e-0000-4000-8000-000000000001"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://glance:9292", "http://glance:9292"),
        ("http://glance:9292/", "http://glance:9292"),
        ("https://glance:9292/v2", "https://glance:9292"),
        ("https://glance:9292/v2/", "https://glance:9292"),
        ("https://cloud.example/image", "https://cloud.example/image"),
    ],
)
def test_endpoint_is_normalized_with_or_without_v2(given: str, expected: str) -> None:
    assert expected == normalize_endpoint(given)


@pytest.mark.parametrize("bad", ["ftp://glance", "glance:9292", "not a url", "http://"])
def test_a_non_http_endpoint_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        normalize_endpoint(bad)


@asynccontextmanager
async def server(handler: Handler, seen: list[web.Request]) -> AsyncIterator[str]:
    async def record(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append(request)
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def put_via(handler: Handler, timeout: float = 5.0) -> tuple[Answer, list[web.Request]]:
    seen: list[web.Request] = []
    async with server(handler, seen) as url, make_session(2, timeout) as session:
        answer = await GlanceTransport(session, url + "/v2/", timeout).put_tag(IMAGE, "web", "tok")
    return answer, seen


async def no_content(request: web.Request) -> web.Response:
    """What Glance answers to a tag PUT that worked: 204, no body."""
    return web.Response(status=204)


@pytest.mark.asyncio
async def test_put_sends_the_token_to_the_tag_path_with_no_body() -> None:
    answer, [request] = await put_via(no_content)
    assert Answer(status=204) == answer
    assert ("PUT", f"/v2/images/{IMAGE}/tags/web") == (request.method, request.path)
    assert "tok" == request.headers["X-Auth-Token"]
    assert request.headers.get("Content-Length", "0") == "0"  # Glance: 400 for any body
    assert "Transfer-Encoding" not in request.headers


@pytest.mark.asyncio
@pytest.mark.parametrize("suffix", ["/image", "/image/", "/image/v2", "/image/v2/"])
async def test_an_endpoint_with_a_path_prefix_keeps_it(suffix: str) -> None:
    """devstack serves Glance under /image: the tag path goes below the endpoint's own path."""
    seen: list[web.Request] = []

    async with server(no_content, seen) as url, make_session(2, 5.0) as session:
        answer = await GlanceTransport(session, url + suffix, 5.0).put_tag(IMAGE, "web", "tok")
    assert 204 == answer.status
    assert f"/image/v2/images/{IMAGE}/tags/web" == seen[0].raw_path


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("image_id", "tag", "raw_path"),
    [
        pytest.param(IMAGE, "team-web_1.x~y", f"/v2/images/{IMAGE}/tags/team-web_1.x~y",
                     id="unreserved-as-is"),
        pytest.param(IMAGE, "a b/c?d#e%f", f"/v2/images/{IMAGE}/tags/a%20b%2Fc%3Fd%23e%25f",
                     id="reserved-quoted"),
        pytest.param("x/../y", "t", "/v2/images/x%2F..%2Fy/tags/t", id="image-id-quoted"),
        pytest.param(IMAGE, "é", f"/v2/images/{IMAGE}/tags/%C3%A9", id="utf8-quoted"),
    ],
)  # fmt: skip
async def test_each_path_segment_is_sent_quoted_unless_it_is_url_safe(
    image_id: str, tag: str, raw_path: str
) -> None:
    """Rows are validated, but a tag to remove or a hand-built call may hold anything: it must
    stay one path segment (a '/' or '?' in it must never reach another URL)."""
    seen: list[web.Request] = []

    async with server(no_content, seen) as url, make_session(2, 5.0) as session:
        answer = await GlanceTransport(session, url, 5.0).delete_tag(image_id, tag, "tok")
    assert 204 == answer.status
    assert ("DELETE", raw_path) == (seen[0].method, seen[0].raw_path)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("header", "value"), [("x-openstack-request-id", "req-1"), ("X-Request-Id", "gw-2")]
)
async def test_request_id_is_read_from_either_header(header: str, value: str) -> None:
    async def with_id(request: web.Request) -> web.Response:
        return web.Response(status=204, headers={header: value})

    answer, _ = await put_via(with_id)
    assert value == answer.request_id


@pytest.mark.asyncio
async def test_an_error_answer_keeps_status_retry_after_and_a_flat_excerpt() -> None:
    async def unavailable(request: web.Request) -> web.Response:
        body = "Service\n  Unavailable" + " x" * 400
        return web.Response(status=503, text=body, headers={"Retry-After": "7"})

    answer, _ = await put_via(unavailable)
    assert (503, "7") == (answer.status, answer.retry_after)
    assert (answer.error or "").startswith("Service Unavailable x")
    assert len(answer.error or "") <= 301


@pytest.mark.asyncio
async def test_a_slow_answer_is_a_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(status=204)

    answer, _ = await put_via(slow, timeout=0.2)
    assert Answer(status=None, error="timeout after 0.2 s") == answer


@pytest.mark.asyncio
async def test_a_connection_closed_without_an_answer_is_a_dropped_connection() -> None:
    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.1)
        return web.Response(status=204)

    answer, _ = await put_via(hang_up)
    assert answer.status is None
    assert "connection dropped by the server" == answer.error


@pytest.mark.asyncio
async def test_a_refused_connection_names_the_reason() -> None:
    # Nothing listens on port 9 of loopback.
    async with make_session(1, 5.0) as session:
        answer = await GlanceTransport(session, "http://127.0.0.1:9", 5.0).put_tag(
            IMAGE, "web", "tok"
        )
    assert answer.status is None
    assert (answer.error or "").startswith("connect: ")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("exception", "error"),
    [
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "connection error: ClientOSError"),
        (aiohttp.ClientPayloadError("truncated"), "connection error: ClientPayloadError"),
        (ConnectionResetError(104, "reset"), "connection error: ConnectionResetError"),
    ],
)
async def test_other_client_errors_become_answers_without_status(
    exception: Exception, error: str
) -> None:
    async def raising(*args: object, **kwargs: object) -> aiohttp.ClientResponse:
        raise exception

    async with make_session(1, 5.0) as session:
        transport = GlanceTransport(session, "http://127.0.0.1:9", 5.0)
        answer = await transport._call(raising, transport._tag_url(IMAGE, "web"), "tok")
    assert answer.status is None
    assert (answer.error or "").startswith(error)


@pytest.mark.asyncio
async def test_a_bug_is_not_disguised_as_a_network_error() -> None:
    async def buggy(*args: object, **kwargs: object) -> aiohttp.ClientResponse:
        raise KeyError("bug")

    async with make_session(1, 5.0) as session:
        transport = GlanceTransport(session, "http://127.0.0.1:9", 5.0)
        with pytest.raises(KeyError):
            await transport._call(buggy, transport._tag_url(IMAGE, "web"), "tok")


@pytest.mark.asyncio
async def test_each_request_carries_the_token_it_was_given_when_the_token_changes() -> None:
    seen: list[web.Request] = []

    async with server(no_content, seen) as url, make_session(2, 5.0) as session:
        transport = GlanceTransport(session, url, 5.0)
        for token in ("first", "first", "renewed", "first"):
            assert 204 == (await transport.put_tag(IMAGE, "web", token)).status
    assert ["first", "first", "renewed", "first"] == [r.headers["X-Auth-Token"] for r in seen]


@pytest.mark.asyncio
async def test_two_transports_on_one_session_each_send_their_own_token() -> None:
    """The token is the session's default header: whoever sends sets it to their own."""
    seen: list[web.Request] = []

    async with server(no_content, seen) as url, make_session(2, 5.0) as session:
        glance, other = GlanceTransport(session, url, 5.0), GlanceTransport(session, url, 5.0)
        for transport, token in ((glance, "a"), (other, "b"), (glance, "a"), (glance, "a")):
            assert 204 == (await transport.put_tag(IMAGE, "web", token)).status
    assert ["a", "b", "a", "a"] == [r.headers["X-Auth-Token"] for r in seen]


@pytest.mark.asyncio
async def test_after_a_timeout_the_transport_and_its_task_carry_on() -> None:
    async def slow_once(request: web.Request) -> web.Response:
        if request.path.endswith("/slow"):
            await asyncio.sleep(5)
        return web.Response(status=204)

    async with server(slow_once, []) as url, make_session(2, 0.2) as session:
        transport = GlanceTransport(session, url, 0.2)
        assert "timeout after 0.2 s" == (await transport.put_tag(IMAGE, "slow", "t")).error
        await asyncio.sleep(0.05)  # a cancel left pending would raise here
        assert 204 == (await transport.put_tag(IMAGE, "fast", "t")).status


@pytest.mark.asyncio
async def test_a_redirect_is_an_answer_and_the_token_never_follows_it() -> None:
    """The session carries the token in its default headers: a redirect to another host,
    followed, would hand the token to that host."""
    elsewhere: list[web.Request] = []
    seen: list[web.Request] = []
    async with server(no_content, elsewhere) as other:

        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{other}/stolen")

        async with server(moved, seen) as url, make_session(2, 5.0) as session:
            answer = await GlanceTransport(session, url, 5.0).put_tag(IMAGE, "web", "tok")
    assert 302 == answer.status
    assert 1 == len(seen)
    assert [] == elsewhere


# -- removing a tag: a 404 says whether the tag or the image is missing ------------------------

_TAG_ABSENT = "404 Not Found\n\nThe resource could not be found.\n\n   "  # Glance's bare 404
_IMAGE_GONE = f"404 Not Found\n\nImage {IMAGE} not found.\n\n   "  # Glance since Kilo
_GATEWAY = '{"error_code": "APIGW.0101", "error_msg": "The API does not exist"}'


def _image_json(tags: list[str]) -> str:
    return json.dumps({"id": IMAGE, "name": "image-backup", "tags": tags})


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("delete_body", "get_status", "get_body", "tag_absent", "gets"),
    [
        pytest.param(_TAG_ABSENT, 500, "", True, 0, id="glance-tag-absent-no-get"),
        pytest.param(_IMAGE_GONE, 500, "", False, 0, id="glance-image-gone-no-get"),
        pytest.param(_GATEWAY, 200, _image_json(["other"]), True, 1, id="unsure-image-lacks-tag"),
        pytest.param(_GATEWAY, 404, "", False, 1, id="unsure-image-gone"),
        pytest.param(_GATEWAY, 200, _image_json(["image-backup"]), False, 1,
                     id="unsure-image-has-the-tag"),
        pytest.param(_GATEWAY, 503, "", False, 1, id="unsure-read-fails"),
        pytest.param("Not Found", 200, "{}", False, 1, id="unsure-image-json-without-tags"),
    ],
)  # fmt: skip
async def test_a_404_to_a_removal_is_told_apart_by_words_or_by_reading_the_image(
    delete_body: str, get_status: int, get_body: str, tag_absent: bool, gets: int
) -> None:
    async def glance(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.Response(status=get_status, text=get_body)
        return web.Response(status=404, text=delete_body)

    seen: list[web.Request] = []
    async with server(glance, seen) as url, make_session(2, 5.0) as session:
        answer = await GlanceTransport(session, url, 5.0).delete_tag(IMAGE, "image-backup", "t")
    assert 404 == answer.status
    assert tag_absent == answer.tag_absent
    assert gets == sum(1 for r in seen if r.method == "GET")
    assert 1 == sum(1 for r in seen if r.method == "DELETE")
