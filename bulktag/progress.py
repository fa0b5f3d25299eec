"""Progress while a run goes: a live status line on a terminal, a log event now and then in cron.

A terminal gets a single line redrawn twice a second. Anywhere else (cron, systemd, a pipe)
a redrawn line would fill the log with carriage returns, so instead one structured
``progress`` event is logged every ``interval`` seconds.

Progress is counted in settled rows — recorded (ok, failed, gave up, invalid) or skipped
(done before, still bad, duplicate, another shard) — not in rows read: the reader runs ahead
of the workers by up to thousands of rows, which made 300 of 301 lines read with 20 done
read as 100%. The read-ahead is shown apart; the ETA divides the rows left by the pace of
rows this run settled by sending (skips take no time, so they do not speed it up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio
import structlog

from bulktag.logs import CLEAR_LINE
from bulktag.model import Outcome
from bulktag.summary import Tally

if TYPE_CHECKING:
    from bulktag.engine import Engine

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


def settled(tally: Tally) -> int:
    """Rows this run is done with: recorded, or skipped without a request."""
    skipped = tally.skipped_done + tally.skipped_still_bad + tally.skipped_duplicate
    return tally.recorded + skipped + tally.skipped_other_shard


def position(tally: Tally, total: int | None, elapsed: float) -> str:
    """How far the run is: settled rows (of the input's lines, when it is a file), percent
    and ETA from them, and the rows read but not yet settled apart."""
    done = settled(tally)
    ahead = max(0, tally.read - done)
    shown_ahead = f" · {ahead:,} read ahead" if ahead else ""
    if not total:
        return f"{done:,} settled{shown_ahead}"
    share = min(1.0, done / total)  # lines: headers, comments and blanks are in the total
    eta = ""
    sent_pace = tally.recorded / elapsed if elapsed > 0 else 0.0
    if 0.01 <= share < 1.0 and elapsed > 5 and sent_pace > 0:
        eta = f", ETA {clock((total - done) / sent_pace)}"
    return f"{done:,}/{total:,} lines settled ({share:.0%}{eta}){shown_ahead}"


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


def status_text(engine: Engine, elapsed: float, total: int | None = None) -> str:
    tally = engine.tally
    done = tally.outcomes[Outcome.OK]
    problems = tally.problems
    rate = tally.attempts / elapsed if elapsed > 0 else 0.0
    parts = [
        position(tally, total, elapsed),
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
    if tty:
        await redraw(lambda elapsed: status_text(engine, elapsed, total), stream)
    log = structlog.get_logger()
    while True:
        await anyio.sleep(interval)
        tally = engine.tally
        log.info(
            "progress",
            settled=settled(tally),
            read=tally.read,
            input_lines=total,
            ok=tally.outcomes[Outcome.OK],
            not_ok=tally.problems,
            skipped_done=tally.skipped_done,
            requests=tally.attempts,
            allowed_rate=round(engine.pacer.rate, 2),
        )


async def redraw(text: Callable[[float], str], stream: TextIO) -> None:
    """A terminal's status line: ``text(seconds since the start)``, redrawn twice a second in
    place until cancelled, then wiped. Whatever else writes to ``stream`` meanwhile starts
    with ``CLEAR_LINE``."""
    started = time.monotonic()
    try:
        while True:
            await anyio.sleep(_TTY_REFRESH)
            stream.write(CLEAR_LINE + text(time.monotonic() - started))
            stream.flush()
    finally:
        stream.write(CLEAR_LINE)
        stream.flush()
