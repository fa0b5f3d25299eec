"""The six scenarios of issue 5 and the pacing matrix of issue 13 (``pacing_matrix.py``),
each returning a :class:`report.Table`.

Every scenario generates its inputs in the harness's work directory, starts the endpoints it
needs (stopped again when it returns, even on an exception), runs the clients interleaved —
repetition ``r`` starts with a different client than ``r - 1`` — and summarises the samples as
medians and ranges. Figures of a failed run are left out and the failure is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pacing_matrix
import workloads
from endpoints import AiohttpServer, Nginx, Server
from harness import (
    BULKTAG,
    BULKTAG_ASYNCIO,
    MINIMAL_ASYNCIO,
    MINIMAL_UVLOOP,
    OPENSTACKSDK,
    Client,
    Harness,
    Job,
    Sample,
    interleaved,
)
from report import Table, spread, verdict

MIB = 2**20


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is; ``run.py`` picks full, quick or smoke."""

    repetitions: int
    # Throughput is CPU-bound, and CPU time on this shared machine moves by ±10% between two
    # runs of the same client (84.6–102.6 µs a pair over ten runs in a row): more repetitions
    # for the medians of the scenario whose targets are closest to that noise.
    throughput_repetitions: int
    throughput_pairs: int
    sdk_pairs: int  # openstacksdk is ~20x slower: fewer pairs, same per-pair figures
    latency_round_trips: int  # pairs = concurrency x this
    rate_seconds: float
    adaptive_capacity: int
    adaptive_seconds: float
    memory_pairs: tuple[int, ...]
    resume_records: tuple[int, ...]
    single_run_from: int  # sizes at or above this are measured once (they take minutes)
    pacing: pacing_matrix.PacingSizes


# A full run fits in ~20 minutes on 2 cores; the 1M-pair memory run and the 10M-record resume
# are most of it.
FULL = Sizes(
    repetitions=3,
    throughput_repetitions=5,
    throughput_pairs=50_000,
    sdk_pairs=2_000,
    latency_round_trips=300,
    rate_seconds=10,
    adaptive_capacity=500,
    adaptive_seconds=15,
    memory_pairs=(10_000, 100_000, 1_000_000),
    resume_records=(100_000, 1_000_000, 10_000_000),
    single_run_from=1_000_000,
    pacing=pacing_matrix.FULL,
)
QUICK = Sizes(
    repetitions=2,
    throughput_repetitions=2,
    throughput_pairs=20_000,
    sdk_pairs=1_000,
    latency_round_trips=150,
    rate_seconds=8,
    adaptive_capacity=500,
    adaptive_seconds=8,
    memory_pairs=(10_000, 100_000),
    resume_records=(100_000, 1_000_000),
    single_run_from=1_000_000,
    pacing=pacing_matrix.QUICK,
)
# Every code path once, in well under a minute: for CI, which must never judge timings.
SMOKE = Sizes(
    repetitions=1,
    throughput_repetitions=1,
    throughput_pairs=500,
    sdk_pairs=50,
    latency_round_trips=10,
    rate_seconds=2,
    adaptive_capacity=200,
    adaptive_seconds=2,
    memory_pairs=(1_000, 5_000),
    resume_records=(1_000, 10_000),
    single_run_from=1_000_000,
    pacing=pacing_matrix.SMOKE,
)


