"""The pacer against every shape of server in tests/pacing_sim.py's virtual time: one table
row per limiter or fault, each asserting goodput and refused share (issue 13's targets).

Each row is deterministic (seeded models, no wall clock) and takes milliseconds to a second.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import pytest

from bulktag.attempt import FREE_ATTEMPTS
from bulktag.fake.limiters import (
    Chain,
    ConcurrencyLimit,
    FixedWindow,
    Outage,
    PerRowRefusals,
    QueueingServer,
    RandomRefusals,
    Refusal,
    Schedule,
    ServerModel,
    SlidingWindow,
    TokenBucket,
)
from bulktag.model import Outcome
from bulktag.pacing import CAP_GUARD, PacingPolicy
from bulktag.policy import RetryPolicy
from tests.pacing_sim import BIN, Client, Serving, Simulation, SlowSpell

APIGW = Refusal(429)  # Huawei's gateway: 429 APIGW.0308, no Retry-After

# Known gaps, kept as strict expected failures so that the day one passes, the table says so.
# Each names what the pacer does instead.
KNOWN_GAP = pytest.mark.xfail(strict=True, reason="known gap, see the row's comment")


@dataclass(frozen=True)
class Limited:
    """A server with a capacity: goodput near it, few refusals."""

    model: Callable[[], ServerModel]
    capacity: float
    ceiling: float
    rows: int
    min_goodput: float = 0.90  # of capacity, once found (after the first seconds)
    max_refused: float = 0.05  # of all requests, over the whole run


LIMITED = {
    "token-bucket": Limited(lambda: TokenBucket(200, 20), 200, 1000, 6000),
    "fixed-1s-window": Limited(lambda: FixedWindow(200, 1.0), 200, 1000, 6000),
    "sliding-1s-window-429": Limited(lambda: SlidingWindow(200, 1.0, APIGW), 200, 600, 6000),
    # 8 in service for 40 ms, plus the simulation's 5 ms of network: 8 / 0.045 s
    "concurrency-limit": Limited(lambda: ConcurrencyLimit(8, 0.04), 8 / 0.045, 1000, 6000),
    "queueing-server": Limited(lambda: QueueingServer(200, 0.5), 200, 1000, 6000),
    # Gap: ~86 % (56 % before cuts from a few answers halved and probes waited for 32
    # answers), 19 % refused: 200 rows at 5/s leave the start-up's refusals no time to thin.
    "small-bucket-slow-cloud": pytest.param(
        Limited(lambda: TokenBucket(5, 1), 5, 100, 200), marks=KNOWN_GAP
    ),
    # A gateway that takes ten a second, as IMS's may: few answers a second, every measure
    # slow to fill.
    "slow-cloud-10-per-second-429": Limited(lambda: TokenBucket(10, 2, APIGW), 10, 100, 600),
    "per-minute-window": Limited(
        lambda: FixedWindow(3000, 60.0), 50, 1000, 12000, min_goodput=0.85, max_refused=1.0
    ),
}


# Answers that come back late and out of order (a busy network or event loop: an extra
# exponential delay of 20 ms on average): requests in flight when the pace changes are
# answered after it changed, and an experiment's windows must not read them as its own.
LATE = 0.02


def _run(
    model: ServerModel,
    *,
    rows: int,
    ceiling: float,
    until: float = 600.0,
    spread: float = 0.0,
    seed: int = 0,
) -> Client:
    sim = Simulation(model, spread=spread, seed=seed)
    client = sim.add_client(rows=rows, ceiling=ceiling)
    sim.run(until)
    return client


@pytest.mark.parametrize("spread", [0.0, LATE], ids=["prompt-answers", "late-answers"])
@pytest.mark.parametrize("case", LIMITED.values(), ids=LIMITED.keys())
def test_a_capacity_limited_server_is_used_near_its_capacity_with_few_refusals(
    case: Limited, spread: float
) -> None:
    client = _run(case.model(), rows=case.rows, ceiling=case.ceiling, spread=spread)
    assert case.rows == client.outcomes.get(Outcome.OK)
    end = client.most_settled_at
    assert end is not None
    start = min(5.0, end / 4)
    assert client.goodput(start, end) >= case.min_goodput * case.capacity
    assert client.refused_share <= case.max_refused


def _refused_from(client: Client, start: float) -> float:
    """The share of the requests sent from ``start`` on that were refused."""
    first = int(start / BIN)
    sent = sum(n for b, n in client.sent_bins.items() if b >= first)
    refused = sum(n for b, n in client.refused_bins.items() if b >= first)
    return refused / max(sent, 1)


@pytest.mark.parametrize(
    "model",
    [
        lambda: TokenBucket(200, 20),
        lambda: SlidingWindow(200, 1.0, APIGW),
        lambda: ConcurrencyLimit(8, 0.04),
    ],
    ids=["token-bucket", "sliding-1s-window-429", "concurrency-limit"],
)
def test_the_pace_at_a_limit_does_not_depend_on_how_far_over_it_rate_is_set(
    model: Callable[[], ServerModel],
) -> None:
    """``--rate`` is often set far over any cloud's pace, as a cap that never binds: once the
    pace is found (from 5 s on), the refused share is as at a --rate five times the cloud's.
    Probes at the limit once added 0.5 % of --rate each, the part runs sharing a limit have
    in common: at --rate 100000, 500/s, a doubling of a 200/s limit every probe, and 3-4 %
    of the requests from 5 s on were refused against 1 % at --rate 1000 (bucket, sliding
    window). The run's first fifth of a second at --rate (bounded by --concurrency) is a
    one-time cost, and not judged here; a fixed window keeps an excess of its own (see
    FAR_ABOVE below)."""
    for seed in range(2):
        refused = {}
        for ceiling in (1000, 100000):
            sim = Simulation(model(), seed=seed, latency=0.02, uplink=0.002)
            client = sim.add_client(rows=6000, ceiling=ceiling)
            sim.run(120.0)
            assert client.outcomes.get(Outcome.OK) == 6000
            refused[ceiling] = _refused_from(client, 5.0)
        assert refused[100000] <= refused[1000] + 0.01, (seed, refused)


@pytest.mark.parametrize(
    "model",
    [lambda: FixedWindow(200, 1.0), lambda: SlidingWindow(200, 1.0, APIGW)],
    ids=["fixed-1s-window", "sliding-1s-window-429"],
)
def test_a_runs_first_window_is_no_longer_in_requests_at_a_higher_rate(
    model: Callable[[], ServerModel],
) -> None:
    """A window spends its quota, then refuses everything: the run's first window, where a
    streak does not hold the run back, ends after ``opening_answers`` answers if its 0.2 s
    are not out. Bounded by time alone, a run at --rate 20000 sent its first 0.2 s at what
    --concurrency allows, and 427 of its first half second's requests were refused (31 at
    --rate 1000); now at most the window's answers and what is in flight twice over."""
    for seed in range(4):
        sim = Simulation(model(), seed=seed, latency=0.02, uplink=0.002)
        client = sim.add_client(rows=2000, ceiling=20000)
        sim.run(60.0)
        assert client.outcomes.get(Outcome.OK) == 2000
        bound = PacingPolicy().opening_answers + 2 * client.concurrency
        assert client.refused_bins.get(0, 0) <= bound, seed


