"""A fake Keystone v3 identity service: ``POST /v3/auth/tokens`` and version discovery.

Enough of Keystone (and of Huawei IAM, which speaks the same protocol) to test a client's
credentials handling end to end:

* the ``password`` method (user by id, or by name + domain id/name), ``totp`` (a user and one
  fixed passcode), the
  ``application_credential`` method (id + secret, or name + user + secret; a scope block beside
  it is refused, as Keystone does) and the ``token`` method (re-scoping a token it issued);
* project scope by id or by name + domain; a scoped token comes with a catalog holding an
  ``image`` service whose endpoints (region, interface, url) are configurable;
* tokens with a configurable, possibly very short, lifetime, measured on an injectable clock;
* Keystone's 401 body for anything wrong, and scripted failures (any status) for the next logins;
* version discovery (``GET /`` and ``GET /v3``), as keystoneauth asks for it, with links on the
  host the client asked, or on ``discovery_to`` (a misconfigured ``public_endpoint``);
* ``redirect_to``: answer every login with a redirect (``307`` unless ``redirect_status`` says
  otherwise) to another server, as a hostile or misconfigured proxy would.

It counts logins and refusals, and :meth:`FakeKeystone.is_valid` lets a fake Glance
(``FakeGlanceConfig(token_validator=keystone.is_valid)``) reject expired or revoked tokens.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

Json = dict[str, Any]

UNAUTHORIZED_MESSAGE = "The request you have made requires authentication."


class _Refused(Exception):
    """Internal: answer 401 (with Keystone's generic message, like the real one does)."""


@dataclass(frozen=True, slots=True)
class FakeUser:
    id: str
    name: str
    password: str
    domain_id: str = "default"
    domain_name: str = "Default"


@dataclass(frozen=True, slots=True)
class FakeProject:
    id: str
    name: str
    domain_id: str = "default"
    domain_name: str = "Default"


_Owned = TypeVar("_Owned", FakeUser, FakeProject)  # named within a domain, as Keystone has them


@dataclass(frozen=True, slots=True)
class FakeAppCredential:
    id: str
    name: str
    secret: str
    user_id: str
    project_id: str


@dataclass(frozen=True, slots=True)
class FakeEndpoint:
    url: str
    region: str = "RegionOne"
    interface: str = "public"


@dataclass
class FakeKeystoneConfig:
    """Who may log in, what the catalog says, how long tokens live. Defaults: one demo user."""

    users: list[FakeUser] = field(
        default_factory=lambda: [FakeUser("u-demo", "demo", "demo-password")]
    )
    projects: list[FakeProject] = field(
        default_factory=lambda: [FakeProject("p-demo", "demo-project")]
    )
    app_credentials: list[FakeAppCredential] = field(default_factory=list)
    image_endpoints: list[FakeEndpoint] = field(
        default_factory=lambda: [FakeEndpoint("http://127.0.0.1:9292")]
    )
    token_lifetime: float = 3600.0  # seconds; Keystone's default is one hour
    clock: Callable[[], float] = time.time  # wall-clock seconds: issue and expiry times
    totp_passcode: str = "123456"  # the one passcode the ``totp`` method accepts, for any user
    discovery_to: str | None = None  # base URL the version documents link to (else our own)
    redirect_to: str | None = None  # base URL to send every login to
    redirect_status: int = 307  # ... with this status (307 and 308 keep the method and body)


@dataclass(frozen=True, slots=True)
class _Token:
    user_id: str
    project_id: str | None
    issued_at: float
    expires_at: float


class FakeKeystone:
    """The fake service's state. Serve it with :func:`serve_keystone`."""

    def __init__(self, config: FakeKeystoneConfig | None = None) -> None:
        self.config = config or FakeKeystoneConfig()
        self.logins = 0  # successful logins (tokens issued)
        self.refusals = 0  # 401 answers
        self.requests: list[Json] = []  # every request body, for asserting what a client sent
        self.scripted: deque[int] = deque()  # statuses to answer the next logins with
        self._tokens: dict[str, _Token] = {}

    # -- what tests call --------------------------------------------------------------------

    def is_valid(self, token: str) -> bool:
        """True while ``token`` was issued here, is not expired and is not revoked."""
        issued = self._tokens.get(token)
        return issued is not None and self.config.clock() < issued.expires_at

    def revoke_all(self) -> None:
        """Invalidate every token issued so far (as a permission change does on Huawei IAM)."""
        self._tokens.clear()

    def change_password(self, user_id: str, password: str) -> None:
        """Give the user a new password and revoke their tokens."""
        users = self.config.users
        self.config.users = [
            FakeUser(u.id, u.name, password, u.domain_id, u.domain_name) if u.id == user_id else u
            for u in users
        ]
        self._tokens = {k: t for k, t in self._tokens.items() if t.user_id != user_id}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/auth/tokens", self._post_tokens)
        app.router.add_get("/", self._versions)
        app.router.add_get("/v3", self._version)
        app.router.add_get("/v3/", self._version)
        return app

    # -- discovery: what Keystone answers at its root and at /v3 ------------------------------

    async def _versions(self, request: web.Request) -> web.Response:
        body = {"versions": {"values": [_v3(self._linked_base(request))]}}
        return web.json_response(body, status=300)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": _v3(self._linked_base(request))})

    def _linked_base(self, request: web.Request) -> str:
        return self.config.discovery_to or str(request.url.origin())

    # -- the handler --------------------------------------------------------------------------

    async def _post_tokens(self, request: web.Request) -> web.Response:
        if self.config.redirect_to:
            location = self.config.redirect_to.rstrip("/") + request.path
            return web.Response(status=self.config.redirect_status, headers={"Location": location})
        if self.scripted:
            status = self.scripted.popleft()
            return _error(status, f"scripted failure {status}")
        try:
            body = await request.json()
            self.requests.append(body)
            return self._issue(body["auth"])
        except _Refused:
            self.refusals += 1
            return _error(401, UNAUTHORIZED_MESSAGE)
        except (ValueError, KeyError, TypeError):
            return _error(400, "Expecting to find auth in request body.")

    def _issue(self, auth: Mapping[str, Any]) -> web.Response:
        identity = auth["identity"]
        method = identity["methods"][0]
        if method == "application_credential":
            if "scope" in auth:  # Keystone: an application credential cannot request a scope
                raise _Refused
            return self._token_response(
                method, *self._app_credential(identity["application_credential"])
            )
        scope = self._project(auth.get("scope"))
        if method == "token":
            # Keystone: a token made from a token keeps the original's expiry.
            original = self._valid_token(identity["token"]["id"])
            return self._token_response(method, original.user_id, scope, original.expires_at)
        if method == "password":
            return self._token_response(method, self._password_user(identity), scope)
        if method == "totp":
            return self._token_response(method, self._totp_user(identity), scope)
        raise _Refused

    def _password_user(self, identity: Mapping[str, Any]) -> str:
        given = identity["password"]["user"]
        user = self._find_user(given)
        if given.get("password") != user.password:
            raise _Refused
        return user.id

    def _totp_user(self, identity: Mapping[str, Any]) -> str:
        given = identity["totp"]["user"]
        user = self._find_user(given)
        if given.get("passcode") != self.config.totp_passcode:
            raise _Refused
        return user.id

    def _valid_token(self, value: str) -> _Token:
        issued = self._tokens.get(value)
        if issued is None or not self.is_valid(value):
            raise _Refused
        return issued

    # -- lookups: any miss is a 401, like Keystone (it does not say which part was wrong) --

    def _find_user(self, given: Mapping[str, Any]) -> FakeUser:
        return _find(given, self.config.users)

    def _project(self, scope: Mapping[str, Any] | None) -> str | None:
        if not scope:
            return None
        return _find(scope.get("project") or {}, self.config.projects).id

    def _app_credential(self, given: Mapping[str, Any]) -> tuple[str, str]:
        for cred in self.config.app_credentials:
            by_id = given.get("id") == cred.id
            by_name = given.get("name") == cred.name and "user" in given
            if by_name and self._find_user(given["user"]).id != cred.user_id:
                by_name = False
            if (by_id or by_name) and given.get("secret") == cred.secret:
                return cred.user_id, cred.project_id
        raise _Refused

    # -- the answer ---------------------------------------------------------------------------

    def _token_response(
        self, method: str, user_id: str, project_id: str | None, expires_at: float | None = None
    ) -> web.Response:
        now = self.config.clock()
        value = "gAAAAA" + secrets.token_urlsafe(32)  # looks like a Fernet token
        expires_at = now + self.config.token_lifetime if expires_at is None else expires_at
        issued = _Token(user_id, project_id, now, expires_at)
        self._tokens[value] = issued
        self.logins += 1
        return web.json_response(
            {"token": self._token_body(method, issued)},
            status=201,
            headers={"X-Subject-Token": value},
        )

    def _token_body(self, method: str, issued: _Token) -> Json:
        body: Json = {
            "methods": [method],
            "user": {"id": issued.user_id},
            "issued_at": _timestamp(issued.issued_at),
            "expires_at": _timestamp(issued.expires_at),
            "audit_ids": [secrets.token_urlsafe(16)],
        }
        if issued.project_id is not None:  # Keystone sends a catalog with scoped tokens only
            body["project"] = {"id": issued.project_id}
            body["catalog"] = self.catalog()
        return body

    def catalog(self) -> list[Json]:
        """The service catalog: the image service, plus an identity service as noise."""
        image = [
            {"interface": e.interface, "region_id": e.region, "region": e.region, "url": e.url}
            for e in self.config.image_endpoints
        ]
        identity = [{"interface": "public", "region_id": "RegionOne", "url": "http://keystone"}]
        return [
            {"type": "identity", "name": "keystone", "endpoints": identity},
            {"type": "image", "name": "glance", "endpoints": image},
        ]


def _v3(origin: str) -> Json:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{origin}/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


def _find(given: Mapping[str, Any], candidates: Iterable[_Owned]) -> _Owned:
    """The user or project ``given`` names: by id, or by name within a domain (id or name)."""
    for candidate in candidates:
        if given.get("id") == candidate.id or (
            given.get("name") == candidate.name
            and _in_domain(given.get("domain"), candidate.domain_id, candidate.domain_name)
        ):
            return candidate
    raise _Refused


def _in_domain(given: Any, domain_id: str, domain_name: str) -> bool:
    if not isinstance(given, Mapping):
        return False
    return given.get("id") == domain_id or given.get("name") == domain_name


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(status: int, message: str) -> web.Response:
    title = "Unauthorized" if status == 401 else "Error"
    body = {"error": {"code": status, "message": message, "title": title}}
    headers = {"WWW-Authenticate": 'Keystone uri="http://keystone"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def serve_keystone(
    fake: FakeKeystone, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Run ``fake`` on ``host:port`` (0 = a free port); yield its base URL, without ``/v3``."""
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield _url(host, runner.addresses[0][1])
    finally:
        await runner.cleanup()