@dataclass(slots=True)
class Context:
    """What every scenario gets: the harness, the sizes, and the shared fast endpoint."""

    harness: Harness
    sizes: Sizes
    stack: ExitStack
    _fast: Server | None = None

    def fast_endpoint(self, table: Table) -> Server:
        """nginx, started on first use and shared; servers.py where nginx is not installed.

        The fallback keeps a smoke run meaningful on a machine without nginx (CI), but an
        aiohttp server costs about as much per request as the client, so its figures are noted
        as not comparable.
        """
        tools = self.harness.tools
        if self._fast is None:
            server: Server
            if tools.nginx is not None:
                server = Nginx(tools.nginx, tools.server_core)
            else:
                log = self.harness.workdir / "servers.log"
                server = AiohttpServer(tools.python, tools.server_core, [], log, tools.env)
            self._fast = self.stack.enter_context(server)
        if isinstance(self._fast, AiohttpServer):
            table.notes.append(
                "nginx is not installed (apt-get install nginx-light): measured against "
                "servers.py instead, which is slow enough to limit the clients"
            )
        return self._fast

    def aiohttp_server(self, stack: ExitStack, flags: list[str]) -> AiohttpServer:
        tools = self.harness.tools
        log = self.harness.workdir / "servers.log"
        server = AiohttpServer(tools.python, tools.server_core, flags, log, tools.env)
        return stack.enter_context(server)

    def path(self, name: str) -> Path:
        return self.harness.workdir / name

    def available(self, clients: Sequence[Client], table: Table) -> list[Client]:
        """The clients that can run here; a note in ``table`` for each that cannot."""
        usable = []
        for client in clients:
            why = client.needs(self.harness.tools)
            if why is None:
                usable.append(client)
            else:
                table.notes.append(f"{client.name} skipped: {why}")
        return usable

    def reps(self, size: int) -> int:
        return 1 if size >= self.sizes.single_run_from else self.sizes.repetitions


class SkipScenario(Exception):
    """The scenario cannot run on this machine; the message says why."""


def ok(samples: Sequence[Sample]) -> list[Sample]:
    return [s for s in samples if s.failure is None]


def paired_ratios(
    mine: Sequence[Sample], theirs: Sequence[Sample], figure: Callable[[Sample], float]
) -> list[float]:
    """``figure(mine) / figure(theirs)`` per repetition; both lists are in repetition order."""
    return [
        figure(a) / figure(b)
        for a, b in zip(mine, theirs, strict=True)
        if a.failure is None and b.failure is None and figure(b) > 0
    ]


def require_bulktag(ctx: Context) -> None:
    if ctx.harness.tools.bulktag_missing:
        raise SkipScenario(f"bulktag CLI unavailable: {ctx.harness.tools.bulktag_missing}")


# ── 1. throughput against a fast endpoint ────────────────────────────────────────────────────


def throughput(ctx: Context) -> Table:
    sizes = ctx.sizes
    table = Table(
        "1. Throughput against a fast endpoint (nginx answering 204)",
        f"{sizes.throughput_pairs:,} pairs ({sizes.sdk_pairs:,} for openstacksdk), 2 tags per "
        "image, concurrency 64; bulktag with journal, limiter (`--rate 1000000 --burst 64`), "
        "per-image scheduling and JSON logging on. *pairs/s* is process start to exit; "
        "*steady* is the server's view, first to last PUT, without start-up; *start-up* is "
        "the wall time of a 1-pair run; *server busy* is the server's CPU share of the run.",
        ["client", "pairs/s", "steady pairs/s", "CPU ms/pair", "peak RSS MiB", "start-up s",
         "server busy"],
    )  # fmt: skip
    # Each bulktag variant runs right next to the baseline it is compared with: a ratio is
    # taken per repetition, and two runs close in time share more of the machine's load.
    pairs = [[BULKTAG, MINIMAL_UVLOOP], [BULKTAG_ASYNCIO, MINIMAL_ASYNCIO], [OPENSTACKSDK]]
    clients = ctx.available([c for pair in pairs for c in pair], table)
    groups = [[c for c in pair if c in clients] for pair in pairs]
    server = ctx.fast_endpoint(table)
    big = workloads.write_csv(ctx.path("throughput.csv"), sizes.throughput_pairs)
    small = workloads.write_csv(ctx.path("throughput-sdk.csv"), sizes.sdk_pairs)
    one = workloads.write_csv(ctx.path("one.csv"), 1)
    url = server.base_url
    runs: dict[str, list[Sample]] = {c.name: [] for c in clients}
    starts: dict[str, list[Sample]] = {c.name: [] for c in clients}
    for client in clients:  # warm-up: byte-code caches, page cache, first connections
        ctx.harness.run(client, Job(one, 1, url), server, expect_puts=1)
    for rep in range(sizes.throughput_repetitions):
        ctx.harness.log(f"  repetition {rep + 1}/{sizes.throughput_repetitions}")
        for group in paired_order(groups, rep):
            for client in group:
                sdk = client is OPENSTACKSDK
                csv, n = (small, sizes.sdk_pairs) if sdk else (big, sizes.throughput_pairs)
                runs[client.name].append(ctx.harness.run(client, Job(csv, n, url), server, n))
            for client in group:
                starts[client.name].append(ctx.harness.run(client, Job(one, 1, url), server, 1))
    for client in clients:
        good = ok(runs[client.name])
        table.rows.append([
            client.name,
            spread([s.rate for s in good]),
            spread([s.server_rate for s in good]),
            spread([s.cpu_ms_per_pair for s in good], ".3f"),
            spread([s.measurement.peak_rss_mib for s in good], ".0f"),
            spread([s.measurement.wall_s for s in ok(starts[client.name])], ".2f"),
            spread([100 * s.server_cpu_s / s.measurement.wall_s for s in good], ".0f", "%"),
        ])  # fmt: skip
    table.notes.extend(throughput_ratios(runs, clients))
    return table


