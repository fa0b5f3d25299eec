"""Running the real engine, over real HTTP, against the fake Glance, inside one test.

Everything above the transport is real: the aiohttp session, the limiter, the pacer, the
scheduler, the journal file. Only the sleeps of the retry policy are made short.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import grouped, image

from bulktag.auth import StaticToken, TokenProvider
from bulktag.engine import Engine, EngineSettings, RunReport, SendBatch
from bulktag.fake.glance import FakeGlance, serve
from bulktag.journal import JournalWriter, ResumeIndex, load_index, read_blocks
from bulktag.model import Api, Op
from bulktag.policy import RetryPolicy
from bulktag.source import GLANCE_RULES, TagRules, ims_rules, open_text, read_rows
from bulktag.transport import GlanceTransport, ImsTransport, make_session

TOKEN = "test-token"
PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, max_retry_after=0.2)


def outcomes(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many records of each outcome."""
    return dict(Counter(r["outcome"] for r in records))


def grid(images: int, tags: int) -> list[tuple[str, str]]:
    """Pairs grouped by image, the way inventories usually come."""
    return grouped((image(i) for i in range(images)), tags, prefix="tag")


def settings(**overrides: Any) -> EngineSettings:
    base: dict[str, Any] = {"rate": 2000.0, "burst": 50, "concurrency": 16, "retry": FAST_RETRY}
    return EngineSettings(**(base | overrides))


def ims_settings(**overrides: Any) -> EngineSettings:
    """Settings of an IMS run: ten tags of an image per request, a short linger."""
    base: dict[str, Any] = {"api": Api.IMS, "batch_size": 10, "batch_linger": 0.02}
    return settings(**(base | overrides))


def kv_csv(rows: Iterable[tuple[str, str, str | None]]) -> bytes:
    """``image_id,key,value`` input; a value of None makes a two-column (bare key) row."""
    lines = (f"{i},{k}" if v is None else f"{i},{k},{v}" for i, k, v in rows)
    return "".join(line + "\n" for line in lines).encode()


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
        return load_index(read_blocks(self.journal))

    def records(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]

    def engine(self, session: Any, engine_settings: EngineSettings, timeout: float) -> Engine:
        writer = JournalWriter(self.journal, fsync_interval=0)
        adding = engine_settings.op is Op.ADD
        send: SendBatch
        if engine_settings.api is Api.IMS:
            ims = ImsTransport(session, self.url, PROJECT, timeout)
            send = ims.add_tags if adding else ims.remove_tags
        else:
            glance = GlanceTransport(session, self.url, timeout)
            send = glance.add_tags if adding else glance.remove_tags
        return Engine(engine_settings, send, self.tokens, writer, self.index())

    async def run(
        self,
        data: bytes,
        engine_settings: EngineSettings | None = None,
        request_timeout: float = 2.0,
        rules: TagRules | None = None,
    ) -> Outcome:
        engine_settings = engine_settings or settings()
        if rules is None:
            rules = ims_rules() if engine_settings.api is Api.IMS else GLANCE_RULES
        before = len(self.records())
        async with make_session(engine_settings.concurrency, request_timeout) as session:
            engine = self.engine(session, engine_settings, request_timeout)
            report = await engine.run(read_rows(open_text(io.BytesIO(data)), rules))
        return Outcome(report, self.records()[before:], engine)


async def run_against(
    server: FakeGlance,
    workdir: Path,
    data: bytes,
    engine_settings: EngineSettings | None = None,
    **run_options: Any,
) -> Outcome:
    """One :meth:`Harness.run`, journal in ``workdir``, against ``server`` served on a free
    port for just that run: what most engine tests need, with a fresh fake each."""
    async with serve(server) as url:
        return await Harness(url, workdir / "j.jsonl").run(data, engine_settings, **run_options)
