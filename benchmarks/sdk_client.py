"""The incumbent: openstacksdk's ``image.add_tag``, one call per row, on a thread pool.

Runs in its own venv (``benchmarks/.venv-sdk``) so openstacksdk and its dependency tree never
enter the project's. Authentication is bypassed the way a pre-issued token is used in real life:
keystoneauth's ``token_endpoint.Token`` plugin hands out a fixed token and endpoint, so no
Keystone is needed; keystoneauth still runs one version-discovery GET against the endpoint.

The requests connection pool is sized to the thread count: its default of 10 would make most
threads open a fresh connection per call and turn a CPU benchmark into a connect benchmark.

Prints one JSON object on stdout: ``{"ok": n, "failed": n, "elapsed_s": s}``.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openstack.connection
import requests
import requests.adapters
from client_contract import client_parser, read_pairs
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from openstack.image.v2._proxy import Proxy as ImageV2Proxy


def connect(endpoint: str, token: str, pool: int) -> openstack.connection.Connection:
    http = requests.Session()
    http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool))
    auth = token_endpoint.Token(endpoint=endpoint, token=token)
    session = ks_session.Session(auth=auth, session=http)
    return openstack.connection.Connection(
        session=session, image_endpoint_override=f"{endpoint}/v2", image_api_version="2"
    )


def main(argv: list[str]) -> int:
    parser = client_parser(__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    conn = connect(args.endpoint.rstrip("/"), args.token, args.threads)
    image = conn.image
    # Glance v2 (the only API with tags); also narrows the proxy's type for mypy.
    assert isinstance(image, ImageV2Proxy)
    image.get_endpoint()  # version discovery happens here, outside the timed loop's calls

    def add(pair: tuple[str, str]) -> bool:
        try:
            image.add_tag(pair[0], pair[1])
        except openstack.exceptions.SDKException:
            return False
        return True

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        # map() submits everything at once; fine for the few thousand rows this baseline gets.
        done = list(pool.map(add, read_pairs(args.input)))
    ok = sum(done)
    summary = {"ok": ok, "failed": len(done) - ok, "elapsed_s": time.perf_counter() - started}
    print(json.dumps(summary))
    return 0 if ok == len(done) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
