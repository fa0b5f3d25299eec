"""One request until its answer settles: send → decide → pace → wait and retry (or renew the
token once after a 401). The run's engine and ``verify`` both use it, so a verify is paced by
the cloud's answers and renews its token exactly as a run does.

    token ─► send (a pacer turn, the request) ─► decide (policy) ─► pace (pacer.answered)
                 ▲                                    │
                 └── wait the back-off (or defer) ◄── retry · abort (401): renew once · settle

What differs between the two — what a request carries, what a settled answer becomes, how a
wait is cut short by a stop — is :class:`AttemptLoop`'s hooks; the rule itself is written once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from bulktag.auth import AuthRefused, TokenProvider
from bulktag.model import Answer
from bulktag.pacing import Pacer, Signal
from bulktag.policy import ACCEPTED, Abort, Decision, Retry, RetryPolicy, Settle, decide

_SHORT_BACKOFF = 2.0  # seconds: a request's back-off cap while refusals are rate-independent

# Attempts a request may spend while the cloud accepts nothing, or refuses a share of everything
# whatever the rate, as a multiple of --max-attempts, on top of them: enough to ride out an
# outage or a flaky backend, bounded so that a request refused on every try still ends as
# gave_up once the rest of the work is done.
FREE_ATTEMPTS = 4

W = TypeVar("W")  # what one request is about: the engine's rows, verify's image
R = TypeVar("R")  # what a settled request becomes


# A request that went out: (its answer, when the pacer let it go, how many others were on the
# wire then: the pacer's in-flight level). A plain tuple: one is made per request, and a
# NamedTuple costs eight times as much to make.
Sent = tuple[Answer, float, int]


@dataclass(slots=True)
class Attempts:
    """The attempts made so far for one request."""

    started: float  # when the first attempt began (the record's elapsed_ms)
    base: int = 0  # attempts of a batch these rows were split from (recorded, not counted)
    made: int = 0
    free: int = 0  # made while the cloud accepted nothing: not counted against the request
    refreshed: bool = False  # the token was renewed once already for this request


def signal_of(decision: Decision, answer: Answer) -> Signal | None:
    """What an answer says of the cloud's pace (None: nothing; the token was refused)."""
    if isinstance(decision, Abort):
        return None
    if decision.pushback:
        return Signal.REFUSED
    status = answer.status
    if status is None or status >= 500:
        return Signal.FAILED  # no answer, or a server fault: not about the rate, but not in
    return Signal.ACCEPTED  # done, or answered for the request (404, 403…): the cloud is up


