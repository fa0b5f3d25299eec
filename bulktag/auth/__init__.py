"""Where the ``X-Auth-Token`` comes from.

The engine only knows the :class:`TokenProvider` protocol. A provider hands out the current
token and, when the cloud answered 401 to it, replaces it once for all workers (single flight).

The CLI drives the credentials layer in three steps::

    options = options_from_namespace(ns)            # after add_credential_arguments(parser)
    spec = load_auth_spec(options, os.environ)      # flags > OS_* > clouds.yaml; no network
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_for(spec.tls_verify)))
    creds = await resolve_credentials(session, spec)  # logs in, picks the image endpoint

Only the pure pieces are imported eagerly, so building the argument parser does not pull in
aiohttp or PyYAML; the others load on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bulktag.auth.base import (
    AuthRefused,
    CredentialsError,
    IdentityUnavailable,
    StaticToken,
    TokenProvider,
)
from bulktag.auth.options import CredentialOptions, add_credential_arguments, options_from_namespace

if TYPE_CHECKING:
    from bulktag.auth.catalog import select_image_endpoint
    from bulktag.auth.clouds import AuthSpec, load_auth_spec
    from bulktag.auth.keystone import IssuedToken, authenticate
    from bulktag.auth.provider import Credentials, KeystoneTokenProvider, resolve_credentials
    from bulktag.auth.tls import ssl_for

_LAZY = {
    "select_image_endpoint": "bulktag.auth.catalog",
    "AuthSpec": "bulktag.auth.clouds",
    "load_auth_spec": "bulktag.auth.clouds",
    "IssuedToken": "bulktag.auth.keystone",
    "authenticate": "bulktag.auth.keystone",
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
    "authenticate",
    "load_auth_spec",
    "options_from_namespace",
    "resolve_credentials",
    "select_image_endpoint",
    "ssl_for",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
