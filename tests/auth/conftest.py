"""In-process tests of the credentials layer see no clouds.yaml of the machine they run on.

openstacksdk computes its search path (current directory, XDG config home, /etc/openstack) once,
when it is first imported; these tests hand it their settings as flags and an explicit
environment instead. The differential suite (test_differential.py) runs openstacksdk and bulktag
in subprocesses, each with its own HOME, XDG_CONFIG_HOME, working directory and OS_* variables.
"""

from __future__ import annotations

from typing import Any

import pytest

from bulktag.auth.cloud import AuthSpec, load_auth_spec
from bulktag.auth.options import CredentialOptions


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
