"""Server shapes a pacer meets: gateways' limiters and backends' faults, as pure models.

Each model judges one request at a time from plain inputs — ``now`` (seconds since the server
started) and the request's key — and keeps no clock of its own, so the same object serves a
virtual-time simulator (tests/pacing_sim.py) and a real HTTP server (the fake's gateway,
``bulktag serve-fake --limiter …``, and the benchmark matrix). One shape, one class:

==================  =====================================================================
TokenBucket         refills steadily (Envoy, AWS API Gateway): a burst, then ``rate``/s
FixedWindow         the first ``limit`` requests of each ``period`` pass (Kong's default)
SlidingWindow       at most ``limit`` accepted in any trailing ``period`` (HAProxy)
ConcurrencyLimit    at most ``limit`` requests in service at once, each ``service_time`` s
QueueingServer      one server at ``rate``/s with a queue: latency grows, then it refuses
RandomRefusals      a fixed share refused at *any* rate (one bad node behind a balancer)
PerRowRefusals      some rows are refused their first N times, whatever the rate
Outage              everything refused between two times
Schedule            a token bucket whose rate moves at given times
Chain               several in a row (a gateway in front of a flaky backend)
==================  =====================================================================

Two clients that share one model instance share its limit.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the server does with one request: serve it (``status`` 2xx) after ``latency``
    seconds, or refuse it at once with ``status`` (and ``retry_after`` seconds, if sent)."""

    status: int = 204
    latency: float = 0.0
    retry_after: float | None = None

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


SERVED = Verdict()


@dataclass(frozen=True, slots=True)
class Refusal:
    """How a model says no: 503, or 429 as Huawei's gateway does (``APIGW.0308``)."""

    status: int = 503
    retry_after: float | None = None

    def verdict(self) -> Verdict:
        return Verdict(self.status, 0.0, self.retry_after)


class ServerModel(Protocol):
    def arrive(self, now: float, key: str) -> Verdict: ...

    def leave(self, now: float) -> None:
        """An accepted request's answer went out (only concurrency-aware models care)."""


class _Stateless:
    refusal: Refusal

    def leave(self, now: float) -> None:
        return None