def paired_order(groups: Sequence[Sequence[Client]], repetition: int) -> list[list[Client]]:
    """The groups rotated by the repetition number (no group always first or last), and
    within each group the clients forwards, then backwards (ABBA: none always runs first)."""
    forwards = repetition % 2 == 0
    return [list(g if forwards else reversed(g)) for g in interleaved(groups, repetition) if g]


def throughput_ratios(runs: dict[str, list[Sample]], clients: Sequence[Client]) -> list[str]:
    """One note per baseline: the bulktag variant on the same event loop ÷ that baseline."""
    targets = {MINIMAL_ASYNCIO.name: 0.9, MINIMAL_UVLOOP.name: 0.9, OPENSTACKSDK.name: 15.0}
    notes = [
        f"{c.name} ran on: {bulktag_loop(runs[c.name]) or 'unknown'} (its `run_started` event)"
        for c in clients
        if c.is_bulktag
    ]
    for client in clients:
        mine = bulktag_runs_for(client, runs, clients)
        if client.is_bulktag or mine is None:
            continue
        name, samples = mine
        e2e = paired_ratios(samples, runs[client.name], lambda s: s.rate)
        steady = paired_ratios(samples, runs[client.name], lambda s: s.server_rate)
        # Their CPU per pair over ours: the throughput ratio a CPU-bound client would reach on
        # an otherwise idle core, and the figure least disturbed by other load on the machine.
        cpu = paired_ratios(runs[client.name], samples, lambda s: s.cpu_ms_per_pair)
        target = targets[client.name]
        met = verdict(statistics.median(e2e) >= target) if e2e else "—"
        notes.append(
            f"{name} ÷ {client.name}: throughput {spread(e2e, '.2f')}× start-to-exit, "
            f"{spread(steady, '.2f')}× steady; CPU efficiency {spread(cpu, '.2f')}× "
            f"(target ≥ {target}× throughput; met: {met})"
        )
    return notes


def bulktag_runs_for(
    baseline: Client, runs: dict[str, list[Sample]], clients: Sequence[Client]
) -> tuple[str, list[Sample]] | None:
    """The bulktag variant to compare ``baseline`` with: the one on the same event loop (the
    issue compares like with like); plain bulktag for a baseline on no particular loop."""
    candidates = [c for c in clients if c.is_bulktag]
    if baseline.loop is not None:
        candidates = [c for c in candidates if bulktag_loop(runs[c.name]) == baseline.loop]
    if not candidates:
        return None
    return candidates[0].name, runs[candidates[0].name]


def bulktag_loop(samples: Sequence[Sample]) -> str | None:
    """The event loop bulktag reported using, if every run agrees (None if unknown)."""
    loops = {s.summary.get("event_loop") for s in samples if s.failure is None}
    return loops.pop() if len(loops) == 1 and None not in loops else None


# ── 2. latency-bound throughput ──────────────────────────────────────────────────────────────


