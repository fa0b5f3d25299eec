"""The engine's own CPU per row, with a sender that answers 204 at once (no network at all).

    python benchmarks/engine_overhead.py [ROWS] [--loop uvloop|asyncio]

Everything a run does per row except HTTP: read and validate the CSV, the resume and duplicate
keys, per-image scheduling, the pacer and the limiter (at a rate that never binds), the
result, the journal line and its write. Prints CPU microseconds per row (process time, the
reader thread included). Run it pinned to one core for steadier figures:
``taskset -c 0 .venv/bin/python benchmarks/engine_overhead.py``. Not a scenario of run.py:
it isolates the engine for profiling (``py-spy record -- python benchmarks/engine_overhead.py``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio

from bulktag.auth.base import StaticToken
from bulktag.engine import Engine, EngineSettings
from bulktag.journal import JournalWriter, ResumeIndex
from bulktag.model import Answer
from bulktag.source import open_text, read_rows

ANSWER = Answer(status=204, request_id="req-0123456789abcdef0123456789abcdef")


async def answer_at_once(
    image_id: str, tags: Sequence[tuple[str, str | None]], token: str
) -> Answer:
    return ANSWER


def write_input(path: Path, rows: int) -> None:
    """Two tags per image, an image's tags next to each other."""
    with path.open("w") as out:
        out.write("image_id,tag\n")
        for n in range(rows // 2):
            image_id = uuid.UUID(int=n + 1)
            out.write(f"{image_id},alpha\n{image_id},beta\n")


async def measure(folder: Path, rows: int) -> float:
    source = folder / "input.csv"
    write_input(source, rows)
    settings = EngineSettings(rate=1e9, burst=64, concurrency=64)
    journal = JournalWriter(folder / "journal.jsonl")
    engine = Engine(settings, answer_at_once, StaticToken("t"), journal, ResumeIndex.empty())
    with source.open("rb") as binary:
        started = time.process_time()
        report = await engine.run(read_rows(open_text(binary)))
        spent = time.process_time() - started
    assert report.tally.attempts == rows, report.tally
    return spent / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="?", default=100_000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    options = {"use_uvloop": args.loop == "uvloop"}
    with tempfile.TemporaryDirectory() as folder:
        per_row = anyio.run(measure, Path(folder), args.rows, backend_options=options)
    print(f"{per_row:.1f} us of CPU per row ({args.rows:,} rows, {args.loop})")


if __name__ == "__main__":
    main()
