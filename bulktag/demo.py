"""``bulktag demo``: a one-minute tour of a real run against the built-in fake Glance.

It starts the fake server in this process (with a capacity limit, random 503s and 429s, and
some unknown images), writes a small inventory, then runs the real ``bulktag run`` command in a
child process twice: the first run is interrupted with SIGINT part-way, the second resumes from
the journal and finishes. Nothing here is simulated on the client side: what you see is what an
operator's terminal or cron log shows.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import TextIO

import anyio

from bulktag.fake.glance import FakeGlance, FakeGlanceConfig, serve

IMAGES = 40
TAGS_PER_IMAGE = 5
UNKNOWN_IMAGES = 4
TOKEN = "demo-token-not-a-secret"
INTERRUPT_AFTER = 4.0  # seconds into the first run


def _image_ids(count: int, salt: int) -> list[str]:
    return [str(uuid.UUID(int=(salt << 64) | i)) for i in range(count)]


def write_inventory(path: Path) -> set[str]:
    """Images × tags, grouped by image as inventories usually are; plus a few bad rows."""
    known = _image_ids(IMAGES, 1)
    unknown = _image_ids(UNKNOWN_IMAGES, 2)
    lines = ["image_id,tag"]
    for image in known:
        lines += [f"{image},team-{n}" for n in range(TAGS_PER_IMAGE)]
    lines += [f"{image},orphaned" for image in unknown]
    lines += [f"{known[0]},has.dot", "not-a-uuid,web", f"{known[1]},"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return set(known)


def _say(out: TextIO, text: str = "") -> None:
    out.write(text + "\n")
    out.flush()


async def _run_bulktag(argv: list[str], out: TextIO, interrupt_after: float | None) -> int:
    _say(out, "$ bulktag " + " ".join(argv[3:]))
    env = {**os.environ, "OS_AUTH_TOKEN": TOKEN}
    async with await anyio.open_process(argv, stdin=None, stdout=None, stderr=None, env=env) as p:
        if interrupt_after is not None:
            with anyio.move_on_after(interrupt_after):
                await p.wait()
            if p.returncode is None:
                _say(out, "\n--- demo: sending SIGINT (as Ctrl-C, or systemd stopping the job) ---")
                p.send_signal(signal.SIGINT)
        code = await p.wait()
    _say(out, f"--- exit code {code} ---\n")
    return code


def _journal_story(journal: Path, out: TextIO) -> None:
    records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    outcomes = Counter(r["outcome"] for r in records)
    _say(out, f"{journal.name}: {len(records)} records, {dict(outcomes)}; one of each kind:")
    shown: set[str] = set()
    for record in records:
        if record["outcome"] not in shown:
            shown.add(record["outcome"])
            _say(out, "  " + json.dumps(record))
    _say(out)


async def _tour(workdir: Path, out: TextIO) -> int:
    inventory = workdir / "inventory.csv"
    journal = workdir / "journal.jsonl"
    known = write_inventory(inventory)
    fake = FakeGlance(
        FakeGlanceConfig(
            token=TOKEN,
            known_images=known,
            latency=0.02,
            capacity=25.0,
            fail_503=0.03,
            fail_429=0.02,
            retry_after="1",
            seed=7,
        )
    )
    async with serve(fake) as url:
        _say(
            out,
            f"A fake Glance is listening on {url}: it accepts 25 requests/s, answers "
            "some 503s and 429s at random, and knows "
            f"{IMAGES} of the {IMAGES + UNKNOWN_IMAGES} images in {inventory}.\n"
            "We ask bulktag for 40 requests/s: it must find the server's pace by itself.\n",
        )
        argv = [
            sys.executable,
            "-m",
            "bulktag",
            "run",
            str(inventory),
            "--endpoint",
            url,
            "--results",
            str(journal),
            "--rate",
            "40",
            "--concurrency",
            "8",
            "--log-format",
            "console",
            "--grace-period",
            "2",
        ]
        first = await _run_bulktag(argv, out, INTERRUPT_AFTER)
        _journal_story(journal, out)
        _say(out, "Same command again: it resumes from the journal, skipping what is settled.")
        second = await _run_bulktag(argv, out, None)
        _journal_story(journal, out)
        statuses = Counter(r.status for r in fake.requests)
        _say(
            out,
            f"The server saw {len(fake.requests)} requests ({dict(statuses)}); at most "
            f"{fake.max_in_flight_per_image} at a time on any one image.",
        )
        _say(
            out,
            "Exit code 1 means: finished, but some rows failed or were invalid "
            "(the unknown images and the bad rows). See README.md for all exit codes.",
        )
        return _verdict(first, second, fake, journal, out)


def _verdict(first: int, second: int, fake: FakeGlance, journal: Path, out: TextIO) -> int:
    """The demo itself succeeds (exit 0) when the tour went as designed."""
    expected = IMAGES * TAGS_PER_IMAGE
    stored = sum(len(fake.tags_of(image)) for image in _image_ids(IMAGES, 1))
    records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    ok_pairs = [(r["image_id"], r["tag"]) for r in records if r["outcome"] == "ok"]
    once = len(ok_pairs) == len(set(ok_pairs)) == expected
    if (first, second, stored, fake.max_in_flight_per_image, once) == (130, 1, expected, 1, True):
        _say(
            out,
            f"demo: as expected - all {expected} tags stored, nothing recorded twice "
            "across the resume, one request at a time per image.",
        )
        return 0
    _say(
        out,
        f"demo: UNEXPECTED - exit codes {first}/{second} (expected 130/1), "
        f"{stored}/{expected} tags stored, {fake.max_in_flight_per_image} at once per image",
    )
    return 1


def run_demo(out: TextIO) -> int:
    with tempfile.TemporaryDirectory(prefix="bulktag-demo-") as tmp:
        return anyio.run(_tour, Path(tmp), out)
