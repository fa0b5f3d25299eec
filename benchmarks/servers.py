"""A scriptable stand-in for the Glance tag endpoint, run as its own process by the harness.

One program covers every non-nginx scenario, chosen by flags:

- ``--delay-ms D``: every tag PUT waits D ms before its 204 (latency-bound throughput);
- ``--capacity N``: a token bucket admits N PUTs/s (burst ``--capacity-burst``); the rest get
  503 (adaptive pacing);
- always: the arrival time of every PUT is recorded, so the harness can compute the achieved
  rate and the worst one-second window from the server's point of view (rate accuracy).

The harness talks to it through two control routes on the same port:
``POST /_bench/reset`` clears the counters before a measured run, and
``GET /_bench/stats[?arrivals=1]`` returns them after it.

It prints ``LISTENING <port>`` on stdout once the socket accepts connections, and stops on
SIGTERM or SIGINT. Standard library + aiohttp only (uvloop if installed), because it runs with
the project's interpreter and must not drag bench dependencies into it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
from array import array
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

TAG_ROUTE = "/v2/images/{image_id}/tags/{tag}"
IMAGES_ROUTE = "/v2/images"


def versions_document(base_url: str) -> dict[str, object]:
    """Glance's version discovery answer, pointing every client at ``/v2/``."""
    link = {"rel": "self", "href": f"{base_url}/v2/"}
    return {"versions": [{"id": "v2.16", "status": "CURRENT", "links": [link]}]}


class TokenBucket:
    """Admits ``rate`` events per second with at most ``burst`` at once; never sleeps.

    Invariant: ``0 <= tokens <= burst``; tokens refill continuously at ``rate`` per second.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def admit(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def reset(self, now: float) -> None:
        self.tokens = self.burst
        self.stamp = now


class Recorder:
    """Counters and arrival timestamps of tag PUTs since the last reset."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.other = 0
        # array('d') keeps a million arrivals at 8 MB instead of ~32 MB of float objects.
        self.arrivals: array[float] = array("d")

    def reset(self) -> None:
        self.accepted = self.rejected = self.other = 0
        self.arrivals = array("d")


def build_app(delay_s: float, bucket: TokenBucket | None) -> web.Application:
    recorder = Recorder()

    async def put_tag(request: web.Request) -> web.Response:
        now = time.monotonic()
        recorder.arrivals.append(now)
        if bucket is not None and not bucket.admit(now):
            recorder.rejected += 1
            return web.Response(status=503, text="over capacity")
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        recorder.accepted += 1
        return web.Response(status=204)

    async def list_images(request: web.Request) -> web.Response:
        recorder.other += 1
        return web.json_response({"images": []})

    async def versions(request: web.Request) -> web.Response:
        # keystoneauth (under openstacksdk) runs version discovery on the endpoint once per
        # process before its first call; Glance answers with this document.
        return web.json_response(versions_document(f"http://{request.host}"))

    async def reset(request: web.Request) -> web.Response:
        recorder.reset()
        if bucket is not None:
            bucket.reset(time.monotonic())
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        body: dict[str, object] = {
            "accepted": recorder.accepted,
            "rejected": recorder.rejected,
            "other": recorder.other,
            "puts": len(recorder.arrivals),
        }
        if request.query.get("arrivals") == "1":
            body["arrivals"] = recorder.arrivals.tolist()
        return web.json_response(body)

    app = web.Application()
    app.router.add_put(TAG_ROUTE, put_tag)
    app.router.add_get(IMAGES_ROUTE, list_images)
    for path in ("/", "/v2", "/v2/"):
        app.router.add_get(path, versions)
    app.router.add_post("/_bench/reset", reset)
    app.router.add_get("/_bench/stats", stats)
    return app


async def serve(args: argparse.Namespace) -> None:
    bucket = None
    if args.capacity > 0:
        bucket = TokenBucket(args.capacity, args.capacity_burst or max(1.0, args.capacity / 10))
    await serve_app(build_app(args.delay_ms / 1000, bucket), args.port)


async def serve_app(app: web.Application, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` (0: a free one), say ``LISTENING <port>`` on stdout,
    and stop on SIGTERM or SIGINT."""
    # access_log=None: logging every request would make the server, not the client, the
    # bottleneck being measured.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    # A deep backlog: 64 clients connecting at once must not see SYN retries (1 s stalls).
    sock.listen(1024)
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    await stop.wait()
    await runner.cleanup()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--capacity", type=float, default=0.0, help="PUTs/s admitted; 0 = all")
    parser.add_argument("--capacity-burst", type=float, default=0.0, help="default capacity/10")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    return parser.parse_args(argv)


def run(argv: list[str]) -> None:
    args = parse_args(argv)
    run_on_loop(serve(args), args.loop)


def run_on_loop(main: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    """Run ``main`` on uvloop when it can be imported (``loop="auto"``), else asyncio.

    uvloop cuts the server's CPU per request, keeping it out of the way of the client being
    measured; the stock loop still works where uvloop is not installed.
    """
    factory = None
    if loop != "asyncio":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise SystemExit("uvloop requested but not installed") from None
    # asyncio.Runner, not asyncio.run: 3.11's asyncio.run has no loop_factory.
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


if __name__ == "__main__":
    run(sys.argv[1:])