def test_a_short_run_on_a_bucket_is_not_paced_over_it_by_the_burst_it_began_with() -> None:
    """The real-time matrix's run: 1,600 rows at 1,000/s asked, a 200/s bucket with 20
    tokens, 8 s, where a run's first seconds weigh. 24 seeds × late answers or not ×
    requests on the pacer's grid or up to 2 ms off it. Before a cut measured from the run's
    first refusal while its horizon reached back before it, the bucket's 20 tokens in the
    first 0.27 s read as 270/s: the pace confirmed over the limit, its refusals were taken
    for a flaky backend's, and 5 of these 96 refused 21-25 % of their requests (6 over 5 %,
    median 4.0 %). Now the worst refuses 5.2 %, the median 3.6 %."""
    shares = []
    for seed, spread, uplink in itertools.product(range(24), (0.0, LATE), (0.0, 0.002)):
        sim = Simulation(TokenBucket(200, 20), spread=spread, seed=seed, uplink=uplink)
        client = sim.add_client(rows=1600, ceiling=1000)
        sim.run(60.0)
        assert client.outcomes.get(Outcome.OK) == 1600
        shares.append(client.refused_share)
    assert max(shares) <= 0.08
    assert _median(shares) <= 0.04


# Service times that vary (± half, as a real backend's do): no rate fits a concurrency limit
# then — an evenly paced client meets refusals at ~75 % of it — so the pacer caps the requests
# on the wire instead (bulktag/inflight.py). Without the cap: 74 % and 83 % of capacity. With
# it, the pace stays clear above what the cap lets through: held to what was sent (probes
# only once the run sends at its pace, PaceController._probe_due, the cap not excepted),
# the pace's even spacing met answers that come back in clumps: 93 % and 96 %, not 98-100 %.
VARIED = {
    "8-in-service-40ms": Limited(
        lambda: ConcurrencyLimit(8, 0.04, jitter=0.5), 8 / 0.045, 1000, 6000, min_goodput=0.96
    ),
    "32-in-service-100ms": Limited(
        lambda: ConcurrencyLimit(32, 0.1, jitter=0.5), 32 / 0.105, 1000, 6000, min_goodput=0.96
    ),
}


@pytest.mark.parametrize(
    "spread",
    # Gap: answers late by 20 ms on average put ~3 more of ours on the wire than the server
    # has in service, and by a varying amount, so refusals come at no clear level and no
    # cap forms: 73 % and 82 % of capacity, the rate alone.
    [0.0, pytest.param(LATE, marks=KNOWN_GAP)],
    ids=["prompt-answers", "late-answers"],
)
@pytest.mark.parametrize("case", VARIED.values(), ids=VARIED.keys())
def test_a_concurrency_limit_with_varied_service_times_is_used_near_its_capacity(
    case: Limited, spread: float
) -> None:
    test_a_capacity_limited_server_is_used_near_its_capacity_with_few_refusals(case, spread)


@pytest.mark.parametrize(
    ("in_service", "jitter"),
    [(32, 0.5), (40, 0.5), (48, 0.5), (48, 0.0)],
    ids=["32-in-service", "40-in-service", "48-in-service", "48-in-service-evenly"],
)
def test_a_limit_on_requests_in_service_near_the_opening_window_is_used_from_the_start(
    in_service: int, jitter: float
) -> None:
    """A limit a little wider than the slow start's opening window of 32 (100 ms ± 50 % in
    service, or 100 ms each; --rate 1000 --concurrency 64): the first round trip is all
    accepted, then refusals come back in 5 ms while acceptances take 100 ms. Read as they
    came back, what got in after the first refusal counted the refusals of the latest
    requests and not their acceptances, still in service, and the run cut to a third of the
    limit (1,000 → 110/s) and took seconds to climb back: from 0.5 to 3 s, medians of 6
    seeds 58 %, 47 %, 68 % and 64 % of what the limit serves (runs as low as 13 %). Now
    every answer is timed, and where acceptances clearly take longer than refusals they are
    counted over the sending whose acceptances can be back: 95 %, 95 %, 96 % and 99 %."""
    served = []
    for seed in range(6):
        limit = ConcurrencyLimit(in_service, 0.1, jitter=jitter, seed=seed)
        sim = Simulation(limit, seed=seed)
        client = sim.add_client(rows=6000, ceiling=1000)
        sim.run(600)
        assert client.outcomes.get(Outcome.OK) == 6000
        served.append(client.goodput(0.5, 3.0) / (in_service / 0.105))
    assert _median(served) >= 0.8


# A far cloud: answers 0.2 or 0.3 s after the request left (another region, a VPN), longer
# than a 0.2-s window. Workers enough for the pace: a 200/s limit at 0.3 s keeps 60 on the
# wire. Judged from 5 s on, as FAR_ABOVE below is: a run's opening, a slow start until its
# first window is judged, is a fixed cost (the next test).
FAR_CLOUD = ["token-bucket", "fixed-1s-window", "sliding-1s-window-429", "concurrency-limit",
             "queueing-server", "slow-cloud-10-per-second-429"]  # fmt: skip


@cache
def far_cloud_runs(name: str, latency: float) -> tuple[Client, ...]:
    """A limiter's 8 runs with answers after ``latency``: 4 seeds × on time or late, odd
    seeds up to 2 ms off the grid (shared by the tests below and the simulator table)."""
    case = LIMITED[name]
    runs = []
    for seed, spread in itertools.product(range(4), (0.0, LATE)):
        sim = Simulation(case.model(), latency=latency, spread=spread, seed=seed,
                         uplink=0.002 if seed % 2 else 0.0)  # fmt: skip
        client = sim.add_client(rows=case.rows, ceiling=case.ceiling, concurrency=256)
        sim.run(600.0)
        runs.append(client)
    return tuple(runs)


def far_cloud_serves(name: str, latency: float) -> float:
    """What the limiter serves a second: 8 in service for 40 ms serve fewer the longer each
    answer takes to return."""
    return 8 / (0.04 + latency) if name == "concurrency-limit" else LIMITED[name].capacity


def far_cloud_measures(name: str, latencies: tuple[float, ...]) -> tuple[list[float], list[float]]:
    """Each run's goodput (a share of what the limiter serves) and refused share, from 5 s
    on, over the runs at these latencies; every row done."""
    capacity, refused = [], []
    for latency in latencies:
        for client in far_cloud_runs(name, latency):
            assert client.outcomes.get(Outcome.OK) == LIMITED[name].rows
            end = client.most_settled_at
            assert end is not None
            capacity.append(client.goodput(5.0, end) / far_cloud_serves(name, latency))
            refused.append(
                client.rate_between(client.refused_bins, 5.0, end) / client.sent_rate(5.0, end)
            )
    return capacity, refused


@pytest.mark.parametrize("name", FAR_CLOUD)
def test_a_far_cloud_is_paced_on_the_answers_to_its_own_pace(name: str) -> None:
    """Refusals of requests sent before a window began were not its evidence, but the
    acceptances were (read off the running total), and the calm that skips the pacer stayed
    on while no window held a refusal of its own: where answers take longer than a window,
    every window read clean and the pace stayed at --rate. Over each limiter's 16 runs, from
    5 s on: a 200/s bucket refused 31-75 % of the requests (median 39 %) and 7 runs left rows
    not done; a sliding window 21-35 % (median 29 %); a concurrency limit up to 32 % (median
    24 %, 2 such runs); a queueing server up to 71 % (median 34 %, 5). A fixed
    window and a slow cloud were paced by their spent windows, refused 2-8 % and 2-11 %.
    Counted alike, and calm ended by any refusal: every row done, medians 2.1-4.2 %, the worst
    12.9 % (a fixed window, late answers at 0.3 s), the least goodput 90.2 % of capacity
    (the concurrency limit)."""
    capacity, refused = far_cloud_measures(name, (0.2, 0.3))
    assert min(capacity) >= 0.9
    assert _median(refused) <= 0.05
    assert max(refused) <= 0.15


