"""KeystoneTokenProvider and resolve_credentials: renewal on time, once for all, and stopping clean.

Time is a hand-moved clock shared by the fake Keystone (which stamps issue and expiry with it)
and the provider (which decides when to renew with it), so expiry is exact and instant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
from structlog.testing import capture_logs

from bulktag.auth.base import AuthRefused, CredentialsError, StaticToken
from bulktag.auth.cloud import AuthSpec, load_auth_spec
from bulktag.auth.options import CredentialOptions
from bulktag.auth.provider import KeystoneTokenProvider, resolve_credentials
from bulktag.fake.keystone import FakeEndpoint, FakeKeystone, serve_keystone
from tests.auth.conftest import Clock, alice_keystone, gather, password_spec


def spec(auth_url: str, **overrides: Any) -> AuthSpec:
    return password_spec(auth_url, **overrides)


def token_spec(auth_url: str, token: str) -> AuthSpec:
    """Re-scope ``token`` to p-1 (``--os-auth-type token``, no endpoint given)."""
    options = CredentialOptions(auth_url=auth_url, auth_type="token", token=token, project_id="p-1")
    return load_auth_spec(options, {})


class Served(NamedTuple):
    """A fake Keystone on the test's clock, and a provider logging in to it as alice."""

    clock: Clock
    fake: FakeKeystone
    base: str
    provider: KeystoneTokenProvider


@asynccontextmanager
async def served(
    lifetime: float = 600.0, margin: float = 120.0, **overrides: Any
) -> AsyncIterator[Served]:
    """Serve the fake Keystone (tokens living ``lifetime`` s) until the block ends.

    The provider is built, not used: it logs in at its first ``token()``."""
    clock = Clock()
    fake = alice_keystone(token_lifetime=lifetime, clock=clock, **overrides)
    async with serve_keystone(fake) as base:
        provider = KeystoneTokenProvider.for_spec(spec(base), margin=margin, clock=clock)
        yield Served(clock, fake, base, provider)


# ---------------------------------------------------------------------------------------------
# Renewal before expiry


@pytest.mark.asyncio
async def test_the_token_is_reused_until_less_than_the_margin_remains() -> None:
    async with served(lifetime=600) as (clock, fake, _, provider):
        first = await provider.token()
        clock.advance(479)  # 121 s left: still good
        assert first == await provider.token()
        clock.advance(2)  # 119 s left: renew
        second = await provider.token()
    assert first != second
    assert (2, 2) == (provider.logins, fake.logins)
    assert fake.is_valid(second)


@pytest.mark.asyncio
async def test_valid_now_gives_the_token_until_it_is_due_for_renewal_then_none() -> None:
    async with served(lifetime=600) as (clock, _, _, provider):
        assert provider.valid_now() is None  # nobody has logged in yet
        first = await provider.token()
        assert first == provider.valid_now()
        clock.advance(481)  # 119 s left: due, so the caller must await token()
        assert provider.valid_now() is None
        second = await provider.token()
        assert second == provider.valid_now()
    assert first != second


@pytest.mark.asyncio
async def test_a_token_shorter_than_the_margin_is_renewed_at_half_its_life() -> None:
    async with served(lifetime=10) as (clock, _, _, provider):
        first = await provider.token()
        for _ in range(20):  # many requests in the first half-life: no new login
            assert first == await provider.token()
        clock.advance(4.9)
        assert first == await provider.token()
        clock.advance(0.2)
        assert first != await provider.token()
    assert 2 == provider.logins


@pytest.mark.asyncio
async def test_fifty_callers_of_a_due_token_cause_one_login() -> None:
    async with served(lifetime=600) as (clock, fake, _, provider):
        first = await provider.token()
        clock.advance(500)
        tokens = await gather(50, lambda _: provider.token())
    assert 1 == len(set(tokens))
    assert first not in tokens
    assert (2, 2) == (provider.logins, fake.logins)


# ---------------------------------------------------------------------------------------------
# Renewal after a 401


