"""The HTTP edge: the only module of the engine that imports aiohttp.

It turns one tag request into an :class:`~bulktag.model.Answer` value, for Glance v2
(:class:`GlanceTransport`: one tag per request) or Huawei Cloud IMS's key/value tag API
(:class:`ImsTransport`: up to ten tags of one image per request). Every aiohttp/OS
exception a request can raise is mapped here, in one place, to an Answer with ``status=None``
and a short ``error`` (in the manner of httpcore's ``map_exceptions``):

    aiohttp.ClientConnectorError   → "connect: <reason>"            (refused, DNS, TLS)
    aiohttp.ServerDisconnectedError → "connection dropped by the server"
    asyncio.TimeoutError            → "timeout after <S> s"
    aiohttp.ClientError, OSError    → "connection error: <reason>"

Anything else is a bug and propagates.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from yarl import URL

from bulktag.auth.redact import redact_url, redact_urls, scrub, url_secrets
from bulktag.deadlines import Deadlines
from bulktag.model import Answer, Tag, built
from bulktag.policy import Missing, glance_404

_ERROR_EXCERPT = 300  # characters of a server's error body kept for the journal
#: Bytes of an error body read at most: enough for the excerpt (and Keystone's JSON error),
#: however much the server sends (a 500 with a 200 MB body must not take 200 MB).
ERROR_READ_LIMIT = 16 * 1024
#: Bytes of a 2xx body read at most (an image's JSON, a page of one image, a token's catalog).
ANSWER_READ_LIMIT = 4 * 1024 * 1024


_A_HOST_WITHOUT_SCHEME = re.compile(r"[\w.-]+(:\d+)?(/\S*)?")


def normalize_endpoint(url: str) -> str:
    """``https://host:9292/``, ``…/v2`` or ``…/v2/`` → ``https://host:9292`` (no /v2)."""
    text = url.strip().rstrip("/")
    if text.endswith("/v2"):
        text = text[:-3]
    parsed = URL(text)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        shown = redact_url(url)
        if _A_HOST_WITHOUT_SCHEME.fullmatch(text):  # "glance.example.com:9292", as often written
            raise ValueError(f"not an http(s) URL: {shown!r} (did you mean 'https://{shown}'?)")
        raise ValueError(f"not an http(s) URL: {shown!r}")
    return text


def make_session(
    concurrency: int, timeout: float, tls: ssl.SSLContext | bool = True
) -> aiohttp.ClientSession:
    """One session per run; the connector's limit is the run's concurrency, not aiohttp's 100.

    Requests sent through a transport get their whole-request time limit from
    :class:`~bulktag.deadlines.Deadlines`, not from aiohttp (whose timer per request costs a
    tenth of a PUT's CPU); aiohttp keeps the limit on connecting. A transport puts its token
    in the session's default headers, so the session is for the image service alone (Keystone
    gets its own) and a transport never follows a redirect with it.
    """
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ssl=tls)
    timeouts = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 10.0))
    return aiohttp.ClientSession(
        connector=connector, timeout=timeouts, raise_for_status=False, auto_decompress=True
    )


# RFC 3986 unreserved characters: a path segment made only of these needs no quoting.
_url_safe = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch


def _segment(text: str) -> str:
    """``text`` as one URL path segment: as it is when URL-safe (one C call), else quoted."""
    return text if _url_safe(text) else quote(text, safe="")


def image_tags(body: bytes) -> frozenset[str] | None:
    """The ``tags`` of an image's JSON (``GET /v2/images/{id}``), or None if it has none."""
    try:
        tags = json.loads(body)["tags"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        return None
    return frozenset(tags)


def _lists_images(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body).get("images"), list)
    except (ValueError, AttributeError):
        return False


def _excerpt(body: str) -> str:
    text = " ".join(body.split())
    return text if len(text) <= _ERROR_EXCERPT else text[:_ERROR_EXCERPT] + "…"


