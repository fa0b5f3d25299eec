"""Progress while a run goes: a live status line on a terminal, a log event now and then in cron.

A terminal gets a single line redrawn twice a second. Anywhere else (cron, systemd, a pipe)
a redrawn line would fill the log with carriage returns, so instead one structured
``progress`` event is logged every ``interval`` seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

import anyio
import structlog

from bulktag.engine import Engine
from bulktag.model import Outcome

_TTY_REFRESH = 0.5


def count_lines(path: Path, chunk: int = 1 << 20) -> int:
    """Lines in a file (an upper bound on its rows: headers, comments and blanks count too)."""
    lines = 0
    last = b"\n"
    with path.open("rb") as data:
        while block := data.read(chunk):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _position(read: int, total: int | None, elapsed: float) -> str:
    if not total:
        return f"{read:,} read"
    share = min(1.0, read / total)
    eta = ""
    if 0.01 <= share < 1.0 and elapsed > 5:
        left = elapsed * (1 - share) / share
        eta = f", ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
    return f"{read:,}/{total:,} lines ({share:.0%}{eta})"


def status_text(engine: Engine, elapsed: float, total: int | None = None) -> str:
    tally = engine.tally
    done = tally.outcomes[Outcome.OK]
    problems = tally.problems
    rate = tally.attempts / elapsed if elapsed > 0 else 0.0
    parts = [
        _position(tally.read, total, elapsed),
        f"{done:,} ok",
        f"{problems:,} not ok" if problems else "",
        f"{tally.skipped_done:,} already done" if tally.skipped_done else "",
        f"{rate:,.1f} req/s",
        f"limit {engine.pacer.rate:,.1f}/s" if engine.pacer.throttled else "",
        f"{int(elapsed // 60):02d}:{int(elapsed % 60):02d}",
    ]
    return " · ".join(p for p in parts if p)


async def show_progress(
    engine: Engine, stream: TextIO, interval: float, tty: bool, total: int | None = None
) -> None:
    """Runs until cancelled. ``total``: lines in the input file, when it is a file."""
    started = time.monotonic()
    if tty:
        try:
            while True:
                await anyio.sleep(_TTY_REFRESH)
                text = status_text(engine, time.monotonic() - started, total)
                stream.write("\r\x1b[K" + text)
                stream.flush()
        finally:
            stream.write("\r\x1b[K")
            stream.flush()
    log = structlog.get_logger()
    while True:
        await anyio.sleep(interval)
        tally = engine.tally
        log.info(
            "progress",
            read=tally.read,
            input_lines=total,
            ok=tally.outcomes[Outcome.OK],
            not_ok=tally.problems,
            skipped_done=tally.skipped_done,
            requests=tally.attempts,
            allowed_rate=round(engine.pacer.rate, 2),
        )
