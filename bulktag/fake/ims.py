"""A fake Huawei Cloud IMS: the fake Glance plus IMS's key/value tag API, misbehaving on demand.

Real IMS serves both the native Glance v2 calls and its own tag API on one endpoint, and so
does this fake: :class:`FakeIms` is a :class:`~bulktag.fake.glance.FakeGlance` (same gateway
faults — capacity, limiter, outage, random 503/429, Retry-After —, same keystone check, same
per-request script, same observation of requests and per-image concurrency) with these routes
added:

* ``POST /v2/{project_id}/images/{image_id}/tags`` — ``{"tag": {"key", "value"}}`` → 204;
* ``POST /v2/{project_id}/images/{image_id}/tags/action`` — ``{"action": "create" | "delete",
  "tags": [{"key", "value"}, …]}`` → 204;
* ``GET /v2/{project_id}/images/{image_id}/tags`` → ``{"tags": [{"key", "value"}, …]}``;
* ``GET /v2/{project_id}/images/tags`` → ``{"tags": [{"key", "values": […]}, …]}``.

What it reproduces, from IMS's API reference (ims_03_0617, ims_03_0618):

* one value per key: the same key with a new value overwrites, the same key and value is a
  no-op, deleting a tag that is not there succeeds; a delete naming a value removes the key
  only if it holds that value (an assumption: the reference only says the value is optional);
* the limits: a key of 1-36 characters, a value of at most 43, at most ``max_tags`` (10) tags
  on an image, no key twice in one body; deletions check only the lengths (127 and 255).
  Anything else is a 400 with an IMS-style body ``{"error": {"code", "message"}}`` (the code
  is the reference's generic "request message format is invalid" one; the real service may
  use more specific codes), and nothing of the request is applied;
* the same **lost-update race** as the fake Glance: a tag write reads the image's tags,
  waits ``latency``, then writes the whole set back, so overlapping writes on one image lose
  tags — which is why bulktag still sends one request per image at a time;
* above ``capacity`` it answers 429 with the gateway's ``APIGW.0308`` body, as Huawei's API
  gateway does (the fake Glance answers 503).

The script (``config.script``) is keyed by ``(image_id, key)``: a request consumes the next
entry of the first of its keys that has one.

Observed, besides what the fake Glance records: every tag call that got past the gateway and
authentication (:attr:`FakeIms.calls`, with the keys it carried) and so the batch sizes seen.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bulktag.fake.glance import (
    FakeGlance,
    FakeGlanceConfig,
    ScriptedAction,
    still_connected,
)

_BAD_REQUEST_CODE = "IMG.0001"
_FORBIDDEN_IN_KEYS = frozenset("=*<>\\,|/")
_DELETE_MAX_KEY, _DELETE_MAX_VALUE = 127, 255

Tag = tuple[str, str | None]  # a key and its value (None: the body gave none)


@dataclass
class FakeImsConfig(FakeGlanceConfig):
    """How the fake IMS behaves; the fields of the fake Glance apply too."""

    project_id: str | None = None  # if set, the path's project must be this one (else 403)
    max_tags: int = 10  # tags one image may hold
    max_key_length: int = 36
    max_value_length: int = 43
    capacity_status: int = 429  # Huawei's gateway throttles with 429 APIGW.0308

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_tags < 1:
            raise ValueError("max_tags must be at least 1")


@dataclass(frozen=True)
class ImsCall:
    """One IMS tag call that reached the service (past the gateway and authentication)."""

    image_id: str
    action: str  # "add" (the single-tag call), "create" or "delete"
    keys: tuple[str, ...]
    status: int


class _Refused(Exception):
    """A request IMS refuses as a whole; carries the answer to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def ims_error(status: int, message: str, code: str = _BAD_REQUEST_CODE) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class FakeIms(FakeGlance):
    """The fake Glance plus IMS's key/value tag API (see the module docstring)."""

    config: FakeImsConfig

    def __init__(self, config: FakeImsConfig | None = None) -> None:
        super().__init__(config if config is not None else FakeImsConfig())
        self.kv: dict[str, dict[str, str]] = {}  # image id → key → value; tests may seed it
        self.calls: list[ImsCall] = []

    @property
    def batch_sizes(self) -> list[int]:
        """Tags carried by each tag call that reached the service, in arrival order."""
        return [len(call.keys) for call in self.calls]

    def kv_of(self, image_id: str) -> dict[str, str]:
        """A copy of the key/value tags on ``image_id`` ({} if it was never touched)."""
        return dict(self.kv.get(image_id, {}))

    def app(self) -> web.Application:
        app = super().app()
        images = "/v2/{project_id}/images"
        app.router.add_post(images + "/{image_id}/tags", self._add_tag)
        app.router.add_post(images + "/{image_id}/tags/action", self._tag_action)
        app.router.add_get(images + "/{image_id}/tags", self._image_tags)
        app.router.add_get(images + "/tags", self._project_tags)
        return app

    # -- handlers -------------------------------------------------------------------------------

    async def _add_tag(self, request: web.Request) -> web.StreamResponse:
        return await self._tag_call(request, single=True)

    async def _tag_action(self, request: web.Request) -> web.StreamResponse:
        return await self._tag_call(request, single=False)

    async def _tag_call(self, request: web.Request, single: bool) -> web.StreamResponse:
        image_id = request.match_info["image_id"]
        try:
            self._check_project(request)
            action, tags = _parse_body(await _json(request), single)
        except _Refused as refused:
            return refused.response
        response = await self._answer(request, image_id, action, tags)
        status = response.status if still_connected(request) else 0
        self.calls.append(ImsCall(image_id, action, tuple(key for key, _ in tags), status))
        return response

    async def _answer(
        self, request: web.Request, image_id: str, action: str, tags: list[Tag]
    ) -> web.StreamResponse:
        script = self._next_scripted(image_id, [key for key, _ in tags])
        if (scripted := await self._play(request, script)) is not None:
            return scripted
        if not self._image_exists(image_id):
            return ims_error(404, f"Image {image_id} does not exist.", "FAKE.0404")
        if image_id in self.config.forbidden_images:
            return ims_error(403, "You are not permitted to modify this image.", "FAKE.0403")
        try:
            if action == "delete":
                await self._delete(image_id, tags)
            else:
                await self._create(image_id, tags)
        except _Refused as refused:
            return refused.response
        return web.Response(status=204)

    def _next_scripted(self, image_id: str, keys: list[str]) -> ScriptedAction:
        for key in keys:
            queue = self._script.get((image_id, key))
            if queue:
                return queue.popleft()
        return ScriptedAction()

    async def _create(self, image_id: str, tags: list[Tag]) -> None:
        values: dict[str, str] = {}
        for key, value in tags:
            self._check_lengths(
                key, value, self.config.max_key_length, self.config.max_value_length
            )
            if value is None:
                raise _Refused(ims_error(400, f"The value of tag {key[:60]!r} is missing."))
            values[key] = value
        # The lost-update race: read, wait while the "database" is slow, write the whole set.
        stale = self.kv_of(image_id)
        await self._database_write()
        stale.update(values)
        if len(stale) > self.config.max_tags:
            raise _Refused(
                ims_error(400, f"An image can have at most {self.config.max_tags} tags.")
            )
        self.kv[image_id] = stale

    async def _delete(self, image_id: str, tags: list[Tag]) -> None:
        for key, value in tags:
            self._check_lengths(key, value, _DELETE_MAX_KEY, _DELETE_MAX_VALUE)
        stale = self.kv_of(image_id)
        await self._database_write()
        for key, value in tags:
            if value is None or stale.get(key) == value:
                stale.pop(key, None)  # absent: deleted already, not an error
        self.kv[image_id] = stale

    @staticmethod
    def _check_lengths(key: str, value: str | None, max_key: int, max_value: int) -> None:
        value = value or ""
        if not key.strip():
            raise _Refused(ims_error(400, "The tag key cannot be empty."))
        if len(key) > max_key or any(char in _FORBIDDEN_IN_KEYS for char in key):
            raise _Refused(ims_error(400, f"The tag key {key[:60]!r} is invalid."))
        if len(value) > max_value:
            raise _Refused(ims_error(400, f"The value of tag {key!r} is too long."))

    async def _image_tags(self, request: web.Request) -> web.StreamResponse:
        image_id = request.match_info["image_id"]
        try:
            self._check_project(request)
        except _Refused as refused:
            return refused.response
        await asyncio.sleep(self.config.latency)
        if not self._image_exists(image_id):
            return ims_error(404, f"Image {image_id} does not exist.", "FAKE.0404")
        tags = [{"key": k, "value": v} for k, v in self.kv_of(image_id).items()]
        return web.json_response({"tags": tags})

    async def _project_tags(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_project(request)
        except _Refused as refused:
            return refused.response
        values: dict[str, set[str]] = {}
        for tags in self.kv.values():
            for key, value in tags.items():
                values.setdefault(key, set()).add(value)
        body = [{"key": k, "values": sorted(v)} for k, v in sorted(values.items())]
        return web.json_response({"tags": body})

    def _check_project(self, request: web.Request) -> None:
        wanted = self.config.project_id
        if wanted is not None and request.match_info["project_id"] != wanted:
            raise _Refused(ims_error(403, "The project id does not match the token.", "FAKE.0403"))


async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        raise _Refused(ims_error(400, "The request message format is invalid.")) from None


def _parse_body(body: Any, single: bool) -> tuple[str, list[Tag]]:
    """``(action, tags)`` from a request body, or _Refused (400) when it is malformed."""
    if single:
        tag = body.get("tag") if isinstance(body, dict) else None
        return "add", [_parse_tag(tag)]
    if not isinstance(body, dict) or body.get("action") not in ("create", "delete"):
        raise _Refused(ims_error(400, "The action must be create or delete."))
    tags = body.get("tags")
    if not isinstance(tags, list) or not tags:
        raise _Refused(ims_error(400, "The tags must be a non-empty list."))
    parsed = [_parse_tag(tag) for tag in tags]
    if len({key for key, _ in parsed}) < len(parsed):
        raise _Refused(ims_error(400, "The keys of the tags in a request must be unique."))
    return body["action"], parsed


def _parse_tag(tag: Any) -> Tag:
    if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
        raise _Refused(ims_error(400, "The request message format is invalid."))
    value = tag.get("value")
    if value is not None and not isinstance(value, str):
        raise _Refused(ims_error(400, "The tag value must be a string."))
    return tag["key"], value
