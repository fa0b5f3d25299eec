"""Every body a server sends is read only up to a small bound, whatever its size (issue 15.12).

A server streams a body far larger than any bound (128 MiB, written 64 KiB at a time) and
counts what it managed to hand to the socket before the client hung up. A client that reads
the whole body takes all of it; a bounded one takes its bound plus what the socket buffers
hold (a few MiB on loopback). The assertion is on bytes, never on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import anyio.to_thread
import pytest
from aiohttp import web

from bulktag.auth.base import AuthRefused, CredentialsError
from bulktag.auth.keystone import log_in
from bulktag.model import Answer
from bulktag.transport import (
    ANSWER_READ_LIMIT,
    GlanceTransport,
    ImsTransport,
    make_session,
)
from tests.auth.conftest import password_spec

IMAGE = "8a3f1c2e-0000-4000-8000-000000000001"
HUGE = 128 * 2**20  # what the server offers
CHUNK = 64 * 1024
#: What a bounded client may cost the server: its bound plus loopback socket buffers.
BOUND = 32 * 2**20


@dataclass
class Streamed:
    written: int = 0
    finished: bool = False  # the handler returned (the client hung up, or it sent it all)


@asynccontextmanager
async def streaming_server(
    status: int, headers: dict[str, str]
) -> AsyncIterator[tuple[str, Streamed]]:
    """Answers every request ``status`` with a 128 MiB body, counting what it wrote."""
    streamed = Streamed()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = HUGE
        await response.prepare(request)
        chunk = b"x" * CHUNK if status >= 300 else b" " * CHUNK  # JSON may start with spaces
        try:
            while streamed.written < HUGE:
                await response.write(chunk)
                streamed.written += CHUNK
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            streamed.finished = True
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", streamed
    finally:
        await runner.cleanup()


Call = Callable[[aiohttp.ClientSession, str], Awaitable[object]]


async def glance_put(session: aiohttp.ClientSession, url: str) -> object:
    return await GlanceTransport(session, url, 30).put_tag(IMAGE, "web", "tok")


async def glance_delete(session: aiohttp.ClientSession, url: str) -> object:
    return await GlanceTransport(session, url, 30).delete_tag(IMAGE, "web", "tok")


async def glance_get(session: aiohttp.ClientSession, url: str) -> object:
    """verify's read of an image."""
    return (await GlanceTransport(session, url, 30).get_image(IMAGE, "tok"))[0]


async def glance_preflight(session: aiohttp.ClientSession, url: str) -> object:
    return await GlanceTransport(session, url, 30).preflight("tok")


async def ims_add(session: aiohttp.ClientSession, url: str) -> object:
    return await ImsTransport(session, url, "p1", 30).add_tags(IMAGE, [("k", "v")], "tok")


async def keystone_login(session: aiohttp.ClientSession, url: str) -> object:
    """The login, as keystoneauth1 does it in a worker thread (``session`` is not used)."""
    spec = password_spec(url + "/v3")
    try:
        return await anyio.to_thread.run_sync(log_in, spec)
    except (AuthRefused, CredentialsError) as exc:
        return exc


CASES = [
    pytest.param(glance_put, 500, id="glance-put-500"),
    pytest.param(glance_delete, 503, id="glance-delete-503"),
    pytest.param(glance_get, 404, id="verify-get-404"),
    pytest.param(glance_get, 200, id="verify-get-200-huge-json"),
    pytest.param(glance_preflight, 200, id="preflight-200-huge"),
    pytest.param(ims_add, 500, id="ims-post-500"),
    pytest.param(keystone_login, 500, id="keystone-500"),
    pytest.param(keystone_login, 401, id="keystone-401"),
    pytest.param(keystone_login, 201, id="keystone-201-huge"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("call", "status"), CASES)
async def test_a_huge_body_is_read_only_up_to_a_bound(call: Call, status: int) -> None:
    headers = {"X-Subject-Token": "issued"} if status == 201 else {}
    async with streaming_server(status, headers) as (url, streamed):
        async with make_session(2, 30) as session:
            result = await call(session, url)
        for _ in range(200):  # let the handler see the hang-up (no timing asserted)
            if streamed.finished:
                break
            await asyncio.sleep(0.01)
    assert streamed.written < BOUND, f"{streamed.written:,} bytes taken of {HUGE:,}"
    assert len(str(result)) < 2000  # whatever came back is an excerpt, not the body


async def huge_answer(status: int, call: Callable[..., Awaitable[object]]) -> Answer:
    """What ``call(session, url)`` makes of a ``status`` answer whose body never ends."""
    async with streaming_server(status, {}) as (url, _streamed), make_session(2, 30) as session:
        answer = await call(session, url)
    assert isinstance(answer, Answer)
    return answer


@pytest.mark.asyncio
async def test_a_2xx_too_large_to_read_says_so() -> None:
    answer = await huge_answer(200, glance_get)
    assert 200 == answer.status
    assert b"" == answer.body
    assert f"larger than {ANSWER_READ_LIMIT // 2**20} MiB" in (answer.error or "")


@pytest.mark.asyncio
async def test_an_error_excerpt_still_comes_from_the_first_bytes() -> None:
    answer = await huge_answer(500, glance_put)
    assert 500 == answer.status
    assert (answer.error or "").startswith("xxxx")


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [ANSWER_READ_LIMIT - 1, ANSWER_READ_LIMIT])
async def test_a_2xx_up_to_the_bound_is_read_whole(size: int) -> None:
    """The bound is inclusive: an image JSON of exactly 4 MiB is read, not refused."""
    body = b'{"tags": ["web"]}'
    body += b" " * (size - len(body))

    async def image(request: web.Request) -> web.Response:
        return web.Response(status=200, body=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", image)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with make_session(2, 30) as session:
            answer, got = await GlanceTransport(session, url, 30).get_image(IMAGE, "tok")
    finally:
        await runner.cleanup()
    assert (200, None, size) == (answer.status, answer.error, len(got))
