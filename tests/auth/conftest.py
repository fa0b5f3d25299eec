"""In-process tests of the credentials layer see no clouds.yaml of the machine they run on.

openstacksdk computes its search path (current directory, XDG config home, /etc/openstack) once,
when it is first imported; these tests hand it their settings as flags and an explicit
environment instead. The differential suite (test_differential.py) runs openstacksdk and bulktag
in subprocesses, each with its own HOME, XDG_CONFIG_HOME, working directory and OS_* variables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest

from bulktag.auth.cloud import AuthSpec, load_auth_spec
from bulktag.auth.options import CredentialOptions
from bulktag.fake.keystone import FakeKeystone, FakeKeystoneConfig, FakeProject, FakeUser

T = TypeVar("T")
START = 1_800_000_000.0  # an epoch second: the fake prints it as a real expires_at


@pytest.fixture(autouse=True)
def _no_machine_clouds_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    from openstack.config import loader

    for name in ("CONFIG_FILES", "SECURE_FILES", "VENDOR_FILES"):
        monkeypatch.setattr(loader, name, [])


def password_spec(auth_url: str, env: dict[str, str] | None = None, **flags: Any) -> AuthSpec:
    """alice's password login to project p-1 on ``auth_url``, as if given by --os-* flags."""
    given: dict[str, Any] = {
        "username": "alice",
        "user_domain_id": "default",
        "password": "alice-password",
        "project_id": "p-1",
        **flags,
    }
    return load_auth_spec(CredentialOptions(auth_url=auth_url, **given), env or {})


def alice_keystone(**config: Any) -> FakeKeystone:
    """A fake Keystone where alice (u-1) may log in to tea-party (p-1): whom password_spec is."""
    return FakeKeystone(
        FakeKeystoneConfig(
            users=[FakeUser("u-1", "alice", "alice-password")],
            projects=[FakeProject("p-1", "tea-party")],
            **config,
        )
    )


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def gather(n: int, call: Callable[[int], Awaitable[T]]) -> list[T]:
    """Run ``call(0)`` ... ``call(n - 1)`` concurrently; their results in that order."""
    results: dict[int, T] = {}

    async def one(i: int) -> None:
        results[i] = await call(i)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return [results[i] for i in range(n)]