class AttemptLoop(Generic[W, R]):
    """Sends one request until it settles. Subclasses say how a request is sent, what a settled
    answer becomes, and how the run stops; the loop, the decision and the pacing are here."""

    def __init__(
        self,
        pacer: Pacer,
        tokens: TokenProvider,
        retry: RetryPolicy,
        *,
        wall: Callable[[], float],
        rng: random.Random,
        absent_is_ok: bool = False,
    ) -> None:
        self.pacer = pacer
        self._tokens = tokens
        self._retry = retry
        # Retries of refusals that do not depend on the rate: the pace protects the cloud,
        # so a request's own back-off stays short (a 60 s wait for one row only delays the end).
        self._short_retry = replace(retry, max_delay=min(retry.max_delay, _SHORT_BACKOFF))
        self._wall = wall
        self._rng = rng
        self._absent_is_ok = absent_is_ok
        self._free_limit = FREE_ATTEMPTS * retry.max_attempts

    async def attempt(
        self, work: W, attempts: Attempts, *, may_defer: bool = False, grow: bool = False
    ) -> R | None:
        """Send ``work`` until it has an outcome: :meth:`settled`'s value, or
        :meth:`unsettled`'s if the run stopped first, or None if the next attempt was handed
        to a task of its own (``may_defer``, :meth:`defer`). ``grow``: the first send may add
        to ``work`` (the engine's batches)."""
        while True:
            # Sync fast paths first (a valid token here, a free slot in send): most requests
            # await nothing before the request itself, and each coroutine costs on every row.
            token = self._tokens.valid_now() or await self.current_token()
            if token is None:
                return self.unsettled()
            sent = await self.send(work, token, grow and attempts.made == 0)
            if sent is None:
                return self.unsettled()  # the run stopped before this request's turn came
            answer = sent[0]
            attempts.made += 1
            decision = self.decide(answer, attempts)
            self.pace(decision, sent, attempts)
            if isinstance(decision, Settle):
                settled = self.settled(work, decision, answer, attempts)
                if settled is None:  # the answer settles no part of it: one part at a time
                    return await self.one_by_one(work, attempts)
                return settled
            if isinstance(decision, Abort):
                if attempts.refreshed:
                    self.refused_again()
                    return self.unsettled()
                if not await self.refresh(token):
                    return self.unsettled()
                attempts.refreshed = True
                continue
            if may_defer and self.defer(work, attempts, decision.delay):
                return None
            if not await self.wait_or_stop(decision.delay):
                return self.unsettled()

    def decide(self, answer: Answer, attempts: Attempts) -> Decision:
        status = answer.status
        # policy.decide()'s first rule, inline: it answers nearly every request, and gathering
        # decide()'s arguments costs more than the rule (benchmarks/engine_overhead.py).
        if status is not None and 200 <= status < 300:
            return ACCEPTED
        policy = self._retry
        if self.pacer.control.refusals_not_about_rate:
            policy = self._short_retry
        return decide(
            policy,
            answer,
            attempts.made - attempts.free,
            self._wall(),
            self._rng,
            absent_is_ok=self._absent_is_ok,
        )

    def pace(self, decision: Decision, sent: Sent, attempts: Attempts) -> None:
        """Tell the pacer what the answer says of the cloud's pace. While the cloud accepts
        nothing at all, the attempt is not counted against the request (up to a bound), so an
        outage does not burn rows as ``gave_up``: the outage limit ends such a run instead.
        Nor is a refusal the pacer found not to be about the rate: a backend refusing 30 % of
        everything would give up one row in 15,000 after 8 attempts (0.3 ** 8), through no
        fault of the row."""
        pacer = self.pacer
        answer, sent_at, level = sent
        if decision is ACCEPTED and pacer.calm:
            pacer.accepted_while_calm(sent_at)  # an accepted answer changes nothing when calm
            return
        signal = signal_of(decision, answer)
        if signal is None:
            return
        asked = decision.server_asked if isinstance(decision, Retry) else None
        fresh = attempts.made == 1
        pacer.answered(sent_at=sent_at, signal=signal, retry_after=asked, fresh=fresh, level=level)
        control = pacer.control
        free = signal is not Signal.ACCEPTED and control.refusing_all
        free = free or (signal is Signal.REFUSED and control.refusals_not_about_rate)
        if free and attempts.free < self._free_limit:
            attempts.free += 1

    async def current_token(self) -> str | None:
        """The token to send, renewed if due; None (and the work aborted) if renewal was
        refused."""
        try:
            return await self._tokens.token()
        except AuthRefused as exc:
            self.abort(str(exc))
            return None

    async def refresh(self, rejected: str) -> bool:
        """The token was refused: get a new one once for everybody, or abort the work."""
        try:
            await self._tokens.refresh(rejected)
        except AuthRefused as exc:
            self.abort(str(exc))
            return False
        return True

    # ── hooks ───────────────────────────────────────────────────────────────────────────────

    async def send(self, work: W, token: str, grow: bool) -> Sent | None:
        """One request, when the pacer (and any other bound) allows; None if the work
        stopped first. It calls ``pacer.returned()`` once the request is off the wire."""
        raise NotImplementedError

    def settled(self, work: W, decision: Settle, answer: Answer, attempts: Attempts) -> R | None:
        """What ``work`` becomes with this settling answer; None to send its parts one at a
        time instead (:meth:`one_by_one`: a batch the server refused as a whole)."""
        raise NotImplementedError

    async def one_by_one(self, work: W, attempts: Attempts) -> R:
        raise NotImplementedError

    def unsettled(self) -> R:
        """What ``work`` becomes when the work stopped (or aborted) before it settled."""
        raise NotImplementedError

    def abort(self, reason: str) -> None:
        """Stop all the work: the credentials were refused."""
        raise NotImplementedError

    def refused_again(self) -> None:
        """The renewed token was refused too (401 twice for one request)."""

    def defer(self, work: W, attempts: Attempts, delay: float) -> bool:
        """Hand the next attempt to a task of its own, if the work allows; True if it did."""
        return False

    async def wait_or_stop(self, delay: float) -> bool:
        """Sleep ``delay`` before a retry; False if the work was asked to stop meanwhile."""
        raise NotImplementedError