@pytest.mark.parametrize("latency", [0.05, 0.1, 0.2, 0.3])
def test_a_pace_a_cap_on_requests_in_service_holds_under_stays_a_guard_above_it(
    latency: float,
) -> None:
    """A cap found in the cloud (8 in service) governs the sends, and the pace is to stay
    clear above what it lets through. Probed on without a bound, the pace reached --rate
    (11-42 × what the limit serves, from 5 s on), and when a refusal under the cap made the
    run drop it, the run sent at --rate (250 refused in half a second, 0.3 s away, in a run
    a change to its start sent down that path). Now the pace stays within CAP_GUARD × what
    the cap lets through: 3.0 × what the limit serves."""
    for client in far_cloud_runs("concurrency-limit", latency):
        serves = far_cloud_serves("concurrency-limit", latency)
        paces = [rate for b, rate in client.allowed.items() if b * BIN >= 5.0]
        assert max(paces) <= 1.1 * CAP_GUARD * serves


@pytest.mark.parametrize("name", FAR_CLOUD)
def test_a_cloud_answering_in_50_or_100_ms_is_paced_on_its_own_answers(name: str) -> None:
    """Nearer than the far cloud above, as a cloud in the next region is. A queueing server
    answering in 50 ms ran at 21/s of its 200/s for four minutes in one of its 8 runs: its
    flood filled the queue, the cut's windows read the refusals as not about the rate, and
    back at --rate the window that found a limit after all got nothing in and paced the run
    at 0/s, the floor (PaceController._verify). Now the least goodput of any limiter here is
    88 %, the worst refused share 5.2 %."""
    capacity, refused = far_cloud_measures(name, (0.05, 0.1))
    assert min(capacity) >= 0.85
    assert _median(refused) <= 0.05
    assert max(refused) <= 0.08


@cache
def flaky_slow_runs(service: float) -> list[Client]:
    """A backend that refuses 20 % at any rate, at once, and serves the rest in ``service``
    ± half of it, at --rate 300: 4 seeds × on time or late, odd seeds off the grid."""
    runs = []
    for seed, spread in itertools.product(range(4), (0.0, LATE)):
        model = Serving(RandomRefusals(0.2, seed=7 + seed), service, 0.5, seed)
        sim = Simulation(model, seed=seed, spread=spread, uplink=0.002 if seed % 2 else 0.0)
        client = sim.add_client(rows=6000, ceiling=300, concurrency=256)
        sim.run(600.0)
        runs.append(client)
    return runs


def test_a_flaky_backend_that_serves_slowly_is_read_as_flaky_as_it_is() -> None:
    """A window judged on the answers back read more refused than the backend refuses:
    refusals come at once, acceptances once served. At 150 ms the rate-independent share
    was learnt as 0.43-0.57 where it is 0.2 (7 of 8 runs), probes read as overshoots, and
    the run was sent 22-64 % of the asked rate. A refusal now goes into its window's share
    when an acceptance of its request would be back: 0.19-0.28, and 81-96 %."""
    runs = flaky_slow_runs(0.15)
    for client in runs:
        end = client.most_settled_at
        assert end is not None
        assert client.sent_rate(2.0, end) >= 0.75 * 300
    learnt = [client.pacer.control.independent for client in runs]  # as the summary says
    assert _median(learnt) <= 0.3


# The run's first streak of refusals comes before any acceptance has been timed, and held it
# back (resumed at a quarter of --rate, then probes for seconds): at 150 ms 81-96 % of the
# asked rate, at 50 ms 82-99 % (RESULTS section 35). Waiting for the answers sent before
# such a streak lifted it to 96-97 % but cost a real concurrency limit 3-4 points (7857c52,
# reverted: section 36). Now the acceptances of requests sent among the streak's refused
# ones undo the hold-back (PaceController._misread_hold_back), and a run's first window
# lasts until its acceptances can be back (_unsettled_for): 95-98 % at 150 ms; at 50 ms
# 96-99 % but for one run of 8 at 83 % (the window after the experiment restored the pace
# read a fall, _verify, and the cuts after it took seconds to undo). With the experiment's
# verdict the hypothesis that fits the episode's samples better (limit_fits_better), not
# the nearer prediction step by step: 96-98 % at 50 ms, 95-97 % at 150 ms.
@pytest.mark.parametrize("service", [0.05, 0.15])
def test_a_flaky_backend_that_serves_slowly_is_sent_at_the_asked_rate(service: float) -> None:
    for client in flaky_slow_runs(service):
        assert client.outcomes.get(Outcome.OK) == 6000
        end = client.most_settled_at
        assert end is not None
        assert client.sent_rate(2.0, end) >= 0.9 * 300


SPELL = (10.0, 30.0)  # answers 0.4 s late from here to here


@cache
def slow_spells() -> list[Client]:
    """A 200/s bucket at --rate 1000 whose answers come 0.4 s late for 20 s, the run's own
    --concurrency (16 or 32) holding its sends under the bucket meanwhile (40 or 80/s):
    8 seeds each, every other one late and off the grid."""
    runs = []
    for concurrency, seed in itertools.product((16, 32), range(8)):
        late = seed % 2 == 1
        sim = Simulation(SlowSpell(TokenBucket(200, 20), *SPELL, 0.4), seed=seed,
                         spread=LATE if late else 0.0, uplink=0.002 if late else 0.0)  # fmt: skip
        client = sim.add_client(rows=12000, ceiling=1000, concurrency=concurrency)
        sim.run(600.0)
        runs.append(client)
    return runs


def test_a_pace_the_run_cannot_fill_is_not_raised_while_it_cannot() -> None:
    """While answers are slow, the run's own cap on requests in flight holds its sends
    under the pace, and nothing is refused: a clean horizon said the pace was clean, and
    probes raised it to --rate (1,000/s in all 16 runs). When the answers came quick again,
    the run sent at --rate: 58-155 refused in the next three seconds. Probes now wait
    until the run sends at its pace (PaceController._probe_due): at most 231/s when the
    spell ended, 4-15 refused after it."""
    _, end = SPELL
    for client in slow_spells():
        assert client.outcomes.get(Outcome.OK) == 12000
        pace = max(client.allowed[b] for b in range(int((end - 2.0) / BIN), int(end / BIN)))
        assert pace <= 1.25 * 200
        assert client.rate_between(client.refused_bins, end, end + 3.0) * 3.0 <= 25


@pytest.mark.parametrize("name", FAR_CLOUD)
def test_a_far_cloud_is_not_sent_the_asked_rate_blind_at_the_start(name: str) -> None:
    """Until the controller judged its first window, a run sent at --rate with nothing to go
    by: at 300 ms, the first half second carried 270-457 requests (--rate 1,000 or 600), and
    the first 5 s ended with a median of 203 refused on a 200/s bucket, 568 on a fixed
    window, 318 on a sliding one, 333 on a concurrency limit. A slow start (Pacer.
    _opening_full) sends 32 in the first round trip and doubles each one after: medians 44 /
    141 / 118 / 114. Slower to learn where latency grows before refusals: a queueing
    server's went 105 → 161; a slow cloud's stayed 49 (its --rate is 100/s)."""
    blind, refused = [], []
    for client in far_cloud_runs(name, 0.3):
        assert client.outcomes.get(Outcome.OK) == LIMITED[name].rows
        blind.append(client.rate_between(client.sent_bins, 0.0, 0.5) * 0.5)
        refused.append(client.rate_between(client.refused_bins, 0.0, 5.0) * 5.0)
    assert max(blind) <= 32 + 64  # the first round trip's 32, and twice that after it
    if name in ("queueing-server", "slow-cloud-10-per-second-429"):
        assert _median(refused) <= 200
    else:
        assert _median(refused) <= 160


