"""A fake Glance v2 image-tag service that misbehaves on demand.

It serves the four calls bulktag makes (``PUT``/``DELETE /v2/images/{id}/tags/{tag}``,
``GET /v2/images/{id}``, ``GET /v2/images``) and reproduces the parts of real Glance that a bulk
tagger can get wrong:

* the **lost-update race**: a tag write reads the image's tag list, waits, then writes the whole
  list back, so two overlapping writes on one image can drop a tag, exactly as Glance does;
* keystonemiddleware's bare 401, the per-image 403/404, the tag quota's 413 and the 400 for a
  request body;
* a gateway in front of it: a request-rate capacity, any limiter shape of
  :mod:`bulktag.fake.limiters` (windows, a concurrency limit, a queue, a capacity schedule),
  an outage, random 503/429 answers with an optional ``Retry-After``, and a per-``(image, tag)``
  script of answers (statuses, dropped connections, slow answers) for deterministic tests.

It also records what it saw (every request, peak concurrency overall and per image, how often a
request arrived for an image that already had one in flight) so tests can assert on the client's
manners, not just on its results.

Order in which a request is judged, outermost first (the order the real layers sit in):
gateway (outage, capacity, limiter, then random faults) → keystone auth → body check → script →
Glance itself. Only the last step takes ``latency`` (plus what the limiter adds, e.g. a queue's
wait): the layers in front reject without reaching the backend. The gateway's models read a
clock that starts when the app is built, i.e. when the server starts.
The script applies to PUT and DELETE (the calls that name a tag); a scripted entry is consumed
only by a request that got past the gateway and auth.

Every request naming an image (GET of it included) counts as in flight on that image from arrival
to answer, because any second request on an image while a write is pending is a client bug.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus

from aiohttp import web

from bulktag.fake.limiters import (
    Chain,
    Outage,
    Refusal,
    ServerModel,
    TokenBucket,
    Verdict,
)

REQUEST_ID_HEADER = "x-openstack-request-id"
# Statuses whose answers carry the configured Retry-After: the ones a client may be told to wait on.
_THROTTLE_STATUSES = frozenset({413, 429, 503})
# Seconds a stopping server gives the handlers still running.
_STOP_WAIT = 1.0
# Glance's own defaults for GET /v2/images paging.
_DEFAULT_LIMIT = 25
_MAX_LIMIT = 1000
#: ``GET`` it for what the fake has seen so far (:meth:`FakeGlance.stats`), as JSON.
STATS_PATH = "/_fake/stats"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeGlanceConfig:
    """How the fake behaves. Every field has a default that gives a well-behaved server."""

    token: str | None = None  # if set, X-Auth-Token must equal it
    token_validator: Callable[[str], bool] | None = None  # if set, decides instead of `token`
    known_images: AbstractSet[str] | None = None  # None: every image id exists
    forbidden_images: AbstractSet[str] = frozenset()  # 403 on PUT/DELETE; GET still works
    tag_quota: int = 128  # Glance's image_tag_quota default
    max_tag_length: int = 255
    latency: float = 0.0  # seconds Glance spends on each request that reaches it
    write_latency: float = 0.0  # more seconds on each tag write: slow writes, quick reads
    fail_503: float = 0.0  # probability of a gateway 503 instead of the work
    fail_429: float = 0.0  # probability of a gateway 429 instead of the work
    retry_after: str | None = None  # Retry-After on 413/429/503 throttling answers
    seed: int | None = None
    # Requests per second the gateway admits, as a token bucket (see _gateway_model).
    capacity: float | None = None
    # What the gateway answers above capacity: 503, or 429 as Huawei's gateway does (APIGW.0308).
    capacity_status: int = 503
    # Any limiter shape, judged after the capacity; it refuses with its own Refusal's status.
    # It keeps state: two fakes built from one config share its limit.
    limiter: ServerModel | None = None
    # Everything refused with 503 from START to END seconds after the server starts.
    outage: tuple[float, float] | None = None
    # Scripted answers per (image_id, tag), consumed one per request: an int status, "drop",
    # "slow:S", or "STATUS+ra:N" (that status with Retry-After N).
    script: dict[tuple[str, str], list[int | str]] = field(default_factory=dict)
    unknown_every: int = 0  # every Nth distinct image id first seen is unknown (404); 0 = off

    def __post_init__(self) -> None:
        # Fail at construction, not as a puzzling 500 in the middle of a test.
        for name in ("fail_503", "fail_429"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if self.fail_503 + self.fail_429 > 1.0:
            raise ValueError("fail_503 + fail_429 must not exceed 1")
        if self.latency < 0 or self.write_latency < 0:
            raise ValueError("latency and write_latency must not be negative")
        if self.capacity is not None and self.capacity <= 0:
            raise ValueError("capacity must be positive")
        if self.capacity_status not in (429, 503):
            raise ValueError("capacity_status must be 429 or 503")
        if self.outage is not None and not 0 <= self.outage[0] < self.outage[1]:
            raise ValueError("outage must be (start, end) with 0 <= start < end")
        if self.unknown_every < 0:
            raise ValueError("unknown_every must not be negative")
        for entries in self.script.values():
            for entry in entries:
                _parse_action(entry)


@dataclass(frozen=True)
class RequestRecord:
    """One answered request. ``status`` 0 means the connection was dropped without an answer."""

    at: float  # time.monotonic() at arrival
    method: str
    image_id: str | None
    tag: str | None
    status: int


@dataclass(frozen=True)
class ScriptedAction:
    """One parsed script entry."""

    status: int = 0  # 0: no scripted status, do the work
    retry_after: str | None = None  # explicit Retry-After; None falls back to the config's
    drop: bool = False
    delay: float = 0.0


def _parse_action(entry: int | str) -> ScriptedAction:
    """Turn a script entry (``503``, ``"drop"``, ``"slow:0.2"``, ``"503+ra:2"``) into an action."""
    if isinstance(entry, int):
        return ScriptedAction(status=_valid_status(entry))
    if entry == "drop":
        return ScriptedAction(drop=True)
    if entry.startswith("slow:"):
        return ScriptedAction(delay=_parse_delay(entry))
    status, sep, retry_after = entry.partition("+ra:")
    if sep and not retry_after:
        raise ValueError(f"script entry {entry!r} has an empty Retry-After")
    try:
        return ScriptedAction(status=_valid_status(int(status)), retry_after=retry_after or None)
    except ValueError:
        raise ValueError(f"unknown script entry {entry!r}") from None


def _parse_delay(entry: str) -> float:
    try:
        delay = float(entry.removeprefix("slow:"))
    except ValueError:
        raise ValueError(f"script entry {entry!r} needs seconds after 'slow:'") from None
    if delay < 0:
        raise ValueError(f"script entry {entry!r} has a negative delay")
    return delay


def _valid_status(status: int) -> int:
    if not 100 <= status <= 599:
        raise ValueError(f"script status {status} is not an HTTP status")
    return status


def _gateway_model(config: FakeGlanceConfig) -> ServerModel | None:
    """The gateway's limits in the order they sit (None: it admits everything).

    ``capacity`` is a token bucket holding one second's worth: a client that overshoots is
    throttled only by the excess (refused requests cost no token), which is what adaptive pacing
    should converge on, and a quiet second allows a burst of ``capacity`` requests.
    """
    models: list[ServerModel] = []
    if config.outage is not None:
        models.append(Outage(*config.outage))
    if config.capacity is not None:
        refusal = Refusal(config.capacity_status)
        models.append(TokenBucket(config.capacity, config.capacity, refusal))
    if config.limiter is not None:
        models.append(config.limiter)
    if len(models) > 1:
        return Chain(*models)
    return models[0] if models else None


def _refused(verdict: Verdict, retry_after: str | None) -> web.Response:
    """The gateway's answer to a request its models refused; the verdict's Retry-After wins
    over the configured one."""
    if verdict.retry_after is not None:
        retry_after = f"{verdict.retry_after:g}"
    if verdict.status == 429:
        return _too_many_requests(retry_after)
    message = "The gateway refused the request (over its limit, or down)."
    return _text_error(verdict.status, message, retry_after)


def _limiter_key(request: web.Request) -> str:
    image_id, tag = request.match_info.get("image_id"), request.match_info.get("tag")
    return f"{image_id}/{tag}" if image_id and tag else request.path


def _text_error(status: int, message: str, retry_after: str | None = None) -> web.Response:
    """A plain-text error in the shape webob (Glance's WSGI layer) gives it."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:  # a scripted status Python has no name for
        reason = "Error"
    response = web.Response(status=status, text=f"{status} {reason}\n\n{message}\n")
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def _unauthorized() -> web.Response:
    # keystonemiddleware answers before Glance runs, so there is no Glance request id on it.
    return web.json_response(
        {
            "error": {
                "code": 401,
                "title": "Unauthorized",
                "message": "The request you have made requires authentication.",
            }
        },
        status=401,
        headers={"WWW-Authenticate": 'Keystone uri="http://127.0.0.1"'},
    )


def _too_many_requests(retry_after: str | None) -> web.Response:
    # The shape of Huawei's API gateway throttling answer (error code APIGW.0308).
    response = web.json_response(
        {
            "error_code": "APIGW.0308",
            "error_msg": "The throttling threshold has been reached: fake gateway limit",
        },
        status=429,
    )
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def _has_body(request: web.Request) -> bool:
    # Glance's rule: any Transfer-Encoding, or a Content-Length above zero, is a body.
    return "Transfer-Encoding" in request.headers or (request.content_length or 0) > 0


def still_connected(request: web.Request) -> bool:
    return request.transport is not None and not request.transport.is_closing()


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection so the client sees a disconnect and no response at all."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp's attempt to write this to the closed transport fails quietly (it treats it as the
    # client going away); nothing reaches the wire.
    return web.Response(status=204)


class FakeGlance:
    """The fake service plus what it observed. Use ``app()`` with aiohttp, or ``serve()``."""

    def __init__(self, config: FakeGlanceConfig | None = None) -> None:
        self.config = config if config is not None else FakeGlanceConfig()
        self.requests: list[RequestRecord] = []
        self.tags: dict[str, list[str]] = {}  # image id -> stored tags; tests may seed it
        self.max_in_flight = 0
        self.max_in_flight_per_image = 0
        self.overlaps = 0
        self._in_flight = 0
        self._in_flight_by_image: dict[str, int] = {}
        self._rng = random.Random(self.config.seed)
        self._gate = _gateway_model(self.config)
        self.started = time.monotonic()  # the gateway's time 0; app() sets it again
        # The script is read once, here: consuming from deques keeps the caller's lists intact.
        self._script = {
            pair: deque(_parse_action(entry) for entry in entries)
            for pair, entries in self.config.script.items()
        }
        self._unknown: set[str] = set()
        self._distinct_seen = 0

    def tags_of(self, image_id: str) -> list[str]:
        """A copy of the tags stored on ``image_id`` ([] if it was never touched)."""
        return list(self.tags.get(image_id, []))

    def stats(self) -> dict[str, int]:
        """What the fake has seen so far: requests answered by method, tag writes that
        succeeded, and the most requests in flight at once, overall and on one image."""
        seen = {"requests": len(self.requests), "put": 0, "get": 0, "delete": 0, "post": 0}
        tag_writes_ok = 0
        for request in self.requests:
            method = request.method.lower()
            if method in seen:
                seen[method] += 1
            tag_writes_ok += method != "get" and 200 <= request.status < 300
        return {
            **seen,
            "tag_writes_ok": tag_writes_ok,
            "max_in_flight": self.max_in_flight,
            "max_in_flight_per_image": self.max_in_flight_per_image,
            "overlaps": self.overlaps,
        }

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def clock(self) -> float:
        """Seconds since the server started: the ``now`` of the gateway's models."""
        return time.monotonic() - self.started

    def app(self) -> web.Application:
        # Serving starts right after this, so the limiters' times (an outage at 10 s, a
        # schedule's steps) count from here.
        self.started = time.monotonic()
        app = web.Application(middlewares=[self._observe, self._gateway, self._auth])
        app.on_response_prepare.append(_add_request_id)
        app.router.add_put("/v2/images/{image_id}/tags/{tag}", self._put_tag)
        app.router.add_delete("/v2/images/{image_id}/tags/{tag}", self._delete_tag)
        app.router.add_get("/v2/images/{image_id}", self._get_image)
        app.router.add_get("/v2/images", self._list_images)
        app.router.add_get("/v2/images/", self._list_images)
        return app

    # -- middlewares: observation, then the gateway, then keystone --------------------------

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Looking is not traffic: answered here, ahead of the gateway, the token and the count.
        if request.path == STATS_PATH:
            return await self._stats(request)
        arrived = time.monotonic()
        image_id = request.match_info.get("image_id")
        self._enter(image_id)
        status = 0
        try:
            response = await handler(request)
            status = response.status if still_connected(request) else 0
            return response
        except web.HTTPException as exc:  # aiohttp's own answers, e.g. an unrouted path
            status = exc.status
            raise
        finally:
            self._leave(image_id)
            tag = request.match_info.get("tag")
            self.requests.append(RequestRecord(arrived, request.method, image_id, tag, status))

    def _enter(self, image_id: str | None) -> None:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if image_id is None:
            return
        already = self._in_flight_by_image.get(image_id, 0)
        if already:
            self.overlaps += 1
        self._in_flight_by_image[image_id] = already + 1
        self.max_in_flight_per_image = max(self.max_in_flight_per_image, already + 1)

    def _leave(self, image_id: str | None) -> None:
        self._in_flight -= 1
        if image_id is None:
            return
        left = self._in_flight_by_image[image_id] - 1
        if left:
            self._in_flight_by_image[image_id] = left
        else:
            del self._in_flight_by_image[image_id]

    @web.middleware
    async def _gateway(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # sleep(0) so even a zero-latency server lets concurrent requests interleave.
        await asyncio.sleep(0)
        if self._gate is None:
            return await self._backend(request, handler, 0.0)
        verdict = self._gate.arrive(self.clock(), _limiter_key(request))
        if not verdict.accepted:
            return _refused(verdict, self.config.retry_after)
        try:
            return await self._backend(request, handler, verdict.latency)
        finally:
            self._gate.leave(self.clock())  # the answer is done: its place is free again

    async def _backend(
        self, request: web.Request, handler: Handler, latency: float
    ) -> web.StreamResponse:
        """Past the gateway's limits: a random fault, or the work after the limiter's latency."""
        retry_after = self.config.retry_after
        roll = self._rng.random()
        if roll < self.config.fail_503:
            return _text_error(503, "Service temporarily unavailable (injected).", retry_after)
        if roll < self.config.fail_503 + self.config.fail_429:
            return _too_many_requests(retry_after)
        if latency:
            await asyncio.sleep(latency)
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._token_ok(request.headers.get("X-Auth-Token")):
            return _unauthorized()
        return await handler(request)

    def _token_ok(self, token: str | None) -> bool:
        if self.config.token_validator is None and self.config.token is None:
            return True
        if token is None:
            return False
        if self.config.token_validator is not None:
            return self.config.token_validator(token)
        return token == self.config.token

    # -- handlers -----------------------------------------------------------------------------

    async def _put_tag(self, request: web.Request) -> web.StreamResponse:
        image_id, tag = request.match_info["image_id"], request.match_info["tag"]
        early = await self._before_tag_work(request, image_id, tag)
        if early is not None:
            return early
        if len(tag) > self.config.max_tag_length:
            return _text_error(400, f"Tag is longer than {self.config.max_tag_length} characters.")
        if any(ord(char) > 0xFFFF for char in tag):
            return _text_error(400, "Tag contains 4-byte UTF-8 characters.")
        # The lost-update race, as in Glance: read the list, yield while the "database" is slow,
        # then write back the stale list plus the new tag, clobbering anything stored meanwhile.
        stale = list(self.tags[image_id])
        await self._database_write()
        if tag not in stale:
            if len(stale) >= self.config.tag_quota:
                return _text_error(413, f"Maximum number of tags ({self.config.tag_quota}).")
            stale.append(tag)
        self.tags[image_id] = stale
        return web.Response(status=204)

    async def _delete_tag(self, request: web.Request) -> web.StreamResponse:
        image_id, tag = request.match_info["image_id"], request.match_info["tag"]
        early = await self._before_tag_work(request, image_id, tag)
        if early is not None:
            return early
        # Same read-wait-write shape as PUT: Glance's delete rewrites the whole list too.
        stale = list(self.tags[image_id])
        await self._database_write()
        if tag not in stale:
            return _text_error(404, f"Tag {tag} not found.")
        stale.remove(tag)
        self.tags[image_id] = stale
        return web.Response(status=204)

    async def _before_tag_work(
        self, request: web.Request, image_id: str, tag: str
    ) -> web.StreamResponse | None:
        """Checks shared by PUT and DELETE; an answer to send instead of the work, or None."""
        if _has_body(request):
            return _text_error(400, "A body is not expected with this request.")
        if (scripted := await self._play(request, self._next_action(image_id, tag))) is not None:
            return scripted
        if not self._image_exists(image_id):
            return _text_error(404, f"No image found with ID {image_id}")
        if image_id in self.config.forbidden_images:
            return _text_error(403, "You are not permitted to modify tags on this image.")
        return None

    def _next_action(self, image_id: str, tag: str) -> ScriptedAction:
        queue = self._script.get((image_id, tag))
        return queue.popleft() if queue else ScriptedAction()

    async def _play(
        self, request: web.Request, action: ScriptedAction
    ) -> web.StreamResponse | None:
        """A scripted action: the answer it gives instead of the work (a dropped connection or a
        scripted status), or None once its delay has passed and the work may go on."""
        if action.drop:
            return drop_connection(request)
        if action.status:
            return self._scripted_answer(action)
        await asyncio.sleep(action.delay)
        return None

    def _scripted_answer(self, action: ScriptedAction) -> web.Response:
        retry_after = action.retry_after
        if retry_after is None and action.status in _THROTTLE_STATUSES:
            retry_after = self.config.retry_after
        if action.status == 429:
            return _too_many_requests(retry_after)
        if action.status < 400:  # a scripted success: no body, like the real 204
            return web.Response(status=action.status)
        return _text_error(action.status, "Scripted answer.", retry_after)

    async def _database_write(self) -> None:
        """The time a tag write spends between reading the image's tags and writing them back:
        the window of the lost-update race."""
        await asyncio.sleep(self.config.latency + self.config.write_latency)

    async def _get_image(self, request: web.Request) -> web.StreamResponse:
        image_id = request.match_info["image_id"]
        await asyncio.sleep(self.config.latency)
        if not self._image_exists(image_id):
            return _text_error(404, f"No image found with ID {image_id}")
        return web.json_response(self._image_body(image_id))

    async def _list_images(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", _DEFAULT_LIMIT))
        except ValueError:
            return _text_error(400, "limit param must be an integer")
        if limit < 0:
            return _text_error(400, "limit param must be positive")
        await asyncio.sleep(self.config.latency)
        ids = self._listable_ids()[: min(limit, _MAX_LIMIT)]
        return web.json_response({"images": [self._image_body(i) for i in ids]})

    # -- the image store ------------------------------------------------------------------------

    def _image_exists(self, image_id: str) -> bool:
        """Whether the image exists, creating it (with no tags) on first use if it may."""
        if image_id in self.tags:  # seen before, or seeded by a test
            return True
        if image_id in self._unknown:
            return False
        known = self.config.known_images
        if known is not None and image_id not in known:
            return False
        self._distinct_seen += 1
        every = self.config.unknown_every
        if every and self._distinct_seen % every == 0:
            self._unknown.add(image_id)
            return False
        self.tags[image_id] = []
        return True

    def _listable_ids(self) -> list[str]:
        ids = list(self.tags)
        if self.config.known_images is not None:
            # Known but not yet touched: listed too, without materialising them in the store.
            untouched = set(self.config.known_images) - set(ids) - self._unknown
            ids.extend(sorted(untouched))
        return ids

    def _image_body(self, image_id: str) -> dict[str, object]:
        return {
            "id": image_id,
            "name": f"image-{image_id}",
            "status": "active",
            "visibility": "private",
            "tags": self.tags_of(image_id),
        }


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # keystonemiddleware's 401 is sent before Glance's request-id middleware runs.
    if response.status != 401:
        response.headers[REQUEST_ID_HEADER] = f"req-{uuid.uuid4()}"


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def serve(fake: FakeGlance, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run ``fake`` on ``host:port`` (0 = a free port); yield its base URL, without ``/v2``."""
    # A fake being stopped has no one left to answer: it does not wait out a scripted
    # slow write (aiohttp waits up to 60 s for handlers still running by default).
    runner = web.AppRunner(fake.app(), access_log=None, shutdown_timeout=_STOP_WAIT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]  # the real port when 0 was asked for
        yield _url(host, bound_port)
    finally:
        await runner.cleanup()
