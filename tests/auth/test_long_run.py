"""A run that outlives its token: fake Keystone + fake Glance that rejects expired tokens.

The workers here are the simplest honest client of the TokenProvider seam (get a token, PUT,
on 401 refresh once and retry); the engine's own tests prove the engine does the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

import aiohttp
import pytest

from bulktag.auth.base import AuthRefused, StaticToken, TokenProvider
from bulktag.auth.cloud import AuthSpec
from bulktag.auth.provider import Credentials, resolve_credentials
from bulktag.fake.glance import FakeGlance, FakeGlanceConfig, serve
from bulktag.fake.keystone import FakeEndpoint, FakeKeystone, serve_keystone
from tests.auth.conftest import Clock, alice_keystone, gather, password_spec

LIFETIME = 60.0
WORKERS = 20


def spec(auth_url: str) -> AuthSpec:
    return password_spec(
        auth_url, project_id=None, project_name="tea-party", project_domain_id="default"
    )


class Run(NamedTuple):
    clock: Clock
    fake: FakeKeystone
    session: aiohttp.ClientSession
    creds: Credentials


@asynccontextmanager
async def logged_in() -> AsyncIterator[Run]:
    """A fake Glance that accepts only tokens the fake Keystone says are valid now, that Keystone
    (60 s tokens, its catalog pointing at that Glance), and a client logged in to both."""
    clock = Clock()
    fake = alice_keystone(image_endpoints=[], token_lifetime=LIFETIME, clock=clock)
    async with serve(FakeGlance(FakeGlanceConfig(token_validator=fake.is_valid))) as glance_url:
        fake.config.image_endpoints = [FakeEndpoint(glance_url)]
        async with serve_keystone(fake) as auth_url, aiohttp.ClientSession() as session:
            creds = await resolve_credentials(spec(auth_url), clock=clock)
            yield Run(clock, fake, session, creds)


async def tag(session: aiohttp.ClientSession, provider: TokenProvider, url: str) -> int:
    """PUT one tag; on 401 get a fresh token once and retry, as the engine does."""
    token = await provider.token()
    async with session.put(url, headers={"X-Auth-Token": token}) as response:
        if response.status != 401:
            return response.status
    retry = await provider.refresh(token)
    async with session.put(url, headers={"X-Auth-Token": retry}) as response:
        return response.status


async def round_of_tags(
    session: aiohttp.ClientSession, provider: TokenProvider, endpoint: str, round_no: int
) -> list[int]:
    async def one(worker: int) -> int:
        url = f"{endpoint}/v2/images/img-{round_no}-{worker}/tags/nightly"
        return await tag(session, provider, url)

    return await gather(WORKERS, one)


@pytest.mark.asyncio
async def test_a_run_five_token_lifetimes_long_ends_all_ok_with_one_login_per_half_life() -> None:
    async with logged_in() as (clock, fake, session, creds):
        statuses = []
        for round_no in range(20):  # a round every quarter lifetime: 300 s of 60 s tokens
            statuses += await round_of_tags(session, creds.provider, creds.endpoint, round_no)
            clock.now += LIFETIME / 4
    assert [204] * 20 * WORKERS == statuses
    # Renewed every half lifetime (the 120 s margin exceeds a 60 s token): at 0, 30, ..., 270 s.
    assert 10 == fake.logins


@pytest.mark.asyncio
async def test_tokens_revoked_mid_run_cost_one_login_and_no_failed_row() -> None:
    async with logged_in() as (_, fake, session, creds):
        before = await round_of_tags(session, creds.provider, creds.endpoint, 0)
        fake.revoke_all()  # e.g. Huawei IAM after a permission change
        after = await round_of_tags(session, creds.provider, creds.endpoint, 1)
    assert [204] * 2 * WORKERS == before + after
    assert 2 == fake.logins


@pytest.mark.asyncio
async def test_the_fake_glance_rejects_an_expired_token_so_the_runs_above_prove_renewal() -> None:
    async with logged_in() as (clock, _, session, creds):
        frozen = StaticToken(await creds.provider.token())
        url = f"{creds.endpoint}/v2/images/img-1/tags/nightly"
        assert 204 == await tag(session, frozen, url)
        clock.now += LIFETIME
        with pytest.raises(AuthRefused):
            await tag(session, frozen, url)