# The asked rate far above the cloud's: an operator's "--rate 100000" meaning "no limit of
# mine". What the run costs the cloud should not grow with how far above it the asked rate
# is. Judged from 5 s on: the opening flood is bounded by --concurrency, not by the pace, a
# fixed cost a long run amortizes. 4 seeds × late answers or not, up to 2 ms off the grid.
# Worst refused from 5 s on, at 1,000 / 2,000 / 20,000 / 100,000 asked: a bucket 1.5 / 1.6 / 2.9 /
# 5.0 %, a sliding window 1.3 / 1.2 / 2.8 / 4.5 %, a fixed window 1.3 / 1.7 / 3.7 / 4.5 % (goodput
# 95 / 94 / 92 / 91 %; measured at d9f570c, and at 16c3b6c before it: a bucket 1.3 / 1.5 / 3.6 /
# 4.9 %, a fixed window's goodput 96 / 95 / 93 / 91 %). The share grew with the asked rate: a
# probe's step has a part that does (0.5 % of it: two runs sharing a limit add the same
# amount, which evens their shares). Since e6d79e7 that part is figured on no more than 20×
# what the cloud was seen to accept: at dc8a566 → af68efd, a bucket 1.6 / 1.6 / 3.3 / 4.4 →
# 1.6 / 1.6 / 1.8 / 2.1 %, a sliding window 1.4 / 1.3 / 2.9 / 4.2 → 1.4 / 1.4 / 1.7 / 1.5 %, a
# concurrency limit 1.7 / 2.0 / 3.3 / 4.9 → 1.7 / 2.0 / 1.9 / 2.2 %, a fixed window 2.3 / 2.9 /
# 3.5 / 4.2 → 2.3 / 2.9 / 3.0 / 4.2 % (goodput 92 % at least). The fixed window keeps its
# excess: early in the run its quota, read over the burst that spent it, sets a pace over
# the window's rate that a clean horizon confirms as a peak (259/s of 200), and the probes
# that retest it step just past the last overshoot each time, spending the window.
FAR_ABOVE = [
    pytest.param(lambda: TokenBucket(200, 20), id="token-bucket"),
    pytest.param(lambda: SlidingWindow(200, 1.0, APIGW), id="sliding-1s-window-429"),
    # A probe that spends the window ends in a hold-back; until it was remembered there as an
    # overshoot, the same probe came back every two seconds: 5.1 / 6.4 % refused and 88 / 86 %
    # goodput at 20,000 / 100,000 asked.
    pytest.param(lambda: FixedWindow(200, 1.0), id="fixed-1s-window"),
]


@pytest.mark.parametrize("asked", [20_000, 100_000])
@pytest.mark.parametrize("limiter", FAR_ABOVE)
def test_a_limit_far_under_the_asked_rate_is_found_and_kept(
    limiter: Callable[[], ServerModel], asked: int
) -> None:
    for seed, spread in itertools.product(range(4), (0.0, LATE)):
        sim = Simulation(limiter(), spread=spread, seed=seed, uplink=0.002)
        client = sim.add_client(rows=8000, ceiling=asked)
        sim.run(120.0)
        assert client.outcomes.get(Outcome.OK) == 8000
        end = client.end - 1.0
        refused = client.rate_between(client.refused_bins, 5.0, end)
        assert refused <= 0.05 * client.sent_rate(5.0, end)
        assert client.goodput(5.0, end) >= 0.9 * 200


def _unlucky_rows(rows: int, share: float, attempts: int = RetryPolicy().max_attempts) -> int:
    """The most rows that may give up by luck alone: each is refused on every attempt with
    probability ``share ** attempts`` (6,000 rows at 30 % give up 0.4 on average), so no
    more than the count a Poisson tail passes once in a thousand runs. More than that, and
    the pacer made rows spend attempts it should not have (a hold-back counted against them)."""
    mean = rows * share**attempts
    k, term, tail = 0, math.exp(-mean), 1.0 - math.exp(-mean)
    while tail > 1e-3:
        k += 1
        term *= mean / k
        tail -= term
    return k


@pytest.mark.parametrize(
    ("share", "retry_after", "ceiling", "spread"),
    [
        pytest.param(0.05, None, 300, 0.0, id="5%"),
        pytest.param(0.1, None, 300, 0.0, id="10%"),
        pytest.param(0.2, None, 1000, 0.0, id="20%-at-1000/s"),
        pytest.param(0.3, None, 300, 0.0, id="30%"),
        pytest.param(0.1, 1.0, 300, 0.0, id="10%-retry-after-1"),
        pytest.param(0.3, 1.0, 300, 0.0, id="30%-retry-after-1"),
        pytest.param(0.1, None, 300, LATE, id="10%-late-answers"),
        pytest.param(0.3, None, 300, LATE, id="30%-late-answers"),
        pytest.param(0.2, None, 1000, LATE, id="20%-at-1000/s-late-answers"),
    ],
)
def test_refusals_at_any_rate_cost_retries_not_throughput(
    share: float, retry_after: float | None, ceiling: float, spread: float
) -> None:
    model = RandomRefusals(share, seed=7, refusal=Refusal(503, retry_after))
    client = _run(model, rows=int(20 * ceiling), ceiling=ceiling, spread=spread)
    gave_up = client.outcomes.get(Outcome.GAVE_UP, 0)
    assert client.rows == client.outcomes.get(Outcome.OK, 0) + gave_up
    # Refusals found not to be about the rate do not count against a row (up to a bound): at
    # 30 %, 8 counted attempts alone would give up 0.4 rows of 6,000 on average.
    allowed = RetryPolicy().max_attempts * (1 + FREE_ATTEMPTS)
    assert gave_up <= _unlucky_rows(client.rows, share, allowed)
    end = client.most_settled_at
    assert end is not None
    assert client.sent_rate(2.0, end) >= 0.9 * ceiling
    assert share == pytest.approx(client.pacer.control.independent, abs=0.08)


def test_half_refused_at_any_rate_still_sends_near_the_asked_rate() -> None:
    client = _run(RandomRefusals(0.5, seed=3), rows=6000, ceiling=300)
    end = client.most_settled_at
    assert end is not None
    assert client.sent_rate(2.0, end) >= 0.85 * 300


def _per_row_refusals(seed: int) -> Client:
    client = _run(PerRowRefusals(0.2, times=3), rows=6000, ceiling=300, seed=seed)
    assert 6000 == client.outcomes.get(Outcome.OK)
    return client


@cache
def per_row_rates() -> list[float]:
    """Requests/s ÷ the asked rate until 95 % of the rows settled, over eight seeds."""
    rates = []
    for seed in range(8):
        client = _per_row_refusals(seed)
        assert client.most_settled_at is not None
        rates.append(client.sent_rate(2.0, client.most_settled_at) / 300)
    return sorted(rates)


