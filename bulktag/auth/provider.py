"""Hand out Keystone tokens to every worker, and renew them once for all of them.

:class:`KeystoneTokenProvider` implements the engine's :class:`~bulktag.auth.base.TokenProvider`.
Invariants:

* At most one login is in flight: an ``anyio.Lock`` guards every login, and a caller that got
  the lock re-checks whether someone else already did the work while it waited. A thousand
  workers that see the same 401 cause one login.
* A token is renewed before it expires: when less than ``margin`` seconds (or half its
  lifetime, for short-lived tokens) remain. Time is measured on an injectable monotonic clock,
  and the lifetime on the server's own clock (``expires_at - issued_at``), so a skewed local
  clock cannot cause a login storm.
* Once the identity service refuses our credentials (401), every later call fails with the
  same :class:`~bulktag.auth.base.AuthRefused` without asking again: hammering a refusing
  service with a wrong password can lock the account.
* After the first token, ``token()`` and ``refresh()`` raise only AuthRefused (the seam's
  contract): an identity service that stops answering mid-run stops the run cleanly too. The
  first login raises CredentialsError for that, a setup error.

:func:`resolve_credentials` is the entry point the CLI calls after :func:`load_auth_spec`.
keystoneauth is synchronous: every login and the endpoint lookup run in a worker thread, so the
event loop (and every worker's request in flight) goes on meanwhile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, Unpack

import anyio
import anyio.to_thread
import structlog

from bulktag.auth.base import (
    DEFAULT_TIMEOUT,
    AuthRefused,
    CredentialsError,
    IssuedToken,
    StaticToken,
    TokenProvider,
)

if TYPE_CHECKING:  # keystone.py pulls in requests: only the Keystone path may pay for it
    from bulktag.auth.cloud import AuthSpec

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Login = Callable[[], Awaitable[IssuedToken]]

#: Renew when less than this many seconds remain (keystoneauth uses the same 120 s).
DEFAULT_MARGIN = 120.0
#: After a failed early renewal, try again this soon (the current token is still good).
RETRY_EARLY_REFRESH = 30.0


class Renewal(TypedDict, total=False):
    """When :class:`KeystoneTokenProvider` renews: the keywords its constructors pass through."""

    margin: float  # renew when less than this many seconds remain [DEFAULT_MARGIN]
    clock: Clock  # monotonic seconds [time.monotonic]


#: keystoneauth plugins that re-scope a given token: the new token keeps the old one's expiry.
_RESCOPED = frozenset({"token", "v3token"})


class KeystoneTokenProvider:
    """A :class:`TokenProvider` that logs in with ``login`` and renews the token when due."""

    def __init__(
        self,
        login: Login,
        *,
        margin: float = DEFAULT_MARGIN,
        clock: Clock = time.monotonic,
        renew_early: bool = True,
    ) -> None:
        self._login = login
        self._margin = margin
        self._renew_early_enabled = renew_early
        self._clock = clock
        self._lock = anyio.Lock()
        self._current: IssuedToken | None = None
        self._refresh_at = -math.inf  # monotonic time at which the current token is due
        self._expires_at = math.inf  # monotonic time at which it is expected to expire
        self._refused: AuthRefused | None = None
        self.logins = 0  # how many times we asked the identity service (tests assert it)

    @classmethod
    def for_spec(
        cls, spec: AuthSpec, *, login_timeout: float = DEFAULT_TIMEOUT, **renewal: Unpack[Renewal]
    ) -> KeystoneTokenProvider:
        from bulktag.auth.keystone import log_in

        async def login() -> IssuedToken:
            # abandon_on_cancel: a stopping run does not wait out a slow identity service.
            return await anyio.to_thread.run_sync(
                log_in, spec, login_timeout, abandon_on_cancel=True
            )

        # A token re-scoped from a given token keeps that token's expiry: renewing it early
        # cannot extend it, and would only log in again and again as the end nears.
        return cls(login, renew_early=spec.method not in _RESCOPED, **renewal)

    def __repr__(self) -> str:
        return f"KeystoneTokenProvider(logins={self.logins}, token=<redacted>)"

    async def current(self) -> IssuedToken:
        """The current token with its catalog, logging in first if due."""
        await self.token()
        assert self._current is not None  # token() either set it or raised
        return self._current

    def valid_now(self) -> str | None:
        if self._current is not None and self._clock() < self._refresh_at:
            return self._current.value
        return None

    async def token(self) -> str:
        if (value := self.valid_now()) is not None:
            return value  # the fast path: no lock
        async with self._lock:
            # Re-check: another caller may have renewed it while we waited for the lock.
            if self._current is None or self._clock() >= self._refresh_at:
                with self._mid_run_failures_stop_the_run():
                    await self._renew_early()
            assert self._current is not None
            return self._current.value

    async def refresh(self, rejected: str) -> str:
        async with self._lock:
            if self._current is not None and self._current.value != rejected:
                return self._current.value  # already replaced after the 401 someone else saw
            with self._mid_run_failures_stop_the_run():
                await self._log_in()
            assert self._current is not None
            return self._current.value

    @contextmanager
    def _mid_run_failures_stop_the_run(self) -> Iterator[None]:
        """Once a run is going, failing to get a token must stop it the way the engine knows.

        The engine expects AuthRefused from a provider and then stops cleanly, journal intact.
        Before the first token (no run yet) a CredentialsError stays one: a setup error.
        """
        try:
            yield
        except CredentialsError as exc:
            if self._current is None:
                raise
            raise AuthRefused(f"cannot renew the token: {exc}") from exc

    async def _renew_early(self) -> None:
        """Renew a token that is due; if the service is down, keep one that has not expired."""
        try:
            await self._log_in()
        except CredentialsError as exc:
            now = self._clock()
            if self._current is None or now >= self._expires_at:
                raise
            self._refresh_at = now + min(RETRY_EARLY_REFRESH, (self._expires_at - now) / 2)
            log.warning("auth.refresh_postponed", reason=str(exc))

    async def _log_in(self) -> None:
        if self._refused is not None:
            raise self._refused
        started = self._clock()  # before the request: errs towards renewing early
        self.logins += 1
        try:
            issued = await self._login()
        except AuthRefused as exc:
            self._refused = exc
            # Debug only: the caller reports the refusal once (exit 2 at start, run_aborted
            # mid-run); an error event here would print the same line twice.
            log.debug("auth.login_refused", reason=str(exc), logins=self.logins)
            raise
        self._install(issued, started)

    def _install(self, issued: IssuedToken, started: float) -> None:
        self._current = issued
        lifetime = issued.lifetime
        if lifetime is None:  # no expiry given: renew only when the cloud answers 401
            self._refresh_at = self._expires_at = math.inf
        elif not self._renew_early_enabled:
            self._refresh_at, self._expires_at = math.inf, started + lifetime
        else:
            # Half the lifetime at most, so a token shorter than the margin is not renewed
            # on every single request.
            self._refresh_at = started + lifetime - min(self._margin, lifetime / 2)
            self._expires_at = started + lifetime
        log.info("auth.login", logins=self.logins, lifetime_s=lifetime, project=issued.project_id)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a run needs: who hands out tokens, where the image service is, how to verify TLS."""

    provider: TokenProvider
    endpoint: str
    project_id: str | None
    verify: bool | str  # False, a CA bundle path, or True (system CAs)


