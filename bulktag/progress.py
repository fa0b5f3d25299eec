"""Progress while a run goes: a live status line on a terminal, a log event now and then in cron.

A terminal gets a single line redrawn twice a second. Anywhere else (cron, systemd, a pipe)
a redrawn line would fill the log with carriage returns, so instead one structured
``progress`` event is logged every ``interval`` seconds.
"""

from __future__ import annotations

import time
from typing import TextIO

import anyio
import structlog

from bulktag.engine import Engine
from bulktag.model import Outcome

_TTY_REFRESH = 0.5


def status_text(engine: Engine, elapsed: float) -> str:
    tally = engine.tally
    done = tally.outcomes[Outcome.OK]
    problems = tally.problems
    rate = tally.attempts / elapsed if elapsed > 0 else 0.0
    parts = [
        f"{tally.read:,} read",
        f"{done:,} ok",
        f"{problems:,} not ok" if problems else "",
        f"{tally.skipped_done:,} already done" if tally.skipped_done else "",
        f"{rate:,.1f} req/s",
        f"limit {engine.pacer.state.rate:,.1f}/s" if engine.pacer.state.throttled else "",
        f"{int(elapsed // 60):02d}:{int(elapsed % 60):02d}",
    ]
    return " · ".join(p for p in parts if p)


async def show_progress(engine: Engine, stream: TextIO, interval: float, tty: bool) -> None:
    """Runs until cancelled."""
    started = time.monotonic()
    if tty:
        try:
            while True:
                await anyio.sleep(_TTY_REFRESH)
                stream.write("\r\x1b[K" + status_text(engine, time.monotonic() - started))
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
            ok=tally.outcomes[Outcome.OK],
            not_ok=tally.problems,
            skipped_done=tally.skipped_done,
            requests=tally.attempts,
            allowed_rate=round(engine.pacer.state.rate, 2),
        )
