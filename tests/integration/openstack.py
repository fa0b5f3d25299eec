"""A tiny synchronous client for the fixtures and assertions: Keystone admin calls, Glance images.

Deliberately independent of bulktag (stdlib urllib only), so that a bug in bulktag cannot hide
itself by also breaking the code that checks its work.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


class HTTPFailure(Exception):
    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> {status}: {body[:300]}")
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: object = None,
    expect: Iterable[int] = (200, 201, 202, 204),
    headers: Mapping[str, str] | None = None,
) -> Response:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = Response(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        answer = Response(err.code, dict(err.headers.items()), err.read())
    if answer.status not in set(expect):
        raise HTTPFailure(method, url, answer.status, answer.body.decode(errors="replace"))
    return answer


@dataclass(frozen=True)
class Credentials:
    auth_url: str
    username: str
    password: str
    project: str
    domain: str = "Default"

    def cli_args(self) -> list[str]:
        """The bulktag flags that log in with these credentials."""
        return [
            "--os-auth-url",
            self.auth_url,
            "--os-username",
            self.username,
            "--os-password",
            self.password,
            "--os-project-name",
            self.project,
            "--os-user-domain-name",
            self.domain,
            "--os-project-domain-name",
            self.domain,
        ]


def _timestamp(iso: str) -> float:
    """Keystone's ``2026-12-05T01:45:20.000000Z`` as seconds since the epoch."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def login(creds: Credentials) -> tuple[str, dict[str, Any]]:
    """Password login scoped to the project: ``(token, token body)``."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": creds.username,
                        "domain": {"name": creds.domain},
                        "password": creds.password,
                    }
                },
            },
            "scope": {"project": {"name": creds.project, "domain": {"name": creds.domain}}},
        }
    }
    resp = request("POST", f"{creds.auth_url}/auth/tokens", body=body, expect=(201,))
    return resp.headers["X-Subject-Token"], resp.json()["token"]


class Session:
    """Logged in as one user; logs in again before the (short-lived) token runs out.

    The token's age is read from Keystone's own ``issued_at``, not from when the login
    returned: with one Keystone worker hashing passwords for a queue of logins, a login can
    take seconds, and a token judged young by its arrival expired while still in use (three
    integration tests failed on 401s that way). One login at a time: the fixtures' threads
    share the session."""

    def __init__(self, creds: Credentials, token_lifetime: float) -> None:
        self.creds = creds
        self._max_age = token_lifetime / 2
        self._token = ""
        self._issued = 0.0  # wall-clock seconds, as Keystone (on this machine) stamped it
        self._lock = threading.Lock()
        self.project_id = ""
        self.user_id = ""

    def token(self) -> str:
        with self._lock:
            if time.time() - self._issued > self._max_age:
                self._token, data = login(self.creds)
                self._issued = _timestamp(data["issued_at"])
                self.project_id = data["project"]["id"]
                self.user_id = data["user"]["id"]
            return self._token

    def call(self, method: str, url: str, body: object = None, **kw: Any) -> Response:
        return request(method, url, token=self.token(), body=body, **kw)


class KeystoneAdmin:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.v3 = session.creds.auth_url

    def _find(self, kind: str, name: str) -> str | None:
        query = urllib.parse.urlencode({"name": name})
        found = self.s.call("GET", f"{self.v3}/{kind}s?{query}").json()[f"{kind}s"]
        return str(found[0]["id"]) if found else None

    def role_id(self, name: str) -> str:
        role = self._find("role", name)
        if role is None:
            raise LookupError(f"Keystone has no role {name!r}")
        return role

    def project(self, name: str) -> str:
        existing = self._find("project", name)
        if existing:
            return existing
        body = {"project": {"name": name, "domain_id": "default"}}
        return str(self.s.call("POST", f"{self.v3}/projects", body).json()["project"]["id"])

    def user(self, name: str, password: str) -> str:
        existing = self._find("user", name)
        if existing:
            return existing
        body = {"user": {"name": name, "password": password, "domain_id": "default"}}
        return str(self.s.call("POST", f"{self.v3}/users", body).json()["user"]["id"])

    def grant(self, project_id: str, user_id: str, role: str) -> None:
        url = f"{self.v3}/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}"
        self.s.call("PUT", url)

    def revoke_token(self, token: str) -> None:
        """Revoke one token (``DELETE /v3/auth/tokens``), as an operator or a security tool
        would; the user's other and later tokens stay valid."""
        self.s.call("DELETE", f"{self.v3}/auth/tokens", headers={"X-Subject-Token": token})

    def register_service(self, kind: str, name: str, url: str, region: str) -> None:
        body = {"service": {"type": kind, "name": name}}
        service = self.s.call("POST", f"{self.v3}/services", body).json()["service"]["id"]
        for interface in ("public", "internal", "admin"):
            endpoint = {
                "service_id": service,
                "interface": interface,
                "url": url,
                "region_id": region,
            }
            self.s.call("POST", f"{self.v3}/endpoints", {"endpoint": endpoint})


class Glance:
    """The few Glance v2 calls the fixtures and assertions need."""

    def __init__(self, url: str, session: Session | None) -> None:
        self.url = url
        self.session = session

    def _call(self, method: str, path: str, body: object = None, **kw: Any) -> Response:
        token = self.session.token() if self.session is not None else None
        return request(method, self.url + path, token=token, body=body, **kw)

    def create_image(self, name: str, visibility: str = "private") -> str:
        body = {
            "name": name,
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": visibility,
        }
        return str(self._call("POST", "/v2/images", body, expect=(201,)).json()["id"])

    def create_images(self, prefix: str, count: int) -> list[str]:
        """``count`` new images, created a few at a time (Glance takes ~20 writes/s here)."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda i: self.create_image(f"{prefix}-{i:04d}"), range(count)))

    def tags(self, image_id: str) -> set[str]:
        return set(self._call("GET", f"/v2/images/{image_id}").json()["tags"])

    def all_tags(self, image_ids: Iterable[str]) -> dict[str, set[str]]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = list(image_ids)
            return dict(zip(ids, pool.map(self.tags, ids), strict=True))

    def add_tag(self, image_id: str, tag: str) -> None:
        self._call("PUT", f"/v2/images/{image_id}/tags/{urllib.parse.quote(tag, safe='')}")


def count_logins(keystone_log: Path, username: str) -> int:
    """Successful password logins of ``username``, from Keystone's audit notifications."""
    return sum(1 for _ in _auth_events(keystone_log, username))


def _auth_events(keystone_log: Path, username: str) -> Iterator[dict[str, Any]]:
    marker = "oslo.messaging.notification.identity.authenticate "
    for line in keystone_log.read_text(errors="replace").splitlines():
        if marker not in line:
            continue
        event = json.loads(line[line.index("] {") + 2 :])
        payload = event["payload"]
        if payload.get("outcome") == "success" and payload["initiator"].get("username") == username:
            yield event
