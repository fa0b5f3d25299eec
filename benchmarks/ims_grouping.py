"""IMS batching by input order: requests per row, and peak RSS, for one inventory in three orders.

    python benchmarks/ims_grouping.py [--images N] [--tags T] [--orders by-image,by-key,shuffled]
                                      [--read-ahead ROWS] [--latency S] [--concurrency C]
                                      [--whole] [--runs N]

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

``--whole`` measures a whole process instead: the real ``bulktag run --api ims --rate 1000000
--burst B --concurrency C`` (B = C; ``--latency`` is ignored) against a fake IMS in another
process (``bulktag serve-fake --api ims``'s fake, with its defaults, so that it can report the
tag calls it counted and the tags it holds at the end; every image must hold all its keys).
Its peak RSS is the ``ru_maxrss`` that ``os.wait4`` returns; it is the child's own because the
parent stays small (the inputs are written by a subprocess, and the parent's own ``ru_maxrss``
is printed alongside: the child's figure is only its own when it is the larger one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
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


def parent_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


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


def write_input_apart(source: Path, args: argparse.Namespace, order: str) -> int:
    """:func:`write_input` in a subprocess: the parent stays small (see ``--whole``)."""
    command = [sys.executable, __file__, "--write", str(source), "--order", order,
               "--images", str(args.images), "--tags", str(args.tags)]  # fmt: skip
    return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


async def serve_fake() -> None:
    """``bulktag serve-fake --api ims`` (defaults, a free port): print the URL, serve until
    stdin closes, then print what the fake counted as JSON."""
    from bulktag.fake.glance import serve
    from bulktag.fake.ims import FakeIms, FakeImsConfig

    fake = FakeIms(FakeImsConfig())
    async with serve(fake, "127.0.0.1", 0) as url:
        print(url, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
    counts: dict[int, int] = {}
    for tags in fake.kv.values():
        counts[len(tags)] = counts.get(len(tags), 0) + 1
    print(json.dumps({"calls": len(fake.calls), "requests": len(fake.requests),
                      "overlaps": fake.overlaps, "images_by_tag_count": counts}))  # fmt: skip


def run_whole(folder: Path, args: argparse.Namespace, order: str) -> Iterator[dict[str, object]]:
    source = folder / f"{order}.csv"
    rows = write_input_apart(source, args, order)
    ideal = args.images * math.ceil(args.tags / 10)
    for _ in range(args.runs):
        fake = subprocess.Popen([sys.executable, __file__, "--serve-fake"], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert fake.stdout is not None
        assert fake.stdin is not None
        url = fake.stdout.readline().strip()
        journal = folder / "results.jsonl"
        command = [sys.executable, "-m", "bulktag", "run", "--api", "ims", "--endpoint", url,
                   "--token", "t", "--project-id", "p", "--rate", "1000000",
                   "--burst", str(args.concurrency), "--concurrency", str(args.concurrency),
                   "--results", str(journal), "--fresh", "--summary", "json",
                   "--log-format", "json", str(source)]  # fmt: skip
        started = time.monotonic()
        with open(folder / "stderr.log", "w") as log:
            run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
            assert run.stdout is not None
            out = run.stdout.read()
            _, status, usage = os.wait4(run.pid, 0)  # reaped here, for its rusage
            run.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        peak = usage.ru_maxrss
        fake.stdin.close()
        counted = json.loads(fake.stdout.read().splitlines()[-1])
        fake.wait()
        summary = json.loads(out.splitlines()[-1])
        full = counted["images_by_tag_count"].get(str(args.tags), 0)
        assert full == args.images, (counted, summary)  # every image holds all its keys
        assert counted["overlaps"] == 0, counted  # never two requests at once on an image
        requests = counted["calls"]
        yield {"order": order, "rows": rows, "ideal": ideal, "requests": requests,
                        "per_row": requests / rows, "x_ideal": requests / ideal,
                        "peak_rss_kib": peak, "seconds": round(seconds, 1),
                        "exit": summary.get("exit_code"),
                        "parent_kib": parent_rss_kib()}  # fmt: skip


def run_order(folder: Path, args: argparse.Namespace, order: str) -> dict[str, object]:
    source = folder / f"{order}.csv"
    rows = write_input_apart(source, args, order)
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
    parser.add_argument("--whole", action="store_true", help="measure `bulktag run` (see above)")
    parser.add_argument("--runs", type=int, default=1, help="with --whole: runs of each order")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write", help=argparse.SUPPRESS)
    parser.add_argument("--order", help=argparse.SUPPRESS)
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.write:
        print(write_input(Path(args.write), args.images, args.tags, args.order))
        return
    if args.serve_fake:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncio.run(serve_fake())
        return
    if args.whole:
        print(
            "| order | rows | requests | ideal | × ideal | requests/row | peak RSS MiB | s "
            "| exit | parent MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        with tempfile.TemporaryDirectory() as folder:
            for order in args.orders.split(","):
                for f in run_whole(Path(folder), args, order):
                    print(f"| {order} | {f['rows']:,} | {f['requests']:,} | {f['ideal']:,} | "
                          f"{f['x_ideal']:.2f} | {f['per_row']:.3f} | "
                          f"{f['peak_rss_kib'] / 1024:.1f} | {f['seconds']} | {f['exit']} | "
                          f"{f['parent_kib'] / 1024:.0f} |", flush=True)  # fmt: skip
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
