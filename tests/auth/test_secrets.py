"""No password, secret or token in any message, repr, traceback or log event this layer produces.

Every value object and every error path is exercised with known secret values, then the text
it produces (``repr``, ``str``, the full formatted traceback with its chained causes, and every
captured log event) is searched for them.
"""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import yaml
from aiohttp import web
from structlog.testing import capture_logs

from bulktag.auth.base import CredentialsError, StaticToken
from bulktag.auth.cloud import AuthSpec, load_auth_spec
from bulktag.auth.keystone import IssuedToken, log_in
from bulktag.auth.options import CredentialOptions
from bulktag.auth.provider import Credentials, resolve_credentials
from bulktag.auth.tls import ssl_for
from bulktag.fake.keystone import (
    FakeAppCredential,
    FakeKeystone,
    FakeKeystoneConfig,
    FakeProject,
    FakeUser,
    serve_keystone,
)

PASSWORD = "pw-Sekrit-7431"
APP_SECRET = "app-Sekrit-9902"
TOKEN = "tok-Sekrit-5518"
SECRETS = (PASSWORD, APP_SECRET, TOKEN)

ALL_SECRETS: dict[str, Any] = {
    "password": PASSWORD,
    "application_credential_secret": APP_SECRET,
    "token": TOKEN,
}


def assert_clean(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert [] == leaked, text


def everything_about(exc: BaseException) -> str:
    """str, repr and the whole traceback, chained causes included."""
    return f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}"


def config_error(options: CredentialOptions, env: dict[str, str], clouds: Path | None) -> str:
    if clouds is not None:
        env = {**env, "OS_CLIENT_CONFIG_FILE": str(clouds)}
    with pytest.raises(CredentialsError) as info:
        load_auth_spec(options, env)
    return everything_about(info.value)


async def authenticate(spec: AuthSpec) -> IssuedToken:
    """keystoneauth is synchronous: log in from a worker thread, as the provider does."""
    return await anyio.to_thread.run_sync(log_in, spec)


# ---------------------------------------------------------------------------------------------
# Reprs


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: CredentialOptions(**ALL_SECRETS), id="CredentialOptions"),
        pytest.param(
            lambda: AuthSpec(method="password", origin="flags", token=TOKEN, secrets=SECRETS),
            id="AuthSpec",
        ),
        pytest.param(lambda: IssuedToken(TOKEN, project_id="p"), id="IssuedToken"),
        pytest.param(lambda: StaticToken(TOKEN), id="StaticToken"),
        pytest.param(
            lambda: Credentials(StaticToken(TOKEN), "https://img", None, True), id="Credentials"
        ),
    ],
)
def test_reprs_and_strs_hide_every_secret(make: Callable[[], object]) -> None:
    value = make()
    assert_clean(f"{value!r} {value!s} {[value]}")


# ---------------------------------------------------------------------------------------------
# Configuration errors, with secrets present in every source


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"OS_PASSWORD": PASSWORD, "OS_USERNAME": "u"}, id="password-no-auth-url"),
        pytest.param({"OS_APPLICATION_CREDENTIAL_SECRET": APP_SECRET}, id="secret-no-id"),
        pytest.param({"OS_AUTH_TOKEN": TOKEN}, id="token-no-endpoint"),
        pytest.param({"OS_AUTH_TYPE": f"x{PASSWORD}", "OS_PASSWORD": PASSWORD}, id="bad-type"),
    ],
)
def test_missing_field_errors_hold_no_secret(env: dict[str, str]) -> None:
    text = config_error(CredentialOptions(), env, None)
    if "OS_AUTH_TYPE" in env:  # the auth_type is quoted back; it is not a secret field
        text = text.replace(f"x{PASSWORD}", "x")
    assert_clean(text)


