"""A run in virtual time: the real pacer and retry policy against a server model, no event loop.

What is real: :class:`bulktag.pacing.Pacer`'s gate (``earliest``/``grant``) and controller,
:func:`bulktag.policy.decide`, and the server shapes of :mod:`bulktag.fake.limiters`. What is
modelled: the engine's pool — ``concurrency`` requests at most between the gate and the answer,
a row waiting for its retry holds no worker, and attempts spent while the cloud accepts nothing
do not count against a row (as :mod:`bulktag.engine` does) — and the network, as a fixed
latency. Hundreds of simulated seconds take milliseconds, the same every time.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bulktag.attempt import FREE_ATTEMPTS
from bulktag.fake.limiters import ServerModel, Verdict
from bulktag.model import Answer, Outcome
from bulktag.pacing import Pacer, PacingPolicy, Signal
from bulktag.policy import Retry, RetryPolicy, Settle, decide

BIN = 0.5  # seconds per bin of the time series


@dataclass
class Client:
    """One bulktag process: its rows, its pacer, its counts and time series."""

    name: str
    rows: int
    ceiling: float
    concurrency: int
    max_outage: float | None
    pacer: Pacer = field(init=False)
    pending: Iterator[int] = field(init=False)
    retry_ready: deque[tuple[int, int, int]] = field(default_factory=deque)
    gate: deque[tuple[int, int, int]] = field(default_factory=deque)
    busy: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=dict)
    settled: int = 0  # rows with an outcome
    requests: int = 0
    accepted: int = 0
    refused: int = 0
    sent_bins: dict[int, int] = field(default_factory=dict)
    accepted_bins: dict[int, int] = field(default_factory=dict)
    refused_bins: dict[int, int] = field(default_factory=dict)
    allowed: dict[int, float] = field(default_factory=dict)
    stopped_at: float | None = None  # the outage stop
    most_settled_at: float | None = None  # when 95 % of the rows had an outcome (the tail aside)
    finished_at: float | None = None
    pump_due: float | None = None

    def __post_init__(self) -> None:
        self.pending = iter(range(self.rows))

    def rate_between(self, bins: dict[int, int], start: float, end: float) -> float:
        first, last = int(start / BIN), int(end / BIN)
        return sum(bins.get(b, 0) for b in range(first, last)) / max(end - start, 1e-9)

    def goodput(self, start: float, end: float) -> float:
        return self.rate_between(self.accepted_bins, start, end)

    def sent_rate(self, start: float, end: float) -> float:
        return self.rate_between(self.sent_bins, start, end)

    @property
    def refused_share(self) -> float:
        return self.refused / self.requests if self.requests else 0.0

    @property
    def end(self) -> float:
        return self.finished_at or self.stopped_at or 0.0


class Simulation:
    """Clients sharing one server model, driven by a heap of timed events."""

    def __init__(
        self,
        model: ServerModel,
        *,
        latency: float = 0.005,
        spread: float = 0.0,
        uplink: float = 0.0,
        retry: RetryPolicy | None = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.latency = latency
        # Mean of an exponential extra delay per answer: a busy network or event loop, where
        # answers come back late and out of order (requests still in flight when the pace
        # changes are answered after it changed).
        self.spread = spread
        # Requests reach the server up to this long after they leave (uniformly): a real
        # sender's event loop and network never deliver on a grid. Two runs paced on perfect
        # grids lock phases with a bucket's refills, one landing just after each, every time.
        self.uplink = uplink
        self.retry = retry or RetryPolicy()
        self.rng = random.Random(seed)
        self.now = 0.0
        self.clients: list[Client] = []
        # (when, order, action, its arguments): no closure made per event, which was a tenth
        # of the two-minute runs' time
        self._events: list[tuple[float, int, Callable[..., None], tuple[object, ...]]] = []
        self._seq = itertools.count()

    def add_client(
        self,
        *,
        rows: int,
        ceiling: float,
        concurrency: int = 64,
        burst: int = 1,
        policy: PacingPolicy | None = None,
        max_outage: float | None = None,
        start: float = 0.0,
    ) -> Client:
        client = Client(f"c{len(self.clients)}", rows, ceiling, concurrency, max_outage)
        self.clients.append(client)

        def begin() -> None:  # a process that starts later makes its pacer then
            client.pacer = Pacer(
                ceiling, policy, clock=lambda: self.now, burst=burst, slow_start_to=concurrency
            )
            self._feed(client)

        self.at(start, begin)
        return client

    def at(self, when: float, action: Callable[..., None], *args: object) -> None:
        heapq.heappush(self._events, (when, next(self._seq), action, args))

    def run(self, until: float) -> None:
        events, pop = self._events, heapq.heappop
        while events and events[0][0] <= until:
            when, _, action, args = pop(events)
            self.now = when
            action(*args)
        self.now = max(self.now, until)

    # ── the pool ───────────────────────────────────────────────────────────────────────────

    def _feed(self, client: Client) -> None:
        """Free workers take due retries first, then new rows, and queue at the gate."""
        while client.busy < client.concurrency and client.stopped_at is None:
            if client.retry_ready:
                item = client.retry_ready.popleft()
            else:
                row = next(client.pending, None)
                if row is None:
                    break
                item = (row, 0, 0)  # (row, attempts counted, attempts made)
            client.busy += 1
            client.gate.append(item)
        self._pump(client)

    def _pump(self, client: Client) -> None:
        """Let the head of the gate's queue go when the pacer allows, as wait_turn does."""
        if client.pump_due is not None and client.pump_due <= self.now:
            client.pump_due = None
        pacer = client.pacer
        while client.gate:
            start = pacer.earliest(self.now)
            if start > self.now:
                due = min(start, self.now + 0.1)  # wait_turn naps at most 0.1 s
                if client.pump_due is None or due < client.pump_due:
                    client.pump_due = due
                    self.at(due, self._pump, client)
                return
            pacer.grant(self.now)
            self._send(client, client.gate.popleft(), pacer.level)

    def _send(self, client: Client, item: tuple[int, int, int], level: int) -> None:
        sent_at = self.now
        client.requests += 1
        _bump(client.sent_bins, sent_at)
        client.allowed[int(sent_at / BIN)] = client.pacer.rate
        if self.uplink:
            arrival = sent_at + self.rng.uniform(0.0, self.uplink)
            self.at(arrival, self._arrive, client, item, sent_at, level)
        else:
            self._arrive(client, item, sent_at, level)

    def _arrive(
        self, client: Client, item: tuple[int, int, int], sent_at: float, level: int
    ) -> None:
        row, counted, made = item
        verdict = self.model.arrive(self.now, f"{client.name}-{row}")
        done = self.now + self.latency + verdict.latency
        if verdict.accepted:  # the server is done with it then, however late the answer is
            self.at(done, self.model.leave, done)
        if self.spread:
            done += self.rng.expovariate(1.0 / self.spread)
        answered = (row, counted + 1, made + 1)
        self.at(done, self._answer, client, answered, verdict, sent_at, level)

    def _answer(  # type: ignore[no-untyped-def]
        self, client: Client, item: tuple[int, int, int], verdict, sent_at: float, level: int
    ) -> None:
        row, counted, made = item
        client.pacer.returned()
        retry_after = verdict.retry_after
        answer = Answer(verdict.status, None if retry_after is None else str(int(retry_after)))
        decision = decide(self.retry, answer, counted, self.now, self.rng)
        pacer = client.pacer
        if verdict.accepted:
            client.accepted += 1
            _bump(client.accepted_bins, self.now)
            if pacer.calm:  # the engine's fast path: an accepted answer only counts
                pacer.accepted_while_calm(sent_at)
            else:
                pacer.answered(
                    sent_at=sent_at, signal=Signal.ACCEPTED, fresh=made == 1, level=level
                )
        else:
            client.refused += 1
            _bump(client.refused_bins, self.now)
            asked = decision.server_asked if isinstance(decision, Retry) else None
            pacer.answered(
                sent_at=sent_at,
                signal=Signal.REFUSED,
                retry_after=asked,
                fresh=made == 1,
                level=level,
            )
            control = pacer.control
            # The cloud takes nothing, or refuses a share of everything whatever the rate: not
            # the row's fault (up to a bound, as the engine counts them).
            not_the_rows = control.refusing_all or control.refusals_not_about_rate
            if not_the_rows and made - counted < FREE_ATTEMPTS * self.retry.max_attempts:
                counted -= 1
                if isinstance(decision, Settle) and decision.outcome is Outcome.GAVE_UP:
                    decision = decide(self.retry, answer, counted, self.now, self.rng)
        client.busy -= 1
        if isinstance(decision, Settle):
            client.outcomes[decision.outcome] = client.outcomes.get(decision.outcome, 0) + 1
            client.settled += 1
            if client.most_settled_at is None and client.settled >= 0.95 * client.rows:
                client.most_settled_at = self.now
            if client.settled == client.rows and client.finished_at is None:
                client.finished_at = self.now
        elif isinstance(decision, Retry):
            ready = (row, counted, made)
            self.at(self.now + decision.delay, self._retry_due, client, ready)
        self._check_outage(client)
        self._feed(client)

    def _retry_due(self, client: Client, item: tuple[int, int, int]) -> None:
        client.retry_ready.append(item)
        self._feed(client)

    def _check_outage(self, client: Client) -> None:
        limit = client.max_outage
        if limit is not None and client.stopped_at is None and client.pacer.silent_for() >= limit:
            client.stopped_at = self.now