def latency(ctx: Context) -> Table:
    table = Table(
        "2. Latency-bound throughput (server waits 10 ms per PUT)",
        f"aiohttp.web server in its own process adding 10 ms to every PUT; "
        f"{ctx.sizes.latency_round_trips} round trips per connection (pairs = concurrency × "
        f"{ctx.sizes.latency_round_trips}). *ceiling* = concurrency ÷ 10 ms.",
        [
            "concurrency",
            "client",
            "pairs/s",
            "% of ceiling",
            "CPU ms/pair",
            "bulktag on this loop ÷ this",
            "≥ 0.95×",
        ],
    )
    clients = ctx.available([BULKTAG, BULKTAG_ASYNCIO, MINIMAL_ASYNCIO, MINIMAL_UVLOOP], table)
    with ExitStack() as stack:
        server = ctx.aiohttp_server(stack, ["--delay-ms", "10"])
        for concurrency in (16, 64):
            latency_at(ctx, table, clients, server, concurrency)
    if BULKTAG in clients:
        table.notes.append(
            "target: bulktag ≥ 0.95× the minimal client on the same event loop; *bulktag on "
            "this loop ÷ this* is the throughput of the bulktag variant whose `run_started` "
            "event names this row's loop, divided by this row's"
        )
    return table


def latency_at(
    ctx: Context, table: Table, clients: Sequence[Client], server: Server, concurrency: int
) -> None:
    pairs = concurrency * ctx.sizes.latency_round_trips
    csv = workloads.write_csv(ctx.path(f"latency-{concurrency}.csv"), pairs)
    runs: dict[str, list[Sample]] = {c.name: [] for c in clients}
    job = Job(csv, pairs, server.base_url, concurrency=concurrency, burst=concurrency)
    for rep in range(ctx.sizes.repetitions):
        ctx.harness.log(f"  concurrency {concurrency}, repetition {rep + 1}")
        for client in interleaved(clients, rep):
            runs[client.name].append(ctx.harness.run(client, job, server, pairs))
    ceiling = concurrency / 0.010
    for client in clients:
        good = ok(runs[client.name])
        ratio, met = "—", "—"
        mine = None if client.is_bulktag else bulktag_runs_for(client, runs, clients)
        if mine is not None:
            ratios = paired_ratios(mine[1], runs[client.name], lambda s: s.rate)
            ratio = spread(ratios, ".2f") + "×"
            met = verdict(statistics.median(ratios) >= 0.95 if ratios else None)
        table.rows.append([
            str(concurrency),
            client.name,
            spread([s.rate for s in good]),
            spread([100 * s.rate / ceiling for s in good], ".0f", "%"),
            spread([s.cpu_ms_per_pair for s in good], ".3f"),
            ratio,
            met,
        ])  # fmt: skip


# ── 3. rate accuracy ─────────────────────────────────────────────────────────────────────────