def test_rows_refused_a_few_times_each_never_slow_the_run() -> None:
    """A fifth of the rows refused three times each, at any rate: the run keeps near the
    asked rate at every seed of eight (53 % at the worst before a dip's window stopped
    counting as the pace's own refusals; 89 % before such refusals stopped counting against
    the row, which then waited out longer back-offs near the end of the input)."""
    assert all(rate >= 0.9 for rate in per_row_rates())


@cache
def flaky_at_a_few_per_second(ceiling: float) -> list[float]:
    """Requests/s ÷ the asked rate, from 2 s until 95 % of the rows settled, against a backend
    that refuses 5, 10 or 20 % at any rate, asked a few a second (--rate 10 is the default,
    20 the README's example): 8 seeds × on time or late, 48 starts of 20 s of rows."""
    rates = []
    for share in (0.05, 0.1, 0.2):
        for seed in range(8):
            for spread in (0.0, LATE):
                model = RandomRefusals(share, seed=seed, refusal=Refusal(503, None))
                client = _run(
                    model, rows=int(20 * ceiling), ceiling=ceiling, seed=seed, spread=spread
                )
                assert client.most_settled_at is not None
                rates.append(client.sent_rate(2.0, client.most_settled_at) / ceiling)
    return sorted(rates)


@pytest.mark.parametrize(
    ("ceiling", "median", "least"), [(10, 0.84, 0.55), (20, 0.9, 0.6)], ids=["10/s", "20/s"]
)
def test_a_flaky_backend_at_a_few_requests_a_second_is_not_cut_to_a_crawl(
    ceiling: float, median: float, least: float
) -> None:
    """At a few requests a second a window holds eight answers, and one or two refused made
    a weak first sample for an experiment whose 32-answer steps took 4-7 s each and fitted a
    limit about as well: a 10 % backend at --rate 10 was cut 10 → 3.8/s over 24 s before the
    refusals were found not to be about the rate. Until a limit is confirmed, a window that
    is only a little over the line now waits for 32 answers at the pace before an episode
    begins on them. At 10/s the median went 0.80 → 0.87 (least 0.54 → 0.59), at 20/s 0.88 →
    0.93 (least 0.61 → 0.67)."""
    rates = flaky_at_a_few_per_second(ceiling)
    assert _median(rates) >= median
    assert rates[0] >= least


# Gap: the rows above, asked 300/s, send 0.9 of the asked rate or more; asked 10/s, 29 of the
# 48 starts send less (41 before the 32-answer first sample; at 20/s, 11 of 48, from 36). An
# experiment's steps still take seconds each at these rates, and one that reads the
# refusals as a limit cuts the pace 15 % a step for much of a short run. In real time, 400
# rows at --rate 10 against `serve-fake --fail-503 0.1` sent 8.9 and 7.4 requests/s before
# the change (RESULTS section 43).
@KNOWN_GAP
def test_a_flaky_backend_at_a_few_requests_a_second_is_sent_near_the_asked_rate() -> None:
    assert all(rate >= 0.9 for rate in flaky_at_a_few_per_second(10))


def test_a_limit_with_random_refusals_behind_it_is_still_found() -> None:
    model = Chain(TokenBucket(500, 50), RandomRefusals(0.1, seed=5))
    client = _run(model, rows=12000, ceiling=2000)
    end = client.most_settled_at
    assert end is not None
    assert client.goodput(5.0, end) >= 0.85 * 500 * 0.9


@cache
def limit_behind_a_fifth_refused() -> list[Client]:
    """A 200/s bucket in front of a backend that refuses a fifth of what it admits, at any
    rate: 160/s can get in. 6 seeds × on time or late, asked 1,000/s."""
    return [
        _run(
            Chain(TokenBucket(200, 20), RandomRefusals(0.2, seed=5 + seed)),
            rows=4000,
            ceiling=1000,
            seed=seed,
            spread=spread,
        )
        for seed in range(6)
        for spread in (0.0, LATE)
    ]


def test_a_limit_behind_a_fifth_refused_at_any_rate_is_used_near_what_gets_through() -> None:
    """The 10 % row above, with twice the share: 88-100 % of 160/s from 5 s on."""
    for client in limit_behind_a_fifth_refused():
        end = client.most_settled_at
        assert end is not None
        assert client.goodput(5.0, end) >= 0.85 * 160


# Gap: 25-40 % of the requests refused where the backend's 20 % would do. With a fifth of
# everything refused, neither the refused share of a window nor what got in tells a probe a
# few percent over the limit from noise, so probes climb over it until one overshoots far
# (RESULTS section 42 has what was tried).
@KNOWN_GAP
def test_a_limit_behind_a_fifth_refused_at_any_rate_costs_few_refusals_more() -> None:
    assert all(client.refused_share <= 0.25 for client in limit_behind_a_fifth_refused())


def test_a_moving_capacity_is_followed_within_five_seconds_of_each_change() -> None:
    steps = [(0.0, 200.0), (20.0, 60.0), (40.0, 200.0), (60.0, 120.0)]
    # More rows than 80 s at these capacities can take (11,600): busy to the last step's end.
    client = _run(Schedule(steps), rows=14000, ceiling=1000, until=90)
    bounds = [*(start for start, _ in steps[1:]), 80.0]
    for (start, capacity), end in zip(steps[1:], bounds[1:], strict=True):
        assert client.goodput(start + 5.0, end) >= 0.8 * capacity, (start, capacity)
    assert client.refused_share <= 0.10


def test_a_tenfold_drop_in_capacity_is_followed_not_flooded() -> None:
    """200/s to 20/s. Far above both rates the experiment's shares are close (78 % at
    128/s, 69 % at half that, where a limit predicts 56 %), and it took the limit for refusals
    not about the rate; the window back at 128/s, 85 % refused, was within a standard
    deviation of "held", and the run flooded the new limit in 2 of these 8 runs (85-90 % of
    its requests refused until the capacity came back, 30 s later)."""
    for seed in range(4):
        for spread in (0.0, LATE):
            model = Schedule([(0.0, 200.0), (10.0, 20.0), (40.0, 200.0)])
            client = _run(model, rows=200_000, ceiling=1000, until=40, spread=spread, seed=seed)
            accepted = client.goodput(15.0, 40.0)
            refused = client.rate_between(client.refused_bins, 15.0, 40.0)
            assert refused <= 0.2 * (accepted + refused), (seed, spread)


def test_an_outage_sends_a_trickle_then_the_old_pace_resumes_at_once() -> None:
    model = Chain(TokenBucket(200, 20), Outage(15.0, 25.0))
    client = _run(model, rows=8000, ceiling=1000, until=120)
    before = client.goodput(8.0, 15.0)
    assert client.sent_rate(15.0, 25.0) <= 5.0
    assert client.goodput(28.0, 30.0) >= 0.85 * before
    assert 8000 == client.outcomes.get(Outcome.OK)  # no row gave up because of the outage


def _seconds_back(client: Client, since: float, pace: float) -> float:
    """Seconds from ``since`` to the end of the first second in which ``pace`` per second got
    in (the real-time matrix's measure of a recovery), in half-second steps."""
    for half_seconds in range(30):
        start = since + half_seconds / 2
        if client.goodput(start, start + 1.0) >= pace:
            return half_seconds / 2 + 1.0  # exact: (start + 1.0) - since read 5.000000000000001
    return math.inf


