"""Turn the TLS settings the credentials asked for into what aiohttp's connector takes.

``spec.tls_verify`` is ``False`` (``--insecure`` / ``verify: false`` / ``insecure: true``), a CA
bundle path (``--cacert`` / ``OS_CACERT`` / ``cacert:``) or ``True``, exactly as openstacksdk
resolved it for keystoneauth; ``spec.client_cert`` is the client certificate (``--os-cert``,
``cert:``), alone or with its key. The CLI passes the result of :func:`ssl_for` as
``aiohttp.TCPConnector(ssl=...)`` and warns when it is ``False``.
"""

from __future__ import annotations

import ssl

from bulktag.auth.base import CredentialsError

ClientCert = str | tuple[str, str] | None


def ssl_for(verify: bool | str, client_cert: ClientCert = None) -> ssl.SSLContext | bool:
    """``False`` to skip verification, ``True`` for the system CAs, or a context for a bundle
    (and for a client certificate, whatever the verification)."""
    if isinstance(verify, bool) and client_cert is None:
        return verify
    context = _context(verify)
    if client_cert is not None:
        _load_client_cert(context, client_cert)
    return context


def _context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=None if verify is True else str(verify))
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"cannot load the CA bundle {verify}: {_reason(exc)}") from None


def _load_client_cert(context: ssl.SSLContext, client_cert: str | tuple[str, str]) -> None:
    cert, key = client_cert if isinstance(client_cert, tuple) else (client_cert, None)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(
            f"cannot load the client certificate {cert}: {_reason(exc)}"
        ) from None


def _reason(exc: OSError | ssl.SSLError) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