async def resolve_credentials(
    spec: AuthSpec, *, login_timeout: float = DEFAULT_TIMEOUT, **renewal: Unpack[Renewal]
) -> Credentials:
    """Log in (unless given a token and an endpoint) and find the image endpoint."""
    if spec.is_static_token:
        assert spec.token is not None
        assert spec.endpoint is not None
        return Credentials(StaticToken(spec.token), spec.endpoint, spec.project_id, spec.verify)
    from bulktag.auth.keystone import image_endpoint

    provider = KeystoneTokenProvider.for_spec(spec, login_timeout=login_timeout, **renewal)
    issued = await provider.current()
    endpoint = await anyio.to_thread.run_sync(
        image_endpoint, spec, login_timeout, abandon_on_cancel=True
    )
    _log_resolved(spec, endpoint)
    return Credentials(provider, endpoint, issued.project_id, spec.verify)


def _log_resolved(spec: AuthSpec, endpoint: str) -> None:
    """What openstacksdk and keystoneauth chose, in one event: the operator's first question
    ("which cloud, region, endpoint?") and what the differential tests compare."""
    from bulktag.auth.keystone import without_userinfo

    log.info(
        "auth.resolved",
        cloud=spec.cloud,
        region=spec.region_name,
        interface=spec.interface,
        auth_type=spec.method,
        auth_url=without_userinfo(spec.auth_url),
        image_endpoint=without_userinfo(endpoint),
        tls_verify=spec.verify,
        client_cert=spec.client_cert is not None,
        settings_from=spec.origin,
    )
