"""Turn the TLS settings the credentials asked for into what aiohttp's connector takes.

``spec.tls_verify`` is ``False`` (``--insecure`` / ``verify: false``), a CA bundle path
(``--cacert`` / ``OS_CACERT`` / ``cacert:``) or ``True``. The CLI passes the result of
:func:`ssl_for` as ``aiohttp.TCPConnector(ssl=...)`` and warns when it is ``False``.
"""

from __future__ import annotations

import ssl

from bulktag.auth.base import CredentialsError


def ssl_for(verify: bool | str) -> ssl.SSLContext | bool:
    """``False`` to skip verification, ``True`` for the system CAs, or a context for a bundle."""
    if isinstance(verify, bool):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CredentialsError(f"cannot load the CA bundle {verify}: {reason}") from None