@pytest.mark.asyncio
async def test_fifty_workers_refreshing_the_same_rejected_token_cause_one_login() -> None:
    async with served() as (_, fake, _, provider):
        rejected = await provider.token()
        fake.revoke_all()
        tokens = await gather(50, lambda _: provider.refresh(rejected))
    assert 1 == len(set(tokens))
    assert rejected not in tokens
    assert fake.is_valid(tokens[0])
    assert (2, 2) == (provider.logins, fake.logins)


@pytest.mark.asyncio
async def test_refreshing_an_already_replaced_token_returns_the_new_one_without_login() -> None:
    async with served() as (_, _, _, provider):
        old = await provider.token()
        new = await provider.refresh(old)
        assert new == await provider.refresh(old)  # a late worker with the old 401
    assert 2 == provider.logins


@pytest.mark.asyncio
async def test_refused_reauthentication_raises_auth_refused_once_for_everyone() -> None:
    async with served() as (clock, fake, base, provider):
        rejected = await provider.token()
        fake.change_password("u-1", "changed-by-the-admin")
        outcomes = await gather(50, lambda _: _refused_message(provider.refresh(rejected)))
        clock.advance(10_000)
        later = await _refused_message(provider.token())
    expected = (
        f"credentials refused by {base} (401, password auth): The request you have made "
        "requires authentication."
    )
    assert 1 == len(set(outcomes))
    assert outcomes[0].startswith(expected)
    assert "flags --os-auth-url, --os-username" in outcomes[0]  # where the settings came from
    assert outcomes[0] == later
    # One refused login, not 51: hammering with a wrong password can lock the account.
    assert (1, 2) == (fake.refusals, provider.logins)


@pytest.mark.asyncio
async def test_a_refused_token_from_the_environment_says_it_came_from_there() -> None:
    # The stale OS_AUTH_TOKEN: the message must say where the token came from.
    async with served() as (clock, _, base, _):
        env = {"OS_AUTH_URL": f"{base}/v3", "OS_AUTH_TOKEN": "stale-1234", "OS_PROJECT_ID": "p-1"}
        with pytest.raises(AuthRefused) as info:
            await resolve_credentials(load_auth_spec(CredentialOptions(), env), clock=clock)
    message = str(info.value)
    assert message.startswith(f"credentials refused by {base} (401, token auth): ")
    assert "settings from environment OS_AUTH_TOKEN, OS_AUTH_URL, OS_PROJECT_ID" in message
    assert "stale-1234" not in message


async def _refused_message(call: Any) -> str:
    try:
        await call
    except AuthRefused as exc:
        return str(exc)
    return "not refused"


# ---------------------------------------------------------------------------------------------
# The identity service failing while the current token is still good


@pytest.mark.asyncio
async def test_a_failed_early_renewal_keeps_the_current_token_and_retries_later() -> None:
    async with served(lifetime=600) as (clock, fake, _, provider):
        first = await provider.token()
        clock.advance(500)
        fake.scripted.append(503)
        with capture_logs() as logs:
            assert first == await provider.token()
            assert first == await provider.token()  # no second attempt right away
        clock.advance(30)
        second = await provider.token()
    assert first != second
    assert ["auth.refresh_postponed"] == [e["event"] for e in logs]
    assert 3 == provider.logins


@pytest.mark.asyncio
async def test_a_failed_renewal_of_an_expired_token_stops_the_run_with_auth_refused() -> None:
    async with served(lifetime=600) as (clock, fake, base, provider):
        await provider.token()
        clock.advance(601)
        fake.scripted.append(503)
        with pytest.raises(AuthRefused) as info:
            await provider.token()
    expected = f"cannot renew the token: identity service at {base} failed (ServiceUnavailable): "
    assert str(info.value).startswith(expected)
    assert "scripted failure 503" in str(info.value)


