"""List the image endpoints of a Keystone v3 service catalog, for error messages.

Pure. Choosing the endpoint is keystoneauth's job (as in the openstack CLI); when it finds
none for the asked interface and region, the message lists what the catalog does offer, so the
operator can fix ``--os-region-name``/``--os-interface``. A catalog is a list of services
``{"type", "name", "endpoints": [{"interface", "region_id", "region", "url"}]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IMAGE_SERVICE_TYPE = "image"


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
