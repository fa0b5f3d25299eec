"""What the openstack CLI would use, by openstacksdk's own resolver: the differential's reference.

Run as ``python sdk_reference.py '{"cloud": ..., "flags": {...}}'`` in the variant's own working
directory and environment. It resolves the cloud with
``openstack.config.OpenStackConfig().get_one(cloud=…)`` — or, when flags are given,
``get_one_cloud_osc(cloud=…, **flags)``, the openstack CLI's variant where a flag beats the
cloud's ``auth:`` section — logs in through the
keystoneauth session openstacksdk builds, asks it for the image endpoint, and prints one JSON
object: the choices, or the error.

``flags`` are the ``--os-*`` flags of the variant as ``get_one`` keywords. As the openstack CLI
does (its flags' defaults), ``OS_REGION_NAME``, ``OS_CACERT`` and ``OS_IMAGE_URL`` stand in for
``--os-region-name``, ``--os-cacert`` and ``--os-image-url`` when those are not given.

Nothing from bulktag is imported here: the reference must not share code with what it checks.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any
from urllib.parse import urlsplit

CLI_ENV_DEFAULTS = {
    "region_name": "OS_REGION_NAME",
    "cacert": "OS_CACERT",
    "image_endpoint_override": "OS_IMAGE_URL",
}


def main(request: dict[str, Any]) -> dict[str, Any]:
    from openstack.config import OpenStackConfig

    explicit = bool(request.get("flags"))
    flags = dict(request.get("flags") or {})
    for name, variable in CLI_ENV_DEFAULTS.items():
        if name not in flags and os.environ.get(variable):
            flags[name] = os.environ[variable]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = OpenStackConfig()
            resolve = config.get_one_cloud_osc if explicit else config.get_one
            region = resolve(cloud=request.get("cloud"), **flags)
            session = region.get_session()
            session.get_token()  # log in even when the endpoint is overridden: compare bodies
            endpoint = region.get_session_endpoint("image")
    except Exception as exc:  # the variant may expect a refusal: report it as data
        return {"error": type(exc).__name__, "message": str(exc)}
    verify, cert = region.get_requests_verify_args()
    return {
        "cloud": region.name or None,
        "region": region.get_region_name("image") or None,
        "interface": region.get_interface("image"),
        "auth_type": region.config.get("auth_type"),
        "auth_url": _without_userinfo(region.config["auth"].get("auth_url")),
        "image_endpoint": endpoint,
        "tls_verify": verify,
        "client_cert": cert is not None,
    }


def _without_userinfo(url: str | None) -> str | None:
    if not url or "@" not in urlsplit(url).netloc:
        return url
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