def _bump(bins: dict[int, int], when: float) -> None:
    key = int(when / BIN)
    bins[key] = bins.get(key, 0) + 1


# ── servers that answer late ───────────────────────────────────────────────────────────────


class Serving:
    """``inner``'s verdicts, its acceptances served for ``service`` ± ``jitter`` × it (the
    backend behind the gateway works; the gateway refuses at once)."""

    def __init__(self, inner: ServerModel, service: float, jitter: float, seed: int) -> None:
        self.inner, self.service, self.jitter = inner, service, jitter
        self.rng = random.Random(seed)

    def arrive(self, now: float, key: str) -> Verdict:
        verdict = self.inner.arrive(now, key)
        if not verdict.accepted:
            return verdict
        served = self.service * (1 + self.jitter * self.rng.uniform(-1.0, 1.0))
        return Verdict(verdict.status, verdict.latency + served, verdict.retry_after)

    def leave(self, now: float) -> None:
        self.inner.leave(now)


class SlowSpell:
    """``inner``'s verdicts, every answer ``extra`` seconds later from ``start`` to ``end``:
    a backend, or the link to it, slowed for a while."""

    def __init__(self, inner: ServerModel, start: float, end: float, extra: float) -> None:
        self.inner, self.start, self.end, self.extra = inner, start, end, extra

    def arrive(self, now: float, key: str) -> Verdict:
        verdict = self.inner.arrive(now, key)
        if not self.start <= now < self.end:
            return verdict
        return Verdict(verdict.status, verdict.latency + self.extra, verdict.retry_after)

    def leave(self, now: float) -> None:
        self.inner.leave(now)
