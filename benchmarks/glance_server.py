"""bulktag's own fake Glance as a benchmark endpoint: the server shapes an operator rehearses
with ``bulktag serve-fake`` (``--limiter``, ``--limiter-status``, ``--outage``, ``--fail-503``
...), measured from the server's side.

    python benchmarks/glance_server.py [bulktag serve-fake flags] [--loop auto|asyncio|uvloop]

Like servers.py it prints ``LISTENING <port>`` once it accepts connections, runs on uvloop when
it can, and stops on SIGTERM or SIGINT. Its control routes skip the fake's gateway and keystone
check — they are the harness asking, not a client, and must not spend the limiter's tokens or
be refused by an outage:

- ``POST /_bench/reset`` and ``GET /_bench/stats[?arrivals=1]``, as servers.py answers them;
- ``GET /_bench/records``: ``started`` (the server's time 0 on this machine's monotonic clock),
  ``puts`` (every tag PUT as ``[t, status, image_id, tag]``, ``t`` in seconds since time 0,
  in arrival order) and ``tags`` (what the fake stored, per image).
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web
from servers import run_on_loop, serve_app

from bulktag.fake.glance import FakeGlance, Handler, RequestRecord
from bulktag.fake.serve import add_serve_arguments, config_from_args


class BenchGlance(FakeGlance):
    """The fake Glance plus the harness's control routes."""

    def app(self) -> web.Application:
        app = super().app()
        app.middlewares.insert(0, _control_first)
        app.router.add_post("/_bench/reset", self._reset)
        app.router.add_get("/_bench/stats", self._stats)
        app.router.add_get("/_bench/records", self._records)
        return app

    def _puts(self) -> list[RequestRecord]:
        puts = [r for r in self.requests if r.method == "PUT" and r.tag is not None]
        return sorted(puts, key=lambda r: r.at)  # recorded when answered; arrival order wanted

    async def _reset(self, request: web.Request) -> web.Response:
        # What was seen is forgotten; the gateway's limits keep their state (and their clock).
        self.requests.clear()
        self.tags.clear()
        return web.Response(status=204)

    async def _stats(self, request: web.Request) -> web.Response:
        puts = self._puts()
        accepted = sum(1 for r in puts if 200 <= r.status < 300)
        body: dict[str, object] = {
            "accepted": accepted,
            "rejected": len(puts) - accepted,
            "puts": len(puts),
        }
        if request.query.get("arrivals") == "1":
            body["arrivals"] = [r.at for r in puts]
        return web.json_response(body)

    async def _records(self, request: web.Request) -> web.Response:
        puts = [[r.at - self.started, r.status, r.image_id, r.tag] for r in self._puts()]
        return web.json_response({"started": self.started, "puts": puts, "tags": self.tags})


@web.middleware
async def _control_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The control routes go straight to their handler, past the gateway and keystone."""
    if request.path.startswith("/_bench/"):
        return await request.match_info.handler(request)
    return await handler(request)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_serve_arguments(parser)
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = parser.parse_args(argv)
    fake = BenchGlance(config_from_args(args))
    run_on_loop(serve_app(fake.app(), args.port), args.loop)


if __name__ == "__main__":
    main(sys.argv[1:])
