"""bulktag finds credentials exactly as openstacksdk does: the differential suite (issue 16).

Each variant is a set of clouds.yaml / clouds.yml / secure.yaml / clouds-public.yaml files, OS_*
variables and ``--os-*`` flags. It is run twice, each time in a fresh process with its own
HOME, XDG_CONFIG_HOME, working directory and environment:

* through openstacksdk's own resolver (``sdk_reference.py``: ``OpenStackConfig().get_one``, a
  login through its keystoneauth session, ``get_session_endpoint("image")``), and
* through ``bulktag run``, one row, against the same fake Keystone and fake Glances.

The fake Keystone's catalog has an image endpoint in two regions × two interfaces, each its own
fake Glance (which accepts only tokens this Keystone issued), plus one more Glance for endpoint
overrides. For every variant the two must agree on: the cloud, region, interface, auth plugin,
auth URL, image endpoint and TLS choice (bulktag's ``auth.resolved`` event against the
reference's answer), the exact Keystone request bodies, and the Glance that got the PUT. A
variant the reference refuses must be refused by bulktag with exit 2 and one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest

from bulktag.fake.glance import FakeGlance, FakeGlanceConfig, serve
from bulktag.fake.keystone import (
    FakeAppCredential,
    FakeEndpoint,
    FakeKeystone,
    FakeKeystoneConfig,
    FakeProject,
    FakeUser,
    serve_keystone,
)
from tests.auth.test_tls import self_signed
from tests.clitools import TIMEOUT, isolated_env, run_bulktag

REFERENCE = Path(__file__).with_name("sdk_reference.py")
IMAGE = "5f0f7e0c-3c8a-4a5e-9f8e-0a1b2c3d4e5f"
REGIONS = ("R1", "R2")
INTERFACES = ("public", "internal")

ALICE = (
    "auth_url: '{keystone}/v3', username: alice, password: alice-password, "
    "project_name: tea-party, user_domain_name: Default, project_domain_name: Default"
)
ALICE_NO_PASSWORD = ALICE.replace("password: alice-password, ", "")


def clouds(*entries: str) -> str:
    """A clouds.yaml text from ``name: {settings}`` flow-style entries."""
    return "clouds:\n" + "".join(f"  {entry}\n" for entry in entries)


def prod(extra: str = "", auth: str = ALICE) -> str:
    return clouds(f"prod: {{auth: {{{auth}}}{', ' + extra if extra else ''}}}")


OTHER = "other: {auth: {auth_url: 'http://127.0.0.1:9/v3', username: x, password: y}}"
ENV_ALICE = {
    "OS_AUTH_URL": "{keystone}/v3",
    "OS_USERNAME": "alice",
    "OS_PASSWORD": "alice-password",
    "OS_PROJECT_NAME": "tea-party",
    "OS_USER_DOMAIN_NAME": "Default",
    "OS_PROJECT_DOMAIN_NAME": "Default",
}
HOME_CONFIG = "home/.config/openstack"


@dataclass(frozen=True)
class Variant:
    id: str
    files: dict[str, str] = field(default_factory=dict)  # sandbox path -> text
    env: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()  # bulktag's --os-* flags
    refused: str | None = None  # both must refuse, saying this

    def __str__(self) -> str:
        return self.id


def prod_in_cwd(
    id: str,
    settings: str = "",
    *,
    auth: str = ALICE,
    env: dict[str, str] | None = None,
    flags: tuple[str, ...] = (),
    refused: str | None = None,
) -> Variant:
    """The commonest variant: cloud ``prod`` (``settings`` beside its ``auth``) in the working
    directory's clouds.yaml, picked with OS_CLOUD=prod; ``env`` adds variables."""
    files = {"cwd/clouds.yaml": prod(settings, auth)}
    return Variant(id, files, {"OS_CLOUD": "prod", **(env or {})}, flags, refused)