def rate_accuracy(ctx: Context) -> Table:
    require_bulktag(ctx)
    seconds = ctx.sizes.rate_seconds
    table = Table(
        "3. Rate accuracy",
        f"bulktag `--rate R --burst B --concurrency 64`, R × {seconds:g} s worth of pairs, "
        "against an aiohttp.web server that records every PUT's arrival time. B = 1 is a "
        "one-request bucket (the strictest); B = R/50 is bulktag's default burst, small "
        "enough that rate + burst stays within the +5% window target. *achieved* is PUTs ÷ "
        "(last − first arrival); *worst 1 s* is the most arrivals in any sliding one-second "
        "window.",
        ["--rate", "--burst", "achieved /s", "error", "worst 1 s window", "over rate",
         "pace cuts", "target met"],
    )  # fmt: skip
    with ExitStack() as stack:
        server = ctx.aiohttp_server(stack, [])
        for rate in (100, 1000):
            pairs = int(rate * seconds)
            csv = workloads.write_csv(ctx.path(f"rate-{rate}.csv"), pairs)
            bursts = (1, max(2, rate // 50))
            runs: dict[int, list[Sample]] = {burst: [] for burst in bursts}
            for rep in range(ctx.sizes.repetitions):
                ctx.harness.log(f"  --rate {rate}, repetition {rep + 1}")
                for burst in interleaved(bursts, rep):
                    job = Job(csv, pairs, server.base_url, rate=rate, burst=burst,
                              timeout_s=seconds * 10 + 60)  # fmt: skip
                    runs[burst].append(ctx.harness.run(BULKTAG, job, server, pairs))
            table.rows.extend(rate_row(rate, burst, ok(runs[burst])) for burst in bursts)
    table.notes.append("target: achieved within 2% of --rate, no one-second window above rate + 5%")
    return table


def rate_row(rate: int, burst: int, good: Sequence[Sample]) -> list[str]:
    errors = [100 * (s.server_rate - rate) / rate for s in good]
    excess = [100 * (s.worst_window - rate) / rate for s in good]
    met = None
    if good:
        met = all(abs(e) <= 2 for e in errors) and all(x <= 5 for x in excess)
    return [
        str(rate),
        str(burst),
        spread([s.server_rate for s in good], ",.1f"),
        spread(errors, "+.2f", "%"),
        spread([float(s.worst_window) for s in good]),
        spread(excess, "+.1f", "%"),
        pace_cuts(good),
        verdict(met),
    ]


def pace_cuts(good: Sequence[Sample]) -> str:
    """How often bulktag's adaptive pacer slowed down, per run, from its own summary."""
    cuts = [float(s.summary["pace_cuts"]) for s in good if "pace_cuts" in s.summary]
    return spread(cuts) if cuts else "—"


# ── 4. adaptive pacing ───────────────────────────────────────────────────────────────────────


def adaptive(ctx: Context) -> Table:
    require_bulktag(ctx)
    capacity = ctx.sizes.adaptive_capacity
    pairs = int(capacity * ctx.sizes.adaptive_seconds)
    asked = 4 * capacity
    table = Table(
        "4. Adaptive pacing against a capacity-limited server",
        f"aiohttp.web server admitting {capacity} PUTs/s (token bucket, burst {capacity // 10}) "
        f"and answering 503 beyond; bulktag asked for `--rate {asked} --concurrency 64` "
        f"(4× what the server takes) with `--burst {asked // 50}`, {pairs:,} pairs. *goodput* "
        "is accepted PUTs per second of the server's first-to-last arrival.",
        ["capacity /s", "goodput /s", "% of capacity", "rejected", "pairs/s start-to-exit",
         "pace cuts", "target met"],
    )  # fmt: skip
    with ExitStack() as stack:
        server = ctx.aiohttp_server(stack, ["--capacity", str(capacity)])
        csv = workloads.write_csv(ctx.path("adaptive.csv"), pairs)
        # Burst rate/50 (bulktag's default), not 1: with burst 1 the limiter alone
        # under-delivers (scenario 3), which would blur what adaptive pacing does.
        job = Job(csv, pairs, server.base_url, rate=asked, burst=asked // 50)
        samples = []
        for rep in range(ctx.sizes.repetitions):
            ctx.harness.log(f"  repetition {rep + 1}")
            samples.append(ctx.harness.run(BULKTAG, job, server, expect_puts=None))
    good = ok(samples)
    rejected = [100 * s.rejected / max(1, s.puts) for s in good]
    share = [100 * s.goodput / capacity for s in good]
    met = None
    if good:
        met = statistics.median(share) >= 85 and statistics.median(rejected) <= 10
    table.rows.append([
        str(capacity), spread([s.goodput for s in good]), spread(share, ".0f", "%"),
        spread(rejected, ".1f", "%"), spread([s.rate for s in good]), pace_cuts(good),
        verdict(met),
    ])  # fmt: skip
    table.notes.append("target: goodput ≥ 85% of capacity with ≤ 10% of PUTs rejected")
    return table


# ── 5. memory ────────────────────────────────────────────────────────────────────────────────


def memory(ctx: Context) -> Table:
    require_bulktag(ctx)
    table = Table(
        "5. Memory: peak RSS by input size",
        "bulktag against nginx, concurrency 64, no rate limit in effect; peak RSS is the "
        "kernel's `ru_maxrss` for the bulktag process. The million-pair run is measured once "
        "(it takes minutes).",
        ["pairs", "peak RSS MiB", "pairs/s", "CPU ms/pair", "runs"],
    )
    server = ctx.fast_endpoint(table)
    peaks: dict[int, float] = {}
    for pairs in ctx.sizes.memory_pairs:
        csv = workloads.write_csv(ctx.path(f"memory-{pairs}.csv"), pairs)
        job = Job(csv, pairs, server.base_url, timeout_s=max(600.0, pairs / 500))
        samples = []
        for rep in range(ctx.reps(pairs)):
            ctx.harness.log(f"  {pairs:,} pairs, repetition {rep + 1}")
            samples.append(ctx.harness.run(BULKTAG, job, server, pairs))
        csv.unlink()
        good = ok(samples)
        rss = [s.measurement.peak_rss_mib for s in good]
        if rss:
            peaks[pairs] = statistics.median(rss)
        table.rows.append([
            f"{pairs:,}", spread(rss, ".0f"), spread([s.rate for s in good]),
            spread([s.cpu_ms_per_pair for s in good], ".3f"), str(len(good)),
        ])  # fmt: skip
    if len(peaks) >= 2:
        lo, hi = min(peaks), max(peaks)
        table.notes.append(
            f"growth from {lo:,} to {hi:,} pairs: {peaks[hi] - peaks[lo]:+.0f} MiB "
            f"(target: flat, ≤ 80 MiB at 1M pairs"
            + (f"; met: {verdict(peaks[hi] <= 80)})" if hi >= 1_000_000 else ")")
        )
    return table


# ── 6. resume ────────────────────────────────────────────────────────────────────────────────


RESUME_TARGETS = {1_000_000: (3.0, 200.0), 10_000_000: (30.0, 1024.0)}


def resume(ctx: Context) -> Table:
    require_bulktag(ctx)
    table = Table(
        "6. Resume over a finished journal",
        "A journal of N `ok` records (2 tags per image) and an input of the same N pairs: the "
        "resumed run sends nothing, so it measures loading the journal into the resume index "
        "and filtering the input against it.",
        ["journal records", "journal MiB", "wall s", "CPU s", "peak RSS MiB", "target",
         "target met"],
    )  # fmt: skip
    server = ctx.fast_endpoint(table)
    for records in ctx.sizes.resume_records:
        resume_at(ctx, table, server, records)
    return table


def resume_at(ctx: Context, table: Table, server: Server, records: int) -> None:
    journal, csv = ctx.path(f"resume-{records}.jsonl"), ctx.path(f"resume-{records}.csv")
    started = time.perf_counter()
    workloads.write_finished_journal(journal, csv, records)
    size_mib = journal.stat().st_size / MIB
    ctx.harness.log(f"  generated {records:,} records ({size_mib:,.0f} MiB) in "
                    f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    job = Job(csv, records, server.base_url, journal=journal, timeout_s=900)
    samples = []
    try:
        for rep in range(ctx.reps(records)):
            ctx.harness.log(f"  {records:,} records, repetition {rep + 1}")
            samples.append(ctx.harness.run(BULKTAG, job, server, expect_puts=0))
    finally:
        journal.unlink(missing_ok=True)
        csv.unlink(missing_ok=True)
    good = ok(samples)
    walls = [s.measurement.wall_s for s in good]
    rss = [s.measurement.peak_rss_mib for s in good]
    target = RESUME_TARGETS.get(records)
    met = None
    if target and good:
        met = statistics.median(walls) <= target[0] and statistics.median(rss) <= target[1]
    table.rows.append([
        f"{records:,}", f"{size_mib:,.0f}", spread(walls, ".2f"),
        spread([s.measurement.cpu_s for s in good], ".2f"), spread(rss, ".0f"),
        f"≤ {target[0]:g} s, ≤ {target[1]:g} MiB" if target else "—", verdict(met),
    ])  # fmt: skip


# ── 7. the pacing matrix ─────────────────────────────────────────────────────────────────────


def pacing(ctx: Context) -> Table:
    """Every server shape of issue 13 in real time: see pacing_matrix.py."""
    require_bulktag(ctx)
    return pacing_matrix.run(ctx.harness, ctx.sizes.pacing)


SCENARIOS: dict[str, Callable[[Context], Table]] = {
    "throughput": throughput,
    "latency": latency,
    "rate": rate_accuracy,
    "adaptive": adaptive,
    "memory": memory,
    "resume": resume,
    "pacing": pacing,
}
