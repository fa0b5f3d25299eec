"""Opening the image service, as ``run`` and ``verify`` both do: credentials as the openstack
CLI finds them, one HTTP session, the login and the catalog's endpoint, the transport for the
API, and one cheap read first (the preflight) so that a wrong URL, token or project fails in a
second with one line, before anything is sent.

A failure is a :class:`~bulktag.errors.BulktagError` whose class says the exit code: 2 for what
a retry cannot fix (bad endpoint, refused credentials, not an image service), 75 for what it
may (the image service or the identity service cannot be reached or is failing).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bulktag.auth import AuthRefused, AuthSpec, CredentialOptions, TokenProvider, load_auth_spec
from bulktag.auth.redact import control_character_problem, url_secrets
from bulktag.config import ConfigError
from bulktag.errors import CloudUnavailable
from bulktag.logs import SCRUBBER
from bulktag.model import Answer, Api
from bulktag.transport import (
    GlanceTransport,
    ImsTransport,
    make_session,
    normalize_endpoint,
    preflight_problem,
)

if TYPE_CHECKING:
    from bulktag.auth import Credentials


@dataclass(frozen=True, slots=True)
class ImageService:
    """An image service ready to be used: who we are to it, and the transport that speaks to
    it. ``preflight`` is the first read's answer: 2xx, or a 403/429/5xx the caller may warn
    of (the work's own retries cope with those)."""

    credentials: Credentials
    transport: GlanceTransport | ImsTransport
    preflight: Answer


def auth_spec(options: CredentialOptions, env: Mapping[str, str]) -> AuthSpec:
    """Credentials as the openstack CLI finds them, checked for what would fail later, their
    secrets registered with the scrubber for every line bulktag prints."""
    if options.endpoint:
        checked_endpoint(options.endpoint, "--endpoint")
    spec = load_auth_spec(options, env)
    problem = control_character_problem(spec)  # aiohttp would raise on it in a header
    if problem is not None:
        raise ConfigError(problem)
    for secret in (*spec.secrets, *url_secrets(spec.endpoint), *url_secrets(spec.auth_url)):
        SCRUBBER.add(secret)
    return spec


def tls_context(spec: AuthSpec) -> ssl.SSLContext | bool:
    """The TLS settings of ``spec``; a bad CA bundle is a config error now, not a traceback
    later."""
    from bulktag.auth import ssl_for

    return ssl_for(spec.tls_verify, spec.client_cert)


def checked_endpoint(url: str, where: str) -> str:
    try:
        return normalize_endpoint(url)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@asynccontextmanager
async def open_image_service(
    spec: AuthSpec,
    tls: ssl.SSLContext | bool,
    *,
    concurrency: int,
    timeout: float,
    api: Api = Api.GLANCE,
    project_id: str | None = None,
) -> AsyncIterator[ImageService]:
    """Log in, find the image endpoint and read it once; the session closes on leaving."""
    from bulktag.auth import resolve_credentials

    async with make_session(concurrency, timeout, tls) as session:
        credentials = await resolve_credentials(spec)
        endpoint = checked_endpoint(credentials.endpoint, "the catalog's image endpoint")
        transport: GlanceTransport | ImsTransport
        if api is Api.IMS:
            project = _ims_project(project_id, credentials.project_id)
            transport = ImsTransport(session, endpoint, project, timeout)
        else:
            project = None
            transport = GlanceTransport(session, endpoint, timeout)
        answer = await _preflight(transport, credentials.provider, credentials.endpoint, project)
        yield ImageService(credentials, transport, answer)


def _ims_project(project_id: str | None, token_project: str | None) -> str:
    """The project in IMS's URLs: --project-id, else the one the token is scoped to."""
    project = project_id or token_project
    if not project:
        raise ConfigError(
            "--api ims needs a project id and the token does not name one (a bare token, or "
            "a token not scoped to a project): give --project-id or OS_PROJECT_ID"
        )
    return project


async def _preflight(
    transport: GlanceTransport | ImsTransport,
    tokens: TokenProvider,
    endpoint: str,
    project: str | None = None,
) -> Answer:
    """One cheap read (Glance: ``GET /v2/images?limit=1``; IMS: the project's tags), the token
    renewed once on a 401. An endpoint that cannot be reached is 75 (try again later); 429 and
    5xx are left to the work, whose pacing stops a run with 75 after --max-outage if the cloud
    keeps refusing (one rule for "the cloud accepts nothing", and --max-outage 0 keeps its
    meaning)."""
    try:
        answer = await transport.preflight(await tokens.token())
        if answer.status == 401:
            answer = await transport.preflight(await tokens.refresh(await tokens.token()))
    except AuthRefused as exc:
        raise ConfigError(f"credentials refused: {exc}") from None
    call = "GET /v2/images" if project is None else f"GET /v2/{project}/images/tags"
    problem = preflight_problem(answer, endpoint, call)
    if problem is not None and answer.status is None:  # unreachable: not the command's fault
        raise CloudUnavailable(problem)
    if problem is not None:
        raise ConfigError(problem)
    return answer