def _recovery_after_outage(seed: int, spread: float, start: float) -> float:
    """Seconds from a 10-s outage's end back to 85 % of the bucket's 200/s."""
    sim = Simulation(Chain(TokenBucket(200, 20), Outage(start, start + 10.0)),
                     seed=seed, spread=spread, uplink=0.002)  # fmt: skip
    client = sim.add_client(rows=8000, ceiling=1000)
    sim.run(start + 25.0)
    return _seconds_back(client, start + 10.0, 0.85 * 200)


def test_an_outage_that_ends_near_a_dips_mark_is_recovered_from_within_three_seconds() -> None:
    """A run that took part of a bucket's excess for refusals not about the rate dips under
    its pace on the wall clock's 10-s marks. A dip just after an outage measured what got in
    over a horizon that was mostly the outage: back at 236/s, it read 40/s, confirmed a
    "limit" there and climbed back for 5.5-6.5 s (4 of these 72 runs; 5.6 s in one real-time
    matrix run). The dip now waits until the horizon holds only the resumed pace."""
    recoveries = {
        (seed, spread, start): _recovery_after_outage(seed, spread, start)
        for seed in range(12)
        for spread in (0.0, LATE)
        for start in (5.0, 5.13, 5.37)
    }
    slow = {case: took for case, took in recoveries.items() if took > 3.0}
    assert not slow


def recovery_after_step_up(
    seed: int,
    spread: float,
    capacity: float = 200.0,
    low: float = 0.3,
    back_at: float = 20.0,
) -> float:
    """Seconds from a capacity's return (``capacity`` → ``low`` × it at 10 s → back at
    ``back_at``) back to 80 % of it; the run asks five times the capacity."""
    steps = [(0.0, capacity), (10.0, low * capacity), (back_at, capacity)]
    sim = Simulation(Schedule(steps), seed=seed, spread=spread, uplink=0.002)
    client = sim.add_client(rows=int(23 * capacity), ceiling=5 * capacity)
    sim.run(back_at + 20.0)
    return _seconds_back(client, back_at, 0.8 * capacity)


def test_a_capacity_that_came_back_is_used_again_within_five_seconds() -> None:
    """A probe just over the low capacity shortly before it came back left an overshoot a
    few percent above the pace, and bisecting that gap took a probe a second for up to three
    seconds before the climb back to the earlier peak began: back in 5.5-6 s in 5 of these
    48 runs (5.7 s in one real-time matrix run). Well under a recent peak, a probe now goes
    just past such an overshoot."""
    recoveries = {
        (seed, spread): recovery_after_step_up(seed, spread)
        for seed in range(24)
        for spread in (0.0, LATE)
    }
    slow = {case: took for case, took in recoveries.items() if took > 5.0}
    assert not slow


def test_a_cloud_that_refuses_everything_stops_the_run_after_the_outage_limit() -> None:
    sim = Simulation(Outage(0.0, 1e9))
    client = sim.add_client(rows=5000, ceiling=2000, max_outage=30.0)
    sim.run(120)
    assert client.stopped_at is not None
    assert 30.0 <= client.stopped_at <= 32.0
    assert client.requests <= 5 * 32
    assert not client.outcomes.get(Outcome.GAVE_UP)


@dataclass(frozen=True)
class TwoRuns:
    shares: tuple[float, float]  # each run's goodput ÷ capacity while both run
    refused: float  # refused share of both runs' requests meanwhile

    @classmethod
    def judged(cls, clients: list[Client], start: float, end: float) -> TwoRuns:
        """Two runs on one 200/s limit, from ``start`` to ``end``."""
        accepted = [client.goodput(start, end) for client in clients]
        sent = sum(client.sent_rate(start, end) for client in clients)
        return cls((accepted[0] / 200, accepted[1] / 200), 1.0 - sum(accepted) / sent)


def _two_runs(
    seed: int,
    offset: float,
    *,
    rows: int = 5000,
    late: bool = False,
    judged: float = 5.0,
    until: float = 22.0,
    uplink: float = 0.0,
) -> TwoRuns:
    """Two runs on one 200/s bucket, the second starting ``offset`` s after the first, judged
    from ``judged`` s after the second began to ``until``, answers ``late`` or on time (see
    LATE); requests reach the server up to ``uplink`` s after they leave."""
    spread = LATE if late else 0.0
    sim = Simulation(TokenBucket(200, 20), seed=seed, spread=spread, uplink=uplink)
    first = sim.add_client(rows=rows, ceiling=600)
    second = sim.add_client(rows=rows, ceiling=600, start=offset)
    sim.run(offset + until)
    return TwoRuns.judged([first, second], offset + judged, offset + until)


@cache
def two_runs() -> list[TwoRuns]:
    """48 seeds, every other one answering late, × the second run starting with the first,
    half a second or three seconds later: 144 runs. One offset alone is one point of a
    chaotic system — at 3 s, a 2 % smaller probe step moved the median smaller share from
    42 % to 14 % — and 48 runs were too few as well: the first 16 seeds gave a median of
    43 % where 48 give 35 %, so a change that left the spread as it was could fail them."""
    return [
        _two_runs(seed, offset, late=seed % 2 == 1)
        for offset in (0.0, 0.5, 3.0)
        for seed in range(48)
    ]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def test_two_runs_sharing_one_limit_use_it_together_and_rarely_starve() -> None:
    runs = two_runs()
    assert all(sum(run.shares) >= 0.9 for run in runs)
    smaller = [min(run.shares) for run in runs]
    assert _median(smaller) >= 0.33
    assert sum(share < 0.10 for share in smaller) <= 15
    assert _median([run.refused for run in runs]) <= 0.03


# Gaps, over the 144 runs (on the pacer's grid: see the test after next): the smaller share
# is under 35 % in 73 of them, under 10 % in 11; and in 36 the two flood the limit, 11-71 %
# of their requests refused, over these 17 s (the dips that end floods come every 10 s; see
# test_two_runs_on_one_limit_neither_flood_it_nor_starve_after_two_minutes).
# Each run's experiment reads the other's moves: when the other slows down at the same time, a
# limit looks like refusals that are not about the rate.
@KNOWN_GAP
def test_two_runs_sharing_one_limit_each_find_a_fair_share() -> None:
    assert all(min(run.shares) >= 0.35 for run in two_runs())


@KNOWN_GAP
def test_two_runs_sharing_one_limit_never_flood_it() -> None:
    assert all(run.refused <= 0.10 for run in two_runs())


@cache
def two_runs_started_together() -> list[TwoRuns]:
    """Two runs of 800 rows each started at the same moment on one 200/s bucket, as the
    real-time matrix runs them (benchmarks/pacing_matrix.py), judged over the time both
    run: 36 seeds × answers after 5 or 30 ms × on time or late × requests arriving on the
    pacer's grid or up to 2 ms after they leave (as a real event loop delivers them): 288
    runs, half of them off the grid."""
    return [
        _started_together(seed, latency, spread, uplink)
        for uplink in (0.0, 0.002)
        for latency in (0.005, 0.03)
        for spread in (0.0, LATE)
        for seed in range(36)
    ]


def _started_together(
    seed: int, latency: float, spread: float, uplink: float, second_at: float = 0.0
) -> TwoRuns:
    sim = Simulation(TokenBucket(200, 20), seed=seed, spread=spread, latency=latency, uplink=uplink)
    clients = [
        sim.add_client(rows=800, ceiling=600),
        sim.add_client(rows=800, ceiling=600, start=second_at),
    ]
    sim.run(60.0)
    return TwoRuns.judged(clients, second_at, min(client.end for client in clients))