class _Body(Protocol):
    """What :func:`read_at_most` needs of a response (aiohttp's ClientResponse)."""

    @property
    def content(self) -> aiohttp.StreamReader: ...

    def close(self) -> None: ...


async def read_at_most(response: _Body, limit: int) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of the body, and whether it had more.

    A body cut short is not drained: the connection is closed instead, so a server that sends
    gigabytes costs us ``limit`` bytes (plus aiohttp's small read buffer), not gigabytes.
    """
    chunks: list[bytes] = []
    size = 0
    stream = response.content
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    more = not stream.at_eof()
    if more:
        response.close()
    return b"".join(chunks), more


class _Http:
    """One session, one timeout, and the single place where a request becomes an Answer."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float, endpoint: str) -> None:
        self._session = session
        self._deadlines = Deadlines(timeout)
        self._timed_out = Answer(status=None, error=f"timeout after {timeout:g} s")
        # What the server may send back that is ours: the token (per call) and the endpoint's
        # userinfo (aiohttp sends it as Basic credentials).
        self._secrets = url_secrets(endpoint)

    async def _call(
        self,
        method: Callable[..., Awaitable[aiohttp.ClientResponse]],
        url: URL,
        token: str,
        body: Any = None,
        *,
        want_body: bool = False,
    ) -> Answer:
        """Send one request; ``body`` (JSON) only when given — Glance's PUT must have none.

        The answer's body is read for an error (its text goes into the journal) or when
        ``want_body``; a tag call's 2xx has none worth reading, and releasing the connection
        without the read spares a good part of aiohttp's work a request (measured by
        ``benchmarks/instructions.py``).
        """
        # The token is a default header of the session, set when it changes: aiohttp copies
        # the defaults into a request in one C call, but merges a request's own headers into
        # them one by one in Python, for every request (benchmarks/instructions.py).
        defaults = self._session.headers
        if defaults.get("X-Auth-Token") is not token:
            defaults["X-Auth-Token"] = token
        task = self._deadlines.enter()
        try:
            response = await self._request(method, url, body)
            if response.status < 300 and not want_body:
                response.release()
                return _answer(response, None, token=token, others=self._secrets)
            return await _read_answer(response, token, self._secrets)
        except aiohttp.ClientConnectorError as exc:
            error = f"connect: {exc.os_error.strerror or exc}"
            return Answer(status=None, error=_scrub(error, (token, *self._secrets)))
        except aiohttp.ServerDisconnectedError:
            return Answer(status=None, error="connection dropped by the server")
        except TimeoutError:  # asyncio.TimeoutError is this class since 3.11 (here: connecting)
            return self._timed_out
        except (aiohttp.ClientError, OSError) as exc:
            if self._deadlines.expired(task):  # aiohttp turned our cancel into its own error
                return self._timed_out
            error = f"connection error: {exc.__class__.__name__}: {exc}"
            return Answer(status=None, error=_scrub(error, (token, *self._secrets)))
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise  # the run is stopping: not ours to swallow
            return self._timed_out
        finally:
            self._deadlines.leave(task)

    def _request(
        self, method: Callable[..., Awaitable[aiohttp.ClientResponse]], url: URL, body: Any
    ) -> Awaitable[aiohttp.ClientResponse]:
        """The request, not yet sent (a plain call: no coroutine of our own per request)."""
        if body is None:  # no json= at all: aiohttp would send "null"
            return method(url, allow_redirects=False)
        return method(url, allow_redirects=False, json=body)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` (from the server, or an error quoting a URL) without our secrets in it."""
    return redact_urls(scrub(text, secrets))


async def _read_answer(
    response: aiohttp.ClientResponse, token: str, others: tuple[str, ...]
) -> Answer:
    """An answer whose body is wanted: a 2xx's whole (up to ANSWER_READ_LIMIT), an error's
    excerpt (from its first ERROR_READ_LIMIT bytes)."""
    async with response:
        if response.status < 300:
            content, more = await read_at_most(response, ANSWER_READ_LIMIT)
            if more:
                too_big = f"the answer is larger than {ANSWER_READ_LIMIT // 2**20} MiB: not read"
                return _answer(response, too_big, token=token, others=others)
            return _answer(response, None, content, token, others)
        content, _more = await read_at_most(response, ERROR_READ_LIMIT)
        # Some servers echo the request: never keep our secrets, and keep the error body
        # only as the excerpt, with them taken out.
        text = _scrub(content.decode("utf-8", errors="replace"), (token, *others))
        return _answer(response, _excerpt(text) or None, token=token, others=others)


_REQUEST_ID_LIMIT = 200  # characters of a request id kept (one is ~40)


def _clean_request_id(request_id: str, token: str, others: tuple[str, ...]) -> str:
    """The request id fit for the journal. This runs for every answer: an id of the usual
    shape passes a few checks instead of the full scrub."""
    if (
        token
        and not others
        and token not in request_id
        and "://" not in request_id
        and len(request_id) <= _REQUEST_ID_LIMIT
    ):
        return request_id
    return _scrub(request_id[:_REQUEST_ID_LIMIT], (token, *others))


def _answer(
    response: aiohttp.ClientResponse,
    error: str | None,
    body: bytes = b"",
    token: str = "",
    others: tuple[str, ...] = (),
) -> Answer:
    headers = response.headers
    request_id = headers.get("x-openstack-request-id") or headers.get("x-request-id") or None
    if request_id is not None:  # a gateway may echo the token in it: it goes to the journal
        request_id = _clean_request_id(request_id, token, others)
    return built(
        Answer, (response.status, headers.get("Retry-After"), request_id, error, body, False)
    )


class GlanceTransport(_Http):
    """Sends Glance v2 image-tag requests for one endpoint."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str, timeout: float) -> None:
        super().__init__(session, timeout, endpoint)
        self._root = URL(normalize_endpoint(endpoint))
        self._images_path = self._root.raw_path.rstrip("/") + "/v2/images"

    def _images_url(self, *segments: str) -> URL:
        """``{endpoint}/v2/images[/segment…]``, each segment quoted unless URL-safe.

        Validated rows hold only URL-safe characters: one C call checks that, against four
        Python calls inside quote(), for every request. The URL is the endpoint's with a new
        path: yarl parses only the path, not the whole URL, several times cheaper a request.
        """
        path = self._images_path
        for segment in segments:
            path += "/" + _segment(segment)
        return self._root.with_path(path, encoded=True)

    def _tag_url(self, image_id: str, tag: str) -> URL:
        """``{endpoint}/v2/images/{id}/tags/{tag}``: _images_url unrolled, for every request."""
        path = f"{self._images_path}/{_segment(image_id)}/tags/{_segment(tag)}"
        return self._root.with_path(path, encoded=True)

    async def put_tag(self, image_id: str, tag: str, token: str) -> Answer:
        """``PUT /v2/images/{id}/tags/{tag}`` with no body (Glance answers 400 to any body)."""
        return await self.add_tags(image_id, [(tag, None)], token)

    async def delete_tag(self, image_id: str, tag: str, token: str) -> Answer:
        return await self.remove_tags(image_id, [(tag, None)], token)

    # The engine's sender shape (one image and its tags, like IMS's batch calls). Glance takes
    # one tag a call, so the engine runs Glance with batches of one. These are plain functions
    # returning the request's coroutine: one coroutine a request instead of two.

    def add_tags(self, image_id: str, tags: Sequence[Tag], token: str) -> Awaitable[Answer]:
        [(tag, _value)] = tags
        return self._call(self._session.put, self._tag_url(image_id, tag), token)

    def remove_tags(self, image_id: str, tags: Sequence[Tag], token: str) -> Awaitable[Answer]:
        [(tag, _value)] = tags
        return self._remove(image_id, tag, token)

    async def _remove(self, image_id: str, tag: str, token: str) -> Answer:
        """``DELETE …/tags/{tag}``; a 404 says whether the tag or the image is missing."""
        answer = await self._call(self._session.delete, self._tag_url(image_id, tag), token)
        if answer.status != 404:
            return answer
        missing = glance_404(answer.error or "", image_id, tag)
        if missing is Missing.UNSURE:
            missing = await self._read_back(image_id, tag, token)
        return answer._replace(tag_absent=missing is Missing.TAG)

    async def _read_back(self, image_id: str, tag: str, token: str) -> Missing:
        """A 404 in words that are not Glance's: the image itself tells (one GET, rare)."""
        probe, body = await self.get_image(image_id, token)
        if probe.status == 404:
            return Missing.IMAGE
        if probe.status is not None and 200 <= probe.status < 300:
            tags = image_tags(body)
            if tags is not None and tag not in tags:
                return Missing.TAG
        return Missing.UNSURE  # left as the failed 404 it was: never "done" on a guess

    async def get_image(self, image_id: str, token: str) -> tuple[Answer, bytes]:
        """``GET /v2/images/{id}``: the answer, and the body when it was a 2xx (else b"")."""
        url = self._images_url(image_id)
        answer = await self._call(self._session.get, url, token, want_body=True)
        return answer, answer.body

    async def preflight(self, token: str) -> Answer:
        """``GET /v2/images?limit=1``: is this an image service, and does it take our token?

        A 2xx whose body is not Glance's ``{"images": [...]}`` (a dashboard, a login page
        behind a proxy) is reported as status 200 with an ``error`` saying so.
        """
        url = self._images_url().with_query(limit=1)
        answer = await self._call(self._session.get, url, token, want_body=True)
        body = answer.body
        if answer.status is not None and 200 <= answer.status < 300 and not _lists_images(body):
            return Answer(answer.status, None, answer.request_id, "the answer is not an image list")
        return answer


#: IMS's limit of tags on one image, hence per call (IMS API reference, "Adding or Deleting
#: Image Tags in a Batch", support.huaweicloud.com/intl/en-us/api-ims/ims_03_0617.html).
IMS_MAX_TAGS = 10


def _ims_tag(key: str, value: str | None, removing: bool) -> dict[str, str]:
    """A ResourceTag. Adding a bare key sets the empty value (IMS requires one); removing one
    omits the value, which deletes the key whatever its value."""
    if value is None:
        return {"key": key} if removing else {"key": key, "value": ""}
    return {"key": key, "value": value}


def _lists_tags(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body).get("tags"), list)
    except (ValueError, AttributeError):
        return False


class ImsTransport(_Http):
    """Sends Huawei Cloud IMS key/value tag requests for one endpoint and project.

    * one tag to add: ``POST /v2/{project_id}/images/{image_id}/tags`` with
      ``{"tag": {"key": K, "value": V}}`` → 204 (adds, or overwrites the key's value);
    * several tags to add, or any to remove:
      ``POST /v2/{project_id}/images/{image_id}/tags/action`` with
      ``{"action": "create" | "delete", "tags": [{"key": K, "value": V}, …]}`` → 204
      (idempotent: deleting a tag that is not there succeeds).

    The caller never passes more than :data:`IMS_MAX_TAGS` tags, nor one key twice.
    """

    def __init__(
        self, session: aiohttp.ClientSession, endpoint: str, project_id: str, timeout: float
    ) -> None:
        super().__init__(session, timeout, endpoint)
        root = normalize_endpoint(endpoint)
        suffix = f"/v2/{project_id}"
        if root.endswith(suffix):  # an endpoint given with the project in it
            root = root[: -len(suffix)]
        self._project = f"{root}/v2/{quote(project_id, safe='')}/images"

    def _tags_url(self, image_id: str, action: bool = False) -> URL:
        path = f"{self._project}/{quote(image_id, safe='')}/tags"
        return URL(path + ("/action" if action else ""), encoded=True)

    async def add_tags(self, image_id: str, tags: Sequence[Tag], token: str) -> Answer:
        if len(tags) == 1:
            [(key, value)] = tags
            body: dict[str, Any] = {"tag": _ims_tag(key, value, removing=False)}
            return await self._call(self._session.post, self._tags_url(image_id), token, body)
        return await self._action(image_id, "create", tags, token)

    async def remove_tags(self, image_id: str, tags: Sequence[Tag], token: str) -> Answer:
        return await self._action(image_id, "delete", tags, token)

    async def _action(self, image_id: str, action: str, tags: Sequence[Tag], token: str) -> Answer:
        if not 0 < len(tags) <= IMS_MAX_TAGS:
            raise ValueError(f"an IMS tag call takes 1 to {IMS_MAX_TAGS} tags, not {len(tags)}")
        removing = action == "delete"
        body = {"action": action, "tags": [_ims_tag(k, v, removing) for k, v in tags]}
        url = self._tags_url(image_id, action=True)
        return await self._call(self._session.post, url, token, body)

    async def preflight(self, token: str) -> Answer:
        """``GET /v2/{project_id}/images/tags`` (the project's tags): does the endpoint speak
        IMS, and do the token and the project id go together?

        A 2xx whose body is not ``{"tags": [...]}`` is reported as that status with an
        ``error`` saying so.
        """
        url = URL(f"{self._project}/tags", encoded=True)
        answer = await self._call(self._session.get, url, token, want_body=True)
        body = answer.body
        if answer.status is not None and 200 <= answer.status < 300 and not _lists_tags(body):
            return Answer(answer.status, None, answer.request_id, "the answer is not a tag list")
        return answer


# ── the checks and reads run and verify share ───────────────────────────────────────────────


def preflight_problem(answer: Answer, endpoint: str, call: str = "GET /v2/images") -> str | None:
    """Why the answer to the preflight ``call`` means the run must not start, or None.

    Shared by ``run`` and ``verify``. 429 and 5xx are not problems: the cloud is busy, the
    run's back-off will cope. 401 is left to the caller, which may renew the token first.
    """
    status = answer.status
    service = "an OpenStack image service" if call == "GET /v2/images" else "Huawei Cloud IMS"
    if status is None:
        return f"cannot reach the image service at {endpoint}: {answer.error}"
    if 200 <= status < 300 and answer.error:  # 2xx, but not the list the call returns
        return (
            f"{endpoint} does not look like {service}: {call} answered {status} but {answer.error}"
        )
    if 300 <= status < 400:
        return f"{endpoint} redirects (HTTP {status}); give the image service's own URL"
    if status == 401:
        return f"credentials refused: the image service at {endpoint} answered 401"
    if status in (400, 404, 405):
        hint = "" if call == "GET /v2/images" else " (is the project id right?)"
        return f"{endpoint} does not look like {service}: {call} answered {status}{hint}"
    return None


@dataclass(frozen=True, slots=True)
class ImageRead:
    """What one GET of an image got: the answer, and the image's tags when it had them."""

    answer: Answer
    tags: frozenset[str] | None = None


class ImageReader:
    """Reads an image's tags through the run's transport (the one HTTP edge)."""

    def __init__(self, transport: GlanceTransport) -> None:
        self._transport = transport

    async def get_image(self, image_id: str, token: str) -> ImageRead:
        answer, body = await self._transport.get_image(image_id, token)
        if answer.status is None or not 200 <= answer.status < 300:
            return ImageRead(answer)
        tags = image_tags(body)
        if tags is None:
            error = answer.error or "no tags list"  # answer.error: too large to read
            return ImageRead(Answer(answer.status, None, answer.request_id, error))
        return ImageRead(answer, tags)
