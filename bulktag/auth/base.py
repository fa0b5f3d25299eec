"""The token-provider seam between the engine and the identity service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bulktag.errors import BulktagError, ExitCode

#: How long one login may take before we call the identity service unreachable.
DEFAULT_TIMEOUT = 30.0


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


class AuthRefused(BulktagError):
    """The identity service (or the image service) refused our credentials; the run must stop.

    The message says what was refused and never contains a secret.
    """


class CredentialsError(BulktagError):
    """The credentials could not be assembled or used: missing, malformed, or unreachable.

    Raised before a run starts (configuration) or when the identity service does not answer.
    The message is one line, says what was looked at or what failed, and never contains a secret.
    """


class IdentityUnavailable(CredentialsError):
    """The identity service could not be reached, or answered 5xx or 429: try again later."""

    exit_code = ExitCode.TEMPFAIL
    event = "cloud_unavailable"
    hint = "; try again later"


class TokenProvider(Protocol):
    def valid_now(self) -> str | None:
        """The token, if it needs no renewal now; else None (then await :meth:`token`).

        The engine asks this before every request: a plain call, where ``await token()``
        would cost a coroutine each time for an answer that is almost always at hand.
        """
        ...

    async def token(self) -> str:
        """Return a token that is valid now (refreshing it first if it is about to expire)."""
        ...

    async def refresh(self, rejected: str) -> str:
        """The cloud answered 401 to ``rejected``: return a new token, or raise AuthRefused.

        Called by every worker that saw the 401; only the first call for a given rejected token
        re-authenticates, the others wait for and share its result.
        """
        ...


class StaticToken:
    """A pre-made token (``--token`` / ``OS_AUTH_TOKEN``). It cannot be renewed."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:  # never let a token leak through a repr in a log or traceback
        return "StaticToken(<redacted>)"

    def valid_now(self) -> str:
        return self._value

    async def token(self) -> str:
        return self._value

    async def refresh(self, rejected: str) -> str:
        raise AuthRefused(
            "the image service refused the token (401); a static token cannot be renewed"
        )
