"""The yardstick: the least code that tags images with aiohttp, and nothing else.

One ``ClientSession`` whose connector allows exactly ``--concurrency`` connections (aiohttp's
default of 100 would be a hidden second limit), ``--concurrency`` workers draining a bounded
queue fed from the CSV, one PUT per row. No rate limiter, no retries, no journal, no per-image
scheduling, no logging: whatever bulktag costs beyond this loop is the price of its features.

Prints one JSON object on stdout: ``{"ok": n, "failed": n, "elapsed_s": s}``. Exit 0 when every
PUT got a 2xx. Runs with the project's interpreter so both use the same aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from client_contract import Pair, client_parser, read_pairs


async def produce(path: Path, queue: asyncio.Queue[Pair | None], workers: int) -> None:
    for pair in read_pairs(path):
        await queue.put(pair)
    for _ in range(workers):  # one stop sentinel per worker
        await queue.put(None)


async def work(
    session: aiohttp.ClientSession,
    base: str,
    queue: asyncio.Queue[Pair | None],
    counts: dict[str, int],
) -> None:
    while (pair := await queue.get()) is not None:
        image_id, tag = pair
        async with session.put(f"{base}/v2/images/{image_id}/tags/{tag}") as response:
            await response.read()
            counts["ok" if 200 <= response.status < 300 else "failed"] += 1


async def tag_all(args: argparse.Namespace) -> dict[str, float]:
    counts = {"ok": 0, "failed": 0}
    # A queue a couple of items deep per worker: memory stays flat however long the input.
    queue: asyncio.Queue[Pair | None] = asyncio.Queue(maxsize=2 * args.concurrency)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"X-Auth-Token": args.token}
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        base = args.endpoint.rstrip("/")
        async with asyncio.TaskGroup() as group:
            group.create_task(produce(args.input, queue, args.concurrency))
            for _ in range(args.concurrency):
                group.create_task(work(session, base, queue, counts))
    return {**counts, "elapsed_s": time.perf_counter() - started}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def main(argv: list[str]) -> int:
    parser = client_parser(__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        summary = runner.run(tag_all(args))
    print(json.dumps(summary))
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
