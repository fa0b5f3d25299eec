"""Log in with keystoneauth1, the openstack CLI's own library, and keep credentials home.

openstacksdk's resolved cloud (``AuthSpec.region``) carries a keystoneauth plugin (password,
application credential, token, v3totp, OIDC, SAML, …) and a session. This module drives them,
synchronously: :mod:`bulktag.auth.provider` calls it in a worker thread. It maps every outcome
onto the credentials layer's own errors, in one place::

    Exception
    ├── AuthRefused        401: the identity service refused these credentials
    └── CredentialsError   the service does not answer, answers something unusable, or sends
        └── CredentialsElsewhere   the credentials towards another host (redirect, discovery)

Two rules hold whatever keystoneauth would do on its own:

* Credentials go to the configured identity host only. keystoneauth follows a 307 by re-sending
  the request — password included — to wherever ``Location`` points, and follows version
  discovery links to any host. :class:`HomeOnlyAdapter` refuses, before a byte leaves, every
  request of the login session to a scheme/host/port other than the ``auth_url``'s.
* At most a bounded excerpt of any answer is read: ``MAX_TOKEN_BODY`` of a success (a token
  with its catalog), ``MAX_ERROR_BODY`` of anything else.

Renewal timing is bulktag's (single flight, margins): keystoneauth's own early renewal is turned
off on the plugin, so it never logs in behind the provider's back.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests.adapters

from bulktag.auth.base import (
    DEFAULT_TIMEOUT,
    AuthRefused,
    CredentialsError,
    IdentityUnavailable,
    IssuedToken,
)
from bulktag.auth.catalog import image_endpoints
from bulktag.auth.redact import one_line, quoted, scrub

if TYPE_CHECKING:
    from bulktag.auth.cloud import AuthSpec

#: A token answer holds the service catalog: tens of KB on big clouds.
MAX_TOKEN_BODY = 1 << 20
#: An error answer is quoted in one line: its first few KB say all there is to say.
MAX_ERROR_BODY = 8 << 10

#: keystoneauth sessions already guarded and tuned by :func:`login_session`.
_PREPARED: weakref.WeakSet[Any] = weakref.WeakSet()


class CredentialsElsewhere(CredentialsError):
    """The login was about to send credentials to a host other than the configured one."""


# ---------------------------------------------------------------------------------------------
# Credentials stay home; answers are read in bounded excerpts


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def host_of(url: str) -> str:
    """``scheme://host:port`` of ``url``, for messages (no path, no user:password)."""
    scheme, host, port = origin_of(url)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}" if port else f"{scheme}://{shown}"


def without_userinfo(url: str | None) -> str | None:
    """``url`` without any ``user:password@`` part, for logs and messages."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


class HomeOnlyAdapter(requests.adapters.HTTPAdapter):
    """A requests transport that sends only to ``home`` and reads answers in bounded excerpts."""

    def __init__(self, home: str) -> None:
        super().__init__()
        self.home = home

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        url = str(request.url)
        if origin_of(url) != origin_of(self.home):
            raise CredentialsElsewhere(
                f"the identity service at {host_of(self.home)} sent the login on to "
                f"{host_of(url)}; credentials go only to the configured host: set the auth URL "
                f"to {host_of(url)} if that host is the identity service"
            )
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        _read_bounded(response, self.home)
        if response.status_code == 401 and _unauthenticated_read(request):
            # keystoneauth retries a version discovery refused with 401 authenticated, which
            # needs the token it is fetching: it waits on its own plugin lock forever
            # (keystoneauth1 5.x). As a 404, discovery falls back to the auth URL as given,
            # and the login's own request meets the 401 and reports it.
            response.status_code = 404
        return response


def _unauthenticated_read(request: Any) -> bool:
    return request.method == "GET" and "X-Auth-Token" not in request.headers


def _read_bounded(response: Any, home: str) -> None:
    success = 200 <= response.status_code < 300
    limit = MAX_TOKEN_BODY if success else MAX_ERROR_BODY
    try:
        data = response.raw.read(limit + 1, decode_content=True)
    finally:
        response.close()  # drop whatever is left unread
    if len(data) > limit and success:
        raise CredentialsError(
            f"the identity service at {host_of(home)} sent an answer over {limit} bytes"
        )
    response._content = data[:limit]  # requests' own field: .text/.json() now read this


def keep_credentials_home(session: Any, auth_url: str) -> None:
    """Mount :class:`HomeOnlyAdapter` on a keystoneauth session's requests session."""
    adapter = HomeOnlyAdapter(auth_url)
    for prefix in ("http://", "https://"):
        session.session.mount(prefix, adapter)


# ---------------------------------------------------------------------------------------------
# The calls (synchronous: run them in a worker thread)


