"""The pacer against the simulator's server models over several seeds and answer latencies,
in virtual time (about a minute of CPU): the figures quoted by the pacing commits of 2026-12-04.

    python benchmarks/pacing_sim_table.py

Each capacity-limited row: goodput ÷ capacity (min-max over 3 seeds × answers on time / 20 ms
late on average) and the worst refused share. Each random-refusal row: requests per second ÷
the asked rate. A capacity that drops to 25-50 % at 10 s and comes back: seconds to 80 % of
it (median, 90th percentile, worst, how many over the matrix's 5 s); one that stays down:
goodput and refused share meanwhile. Last, two runs sharing one limit, the second starting
with the first, 0.5 s or 3 s later, over the 16 seeds of tests/test_pacing_sim.py (8 with
late answers): the smaller run's share of the capacity, and the refused share of both runs'
requests; then two runs of 800 rows started together, over the time both run (as the
real-time matrix runs them), and two long runs judged from 100 to 120 s (does a split or a
flood last?), with requests on the pacer's grid and up to 2 ms off it (and 144 such starts:
16 seeds × 3 offsets × 0, 1 or 2 ms off the grid). Among the 800-row ones, runs started 0.3
or 0.6 s apart: the second joins the first while it still finds its pace. The test table
(tests/test_pacing_sim.py) asserts the targets on one seed; this shows the spread.

Far clouds (answers after 0.1-0.3 s; the limiters of test_a_far_cloud_is_paced_on_the_answers_
to_its_own_pace, 4 seeds × on time or late): at 0.3 s, the most requests sent in the first
half second and the refusals in the first 5 s (the upper median of 8, as the tests read it);
over 0.1, 0.2 and 0.3 s, the refused share from 5 s on (range, median) and the least goodput.
Then concurrency limits near the slow start's opening window, 100 ms ± 50 % in service:
goodput from 2 s on as a share of what the limit serves. Last of these, a bucket, a fixed
and a sliding window whose acceptances take 50 or 150 ms ± 50 % while refusals are answered
at once (a gateway in front of a backend that works, the common real shape; 4 seeds × on
time or late, odd seeds up to 2 ms off the grid, --rate 1000, 6,000 rows): the refusals in
the first 5 s (upper median of 8), the refused share from 5 s on and the goodput. And a
backend refusing 10, 20 or 30 % at any rate, at once, serving the rest in 50 or 150 ms
(--rate 300, the same 8 runs): requests per second from 2 s on ÷ the asked rate (a known
gap, RESULTS section 35); and a backend refusing 5-20 % asked 10 or 20 a second, over runs
of 20, 120 and 400 s (RESULTS section 44). Then a lone run with --rate far over the cloud's
pace, 1,000 to 100,000 asked of a 200/s limit: refused from 5 s on and goodput (RESULTS
section 39).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bulktag.fake.limiters import (
    Chain,
    ConcurrencyLimit,
    FixedWindow,
    PerRowRefusals,
    RandomRefusals,
    Refusal,
    Schedule,
    ServerModel,
    SlidingWindow,
    TokenBucket,
)
from tests.pacing_sim import Client, Serving, Simulation
from tests.test_pacing_sim import (
    FAR_CLOUD,
    LATE,
    TwoRuns,
    _two_runs,
    far_cloud_runs,
    far_cloud_serves,
    recovery_after_step_up,
    two_long_runs,
    two_runs,
    two_runs_started_50_ms_apart,
    two_runs_started_apart,
    two_runs_started_together,
)

SEEDS = range(3)
SPREADS = (0.0, 0.02)


def run(
    model: ServerModel, ceiling: float, rows: int, seed: int, spread: float, *, until: float = 400
) -> Client:
    sim = Simulation(model, spread=spread, seed=seed)
    client = sim.add_client(rows=rows, ceiling=ceiling)
    sim.run(until)
    return client


def limited(model: Callable[[], ServerModel], ceiling: float, rows: int, cap: float) -> str:
    seen = []
    for seed in SEEDS:
        for spread in SPREADS:
            client = run(model(), ceiling, rows, seed, spread)
            end = client.most_settled_at or client.end
            seen.append((client.goodput(2, end) / cap, client.refused_share))
    goodput = [g for g, _ in seen]
    refused = max(r for _, r in seen)
    return f"{min(goodput):.0%}-{max(goodput):.0%} of capacity, refused ≤ {refused:.1%}"


def random_share(share: float, ceiling: float) -> str:
    seen = []
    for seed in SEEDS:
        for spread in SPREADS:
            model = RandomRefusals(share, seed=7 + seed)
            client = run(model, ceiling, int(20 * ceiling), seed, spread)
            end = client.most_settled_at or client.end
            seen.append(client.sent_rate(2.0, end) / ceiling)
    return f"{min(seen):.0%}-{max(seen):.0%} of the asked rate"


def main() -> None:
    rows = {
        "token bucket 200/s": (lambda: TokenBucket(200, 20), 1000, 6000, 200),
        "fixed 1-s window 200": (lambda: FixedWindow(200, 1.0), 1000, 6000, 200),
        "sliding 1-s window 200, 429": (
            lambda: SlidingWindow(200, 1.0, Refusal(429)),
            600,
            6000,
            200,
        ),
        "slow cloud: bucket 10/s, 429": (
            lambda: TokenBucket(10, 2, Refusal(429)),
            100,
            600,
            10,
        ),
        "bucket 500/s + 10% random": (
            lambda: Chain(TokenBucket(500, 50), RandomRefusals(0.1, seed=5)),
            2000,
            12000,
            450,
        ),
        # A known gap (RESULTS section 42): the refused share, not the goodput.
        "bucket 200/s + 20% random": (
            lambda: Chain(TokenBucket(200, 20), RandomRefusals(0.2, seed=5)),
            1000,
            4000,
            160,
        ),
    }
    for name, (model, ceiling, count, cap) in rows.items():
        print(f"{name:30s} {limited(model, ceiling, count, cap)}", flush=True)
    conc = [run(ConcurrencyLimit(8, 0.04), 1000, 6000, seed, 0.0) for seed in SEEDS]
    shares = [c.goodput(2, c.most_settled_at or c.end) / (8 / 0.045) for c in conc]
    print(f"{'concurrency 8 x 40 ms (on time)':30s} {min(shares):.0%}-{max(shares):.0%}")
    for limit, service in ((8, 0.04), (32, 0.1)):  # service times ± half: no rate fits them
        conc = [
            run(ConcurrencyLimit(limit, service, jitter=0.5, seed=seed), 1000, 6000, seed, 0.0)
            for seed in SEEDS
        ]
        capacity = limit / (service + 0.005)
        shares = [c.goodput(2, c.most_settled_at or c.end) / capacity for c in conc]
        name = f"concurrency {limit} x {service * 1000:.0f} ms ±50%"
        print(f"{name:30s} {min(shares):.0%}-{max(shares):.0%}")
    for share, ceiling in ((0.1, 300), (0.3, 300), (0.5, 300), (0.2, 1000)):
        print(f"{f'{share:.0%} random at {ceiling}/s':30s} {random_share(share, ceiling)}")
    per_row = [run(PerRowRefusals(0.2, times=3), 300, 6000, seed, 0.0) for seed in range(8)]
    sent = [c.sent_rate(2.0, c.most_settled_at or c.end) / 300 for c in per_row]
    print(f"{'20% of rows refused 3 times':30s} {min(sent):.0%}-{max(sent):.0%} of the asked rate")
    capacity_back()
    capacity_down()
    far_clouds()
    near_the_opening_window()
    slow_acceptances()
    flaky_served_in()
    flaky_few_per_second()
    far_above()
    two_rows("two runs", two_runs())
    two_rows("two runs started together", two_runs_started_together())
    two_rows("two runs started 50 ms apart", two_runs_started_50_ms_apart())
    two_rows("two runs started 0.3/0.6 s apart", two_runs_started_apart())
    two_rows("two runs, 100-120 s", two_runs_after_two_minutes())
    two_rows("two runs, 100-120 s, off the grid", two_runs_after_two_minutes(0.002))
    long_runs = [run for uplink in (0.0, 0.001, 0.002) for run in two_long_runs(uplink)]
    two_rows("two runs, 100-120 s, 144 starts", long_runs)


def two_runs_after_two_minutes(uplink: float = 0.0) -> list[TwoRuns]:
    """Two long runs on one 200/s bucket, the second 0, 0.5 or 3 s after the first, judged
    from 100 to 120 s: does a split, or a flood, that formed early last? Four seeds in each
    eight answer late: 24 runs."""
    return [
        _two_runs(
            seed, offset, rows=40000, late=seed % 8 >= 4, judged=100.0, until=120.0, uplink=uplink
        )
        for offset in (0.0, 0.5, 3.0)
        for seed in range(8)
    ]


def capacity_back() -> None:
    """Seconds back to 80 % of a capacity that dropped at 10 s and came back: 5 capacities ×
    4 depths × 3 moments × 3 seeds × late answers or not, 360 runs."""
    took = sorted(
        recovery_after_step_up(seed, spread, capacity, low, back_at)
        for capacity in (100.0, 150.0, 200.0, 350.0, 500.0)
        for low in (0.25, 0.3, 0.4, 0.5)
        for back_at in (20.0, 20.4, 24.7)
        for seed in SEEDS
        for spread in SPREADS
    )
    print(
        f"{'capacity back after a drop':30s} median {took[len(took) // 2]:.1f} s, "
        f"90th percentile {took[-(len(took) // 10) - 1]:.1f} s, worst {took[-1]:.1f} s, "
        f"over 5 s in {sum(t > 5.0 for t in took)} of {len(took)}"
    )


def capacity_down() -> None:
    """The refused share while a capacity stays down (15-65 s), and the goodput then."""
    seen = []
    for capacity in (100.0, 200.0, 500.0):
        for low in (0.3, 0.5):
            for seed in SEEDS:
                for spread in SPREADS:
                    model = Schedule([(0.0, capacity), (10.0, low * capacity)])
                    sim = Simulation(model, spread=spread, seed=seed, uplink=0.002)
                    client = sim.add_client(rows=int(80 * capacity), ceiling=5 * capacity)
                    sim.run(70)
                    accepted = client.goodput(15.0, 65.0)
                    refused = client.rate_between(client.refused_bins, 15.0, 65.0)
                    seen.append((refused / (accepted + refused), accepted / (low * capacity)))
    refused = sorted(r for r, _ in seen)
    goodput = [g for _, g in seen]
    print(
        f"{'capacity down for 50 s':30s} {min(goodput):.0%}-{max(goodput):.0%} of it, "
        f"refused median {refused[len(refused) // 2]:.1%}, worst {refused[-1]:.1%}"
    )


def far_clouds() -> None:
    for name in FAR_CLOUD:
        blind, opening, refused, goodput = [], [], [], []
        for latency in (0.1, 0.2, 0.3):
            for client in far_cloud_runs(name, latency):
                end = client.most_settled_at or client.end
                sent = client.sent_rate(5.0, end)
                refused.append(client.rate_between(client.refused_bins, 5.0, end) / sent)
                goodput.append(client.goodput(5.0, end) / far_cloud_serves(name, latency))
                if latency == 0.3:
                    blind.append(client.rate_between(client.sent_bins, 0.0, 0.5) * 0.5)
                    opening.append(client.rate_between(client.refused_bins, 0.0, 5.0) * 5)
        refused.sort()
        print(
            f"{'far: ' + name:30s} first 0.5 s sent ≤ {max(blind):.0f}, first 5 s refused "
            f"{sorted(opening)[len(opening) // 2]:.0f}; from 5 s refused {refused[0]:.1%}-"
            f"{refused[-1]:.1%}, median {refused[len(refused) // 2]:.1%}; "
            f"goodput ≥ {min(goodput):.1%}"
        )


def near_the_opening_window() -> None:
    for limit in (16, 32, 48):
        conc = [
            run(ConcurrencyLimit(limit, 0.1, jitter=0.5, seed=seed), 1000, 6000, seed, 0.0)
            for seed in SEEDS
        ]
        shares = [c.goodput(2, c.most_settled_at or c.end) / (limit / 0.105) for c in conc]
        name = f"concurrency {limit} x 100 ms ±50%"
        print(f"{name:30s} {min(shares):.0%}-{max(shares):.0%}")


def slow_acceptances() -> None:
    models: dict[str, Callable[[], ServerModel]] = {
        "bucket": lambda: TokenBucket(200, 20),
        "fixed window": lambda: FixedWindow(200, 1.0),
        "sliding window": lambda: SlidingWindow(200, 1.0),
    }
    for name, model in models.items():
        for service in (0.05, 0.15):
            early, refused, goodput = [], [], []
            for seed, spread in itertools.product(range(4), SPREADS):
                sim = Simulation(Serving(model(), service, 0.5, seed), seed=seed, spread=spread,
                                 uplink=0.002 if seed % 2 else 0.0)  # fmt: skip
                client = sim.add_client(rows=6000, ceiling=1000, concurrency=256)
                sim.run(600.0)
                end = client.most_settled_at or client.end
                early.append(client.rate_between(client.refused_bins, 0.0, 5.0) * 5.0)
                refused.append(
                    client.rate_between(client.refused_bins, 5.0, end) / client.sent_rate(5.0, end)
                )
                goodput.append(client.goodput(5.0, end) / 200)
            label = f"{name}, served in {service * 1000:.0f} ms"
            print(
                f"{label:30s} first 5 s refused {sorted(early)[len(early) // 2]:.0f}; from 5 s "
                f"refused {min(refused):.1%}-{max(refused):.1%}; goodput {min(goodput):.0%}-"
                f"{max(goodput):.0%}",
                flush=True,
            )


def flaky_served_in() -> None:
    for share, service in itertools.product((0.1, 0.2, 0.3), (0.05, 0.15)):
        sent = []
        for seed, spread in itertools.product(range(4), SPREADS):
            model = Serving(RandomRefusals(share, seed=7 + seed), service, 0.5, seed)
            sim = Simulation(model, seed=seed, spread=spread, uplink=0.002 if seed % 2 else 0.0)
            client = sim.add_client(rows=6000, ceiling=300, concurrency=256)
            sim.run(600.0)
            sent.append(client.sent_rate(2.0, client.most_settled_at or client.end) / 300)
        label = f"{share:.0%} random, served in {service * 1000:.0f} ms"
        print(f"{label:30s} {min(sent):.0%}-{max(sent):.0%} of the asked rate", flush=True)


def flaky_few_per_second() -> None:
    """A backend refusing 5, 10 or 20 % at any rate, asked a few a second, over runs of 20,
    120 and 400 s of rows: test_a_flaky_backend_at_a_few_requests_a_second_is_not_cut_to_a
    _crawl's 48 starts (RESULTS section 44), requests/s from 2 s until 95 % settled ÷ the
    asked rate: the median, the least, and how many under 0.9."""
    for ceiling, length in itertools.product((10, 20), (20, 120, 400)):
        sent = []
        for share, seed, spread in itertools.product((0.05, 0.1, 0.2), range(8), (0.0, LATE)):
            model = RandomRefusals(share, seed=seed, refusal=Refusal(503, None))
            client = run(model, ceiling, int(length * ceiling), seed, spread, until=3 * length)
            sent.append(client.sent_rate(2.0, client.most_settled_at or client.end) / ceiling)
        sent.sort()
        under = sum(rate < 0.9 for rate in sent)
        label = f"flaky 5-20% at {ceiling}/s, {length} s"
        print(f"{label:30s} median {sent[len(sent) // 2]:.3f}, least {sent[0]:.3f}, "
              f"{under} of {len(sent)} under 0.9", flush=True)  # fmt: skip


def far_above() -> None:
    """--rate far over the cloud's pace (RESULTS section 39): the worst refused share from 5 s
    on and the least goodput, over test_a_limit_far_under_the_asked_rate_is_found_and_kept's
    8 runs (4 seeds × on time or late, 2 ms off the grid, 8,000 rows), at each asked rate."""
    limits = {
        "bucket": (lambda: TokenBucket(200, 20), 200.0),
        "sliding window, 429": (lambda: SlidingWindow(200, 1.0, Refusal(429)), 200.0),
        "fixed window": (lambda: FixedWindow(200, 1.0), 200.0),
        "concurrency 8 x 40 ms": (lambda: ConcurrencyLimit(8, 0.04), 8 / 0.045),
    }
    for name, (model, capacity) in limits.items():
        cells = []
        for asked in (1000, 2000, 20_000, 100_000):
            refused, goodput = [], []
            for seed, spread in itertools.product(range(4), SPREADS):
                sim = Simulation(model(), spread=spread, seed=seed, uplink=0.002)
                client = sim.add_client(rows=8000, ceiling=asked)
                sim.run(120.0)
                end = client.end - 1.0
                sent = client.sent_rate(5.0, end)
                refused.append(client.rate_between(client.refused_bins, 5.0, end) / sent)
                goodput.append(client.goodput(5.0, end) / capacity)
            cells.append(f"{asked:,}: {max(refused):.1%} / {min(goodput):.0%}")
        print(f"{'far above, ' + name:30s} refused / goodput from 5 s, " + " | ".join(cells))


def two_rows(name: str, runs: list[TwoRuns]) -> None:
    fair = sorted(min(run.shares) for run in runs)
    refused = sorted(run.refused for run in runs)
    print(
        f"{name + ', smaller share':30s} median {fair[len(fair) // 2]:.0%}, "
        f"10th percentile {fair[len(fair) // 10]:.0%}, worst {fair[0]:.0%}, "
        f"under 35 % in {sum(f < 0.35 for f in fair)}, under 10 % in "
        f"{sum(f < 0.1 for f in fair)} of {len(fair)}"
    )
    print(
        f"{name + ', refused':30s} median {refused[len(refused) // 2]:.1%}, "
        f"90th percentile {refused[-(len(refused) // 10) - 1]:.1%}, worst {refused[-1]:.1%}, "
        f"over 10 % in {sum(r > 0.1 for r in refused)}, "
        f"over 30 % in {sum(r > 0.3 for r in refused)}"
    )


if __name__ == "__main__":
    main()
