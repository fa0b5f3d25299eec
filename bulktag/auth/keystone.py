"""Log in to Keystone v3 (or Huawei IAM, which speaks the same protocol): ``POST /v3/auth/tokens``.

The only module of the credentials layer that imports aiohttp. It maps every outcome of the
call onto the layer's own errors, in one place:

    Exception
    ├── AuthRefused        401: the identity service refused these credentials
    └── CredentialsError   the service does not answer, or answers something unusable

Request bodies are built by pure functions (``auth_body``) so they can be tested without a
server. Keystone's error text is quoted in messages, scrubbed of our secrets first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from bulktag.auth.base import AuthRefused, CredentialsError, IdentityUnavailable
from bulktag.auth.clouds import AuthSpec
from bulktag.auth.redact import one_line, scrub

#: How long one login may take before we call the identity service unreachable.
DEFAULT_TIMEOUT = 30.0

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token Keystone issued, with what came with it. The repr never shows the token."""

    value: str = field(repr=False)
    expires_at: datetime | None = None
    issued_at: datetime | None = None
    catalog: tuple[Mapping[str, Any], ...] = ()
    project_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"IssuedToken(<redacted>, expires_at={self.expires_at!s}, "
            f"project_id={self.project_id!r}, services={len(self.catalog)})"
        )

    @property
    def lifetime(self) -> float | None:
        """Seconds between issue and expiry, both by the server's clock (immune to our skew)."""
        if self.expires_at is None or self.issued_at is None:
            return None
        return (self.expires_at - self.issued_at).total_seconds()


# ---------------------------------------------------------------------------------------------
# Request (pure)


def tokens_url(auth_url: str) -> str:
    """``{auth_url}/v3/auth/tokens``; ``/v3`` is added only when the URL does not end in it."""
    base = auth_url.rstrip("/")
    if not base.endswith("/v3"):
        base += "/v3"
    return f"{base}/auth/tokens"


def _domain(domain_id: str | None, domain_name: str | None) -> Json:
    return {"id": domain_id} if domain_id else {"name": domain_name}


def _user(spec: AuthSpec) -> Json:
    if spec.user_id:
        return {"id": spec.user_id}
    return {"name": spec.username, "domain": _domain(spec.user_domain_id, spec.user_domain_name)}


def _project_scope(spec: AuthSpec) -> Json | None:
    if spec.project_id:
        return {"project": {"id": spec.project_id}}
    if spec.project_name:
        domain = _domain(spec.project_domain_id, spec.project_domain_name)
        return {"project": {"name": spec.project_name, "domain": domain}}
    return None


def _identity(spec: AuthSpec) -> Json:
    if spec.method == "password":
        user = {**_user(spec), "password": spec.password}
        return {"methods": ["password"], "password": {"user": user}}
    if spec.method == "application_credential":
        cred: Json = {"secret": spec.application_credential_secret}
        if spec.application_credential_id:
            cred["id"] = spec.application_credential_id
        else:
            cred.update(name=spec.application_credential_name, user=_user(spec))
        return {"methods": ["application_credential"], "application_credential": cred}
    return {"methods": ["token"], "token": {"id": spec.token}}


def auth_body(spec: AuthSpec) -> Json:
    """The JSON body of ``POST /v3/auth/tokens`` for ``spec``."""
    auth: Json = {"identity": _identity(spec)}
    # An application credential carries its own scope; Keystone refuses one given besides it.
    scope = None if spec.method == "application_credential" else _project_scope(spec)
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


# ---------------------------------------------------------------------------------------------
# Response (pure)


def parse_time(value: Any) -> datetime | None:
    """Keystone's ``2015-03-11T15:53:44.000000Z`` as an aware UTC datetime (None if absent)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def issued_token(value: str, body: Mapping[str, Any]) -> IssuedToken:
    """Build an :class:`IssuedToken` from the token header and the response body."""
    token = body.get("token") or {}
    project = token.get("project") or {}
    return IssuedToken(
        value=value,
        expires_at=parse_time(token.get("expires_at")),
        # Without issued_at, "now" is the best guess (lifetime then includes any clock skew).
        issued_at=parse_time(token.get("issued_at")) or datetime.now(UTC),
        catalog=tuple(token.get("catalog") or ()),
        project_id=project.get("id"),
    )


def error_message(text: str, reason: str | None, secrets: tuple[str, ...]) -> str:
    """Keystone's ``error.message`` (else the HTTP reason), one line, secrets scrubbed."""
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = reason or "no message"
    return one_line(scrub(str(message), secrets))


def safe_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages."""
    return str(URL(url).with_user(None))


# ---------------------------------------------------------------------------------------------
# The call


async def authenticate(
    session: aiohttp.ClientSession, spec: AuthSpec, *, login_timeout: float = DEFAULT_TIMEOUT
) -> IssuedToken:
    """Log in with ``spec``; raise AuthRefused on 401, CredentialsError on anything unusable."""
    if not spec.auth_url:
        raise CredentialsError(f"{spec.method} auth needs an auth URL to log in")
    url = tokens_url(spec.auth_url)
    try:
        async with session.post(
            url, json=auth_body(spec), timeout=aiohttp.ClientTimeout(total=login_timeout)
        ) as resp:
            text = await resp.text()
            return _read_answer(resp.status, resp.reason, resp.headers, text, spec)
    except (aiohttp.ClientError, TimeoutError) as exc:
        timed_out = isinstance(exc, TimeoutError)  # aiohttp's own timeouts subclass it too
        reason = f"timed out after {login_timeout:g} s" if timed_out else str(exc)
        raise IdentityUnavailable(
            f"identity service at {safe_url(url)} does not answer: {one_line(reason)}"
        ) from exc


def _read_answer(
    status: int, reason: str | None, headers: Mapping[str, str], text: str, spec: AuthSpec
) -> IssuedToken:
    where = safe_url(spec.auth_url or "")
    if status == 401:
        message = error_message(text, reason, spec.secrets)
        raise AuthRefused(f"credentials refused by {where} (401): {message}")
    if status >= 500 or status == 429:  # down or busy: not the credentials' fault
        message = error_message(text, reason, spec.secrets)
        raise IdentityUnavailable(f"identity service at {where} answered {status}: {message}")
    if not 200 <= status < 300:
        message = error_message(text, reason, spec.secrets)
        raise CredentialsError(f"identity service at {where} answered {status}: {message}")
    value = headers.get("X-Subject-Token")
    if not value:
        raise CredentialsError(f"identity service at {where} sent no X-Subject-Token header")
    try:
        body = json.loads(text)
    except ValueError:
        raise CredentialsError(
            f"identity service at {where} sent a body that is not JSON"
        ) from None
    return issued_token(value, body if isinstance(body, dict) else {})
