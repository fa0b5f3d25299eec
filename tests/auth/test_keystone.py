"""Logging in through keystoneauth1: credentials stay on the configured host, answers are read
in bounded excerpts, and every failure is one of the layer's own errors.

keystoneauth does the login here, against the fake Keystone on loopback, exactly as in a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import pytest
from aiohttp import web

from bulktag.auth.base import AuthRefused, CredentialsError
from bulktag.auth.keystone import (
    MAX_ERROR_BODY,
    MAX_TOKEN_BODY,
    CredentialsElsewhere,
    IssuedToken,
    _read_bounded,
    host_of,
    log_in,
)
from bulktag.fake.keystone import serve_keystone
from tests.auth.conftest import alice_keystone, password_spec


async def login(auth_url: str, **flags: Any) -> IssuedToken:
    return await anyio.to_thread.run_sync(log_in, password_spec(auth_url, **flags))


# ---------------------------------------------------------------------------------------------
# Credentials never travel to another host (issue 15, item 5)


class Recorder:
    """A second server: answers every request with a 201 token and records what it got."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.tokens: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.text())
        self.tokens.append(request.headers.get("X-Auth-Token", ""))
        return web.json_response({"token": {}}, status=201, headers={"X-Subject-Token": "stolen"})


@asynccontextmanager
async def recorder(host: str = "127.0.0.1") -> AsyncIterator[tuple[Recorder, str]]:
    seen = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", seen.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, 0).start()
        yield seen, f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize("versioned", [True, False], ids=["auth-url-v3", "auth-url-root"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_host_is_refused_before_the_password_leaves(
    status: int, versioned: bool
) -> None:
    fake = alice_keystone()
    async with recorder() as (seen, elsewhere), serve_keystone(fake) as base:
        fake.config.redirect_to = elsewhere
        fake.config.redirect_status = status
        auth_url = f"{base}/v3" if versioned else base
        with pytest.raises(CredentialsElsewhere) as info:
            await login(auth_url)
    assert ([], []) == (seen.bodies, seen.tokens)  # not a byte reached the other host
    message = str(info.value)
    assert host_of(base) in message
    assert host_of(elsewhere) in message
    assert "alice-password" not in message


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["", "/v3"], ids=["auth-url-root", "auth-url-v3"])
async def test_discovery_links_to_another_host_never_carry_the_password_there(path: str) -> None:
    # A Keystone whose public_endpoint names another host. keystoneauth 5 posts to the auth URL
    # anyway; were it to follow the link, the guard must stop it: either way, nothing leaves.
    fake = alice_keystone()
    async with recorder() as (seen, elsewhere), serve_keystone(fake) as base:
        fake.config.discovery_to = elsewhere
        with contextlib.suppress(CredentialsElsewhere):
            await login(base + path)
    assert ([], []) == (seen.bodies, seen.tokens)


@pytest.mark.asyncio
async def test_the_same_port_under_another_host_name_is_another_host() -> None:
    # localhost and 127.0.0.1 reach the same socket, but a name is what a certificate and a
    # proxy go by: the credentials were configured for one of them only.
    fake = alice_keystone()
    async with serve_keystone(fake) as base:
        fake.config.redirect_to = base.replace("127.0.0.1", "localhost")
        with pytest.raises(CredentialsElsewhere):
            await login(f"{base}/v3")
    assert ([], 0) == (fake.requests, fake.logins)


@pytest.mark.asyncio
async def test_without_a_redirect_the_login_goes_through() -> None:
    fake = alice_keystone()
    async with serve_keystone(fake) as base:
        issued = await login(f"{base}/v3")
    assert fake.is_valid(issued.value)
    assert "p-1" == issued.project_id


@pytest.mark.asyncio
async def test_a_run_stops_with_one_line_naming_both_hosts(tmp_path: Any) -> None:
    """The same through ``bulktag run``: exit 2, nothing sent anywhere, no secret printed."""
    from tests.clitools import isolated_env, run_bulktag
    from tests.support import make_pairs, write_csv

    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    fake = alice_keystone()
    async with recorder() as (seen, elsewhere), serve_keystone(fake) as base:
        fake.config.redirect_to = elsewhere
        args = [
            str(inventory),
            f"--os-auth-url={base}/v3",
            "--os-username=alice",
            "--os-user-domain-id=default",
            "--os-project-id=p-1",
        ]
        env = isolated_env(tmp_path, token=None) | {"OS_PASSWORD": "alice-password"}
        done = await anyio.to_thread.run_sync(lambda: run_bulktag(args, tmp_path, env=env))
    assert 2 == done.code, done
    assert [] == seen.bodies
    assert "Traceback" not in done.stderr
    assert "alice-password" not in done.stderr
    [line] = [line for line in done.lines if "error" in line]
    assert host_of(base) in line
    assert host_of(elsewhere) in line


# ---------------------------------------------------------------------------------------------
# Bounded reads (issue 15, item 12, for the identity service)


class FakeRaw:
    """A response body of ``size`` bytes that counts how much was asked of it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.asked = 0

    def read(self, amount: int, decode_content: bool = True) -> bytes:
        self.asked += amount
        return b"x" * min(amount, self.size)


class FakeResponse:
    def __init__(self, status: int, size: int) -> None:
        self.status_code = status
        self.raw = FakeRaw(size)
        self.closed = False
        self._content: bytes = b""

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("status", "size", "kept"),
    [
        (500, 200 << 20, MAX_ERROR_BODY),  # a 200 MB error page: an excerpt, the rest dropped
        (401, 10, 10),
        (201, 50 << 10, 50 << 10),  # a token with a big catalog: all of it
    ],
)
def test_an_answer_is_read_up_to_its_bound_and_the_rest_is_dropped(
    status: int, size: int, kept: int
) -> None:
    response = FakeResponse(status, size)
    _read_bounded(response, "http://keystone")
    assert kept == len(response._content)
    assert response.raw.asked <= max(MAX_ERROR_BODY, MAX_TOKEN_BODY) + 1
    assert response.closed


def test_a_token_answer_over_its_bound_is_an_error_not_a_truncated_catalog() -> None:
    response = FakeResponse(201, MAX_TOKEN_BODY * 4)
    with pytest.raises(CredentialsError) as info:
        _read_bounded(response, "http://keystone:5000")
    assert f"http://keystone:5000 sent an answer over {MAX_TOKEN_BODY} bytes" in str(info.value)
    assert MAX_TOKEN_BODY + 1 == response.raw.asked


@pytest.mark.asyncio
async def test_a_huge_error_page_from_keystone_becomes_a_one_line_error() -> None:
    async def huge(request: web.Request) -> web.Response:
        return web.Response(status=500, body=b"<html>" + b"x" * (20 << 20))

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", huge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        with pytest.raises(CredentialsError) as info:
            await login(f"{base}/v3", auth_type="v3password")
    finally:
        await runner.cleanup()
    message = str(info.value)
    assert "\n" not in message
    assert len(message) <= 300
    assert not isinstance(info.value, AuthRefused)


# ---------------------------------------------------------------------------------------------
# A 401 to version discovery (keystoneauth would deadlock on its own plugin lock)


@pytest.mark.parametrize("body", [b"", b'{"error": {"code": 401}}', b"x" * 100_000])
async def test_an_identity_service_that_refuses_discovery_too_is_a_refusal_not_a_hang(
    tmp_path: Any, body: bytes
) -> None:
    """Every path answers 401, version discovery included (a gateway asking for auth on /).
    keystoneauth retries that discovery authenticated, which waits for the very token it is
    fetching; bulktag must end with one line and exit 2, in a subprocess that would hang."""
    from tests.clitools import isolated_env, run_bulktag
    from tests.support import make_pairs, write_csv

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=401, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    args = [
        str(inventory),
        f"--os-auth-url=http://127.0.0.1:{port}/v3",
        "--os-username=alice",
        "--os-user-domain-id=default",
        "--os-project-id=p-1",
    ]
    env = isolated_env(tmp_path, token=None) | {"OS_PASSWORD": "alice-password"}
    try:
        done = await anyio.to_thread.run_sync(lambda: run_bulktag(args, tmp_path, env=env))
    finally:
        await runner.cleanup()
    assert 2 == done.code, done
    assert "credentials refused" in done.stderr
    assert "alice-password" not in done.stderr
