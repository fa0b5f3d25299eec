"""IMS batching by input order: requests per row, and peak RSS, for one inventory in three orders.

    python benchmarks/ims_grouping.py [--images N] [--tags T] [--orders by-image,by-key,shuffled]
                                      [--read-ahead ROWS] [--latency S] [--concurrency C]

Each measurement runs the real engine (``--api ims`` settings, ten tags a call) in a fresh
process on a CSV of ``images × tags`` key/value rows written in that order: *by-image* (an
image's tags next to each other), *by-key* (every image's first key, then every image's second
key: an inventory built per tag) and *shuffled*. The sender answers 204 after ``--latency``
seconds without HTTP, so what is measured is how the engine groups rows, not a server; it also
checks that no image ever has two requests in flight and that no call carries a key twice.

*ideal* is one request per image per ten tags (images × ⌈tags/10⌉); the target is requests ≤
1.1 × ideal for inventories that fit the read-ahead window. Peak RSS is the child's own
high-water mark, ``VmHWM`` of /proc/self/status (the input file is written by the parent, so it
is not counted). Not ``ru_maxrss``: Linux carries it over ``exec`` from the process that was
forked, so a child started by a parent that had just built a million-row input reported the
parent's size (165 MiB for a run that peaked at ~105).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio

ORDERS = ("by-image", "by-key", "shuffled")


def write_input(path: Path, images: int, tags: int, order: str, seed: int = 7) -> int:
    pairs = [(n, t) for n in range(images) for t in range(tags)]
    if order == "by-key":
        pairs.sort(key=lambda pair: (pair[1], pair[0]))
    elif order == "shuffled":
        random.Random(seed).shuffle(pairs)
    with path.open("w") as out:
        out.write("image_id,key,value\n")
        for n, t in pairs:
            out.write(f"{uuid.UUID(int=n + 1)},key{t},value{t}\n")
    return len(pairs)


async def measure_one(
    source: Path, read_ahead: int | None, latency: float, concurrency: int
) -> dict[str, int]:
    from bulktag.auth.base import StaticToken
    from bulktag.engine import Engine, EngineSettings
    from bulktag.journal import JournalWriter, ResumeIndex
    from bulktag.model import Answer, Api, Outcome
    from bulktag.source import ims_rules, open_text, read_rows

    calls = 0
    in_flight: set[str] = set()
    answer = Answer(status=204, request_id="req-0123456789abcdef")

    async def send(image_id: str, tags: Sequence[tuple[str, str | None]], token: str) -> Answer:
        nonlocal calls
        calls += 1
        assert image_id not in in_flight, f"two requests in flight for {image_id}"
        assert len({key for key, _ in tags}) == len(tags), f"a key twice in one call: {tags}"
        in_flight.add(image_id)
        try:
            if latency > 0:
                await anyio.sleep(latency)
        finally:
            in_flight.discard(image_id)
        return answer

    extra = {} if read_ahead is None else {"read_ahead": read_ahead}
    settings = EngineSettings(
        rate=1e9, burst=64, concurrency=concurrency, api=Api.IMS, batch_size=10,
        batch_linger=0.05, **extra,
    )  # fmt: skip
    journal = JournalWriter(source.with_suffix(".jsonl"))
    engine = Engine(settings, send, StaticToken("t"), journal, ResumeIndex.empty())
    with source.open("rb") as binary:
        report = await engine.run(read_rows(open_text(binary), ims_rules()))
    return {"requests": calls, "ok": report.tally.outcomes[Outcome.OK]}


def peak_rss_kib() -> int:
    """This process's peak RSS since its ``exec``: VmHWM (Linux), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args: argparse.Namespace) -> None:
    started = time.monotonic()
    figures = anyio.run(
        measure_one, Path(args.child), args.read_ahead, args.latency, args.concurrency
    )
    figures["seconds"] = round(time.monotonic() - started, 1)  # type: ignore[assignment]
    figures["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(figures))


def run_order(folder: Path, args: argparse.Namespace, order: str) -> dict[str, object]:
    source = folder / f"{order}.csv"
    rows = write_input(source, args.images, args.tags, order)
    command = [sys.executable, __file__, "--child", str(source), "--latency", str(args.latency),
               "--concurrency", str(args.concurrency)]  # fmt: skip
    if args.read_ahead is not None:
        command += ["--read-ahead", str(args.read_ahead)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.splitlines()[-1])
    ideal = args.images * math.ceil(args.tags / 10)
    assert figures["ok"] == rows, figures
    requests = figures["requests"]
    return {"order": order, "rows": rows, "ideal": ideal, **figures,
            "per_row": requests / rows, "x_ideal": requests / ideal}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--tags", type=int, default=4)
    parser.add_argument("--orders", default=",".join(ORDERS))
    parser.add_argument("--read-ahead", type=int, default=None, help="[default: the engine's]")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds a call takes")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print("| order | rows | requests | ideal | × ideal | requests/row | peak RSS MiB | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for order in args.orders.split(","):
            f = run_order(Path(folder), args, order)
            print(f"| {order} | {f['rows']:,} | {f['requests']:,} | {f['ideal']:,} | "
                  f"{f['x_ideal']:.2f} | {f['per_row']:.3f} | "
                  f"{f['peak_rss_kib'] / 1024:.0f} | {f['seconds']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
