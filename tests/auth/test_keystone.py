"""authenticate(): the POST /v3/auth/tokens bodies, and every answer mapped to a result or error.

Run against the fake Keystone over real HTTP; the request bodies are also checked as pure data.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bulktag.auth.base import AuthRefused, CredentialsError
from bulktag.auth.clouds import AuthSpec
from bulktag.auth.keystone import (
    IssuedToken,
    auth_body,
    authenticate,
    error_message,
    parse_time,
    tokens_url,
)
from bulktag.fake.keystone import (
    FakeAppCredential,
    FakeKeystone,
    FakeKeystoneConfig,
    FakeProject,
    FakeUser,
    serve_keystone,
)

USER = FakeUser("u-1", "alice", "alice-password", domain_id="d-1", domain_name="Wonderland")
PROJECT = FakeProject("p-1", "tea-party", domain_id="d-1", domain_name="Wonderland")
APP_CRED = FakeAppCredential("ac-1", "tagger", "app-secret-value", user_id="u-1", project_id="p-1")


def keystone(**overrides: Any) -> FakeKeystone:
    config = FakeKeystoneConfig(
        users=[USER], projects=[PROJECT], app_credentials=[APP_CRED], **overrides
    )
    return FakeKeystone(config)


def password_spec(auth_url: str, **overrides: Any) -> AuthSpec:
    fields: dict[str, Any] = {
        "username": "alice",
        "user_domain_name": "Wonderland",
        "password": "alice-password",
        "project_name": "tea-party",
        "project_domain_name": "Wonderland",
        **overrides,
    }
    return AuthSpec(method="password", auth_url=auth_url, **fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------------------------
# Pure pieces


@pytest.mark.parametrize(
    ("auth_url", "expected"),
    [
        ("https://id.example", "https://id.example/v3/auth/tokens"),
        ("https://id.example/", "https://id.example/v3/auth/tokens"),
        ("https://id.example:5000/v3", "https://id.example:5000/v3/auth/tokens"),
        ("https://id.example/v3/", "https://id.example/v3/auth/tokens"),
        ("https://cloud.example/identity", "https://cloud.example/identity/v3/auth/tokens"),
        ("https://iam.myhuaweicloud.com/v3", "https://iam.myhuaweicloud.com/v3/auth/tokens"),
    ],
)
def test_v3_is_appended_only_when_missing(auth_url: str, expected: str) -> None:
    assert expected == tokens_url(auth_url)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            password_spec("x"),
            {"identity": {"methods": ["password"], "password": {"user": {
                "name": "alice", "domain": {"name": "Wonderland"}, "password": "alice-password"}}},
             "scope": {"project": {"name": "tea-party", "domain": {"name": "Wonderland"}}}},
            id="password-by-names",
        ),
        pytest.param(
            AuthSpec(method="password", auth_url="x", user_id="u-1", password="pw",
                     project_id="p-1", username="ignored", project_name="ignored"),
            {"identity": {"methods": ["password"],
                          "password": {"user": {"id": "u-1", "password": "pw"}}},
             "scope": {"project": {"id": "p-1"}}},
            id="password-ids-win-over-names",
        ),
        pytest.param(
            AuthSpec(method="password", auth_url="x", username="a", user_domain_id="default",
                     password="pw", project_name="p", project_domain_id="default"),
            {"identity": {"methods": ["password"], "password": {"user": {
                "name": "a", "domain": {"id": "default"}, "password": "pw"}}},
             "scope": {"project": {"name": "p", "domain": {"id": "default"}}}},
            id="password-domain-ids",
        ),
        pytest.param(
            AuthSpec(method="application_credential", auth_url="x",
                     application_credential_id="ac-1", application_credential_secret="s",
                     project_id="not-sent"),
            {"identity": {"methods": ["application_credential"],
                          "application_credential": {"id": "ac-1", "secret": "s"}}},
            id="app-cred-by-id-has-no-scope",
        ),
        pytest.param(
            AuthSpec(method="application_credential", auth_url="x",
                     application_credential_name="tagger", application_credential_secret="s",
                     username="alice", user_domain_name="Wonderland"),
            {"identity": {"methods": ["application_credential"], "application_credential": {
                "name": "tagger", "secret": "s",
                "user": {"name": "alice", "domain": {"name": "Wonderland"}}}}},
            id="app-cred-by-name-and-user",
        ),
        pytest.param(
            AuthSpec(method="token", auth_url="x", token="t0", project_id="p-1"),
            {"identity": {"methods": ["token"], "token": {"id": "t0"}},
             "scope": {"project": {"id": "p-1"}}},
            id="token-rescoped",
        ),
    ],
)  # fmt: skip
def test_request_body_for_each_method(spec: AuthSpec, expected: dict[str, Any]) -> None:
    assert {"auth": expected} == auth_body(spec)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-03-11T15:53:44.000000Z", datetime(2015, 3, 11, 15, 53, 44, tzinfo=UTC)),
        ("2015-03-11T15:53:44Z", datetime(2015, 3, 11, 15, 53, 44, tzinfo=UTC)),
        ("2015-03-11T15:53:44.123456", datetime(2015, 3, 11, 15, 53, 44, 123456, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_expires_at_is_parsed_as_utc(text: str | None, expected: datetime | None) -> None:
    assert expected == parse_time(text)


def test_keystone_error_message_is_scrubbed_of_our_secrets_and_flattened() -> None:
    body = '{"error": {"message": "bad password\\n alice-password for alice"}}'
    expected = "bad password <redacted> for alice"
    assert expected == error_message(body, "Unauthorized", ("alice-password",))


def test_a_non_json_error_body_falls_back_to_the_http_reason() -> None:
    assert "Bad Gateway" == error_message("<html>oops</html>", "Bad Gateway", ())


# ---------------------------------------------------------------------------------------------
# Against the fake Keystone


async def login(fake: FakeKeystone, **spec_fields: Any) -> tuple[str, IssuedToken]:
    async with serve_keystone(fake) as base, aiohttp.ClientSession() as session:
        method = spec_fields.pop("method", "password")
        spec = AuthSpec(method=method, auth_url=base, **spec_fields)
        return base, await authenticate(session, spec)


@pytest.mark.asyncio
async def test_password_by_name_and_domain_name_gets_a_scoped_token_with_catalog() -> None:
    fake = keystone(token_lifetime=600)
    async with serve_keystone(fake) as base, aiohttp.ClientSession() as session:
        issued = await authenticate(session, password_spec(base))
    assert fake.is_valid(issued.value)
    assert "p-1" == issued.project_id
    assert 600.0 == issued.lifetime
    assert ["identity", "image"] == [service["type"] for service in issued.catalog]
    assert 1 == fake.logins


@pytest.mark.asyncio
async def test_password_by_user_id_and_project_id() -> None:
    fake = keystone()
    _base, issued = await login(fake, user_id="u-1", password="alice-password", project_id="p-1")
    assert ("p-1", True) == (issued.project_id, fake.is_valid(issued.value))


@pytest.mark.asyncio
async def test_password_by_name_and_domain_id() -> None:
    fake = keystone()
    _base, issued = await login(
        fake, username="alice", user_domain_id="d-1", password="alice-password",
        project_name="tea-party", project_domain_id="d-1",
    )  # fmt: skip
    assert "p-1" == issued.project_id


@pytest.mark.asyncio
async def test_application_credential_by_id() -> None:
    fake = keystone()
    _base, issued = await login(
        fake, method="application_credential", application_credential_id="ac-1",
        application_credential_secret="app-secret-value",
    )  # fmt: skip
    assert ("p-1", True) == (issued.project_id, fake.is_valid(issued.value))


@pytest.mark.asyncio
async def test_application_credential_by_name_and_user() -> None:
    fake = keystone()
    _base, issued = await login(
        fake, method="application_credential", application_credential_name="tagger",
        application_credential_secret="app-secret-value", username="alice",
        user_domain_name="Wonderland",
    )  # fmt: skip
    assert "p-1" == issued.project_id


@pytest.mark.asyncio
async def test_a_token_is_rescoped_with_the_token_method() -> None:
    fake = keystone()
    async with serve_keystone(fake) as base, aiohttp.ClientSession() as session:
        first = await authenticate(session, password_spec(base))
        spec = AuthSpec(method="token", auth_url=base, token=first.value, project_id="p-1")
        second = await authenticate(session, spec)
    assert first.value != second.value
    assert ("p-1", 2) == (second.project_id, fake.logins)


@pytest.mark.asyncio
async def test_wrong_password_is_refused_with_keystones_message() -> None:
    fake = keystone()
    async with serve_keystone(fake) as base, aiohttp.ClientSession() as session:
        with pytest.raises(AuthRefused) as info:
            await authenticate(session, password_spec(base, password="wrong-password"))
    expected = (
        f"credentials refused by {base} (401): The request you have made requires authentication."
    )
    assert expected == str(info.value)
    assert (0, 1) == (fake.logins, fake.refusals)


@pytest.mark.asyncio
async def test_wrong_application_credential_secret_is_refused() -> None:
    fake = keystone()
    with pytest.raises(AuthRefused):
        await login(
            fake, method="application_credential", application_credential_id="ac-1",
            application_credential_secret="not-the-secret",
        )  # fmt: skip


@pytest.mark.asyncio
async def test_unknown_project_is_refused() -> None:
    fake = keystone()
    async with serve_keystone(fake) as base, aiohttp.ClientSession() as session:
        with pytest.raises(AuthRefused):
            await authenticate(session, password_spec(base, project_name="no-such-project"))


@pytest.mark.asyncio
async def test_other_statuses_are_a_credentials_error_with_the_status() -> None:
    fake = keystone()
    fake.scripted.append(503)
    async with serve_keystone(fake) as base, aiohttp.ClientSession() as session:
        with pytest.raises(CredentialsError) as info:
            await authenticate(session, password_spec(base))
    assert f"identity service at {base} answered 503: scripted failure 503" == str(info.value)


@pytest.mark.asyncio
async def test_an_auth_url_nobody_listens_on_does_not_answer() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(CredentialsError) as info:
            await authenticate(session, password_spec(base))
    prefix = f"identity service at {base}/v3/auth/tokens does not answer: "
    assert str(info.value).startswith(prefix)
    assert len(str(info.value)) > len(prefix)  # and says why


@pytest.mark.asyncio
async def test_a_silent_identity_service_times_out() -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", hang)
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        with pytest.raises(CredentialsError) as info:
            await authenticate(session, password_spec(base), login_timeout=0.2)
        release.set()  # let the server shut down without waiting for the hung handler
    expected = f"identity service at {base}/v3/auth/tokens does not answer: timed out after 0.2 s"
    assert expected == str(info.value)


@pytest.mark.asyncio
async def test_a_201_without_x_subject_token_is_an_error() -> None:
    async def no_header(request: web.Request) -> web.Response:
        return web.json_response({"token": {}}, status=201)

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", no_header)
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        with pytest.raises(CredentialsError) as info:
            await authenticate(session, password_spec(base))
    assert f"identity service at {base} sent no X-Subject-Token header" == str(info.value)


@pytest.mark.asyncio
async def test_the_auth_url_path_is_kept_and_v3_not_doubled() -> None:
    fake = keystone()
    async with serve_keystone(fake) as base, aiohttp.ClientSession() as session:
        issued = await authenticate(session, password_spec(f"{base}/v3/"))
    assert fake.is_valid(issued.value)


def test_issued_token_repr_hides_the_token() -> None:
    issued = IssuedToken("gAAAAA-very-secret", project_id="p-1")
    assert "gAAAAA-very-secret" not in repr(issued)
    assert "gAAAAA-very-secret" not in str(issued)