@cache
def two_runs_started_50_ms_apart() -> list[TwoRuns]:
    """The second run 50 ms late, requests off the grid: the first takes the bucket's
    burst, as one of two real runs started together does (their first answers come 1-3 ms
    apart, but one's first clump of requests lands first: in three of four traced pairs,
    2-3 of one run's first answers accepted before its first refusals, 16-37 of the
    other's). 48 runs."""
    return [
        _started_together(seed, latency, spread, 0.002, second_at=0.05)
        for latency in (0.005, 0.03)
        for spread in (0.0, LATE)
        for seed in range(12)
    ]


@cache
def two_runs_started_apart() -> list[TwoRuns]:
    """The second run 0.3 or 0.6 s after the first, as a second operator's or a retried
    shard's run joins one that is still finding its pace: 800 rows each, requests off the
    grid, judged over the time both run. 24 seeds × answers after 5 or 30 ms × on time or
    late: 192 runs."""
    return [
        _started_together(seed, latency, spread, 0.002, second_at=second_at)
        for second_at in (0.3, 0.6)
        for latency in (0.005, 0.03)
        for spread in (0.0, LATE)
        for seed in range(24)
    ]


def test_two_runs_started_apart_rarely_flood_the_limit() -> None:
    """The second run's flood at its first pace meets the first run's experiment: the first
    cuts and sees the share stay (the newcomer's refusals fill it), the newcomer cuts while
    the first goes back up, and each takes the limit for refusals that are not about the
    rate, 30-70 % of their requests refused until the dips show otherwise. When the first
    dip came at the next 10-s mark, over 30 % were refused in 63 of these 192 runs (they last
    8-10 s); the first dip after a large share was found now comes at the next 2-s mark: 20."""
    runs = two_runs_started_apart()
    assert sum(run.refused > 0.3 for run in runs) <= 30


def test_a_run_that_joins_one_at_its_limit_mid_experiment_gets_its_share() -> None:
    """The real-time matrix's late join: the second run 0.35 s after the first, 800 rows
    each, 24 seeds × answers after 5 or 30 ms × on time or late (96 runs). The newcomer's
    flood lands in the middle of the first run's cut experiment: the share rises at the
    slower pace, and judged with the step before it (the run alone at its limit), the
    steps fit no limit; the first run went back up as if the refusals were a flaky
    backend's and kept most of the limit. The smaller share was under 35 % in 17 of these;
    an experiment that judges only the steps since the cloud changed, 6."""
    runs = [
        _started_together(seed, latency, spread, 0.002, second_at=0.35)
        for latency in (0.005, 0.03)
        for spread in (0.0, LATE)
        for seed in range(24)
    ]
    assert sum(min(run.shares) < 0.35 for run in runs) <= 10


@cache
def two_long_runs(uplink: float) -> list[TwoRuns]:
    """Two long runs on one 200/s bucket judged from 100 to 120 s, requests reaching it up to
    ``uplink`` s after they leave: 16 seeds (every other one answering late) × the second
    0, 0.5 or 3 s after the first: 48 runs. Does a split, or a flood, that formed early
    last? The table (benchmarks/pacing_sim_table.py) shows more starts."""
    return [
        _two_runs(
            seed, offset, rows=40000, late=seed % 2 == 1, judged=100.0, until=120.0, uplink=uplink
        )
        for offset in (0.0, 0.5, 3.0)
        for seed in range(16)
    ]


@pytest.mark.parametrize("uplink", [0.0, 0.001, 0.002])
def test_two_runs_on_one_limit_neither_flood_it_nor_starve_after_two_minutes(
    uplink: float,
) -> None:
    """**Floods.** Each run takes the limit, which the other alone fills, for refusals that
    are not about the rate. Their dips, on the same marks of the clock, show it: in 4 of 24
    runs on the pacer's grid the two still refused 51-81 % of their requests after 100 s
    when each dipped on its own timer; off the grid, 2 of 24 still refused 68-74 % when a
    dip went to half the pace at most (two runs each reading 70-80 % refused stayed well
    over the limit at half). Over 144 starts on the grid, the pacer before a stale pace's
    first probe stepped 4× (RESULTS section 31) left one at 48.7 %; after it none was over
    16.7 %. A chaotic system's few starts decide little either way: what is held is that a
    flood rarely lasts two minutes, and never at its full height.

    **Starving.** A run pushed to a few requests a second while the other flooded stays
    near there: each experiment at that pace waits 10-20 s for its 32 answers, and the
    other run's probes refuse some of its retries, read as its own excess. With dips to
    half the pace at most, one run of 24 on the grid got 1 % of the limit from 100 to 120 s
    (7.4 → 1.1/s); with dips under what gets in, the worst of those 24 got 27 %. Which
    starts starve shifts with every change to the pacer (617cfd4's opening measure and
    plateau moved them, and so did the sooner dip of a large share): 2 of 144 under 10 %
    before and after the sooner dip, 2 at 4bd6fa0, 3 at 86b4576 (one in each 48). A known
    gap: a run held at a few requests a second reads each refusal the other's probes spill
    onto it as its own excess and cuts 15 %, where the larger run only takes its probe back
    (RESULTS section 26 lists what was tried).

    The two claims were held on separate starts until 86b4576 (on the grid, 48 seeds at each
    offset: one over 10 % refused at most); over these, no run was over 4.1 % refused after
    100 s. One set of starts for both halves the suite's two-minute runs, the CI's largest
    cost; one uplink a test, so the three run side by side."""
    runs = two_long_runs(uplink)
    refused = [run.refused for run in runs]
    assert sum(share > 0.10 for share in refused) <= 1
    assert max(refused) <= 0.25
    smaller = [min(run.shares) for run in runs]
    assert sum(share < 0.10 for share in smaller) <= 2


@dataclass(frozen=True)
class FreedLimit:
    second_end: float  # when the run that finishes first ended
    first_end: float  # when the other did (0.0: not within the simulated time)
    took: float  # seconds from the second's end until the first got 80 % of the bucket


@cache
def freed_limits() -> list[FreedLimit]:
    """Two runs on one 200/s bucket, the second (800 rows) starting 0, 0.35 or 3 s after the
    first (4,000 rows) and ending long before it; 16 seeds, requests off the grid: 48."""
    found = []
    for offset in (0.0, 0.35, 3.0):
        for seed in range(16):
            sim = Simulation(TokenBucket(200, 20), seed=seed, spread=LATE if seed % 2 else 0.0,
                             uplink=0.002)  # fmt: skip
            first = sim.add_client(rows=4000, ceiling=600)
            second = sim.add_client(rows=800, ceiling=600, start=offset)
            sim.run(offset + 60.0)
            took = _seconds_back(first, second.end, 0.8 * 200)  # the capacity-back measure
            found.append(FreedLimit(second.end, first.end, took))
    return found


def test_the_freed_limit_cases_are_what_they_claim() -> None:
    """Kept apart from the known gap below, whose xfail would also swallow a broken setup:
    in every case the short run ends first and the long one goes on after it."""
    assert all(0.0 < case.second_end < case.first_end for case in freed_limits())


