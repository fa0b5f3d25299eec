"""image_endpoints: what a catalog offers, listed when keystoneauth finds no endpoint to use."""

from __future__ import annotations

from typing import Any

from bulktag.auth.catalog import Endpoint, image_endpoints


def ep(region: str | None, interface: str, url: str) -> dict[str, Any]:
    return {"region_id": region, "region": region, "interface": interface, "url": url}


def test_every_image_endpoint_of_every_image_service_is_listed_and_nothing_else() -> None:
    catalog = [
        {"type": "identity", "endpoints": [ep("R1", "public", "https://keystone")]},
        {"type": "image", "name": "glance", "endpoints": [ep("R1", "public", "https://a")]},
        {"type": "image", "name": "ims", "endpoints": [ep("R2", "internal", "https://b")]},
        {
            "type": "image",
            "endpoints": [{"region": "Old", "interface": "admin", "url": "https://o"}],
        },
        {"type": "image"},  # no endpoints at all
    ]
    expected = [
        Endpoint("R1", "public", "https://a"),
        Endpoint("R2", "internal", "https://b"),
        Endpoint("Old", "admin", "https://o"),  # v3 catalogs of old clouds: "region" only
    ]
    assert expected == image_endpoints(catalog)
    assert "R2/internal https://b" == expected[1].describe()
    assert "(no region)/public https://c" == Endpoint(None, "public", "https://c").describe()