def login_session(spec: AuthSpec, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The cloud's keystoneauth session, ready for :func:`log_in`: guarded, with a timeout."""
    assert spec.region is not None, "a static token has no login"
    try:
        session = spec.region.get_session()
    except Exception as exc:  # openstacksdk raises its own and keystoneauth's errors here
        raise CredentialsError(_message(exc, spec)) from None
    if session not in _PREPARED:
        if spec.auth_url:
            keep_credentials_home(session, spec.auth_url)
        session.timeout = session.timeout or timeout
        # bulktag's provider decides when to renew; keystoneauth must not do it on its own.
        if hasattr(session.auth, "MIN_TOKEN_LIFE_SECONDS"):
            setattr(session.auth, "MIN_TOKEN_LIFE_SECONDS", 0)  # noqa: B010 - typed as Any here
        _PREPARED.add(session)
    return session


def log_in(spec: AuthSpec, timeout: float = DEFAULT_TIMEOUT) -> IssuedToken:
    """A new token; AuthRefused on 401, CredentialsError on anything unusable."""
    session = login_session(spec, timeout)
    auth = session.auth
    with _mapped_errors(spec):
        if not hasattr(auth, "get_access"):  # e.g. admin_token: a token, no identity service
            return IssuedToken(value=session.get_token())
        auth.invalidate()
        access = auth.get_access(session)
    return issued_token(access)


def image_endpoint(spec: AuthSpec, timeout: float = DEFAULT_TIMEOUT) -> str:
    """openstacksdk's image endpoint for this cloud: the override, else the catalog's."""
    assert spec.region is not None
    login_session(spec, timeout)
    with _mapped_errors(spec):
        endpoint = spec.region.get_session_endpoint("image")
    if not endpoint:
        raise CredentialsError(_no_endpoint(spec))
    return str(endpoint)


def issued_token(access: Any) -> IssuedToken:
    """keystoneauth's AccessInfo as an :class:`IssuedToken`."""
    catalog = getattr(getattr(access, "service_catalog", None), "catalog", None) or ()
    return IssuedToken(
        value=access.auth_token,
        expires_at=_aware(access.expires),
        # Without issued_at, "now" is the best guess (lifetime then includes any clock skew).
        issued_at=_aware(getattr(access, "issued", None)) or datetime.now(UTC),
        catalog=tuple(catalog),
        project_id=access.project_id,
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@contextmanager
def _mapped_errors(spec: AuthSpec) -> Iterator[None]:
    """keystoneauth's and openstacksdk's exceptions become the layer's, with a safe message."""
    try:
        yield
    except (CredentialsError, AuthRefused):
        raise
    except Exception as exc:
        status = getattr(exc, "http_status", None)
        if status == 401:
            raise AuthRefused(_refused(exc, spec)) from None
        if _unavailable(exc, status):  # down or busy: try again later, not the settings' fault
            raise IdentityUnavailable(_message(exc, spec)) from None
        raise CredentialsError(_message(exc, spec)) from None


# keystoneauth's ConnectFailure, ConnectTimeout, UnknownConnectionError: nothing answered.
_SILENT = frozenset({"ConnectFailure", "ConnectTimeout", "UnknownConnectionError"})


def _unavailable(exc: BaseException, status: object) -> bool:
    if isinstance(status, int) and (status >= 500 or status == 429):
        return True
    return type(exc).__name__ in _SILENT


def _where(spec: AuthSpec) -> str:
    return host_of(spec.auth_url) if spec.auth_url else "the identity service"


def _refused(exc: BaseException, spec: AuthSpec) -> str:
    said = quoted(scrub(str(getattr(exc, "message", "") or exc), spec.secrets))
    return one_line(
        f"credentials refused by {_where(spec)} (401, {spec.method} auth): {said} "
        f"(settings from {spec.origin})"
    )


def _message(exc: BaseException, spec: AuthSpec) -> str:
    said = scrub(str(exc) or type(exc).__name__, spec.secrets)
    if spec.auth_url:
        said = said.replace(spec.auth_url, host_of(spec.auth_url))
    said = quoted(said)
    silent = type(exc).__name__ in _SILENT
    what = "does not answer" if silent else f"failed ({type(exc).__name__})"
    return one_line(
        f"identity service at {_where(spec)} {what}: {said} (settings from {spec.origin})"
    )


def _no_endpoint(spec: AuthSpec) -> str:
    catalog = _catalog(spec)
    listing = quoted(
        ", ".join(ep.describe() for ep in image_endpoints(catalog)) or "no image service"
    )
    wanted = f"interface {spec.interface!r}" + (
        f" in region {spec.region_name!r}" if spec.region_name else ""
    )
    return one_line(
        f"no image endpoint for {wanted} in the catalog of {_where(spec)}; it has: {listing} "
        f"(settings from {spec.origin})"
    )


def _catalog(spec: AuthSpec) -> Sequence[Mapping[str, Any]]:
    access = getattr(login_session(spec).auth, "auth_ref", None)
    return tuple(getattr(getattr(access, "service_catalog", None), "catalog", None) or ())