def test_a_run_whose_partner_finished_mostly_uses_the_freed_limit_within_five_seconds() -> None:
    """The run left alone keeps what it learnt while it shared the limit. A capacity a cut
    found while both ran (half the limit, in a traced start) held its probes to 2 % steps up
    to 1.15 × it, and an overshoot from the other run's last seconds bounded them for up to
    5 s more (traced: 72/s when the other ended, 115/s 10 s later): over these 48, 22 took
    over 5 s to use the freed limit, the median 5.0 s, the worst 12.5 s (RESULTS section 29).
    Nothing refused for two seconds, the plateau lifts and an overshoot within it is
    forgotten (PaceController._stale): 8 over 5 s, the median 4.5 s, the worst 7.0 s. With
    only the plateau lifted, 10 over 5 s; with only stale overshoots forgotten (any, not just
    those within the plateau), 16 and 12.5 s. A stale pace's probes grow from the first on,
    not after a first 2 % step (RESULTS section 31): 4 over 5 s, the median 4.0 s, the
    worst 5.5 s."""
    took = [case.took for case in freed_limits()]
    assert sum(seconds > 5.0 for seconds in took) <= 4
    assert max(took) <= 6.0


# A gap still: the 4 above (5.5 s each). After the other run's last refusals, its probes
# grow 4× a step once stale, overshoot (to 220/s from 131/s in a traced start), go back to
# the pace before and bisect from there, or the overshoot that bounds them lies above the
# plateau of a capacity found while the two shared (kept: see
# PaceController._forget_close_overshoot).
@KNOWN_GAP
def test_a_run_whose_partner_finished_uses_the_freed_limit_within_five_seconds() -> None:
    assert max(case.took for case in freed_limits()) <= 5.0


def test_two_runs_started_together_off_the_grid_split_the_limit() -> None:
    """Requests arriving as a real event loop delivers them. Each run's first answers are
    80 % refused; one that held back on a streak resumes on a guess. Held back again at once
    on five more in a row, and resumed at what got in over a whole second it had not yet
    run, it went to a quarter of its pace or less, and the other measured the whole limit as
    its own. Now a streak in a run's first window no longer holds it back once something
    got in: each reads the window whole and goes under what got in after its first
    refusal, as the other does. Of these 144, 5 under 35 %, the worst 31 % (3 and 33 %
    since 24ab7ea), none over 22 % refused."""
    runs = two_runs_started_together()[144:]
    smaller = [min(run.shares) for run in runs]
    assert sum(share < 0.35 for share in smaller) <= 7
    assert min(smaller) >= 0.25
    assert max(run.refused for run in runs) <= 0.30


# On the pacer's grid, the smaller share is under 35 % in 125 of the 144 (124 before
# d9f570c; `python benchmarks/pacing_sim_table.py`). There, two runs
# sending 600/s each on the same grid meet a bucket that makes a token every third slot:
# every token goes to the run whose slot comes first after it, and the other's first window
# gets at most 55/s in, often nothing (then it holds back), where it gets ~100/s with
# requests a millisecond off the grid, as a real event loop sends them (the test above).
# From there each run's cuts go under what it got in, which keeps the split; only the
# probes' step that does not grow with the rate closes it, a few requests a second at a
# time. Over that time 16 % of their requests are refused (the median), most of them in the
# first half second.
@KNOWN_GAP
def test_two_runs_started_together_each_find_a_fair_share() -> None:
    assert all(min(run.shares) >= 0.35 for run in two_runs_started_together())


# 50 ms apart, the smaller share is under 35 % in 7 of 48 (6 before d9f570c; 13 when this
# was first written, 24 when a streak in a run's first window held it back). The
# first run takes the bucket's burst and cuts under what got in before the second's first
# window is out; each then measures what gets in under a different load, so their first
# measures split the limit unevenly, and the cuts after keep the split.
@KNOWN_GAP
def test_two_runs_started_50_ms_apart_each_find_a_fair_share() -> None:
    assert all(min(run.shares) >= 0.35 for run in two_runs_started_50_ms_apart())


# -- what the operator is told -------------------------------------------------------------------

# Limits of several shapes, and what gets in through each (the 200/s bucket behind a fifth
# refused lets in 160 a second).
REPORTED_LIMITS: dict[str, tuple[Callable[[int], ServerModel], float]] = {
    "fixed-window-50": (lambda seed: FixedWindow(50, 1.0), 50),
    "fixed-window-200": (lambda seed: FixedWindow(200, 1.0), 200),
    "sliding-window-200-429": (lambda seed: SlidingWindow(200, 1.0, APIGW), 200),
    "bucket-200-burst-20": (lambda seed: TokenBucket(200, 20), 200),
    "bucket-50-burst-50": (lambda seed: TokenBucket(50, 50), 50),
    "concurrency-8": (lambda seed: ConcurrencyLimit(8, 0.04), 8 / 0.045),
    "bucket-200-fifth-refused": (
        lambda seed: Chain(TokenBucket(200, 20), RandomRefusals(0.2, seed=5 + seed)),
        160,
    ),
    "bucket-200-outage": (lambda seed: Chain(TokenBucket(200, 20), Outage(3.0, 8.0)), 200),
}


@dataclass(frozen=True)
class Reported:
    run: str
    seconds: float  # the run's length
    share: float | None  # the capacity its findings report, as a share of the limit
    found: bool  # the pacer had a capacity figure of its own


@cache
def reported_capacities() -> list[Reported]:
    """What each run's findings report: every shape above, runs of 60 to 3,000 rows at
    --rate 1000, four seeds each, started on the limiter's grid and off it (a fixed window's
    edges fall anywhere in the run's seconds)."""
    reported = []
    for name, (model, limit) in REPORTED_LIMITS.items():
        for rows, seed in itertools.product((60, 120, 250, 500, 1000, 3000), range(4)):
            sim = Simulation(model(seed), spread=LATE if seed % 2 else 0.0, seed=seed)
            client = sim.add_client(rows=rows, ceiling=1000, start=0.37 * (seed % 3))
            sim.run(600.0)
            found = client.pacer.findings(client.end).get("capacity_per_second")
            share = None if found is None else float(str(found)) / limit
            run = f"{name}, {rows} rows, seed {seed}"
            capacity = client.pacer.control.capacity
            reported.append(Reported(run, client.end, share, capacity is not None))
    return reported


def test_the_capacity_reported_is_one_the_run_saw() -> None:
    """A short run's working figure is often one its start-up read off a fifth of a second
    after a limiter's burst: up to 18× a fixed window's quota was reported (14 of these 192
    runs over 1.5×). What is reported is no more than got in during a second the cloud
    refused in, and a run of five seconds or more that found a capacity says it."""
    over = [(r.run, r.share) for r in reported_capacities() if r.share and r.share > 1.5]
    assert not over, over
    unsaid = [r.run for r in reported_capacities() if r.found and r.share is None]
    assert all(r.seconds < 5.0 for r in reported_capacities() if r.run in unsaid), unsaid


# Gap: in a few short runs (10 of the 192: 120-500 rows, 3-8 s), the figure is read under the
# limit (0.10-0.66 of it): the cut measured what got in while few rows were left, and no
# second the cloud refused in saw more.
@KNOWN_GAP
def test_the_capacity_reported_is_not_far_under_the_limit() -> None:
    under = [(r.run, r.share) for r in reported_capacities() if r.share and r.share < 2 / 3]
    assert not under, under


def test_the_ceiling_is_never_passed_whatever_the_server_says() -> None:
    sim = Simulation(RandomRefusals(0.3, seed=1))
    client = sim.add_client(rows=4000, ceiling=250, burst=5)
    sim.run(60)
    busiest = max(client.sent_bins.values())
    assert busiest <= 250 * 0.5 + 5  # one bin is half a second