class TokenBucket(_Stateless):
    """``rate`` per second, at most ``burst`` at once. Invariant: 0 ≤ tokens ≤ burst."""

    def __init__(self, rate: float, burst: float = 1.0, refusal: Refusal = Refusal()) -> None:
        self.rate, self.burst, self.refusal = rate, max(1.0, burst), refusal
        self._tokens, self._stamp = self.burst, 0.0

    def arrive(self, now: float, key: str) -> Verdict:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = max(self._stamp, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return SERVED
        return self.refusal.verdict()


class FixedWindow(_Stateless):
    """The first ``limit`` requests of each ``period`` pass; the counter resets on the period."""

    def __init__(self, limit: int, period: float = 1.0, refusal: Refusal = Refusal()) -> None:
        self.limit, self.period, self.refusal = limit, period, refusal
        self._window, self._count = -1, 0

    def arrive(self, now: float, key: str) -> Verdict:
        window = int(now // self.period)
        if window != self._window:
            self._window, self._count = window, 0
        if self._count < self.limit:
            self._count += 1
            return SERVED
        return self.refusal.verdict()


class SlidingWindow(_Stateless):
    """At most ``limit`` accepted requests in any trailing ``period``: a freed place comes
    back one at a time, never all at once."""

    def __init__(self, limit: int, period: float = 1.0, refusal: Refusal = Refusal()) -> None:
        self.limit, self.period, self.refusal = limit, period, refusal
        self._accepted: deque[float] = deque()

    def arrive(self, now: float, key: str) -> Verdict:
        while self._accepted and self._accepted[0] <= now - self.period:
            self._accepted.popleft()
        if len(self._accepted) < self.limit:
            self._accepted.append(now)
            return SERVED
        return self.refusal.verdict()


class ConcurrencyLimit:
    """At most ``limit`` requests in service at once, each taking ``service_time`` seconds
    (± ``jitter`` of it, uniformly, as a real backend's do): a capacity of
    ``limit / service_time`` per second."""

    def __init__(
        self,
        limit: int,
        service_time: float,
        refusal: Refusal = Refusal(),
        *,
        jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.limit, self.service_time, self.refusal = limit, service_time, refusal
        self.jitter = jitter
        self._rng = random.Random(seed)
        self.in_service = 0

    def arrive(self, now: float, key: str) -> Verdict:
        if self.in_service >= self.limit:
            return self.refusal.verdict()
        self.in_service += 1
        spread = self.jitter * (2.0 * self._rng.random() - 1.0) if self.jitter else 0.0
        return Verdict(204, self.service_time * (1.0 + spread))

    def leave(self, now: float) -> None:
        self.in_service = max(0, self.in_service - 1)


class QueueingServer(_Stateless):
    """One server working at ``rate`` per second behind a queue: as the client goes faster
    the latency grows first; a request that would wait more than ``max_wait`` is refused."""

    def __init__(self, rate: float, max_wait: float = 0.5, refusal: Refusal = Refusal()) -> None:
        self.rate, self.max_wait, self.refusal = rate, max_wait, refusal
        self._free_at = 0.0

    def arrive(self, now: float, key: str) -> Verdict:
        start = max(now, self._free_at)
        if start - now > self.max_wait:
            return self.refusal.verdict()
        self._free_at = start + 1.0 / self.rate
        return Verdict(204, self._free_at - now)


class RandomRefusals(_Stateless):
    """Refuses ``share`` of the requests at any rate: the refusals say nothing about load."""

    def __init__(self, share: float, seed: int = 0, refusal: Refusal = Refusal()) -> None:
        self.share, self.refusal = share, refusal
        self._rng = random.Random(seed)

    def arrive(self, now: float, key: str) -> Verdict:
        if self._rng.random() < self.share:
            return self.refusal.verdict()
        return SERVED


class PerRowRefusals(_Stateless):
    """``share`` of the rows (chosen by their key's hash) are refused their first ``times``
    attempts, at any rate."""

    def __init__(self, share: float, times: int, refusal: Refusal = Refusal()) -> None:
        self.share, self.times, self.refusal = share, times, refusal
        self._seen: dict[str, int] = {}

    def arrive(self, now: float, key: str) -> Verdict:
        digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
        if int.from_bytes(digest, "big") / 2**32 >= self.share:
            return SERVED
        seen = self._seen.get(key, 0)
        if seen >= self.times:
            self._seen.pop(key, None)
            return SERVED
        self._seen[key] = seen + 1
        return self.refusal.verdict()


class Outage(_Stateless):
    """Everything refused from ``start`` until ``end`` (seconds since the server started)."""

    def __init__(self, start: float, end: float, refusal: Refusal = Refusal()) -> None:
        self.start, self.end, self.refusal = start, end, refusal

    def arrive(self, now: float, key: str) -> Verdict:
        if self.start <= now < self.end:
            return self.refusal.verdict()
        return SERVED


class Schedule(_Stateless):
    """A token bucket whose rate is ``steps[i][1]`` from time ``steps[i][0]`` on; its burst is
    ``burst_seconds`` of the current rate."""

    def __init__(
        self,
        steps: Sequence[tuple[float, float]],
        burst_seconds: float = 0.1,
        refusal: Refusal = Refusal(),
    ) -> None:
        if not steps or steps[0][0] > 0:
            raise ValueError("a schedule starts at time 0")
        self.steps, self.burst_seconds, self.refusal = sorted(steps), burst_seconds, refusal
        self._bucket = TokenBucket(self.steps[0][1], self.steps[0][1] * burst_seconds, refusal)

    def rate_at(self, now: float) -> float:
        rate = self.steps[0][1]
        for start, step_rate in self.steps:
            if start <= now:
                rate = step_rate
        return rate

    def arrive(self, now: float, key: str) -> Verdict:
        rate = self.rate_at(now)
        if rate != self._bucket.rate:
            self._bucket.rate = rate
            self._bucket.burst = max(1.0, rate * self.burst_seconds)
        return self._bucket.arrive(now, key)


class Chain:
    """Requests pass each model in turn (a gateway in front of a backend); the first refusal
    is the answer, and the latencies of the models that served add up."""

    def __init__(self, *models: ServerModel) -> None:
        self.models = models
        self._passed: deque[list[ServerModel]] = deque()

    def arrive(self, now: float, key: str) -> Verdict:
        latency = 0.0
        for n, model in enumerate(self.models):
            verdict = model.arrive(now, key)
            if not verdict.accepted:
                for earlier in self.models[:n]:
                    earlier.leave(now)  # it never reached the end: free its place upstream
                return verdict
            latency += verdict.latency
        return Verdict(204, latency)

    def leave(self, now: float) -> None:
        for model in self.models:
            model.leave(now)


def parse_limiter(text: str, refusal: Refusal = Refusal()) -> ServerModel:
    """A model from ``bulktag serve-fake --limiter`` text:

    ``bucket:RATE[:BURST]``, ``fixed:LIMIT[:PERIOD]``, ``sliding:LIMIT[:PERIOD]``,
    ``concurrency:LIMIT:SERVICE_S``, ``queue:RATE[:MAX_WAIT_S]``,
    ``schedule:T0=RATE,T1=RATE,…`` (e.g. ``schedule:0=200,20=60,40=200``).
    """
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind == "schedule":
            steps = [tuple(map(float, step.split("="))) for step in rest.split(",")]
            return Schedule([(start, rate) for start, rate in steps], refusal=refusal)
        numbers = [float(part) for part in parts]
        return _BUILDERS[kind](numbers, refusal)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(
            f"bad limiter {text!r}: expected bucket:RATE[:BURST], fixed:LIMIT[:PERIOD], "
            "sliding:LIMIT[:PERIOD], concurrency:LIMIT:SECONDS, queue:RATE[:MAX_WAIT] "
            "or schedule:T=RATE,T=RATE,…"
        ) from exc


def _positive(numbers: list[float], count: int) -> list[float]:
    if not 1 <= len(numbers) <= count or any(n <= 0 for n in numbers):
        raise ValueError("limiter numbers must be positive")
    return numbers


def _and_default(numbers: list[float], default: float) -> tuple[float, float]:
    """``FIRST[:SECOND]`` as two numbers. A pair, not a list: mypy can then see that unpacking
    it never reaches the ``refusal`` parameter."""
    first, *second = _positive(numbers, 2)
    return first, second[0] if second else default


_BUILDERS: dict[str, Callable[[list[float], Refusal], ServerModel]] = {
    "bucket": lambda n, r: TokenBucket(*_and_default(n, 1.0), refusal=r),
    "fixed": lambda n, r: FixedWindow(int(n[0]), _and_default(n, 1.0)[1], refusal=r),
    "sliding": lambda n, r: SlidingWindow(int(n[0]), _and_default(n, 1.0)[1], refusal=r),
    "concurrency": lambda n, r: ConcurrencyLimit(int(_positive(n, 2)[0]), n[1], refusal=r),
    "queue": lambda n, r: QueueingServer(*_and_default(n, 0.5), refusal=r),
}
