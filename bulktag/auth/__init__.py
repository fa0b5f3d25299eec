"""Where the ``X-Auth-Token`` comes from.

The engine only knows the :class:`TokenProvider` protocol. A provider hands out the current
token and, when the cloud answered 401 to it, replaces it once for all workers (single flight).

The CLI drives the credentials layer in three steps::

    options = options_from_namespace(ns)         # after add_credential_arguments(parser)
    spec = load_auth_spec(options, os.environ)   # openstacksdk resolves the cloud; no network
    creds = await resolve_credentials(spec)      # keystoneauth logs in, finds the image endpoint
    ssl = ssl_for(spec.tls_verify, spec.client_cert)  # for the aiohttp image transport

Only the pure pieces are imported eagerly, so building the argument parser does not pull in
aiohttp, openstacksdk or keystoneauth1; the others load on first access, and openstacksdk only
when there is a cloud to resolve (not for ``--token`` + ``--endpoint``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bulktag.auth.base import (
    AuthRefused,
    CredentialsError,
    IdentityUnavailable,
    IssuedToken,
    StaticToken,
    TokenProvider,
)
from bulktag.auth.options import CredentialOptions, add_credential_arguments, options_from_namespace

if TYPE_CHECKING:
    from bulktag.auth.cloud import AuthSpec, load_auth_spec
    from bulktag.auth.keystone import log_in
    from bulktag.auth.provider import Credentials, KeystoneTokenProvider, resolve_credentials
    from bulktag.auth.tls import ssl_for

_LAZY = {
    "AuthSpec": "bulktag.auth.cloud",
    "load_auth_spec": "bulktag.auth.cloud",
    "log_in": "bulktag.auth.keystone",
    "Credentials": "bulktag.auth.provider",
    "KeystoneTokenProvider": "bulktag.auth.provider",
    "resolve_credentials": "bulktag.auth.provider",
    "ssl_for": "bulktag.auth.tls",
}

__all__ = [
    "AuthRefused",
    "AuthSpec",
    "CredentialOptions",
    "Credentials",
    "CredentialsError",
    "IdentityUnavailable",
    "IssuedToken",
    "KeystoneTokenProvider",
    "StaticToken",
    "TokenProvider",
    "add_credential_arguments",
    "load_auth_spec",
    "log_in",
    "options_from_namespace",
    "resolve_credentials",
    "ssl_for",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
