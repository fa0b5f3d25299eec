"""Running the real engine, over real HTTP, against the fake Glance, inside one test.

Everything above the transport is real: the aiohttp session, the limiter, the pacer, the
scheduler, the journal file. Only the sleeps of the retry policy are made short.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulktag.admission import Op
from bulktag.auth import StaticToken, TokenProvider
from bulktag.engine import Engine, EngineSettings, RunReport, one_tag_at_a_time
from bulktag.journal import JournalWriter, ResumeIndex, load_index, read_lines
from bulktag.policy import RetryPolicy
from bulktag.source import open_text, read_rows
from bulktag.transport import GlanceTransport, make_session

TOKEN = "test-token"
FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, max_retry_after=0.2)


def image(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def csv_of(pairs: Iterable[tuple[str, str]]) -> bytes:
    return ("image_id,tag\n" + "".join(f"{i},{t}\n" for i, t in pairs)).encode()


def grid(images: int, tags: int) -> list[tuple[str, str]]:
    """Pairs grouped by image, the way inventories usually come."""
    return [(image(i), f"tag{t}") for i in range(images) for t in range(tags)]


def settings(**overrides: Any) -> EngineSettings:
    base: dict[str, Any] = {"rate": 2000.0, "burst": 50, "concurrency": 16, "retry": FAST_RETRY}
    return EngineSettings(**(base | overrides))


@dataclass
class Outcome:
    report: RunReport
    records: list[dict[str, Any]]
    engine: Engine

    def by_pair(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["image_id"], r["tag"]): r for r in self.records}


@dataclass
class Harness:
    url: str
    journal: Path
    tokens: TokenProvider = field(default_factory=lambda: StaticToken(TOKEN))

    def index(self) -> ResumeIndex:
        if not self.journal.exists():
            return ResumeIndex.empty()
        return load_index(read_lines(self.journal))

    def records(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]

    def engine(self, session: Any, engine_settings: EngineSettings, timeout: float) -> Engine:
        transport = GlanceTransport(session, self.url, timeout)
        writer = JournalWriter(self.journal, fsync_interval=0)
        send = transport.put_tag if engine_settings.op is Op.ADD else transport.delete_tag
        return Engine(engine_settings, one_tag_at_a_time(send), self.tokens, writer, self.index())

    async def run(
        self,
        data: bytes,
        engine_settings: EngineSettings | None = None,
        request_timeout: float = 2.0,
    ) -> Outcome:
        engine_settings = engine_settings or settings()
        before = len(self.records())
        async with make_session(engine_settings.concurrency, request_timeout) as session:
            engine = self.engine(session, engine_settings, request_timeout)
            report = await engine.run(read_rows(open_text(io.BytesIO(data))))
        return Outcome(report, self.records()[before:], engine)