@pytest.mark.asyncio
async def test_an_identity_service_gone_mid_run_makes_refresh_raise_auth_refused() -> None:
    async with served() as (_, _, base, provider):
        rejected = await provider.token()
    with pytest.raises(AuthRefused) as info:  # the server is gone now
        await provider.refresh(rejected)
    prefix = f"cannot renew the token: identity service at {base} does not answer: "
    assert str(info.value).startswith(prefix)


@pytest.mark.asyncio
async def test_the_first_login_failing_is_a_credentials_error_not_a_refusal() -> None:
    async with served() as (_, fake, base, _):
        fake.scripted.append(500)  # before anyone logs in
        with pytest.raises(CredentialsError) as info:
            await resolve_credentials(spec(base))
    assert not isinstance(info.value, AuthRefused)


# ---------------------------------------------------------------------------------------------
# resolve_credentials


@pytest.mark.asyncio
async def test_a_token_with_an_endpoint_is_used_as_is_without_login() -> None:
    options = CredentialOptions(token="pre-made", endpoint="https://img", insecure=True)
    static = load_auth_spec(options, {})
    creds = await resolve_credentials(static)
    assert isinstance(creds.provider, StaticToken)
    assert ("pre-made", "https://img", False) == (
        await creds.provider.token(),
        creds.endpoint,
        creds.verify,
    )


@pytest.mark.asyncio
async def test_password_login_finds_the_image_endpoint_in_the_catalog() -> None:
    endpoints = [
        FakeEndpoint("https://img.r1", "R1"),
        FakeEndpoint("https://img.r2:9292/v2", "R2"),
        FakeEndpoint("http://img.r2.internal", "R2", "internal"),
    ]
    async with served(image_endpoints=endpoints) as (clock, fake, base, _):
        creds = await resolve_credentials(spec(base, region_name="R2"), clock=clock)
        assert fake.is_valid(await creds.provider.token())
    # As the catalog says it; the image transport strips the /v2 (normalize_endpoint).
    assert ("https://img.r2:9292/v2", "p-1", True) == (
        creds.endpoint,
        creds.project_id,
        creds.verify,
    )
    assert 1 == fake.logins


@pytest.mark.asyncio
async def test_an_endpoint_override_wins_over_the_catalog() -> None:
    async with served() as (_, _, base, _):
        creds = await resolve_credentials(spec(base, endpoint="https://mine"))
    assert "https://mine" == creds.endpoint


@pytest.mark.asyncio
async def test_no_image_endpoint_for_the_region_lists_what_the_catalog_has() -> None:
    endpoints = [FakeEndpoint("https://a", "R1"), FakeEndpoint("https://b", "R2", "internal")]
    async with served(image_endpoints=endpoints) as (_, _, base, _):
        with pytest.raises(CredentialsError) as info:
            await resolve_credentials(spec(base, region_name="R3"))
    message = str(info.value)
    assert message.startswith("no image endpoint for interface 'public' in region 'R3'")
    assert "R1/public https://a, R2/internal https://b" in message


@pytest.mark.asyncio
async def test_a_token_without_endpoint_is_rescoped_to_find_the_catalog() -> None:
    async with served() as (clock, fake, base, provider):
        first = await provider.token()
        creds = await resolve_credentials(token_spec(base, first), clock=clock)
        assert fake.is_valid(await creds.provider.token())
    assert "http://127.0.0.1:9292" == creds.endpoint


@pytest.mark.asyncio
async def test_a_rescoped_token_is_not_renewed_early_since_its_expiry_cannot_move() -> None:
    async with served(lifetime=600) as (clock, fake, base, provider):
        given = await provider.token()
        clock.advance(300)
        creds = await resolve_credentials(token_spec(base, given), clock=clock)
        scoped = await creds.provider.token()
        clock.advance(290)  # 10 s before the given token (and so this one) expires
        assert scoped == await creds.provider.token()
        clock.advance(10)
        with pytest.raises(AuthRefused):  # expired: the given token cannot be renewed
            await creds.provider.refresh(scoped)
    assert 2 == fake.logins  # the given token's login and the one re-scoping
