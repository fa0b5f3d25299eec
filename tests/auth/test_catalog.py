"""select_image_endpoint: one image URL by interface and region, or an error naming the choices."""

from __future__ import annotations

from typing import Any

import pytest

from bulktag.auth.base import CredentialsError
from bulktag.auth.catalog import normalise_url, select_image_endpoint


def ep(region: str | None, interface: str, url: str) -> dict[str, Any]:
    return {"region_id": region, "region": region, "interface": interface, "url": url}


def image(*endpoints: dict[str, Any], name: str = "glance") -> dict[str, Any]:
    return {"type": "image", "name": name, "endpoints": list(endpoints)}


IDENTITY = {"type": "identity", "endpoints": [ep("R1", "public", "https://keystone")]}

TWO_REGIONS = [
    IDENTITY,
    image(
        ep("R1", "public", "https://img.r1"),
        ep("R1", "internal", "http://img.r1.internal:9292"),
        ep("R2", "public", "https://img.r2"),
    ),
]


@pytest.mark.parametrize(
    ("catalog", "interface", "region", "expected"),
    [
        pytest.param([IDENTITY, image(ep("R1", "public", "https://img"))], "public", None,
                     "https://img", id="single-public"),
        pytest.param(TWO_REGIONS, "public", "R2", "https://img.r2", id="by-region"),
        pytest.param(TWO_REGIONS, "internal", None, "http://img.r1.internal:9292",
                     id="only-one-internal-needs-no-region"),
        pytest.param(TWO_REGIONS, "internal", "R1", "http://img.r1.internal:9292",
                     id="internal-by-region"),
        pytest.param([image(ep("R1", "public", "https://img:9292/v2/"))], "public", None,
                     "https://img:9292", id="version-suffix-stripped"),
        pytest.param([image(ep("R1", "public", "https://a")), image(ep("R1", "public", "https://a/"),
                      name="ims")], "public", None, "https://a", id="same-url-twice-is-one"),
        pytest.param([image({"region": "Old", "interface": "public", "url": "https://o"})],
                     "public", "Old", "https://o", id="region-without-region-id"),
    ],
)  # fmt: skip
def test_the_one_matching_image_endpoint_is_chosen(
    catalog: list[dict[str, Any]], interface: str, region: str | None, expected: str
) -> None:
    assert expected == select_image_endpoint(catalog, interface, region)


@pytest.mark.parametrize(
    ("catalog", "interface", "region", "expected"),
    [
        pytest.param(
            [IDENTITY, {"type": "compute", "endpoints": []}], "public", None,
            "the service catalog has no image service (it lists: compute, identity)",
            id="no-image-service",
        ),
        pytest.param(
            [], "public", None,
            "the service catalog has no image service (it lists: nothing)",
            id="empty-catalog",
        ),
        pytest.param(
            TWO_REGIONS, "public", "R3",
            "no image endpoint for interface 'public' in region 'R3'; the catalog has: "
            "R1/public https://img.r1, R1/internal http://img.r1.internal:9292, "
            "R2/public https://img.r2",
            id="unknown-region",
        ),
        pytest.param(
            TWO_REGIONS, "admin", None,
            "no image endpoint for interface 'admin'; the catalog has: "
            "R1/public https://img.r1, R1/internal http://img.r1.internal:9292, "
            "R2/public https://img.r2",
            id="unknown-interface",
        ),
        pytest.param(
            TWO_REGIONS, "public", None,
            "several image endpoints for interface 'public'; choose one with --os-region-name "
            "(OS_REGION_NAME) or --endpoint: R1/public https://img.r1, R2/public https://img.r2",
            id="several-regions-no-region-given",
        ),
        pytest.param(
            [image(ep(None, "public", "https://a"), ep(None, "public", "https://b"))],
            "public", None,
            "several image endpoints for interface 'public'; choose one with --os-region-name "
            "(OS_REGION_NAME) or --endpoint: (no region)/public https://a, "
            "(no region)/public https://b",
            id="several-without-regions",
        ),
    ],
)  # fmt: skip
def test_no_or_ambiguous_match_names_what_the_catalog_has(
    catalog: list[dict[str, Any]], interface: str, region: str | None, expected: str
) -> None:
    with pytest.raises(CredentialsError) as info:
        select_image_endpoint(catalog, interface, region)
    assert expected == str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://img:9292", "https://img:9292"),
        ("https://img:9292/", "https://img:9292"),
        ("https://img:9292/v2", "https://img:9292"),
        ("https://img:9292/v2.1/", "https://img:9292"),
        ("https://host/image", "https://host/image"),
        ("https://host/v20", "https://host/v20"),
    ],
)
def test_catalog_urls_lose_trailing_slash_and_version(url: str, expected: str) -> None:
    assert expected == normalise_url(url)