VARIANTS = [
    # Where clouds.yaml is found, and which one wins
    prod_in_cwd("cwd-clouds-yaml"),
    Variant("home-config-clouds-yaml", {f"{HOME_CONFIG}/clouds.yaml": prod()}, {},
            ("--os-cloud", "prod")),
    Variant("clouds-yml-suffix", {"cwd/clouds.yml": prod()}, {"OS_CLOUD": "prod"}),
    Variant("xdg-config-home", {"xdg/openstack/clouds.yaml": prod()},
            {"OS_CLOUD": "prod", "XDG_CONFIG_HOME": "{sandbox}/xdg"}),
    Variant("cwd-beats-home-config",
            {"cwd/clouds.yaml": prod("region_name: R2"),
             f"{HOME_CONFIG}/clouds.yaml": prod("region_name: R1")}, {"OS_CLOUD": "prod"}),
    Variant("os-client-config-file-beats-cwd",
            {"elsewhere/mine.yaml": prod("region_name: R2"), "cwd/clouds.yaml": prod()},
            {"OS_CLOUD": "prod", "OS_CLIENT_CONFIG_FILE": "{sandbox}/elsewhere/mine.yaml"}),
    Variant("the-only-cloud-needs-no-name", {"cwd/clouds.yaml": prod()}),
    Variant("unknown-cloud", {"cwd/clouds.yaml": clouds(OTHER)}, {"OS_CLOUD": "prod"},
            refused="Cloud prod was not found"),
    # secure.yaml wherever openstacksdk looks for it
    Variant("secure-yaml-beside",
            {"cwd/clouds.yaml": prod(auth=ALICE_NO_PASSWORD),
             "cwd/secure.yaml": clouds("prod: {auth: {password: alice-password}}")},
            {"OS_CLOUD": "prod"}),
    Variant("secure-yaml-in-home-config",
            {"cwd/clouds.yaml": prod(auth=ALICE_NO_PASSWORD),
             f"{HOME_CONFIG}/secure.yaml": clouds("prod: {auth: {password: alice-password}}")},
            {"OS_CLOUD": "prod"}),
    Variant("os-client-secure-file",
            {"cwd/clouds.yaml": prod(auth=ALICE_NO_PASSWORD),
             "vault/s.yaml": clouds("prod: {auth: {password: alice-password}}")},
            {"OS_CLOUD": "prod", "OS_CLIENT_SECURE_FILE": "{sandbox}/vault/s.yaml"}),
    # Vendor profiles
    Variant("profile-from-clouds-public",
            {"cwd/clouds-public.yaml": "public-clouds:\n  fakevendor: {auth: {auth_url: "
             "'{keystone}/v3'}, regions: [R2, R1], interface: internal}\n",
             "cwd/clouds.yaml": prod("profile: fakevendor",
                                     auth=ALICE.replace("auth_url: '{keystone}/v3', ", ""))},
            {"OS_CLOUD": "prod"}),
    # Regions
    prod_in_cwd("regions-list-first-is-default", "regions: [R2, R1]"),
    prod_in_cwd("region-name-alone", "region_name: R2"),
    prod_in_cwd("per-region-values", "regions: [R1, {name: R2, values: {interface: internal}}]",
                env={"OS_REGION_NAME": "R2"}),
    prod_in_cwd("region-flag-picks-from-list", "regions: [R1, R2]",
                flags=("--os-region-name", "R2")),
    prod_in_cwd("region-flag-not-in-list", "regions: [R1]", flags=("--os-region-name", "R2"),
                refused="Region R2 is not a valid region name"),
    prod_in_cwd("os-region-name-not-in-list", "regions: [R1]",
                env={"OS_REGION_NAME": "RegionTwo"},
                refused="Region RegionTwo is not a valid region name"),
    # Interfaces
    prod_in_cwd("interface-internal", "interface: internal"),
    prod_in_cwd("endpoint-type-internal", "endpoint_type: internal"),
    prod_in_cwd("image-interface", "image_interface: internal"),
    prod_in_cwd("interface-flag-beats-clouds-yaml", "interface: public, region_name: R2",
                flags=("--os-interface", "internal")),
    prod_in_cwd("endpoint-type-flag", flags=("--os-endpoint-type", "internal")),
    prod_in_cwd("interface-x-region-x-regions-list", "interface: internal, regions: [R2, R1]",
                flags=("--os-region-name", "R1")),
    # Endpoint overrides
    prod_in_cwd("image-endpoint-override", "image_endpoint_override: '{override}'"),
    prod_in_cwd("os-image-url-flag", flags=("--os-image-url", "{override}")),
    # TLS
    prod_in_cwd("verify-false", "verify: false"),
    prod_in_cwd("insecure-true", "insecure: true"),
    prod_in_cwd("cacert", "cacert: '{ca}'"),
    prod_in_cwd("os-cacert-env-with-os-cloud", env={"OS_CACERT": "{ca}"}),
    prod_in_cwd("insecure-flag", flags=("--insecure",)),
    prod_in_cwd("client-cert-and-key", "cert: '{cert}', key: '{key}'"),
    # The environment alone, and with OS_CLOUD
    Variant("env-only-password", {}, ENV_ALICE),
    Variant("env-interface-and-region", {}, {**ENV_ALICE, "OS_INTERFACE": "internal",
                                             "OS_REGION_NAME": "R2"}),
    Variant("env-endpoint-type", {}, {**ENV_ALICE, "OS_ENDPOINT_TYPE": "internal"}),
    prod_in_cwd("os-cloud-ignores-other-os-vars",
                env={"OS_USERNAME": "mallory", "OS_AUTH_URL": "http://127.0.0.1:9"}),
    prod_in_cwd("stale-os-auth-token-vs-os-cloud",
                env={"OS_AUTH_TOKEN": "stale-token-from-yesterday"}),
    # Auth plugins and identities
    prod_in_cwd("app-credential-by-id", "auth_type: v3applicationcredential",
                auth="auth_url: '{keystone}/v3', application_credential_id: ac-1, "
                     "application_credential_secret: ac-secret"),
    prod_in_cwd("app-credential-by-name", "auth_type: v3applicationcredential",
                auth="auth_url: '{keystone}/v3', application_credential_name: tagger, "
                     "username: alice, user_domain_name: Default, "
                     "application_credential_secret: ac-secret"),
    Variant("token-rescoped-from-env", {}, {"OS_AUTH_URL": "{keystone}/v3",
                                            "OS_AUTH_TYPE": "v3token",
                                            "OS_AUTH_TOKEN": "{token}", "OS_PROJECT_ID": "p-1"}),
    Variant("token-flag", {}, {}, ("--os-auth-type", "token", "--os-token", "{token}",
                                   "--os-auth-url", "{keystone}/v3", "--os-project-id", "p-1")),
    prod_in_cwd("v3totp", "auth_type: v3totp",
                auth="auth_url: '{keystone}/v3', username: alice, user_domain_name: Default, "
                     "passcode: '123456', project_id: p-1"),
    prod_in_cwd("domain-ids-not-names",
                auth="auth_url: '{keystone}/v3', username: bob, password: bob-password, "
                     "user_domain_id: d-ops, project_name: ops-project, project_domain_id: d-ops"),
    prod_in_cwd("one-domain-for-both",
                auth="auth_url: '{keystone}/v3', username: bob, password: bob-password, "
                     "domain_name: Ops, project_name: ops-project"),
    prod_in_cwd("project-id-scope",
                auth="auth_url: '{keystone}/v3', user_id: u-1, password: alice-password, "
                     "project_id: p-1"),
    prod_in_cwd("unversioned-auth-url-discovery",
                auth=ALICE.replace("{keystone}/v3", "{keystone}")),
    # Flags
    Variant("flags-only", {}, {}, ("--os-auth-url", "{keystone}/v3", "--os-username", "alice",
                                   "--os-password", "alice-password", "--os-project-name",
                                   "tea-party", "--os-user-domain-name", "Default",
                                   "--os-project-domain-name", "Default",
                                   "--os-region-name", "R2")),
    prod_in_cwd("flag-beats-clouds-yaml-auth", auth=ALICE.replace("alice-password", "wrong"),
                flags=("--os-password", "alice-password")),
    prod_in_cwd("missing-auth-url", auth=ALICE.replace("auth_url: '{keystone}/v3', ", ""),
                refused="auth_url"),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The world both sides run against


@dataclass
class World:
    keystone: FakeKeystone
    keystone_url: str
    glances: dict[str, FakeGlance]  # url -> fake
    override: str
    token: str


def keystone() -> FakeKeystone:
    return FakeKeystone(
        FakeKeystoneConfig(
            users=[
                FakeUser("u-1", "alice", "alice-password"),
                FakeUser("u-2", "bob", "bob-password", "d-ops", "Ops"),
            ],
            projects=[
                FakeProject("p-1", "tea-party"),
                FakeProject("p-2", "ops-project", "d-ops", "Ops"),
            ],
            app_credentials=[FakeAppCredential("ac-1", "tagger", "ac-secret", "u-1", "p-1")],
        )
    )


@asynccontextmanager
async def world() -> AsyncIterator[World]:
    fake = keystone()
    async with AsyncExitStack() as stack:
        glances: dict[str, FakeGlance] = {}
        endpoints = []
        for region in REGIONS:
            for interface in INTERFACES:
                glance = FakeGlance(FakeGlanceConfig(token_validator=fake.is_valid))
                url = await stack.enter_async_context(serve(glance))
                glances[url] = glance
                endpoints.append(FakeEndpoint(url, region, interface))
        override = FakeGlance(FakeGlanceConfig(token_validator=fake.is_valid))
        override_url = await stack.enter_async_context(serve(override))
        glances[override_url] = override
        fake.config.image_endpoints = endpoints
        base = await stack.enter_async_context(serve_keystone(fake))
        token = await issue_token(base)
        yield World(fake, base, glances, override_url, token)


async def issue_token(base: str) -> str:
    """A token of alice's, for the token-auth variants."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "id": "u-1", "password": "alice-password"}}}}}  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/v3/auth/tokens", json=body) as response,
    ):
        assert 201 == response.status
        return response.headers["X-Subject-Token"]


# ---------------------------------------------------------------------------------------------
# One variant, both ways


@dataclass
class Sandbox:
    root: Path
    values: dict[str, str]

    def fill(self, text: str) -> str:
        for name, value in self.values.items():
            text = text.replace("{" + name + "}", value)
        return text


def sandbox(tmp_path: Path, w: World, variant: Variant) -> tuple[Sandbox, dict[str, str]]:
    cert, key = self_signed(tmp_path)
    import certifi

    box = Sandbox(tmp_path, {
        "keystone": w.keystone_url, "override": w.override, "token": w.token,
        "sandbox": str(tmp_path), "ca": certifi.where(), "cert": cert, "key": key,
    })  # fmt: skip
    for name in ("cwd", "home"):
        (tmp_path / name).mkdir()
    for relative, text in variant.files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(box.fill(text), encoding="utf-8")
    env = isolated_env(tmp_path / "home", token=None)
    env |= {name: box.fill(value) for name, value in variant.env.items()}
    return box, env


def sdk_flags(flags: tuple[str, ...]) -> tuple[str | None, dict[str, Any]]:
    """bulktag's --os-* flags as ``get_one(cloud, **kwargs)``, the openstack CLI's mapping."""
    renamed = {"image_url": "image_endpoint_override", "endpoint_type": "interface"}
    cloud, kwargs, items = None, {}, list(flags)
    while items:
        flag = items.pop(0)
        if flag == "--insecure":
            kwargs["insecure"] = True
            continue
        name, value = flag.removeprefix("--os-").replace("-", "_"), items.pop(0)
        if name == "cloud":
            cloud = value
        else:
            kwargs[renamed.get(name, name)] = value
    return cloud, kwargs


def reference(box: Sandbox, env: dict[str, str], flags: tuple[str, ...]) -> dict[str, Any]:
    cloud, kwargs = sdk_flags(flags)
    request = json.dumps({"cloud": cloud, "flags": kwargs})
    done = subprocess.run(
        [sys.executable, str(REFERENCE), request],
        cwd=box.root / "cwd", env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    return dict(json.loads(done.stdout))


def bulktag(box: Sandbox, env: dict[str, str], flags: tuple[str, ...]) -> Any:
    (box.root / "in.csv").write_text(f"{IMAGE},nightly\n", encoding="utf-8")
    args = [str(box.root / "in.csv"), "--results", str(box.root / "journal.jsonl")]
    args += ["--log-format", "json", *flags]
    return run_bulktag(args, box.root / "cwd", env=env)


def glance_that_got_the_put(w: World) -> list[str]:
    return [url for url, fake in w.glances.items() if fake.tags_of(IMAGE) == ["nightly"]]


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_bulktag_resolves_and_logs_in_exactly_as_openstacksdk(
    tmp_path: Path, variant: Variant
) -> None:
    async def both() -> tuple[dict[str, Any], Any, list[Any], list[Any], list[str]]:
        async with world() as w:
            box, env = sandbox(tmp_path, w, variant)
            flags = tuple(box.fill(f) for f in variant.flags)
            start = len(w.keystone.requests)  # after the token-auth variants' own login
            expected = await anyio.to_thread.run_sync(reference, box, env, flags)
            middle = len(w.keystone.requests)
            sdk_bodies = w.keystone.requests[start:middle]
            done = await anyio.to_thread.run_sync(bulktag, box, env, flags)
            ours = w.keystone.requests[middle:]
            return expected, done, sdk_bodies, ours, glance_that_got_the_put(w)

    expected, done, sdk_bodies, our_bodies, put_to = anyio.run(both)
    if "error" in expected:
        assert variant.refused is not None, f"openstacksdk refused: {expected}"
        assert variant.refused in expected["message"]
        assert 2 == done.code, done.stderr
        [line] = done.error_lines
        assert variant.refused in line
        assert "Traceback" not in done.stderr
        return
    assert variant.refused is None, f"openstacksdk accepted it: {expected}"
    assert 0 == done.code, done.stderr
    resolved = {k: v for k, v in done.event("auth.resolved").items() if k in expected}
    assert expected == resolved
    assert sdk_bodies == our_bodies  # the same Keystone request, byte for byte once parsed
    assert [expected["image_endpoint"].rstrip("/")] == put_to


def test_the_suite_covers_every_mismatch_the_issue_lists() -> None:
    ids = {v.id for v in VARIANTS}
    assert len(ids) == len(VARIANTS) >= 30
    for needed in ("profile-from-clouds-public", "per-region-values", "secure-yaml-in-home-config",
                   "os-client-secure-file", "endpoint-type-internal", "image-interface",
                   "insecure-true", "clouds-yml-suffix", "xdg-config-home",
                   "region-flag-not-in-list", "os-region-name-not-in-list",
                   "stale-os-auth-token-vs-os-cloud", "v3totp"):  # fmt: skip
        assert needed in ids
