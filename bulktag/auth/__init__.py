"""Where the ``X-Auth-Token`` comes from.

The engine only knows the :class:`TokenProvider` protocol. A provider hands out the current
token and, when the cloud answered 401 to it, replaces it once for all workers (single flight).
"""

from bulktag.auth.base import AuthRefused, StaticToken, TokenProvider

__all__ = ["AuthRefused", "StaticToken", "TokenProvider"]
