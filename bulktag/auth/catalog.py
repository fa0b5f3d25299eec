"""Pick the image service endpoint out of a Keystone v3 service catalog.

Pure. A catalog is a list of services ``{"type", "name", "endpoints": [{"interface",
"region_id", "region", "url"}]}``. We want exactly one URL: the ``image`` service's, for the
asked interface (default ``public``) and, if given, region. Zero matches, or several with no
region to choose between them, is a :class:`~bulktag.auth.base.CredentialsError` that lists
what the catalog does offer, so the operator can fix ``--os-region-name``/``--os-interface``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bulktag.auth.base import CredentialsError

IMAGE_SERVICE_TYPE = "image"

# The engine appends /v2/... itself; a catalog URL that already ends in a version would double it.
_VERSION_SUFFIX = re.compile(r"/v2(\.\d+)?$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One catalog endpoint of the image service."""

    region: str | None
    interface: str
    url: str

    def describe(self) -> str:
        return f"{self.region or '(no region)'}/{self.interface} {self.url}"


def image_endpoints(catalog: Sequence[Mapping[str, Any]]) -> list[Endpoint]:
    """Every endpoint of every ``image`` service in the catalog."""
    found = []
    for service in catalog:
        if service.get("type") != IMAGE_SERVICE_TYPE:
            continue
        for ep in service.get("endpoints") or ():
            region = ep.get("region_id") or ep.get("region")
            found.append(Endpoint(region, str(ep.get("interface", "")), str(ep.get("url", ""))))
    return found


def normalise_url(url: str) -> str:
    """Strip a trailing slash and a trailing ``/v2``: the engine adds ``/v2/images/...``."""
    return _VERSION_SUFFIX.sub("", url.rstrip("/"))


def select_image_endpoint(
    catalog: Sequence[Mapping[str, Any]], interface: str = "public", region: str | None = None
) -> str:
    """The one image endpoint URL for ``interface`` and ``region``, or CredentialsError."""
    offered = image_endpoints(catalog)
    if not offered:
        types = ", ".join(sorted({str(s.get("type")) for s in catalog})) or "nothing"
        raise CredentialsError(f"the service catalog has no image service (it lists: {types})")
    matches = [
        ep
        for ep in offered
        if ep.interface == interface and (region is None or ep.region == region)
    ]
    urls = sorted({normalise_url(ep.url) for ep in matches})
    if len(urls) == 1:  # the same URL listed twice (e.g. two service names) is still one
        return urls[0]
    listing = ", ".join(ep.describe() for ep in (matches or offered))
    wanted = f"interface {interface!r}" + (f" in region {region!r}" if region else "")
    if not matches:
        raise CredentialsError(f"no image endpoint for {wanted}; the catalog has: {listing}")
    raise CredentialsError(
        f"several image endpoints for {wanted}; choose one with --os-region-name "
        f"(OS_REGION_NAME) or --endpoint: {listing}"
    )