def test_unknown_cloud_error_holds_no_secret_from_secure_yaml(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": {"prod": {"auth": {"auth_url": "x"}}}}), "utf-8")
    secure = {"clouds": {"prod": {"auth": {"password": PASSWORD}}}}
    (tmp_path / "secure.yaml").write_text(yaml.safe_dump(secure), "utf-8")
    assert_clean(config_error(CredentialOptions(os_cloud="dev", token=TOKEN), {}, path))


def test_malformed_secure_yaml_error_quotes_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": {"prod": {"auth": {"auth_url": "x"}}}}), "utf-8")
    broken = f"clouds:\n  prod:\n    auth:\n      password: {PASSWORD}\n   bad: [{APP_SECRET}\n"
    (tmp_path / "secure.yaml").write_text(broken, "utf-8")
    env = {
        "OS_CLIENT_CONFIG_FILE": str(path),
        "OS_CLIENT_SECURE_FILE": str(tmp_path / "secure.yaml"),
    }
    with capture_logs() as logs:  # openstacksdk skips the file, as for the openstack CLI
        load_auth_spec(CredentialOptions(os_cloud="prod"), env)
    [skipped] = [e for e in logs if e["event"] == "clouds_file_skipped"]
    assert "malformed YAML in " in skipped["reason"]
    assert "line 5" in skipped["reason"]
    assert_clean(str(logs))


def test_cacert_error_holds_no_secret(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as info:
        ssl_for(str(tmp_path / "missing.pem"))
    assert_clean(everything_about(info.value))


# ---------------------------------------------------------------------------------------------
# Login errors, including a server that echoes what we sent


def keystone() -> FakeKeystone:
    return FakeKeystone(
        FakeKeystoneConfig(
            users=[FakeUser("u-1", "alice", PASSWORD)],
            projects=[FakeProject("p-1", "proj")],
            app_credentials=[FakeAppCredential("ac-1", "tagger", APP_SECRET, "u-1", "p-1")],
        )
    )


def spec(auth_url: str, **flags: Any) -> AuthSpec:
    return load_auth_spec(CredentialOptions(auth_url=auth_url, **flags), {})


def password_spec(auth_url: str, password: str = PASSWORD) -> AuthSpec:
    flags = {"username": "alice", "user_domain_id": "default", "project_id": "p-1"}
    return spec(auth_url, password=password, **flags)


@asynccontextmanager
async def echoing_keystone(status: int) -> AsyncIterator[str]:
    """A misbehaving identity service that quotes the request body in its error message."""

    async def echo(request: web.Request) -> web.Response:
        body = {"error": {"code": status, "message": f"bad request: {await request.text()}"}}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [401, 400, 500])
async def test_an_echoed_request_body_is_scrubbed_from_the_error(status: int) -> None:
    specs: list[Callable[[str], AuthSpec]] = [
        password_spec,
        lambda url: spec(
            url,
            auth_type="v3applicationcredential",
            application_credential_id="ac-1",
            application_credential_secret=APP_SECRET,
        ),
        lambda url: spec(url, auth_type="v3token", token=TOKEN, project_id="p"),
    ]
    async with echoing_keystone(status) as base:
        for make in specs:
            with pytest.raises(Exception) as info:  # noqa: PT011 - AuthRefused or CredentialsError
                await authenticate(make(base + "/v3"))
            assert "<redacted>" in str(info.value)
            assert_clean(everything_about(info.value))


@pytest.mark.asyncio
async def test_a_refused_login_and_an_unreachable_service_hold_no_secret() -> None:
    fake = keystone()
    async with serve_keystone(fake) as base:
        with pytest.raises(Exception) as refused:  # noqa: PT011
            await authenticate(password_spec(base, password=PASSWORD + "-wrong"))
    # The identity service is gone now: the same URL no longer answers.
    with pytest.raises(CredentialsError) as unreachable:
        await authenticate(password_spec(f"http://alice:{PASSWORD}@{base[7:]}"))
    assert_clean(everything_about(refused.value))
    assert_clean(everything_about(unreachable.value))


# ---------------------------------------------------------------------------------------------
# Log events and the provider over a whole life: login, renewal, refusal


@pytest.mark.asyncio
async def test_no_log_event_or_provider_repr_holds_a_secret() -> None:
    fake = keystone()
    with capture_logs() as logs:
        async with serve_keystone(fake) as base:
            creds = await resolve_credentials(password_spec(base))
            first = await creds.provider.token()
            second = await creds.provider.refresh(first)
            fake.change_password("u-1", "new-" + PASSWORD)
            with pytest.raises(Exception) as refused:  # noqa: PT011
                await creds.provider.refresh(second)
    # two logins, what was resolved, and the refusal: the layer logs, and must log clean
    assert ["auth.login", "auth.resolved", "auth.login", "auth.login_refused"] == [
        e["event"] for e in logs
    ]
    for text in [repr(creds), repr(creds.provider), everything_about(refused.value), str(logs)]:
        assert_clean(text)
        assert first not in text
        assert second not in text
