"""A token and an endpoint need neither openstacksdk nor keystoneauth1: they are never imported.

Start-up for ``--token`` + ``--endpoint`` (and for the demo and the fakes) must stay what it was
before the libraries came in; benchmarks/startup.py measures it, this checks the cause.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("openstack", "keystoneauth1", "requests", "os_service_types", "stevedore")

PROBE = """
import json, sys, anyio
from bulktag.auth import CredentialOptions, load_auth_spec, resolve_credentials
from bulktag.cli import build_parser
build_parser()
spec = load_auth_spec(CredentialOptions(**json.loads(sys.argv[1])), json.loads(sys.argv[2]))
if spec.is_static_token:
    creds = anyio.run(resolve_credentials, spec)
    assert creds.endpoint == "https://img.example", creds
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[3])))
print(json.dumps(heavy))
"""


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        ({"token": "t", "endpoint": "https://img.example"}, {}),
        ({}, {"OS_AUTH_TOKEN": "t", "OS_IMAGE_URL": "https://img.example"}),
        ({"endpoint": "https://img.example"}, {"OS_AUTH_TOKEN": "t", "OS_CACERT": "/ca.pem"}),
    ],
    ids=["flags", "openrc-variables", "flag-and-variable"],
)
def test_the_token_path_imports_no_openstack_library(
    flags: dict[str, str], env: dict[str, str]
) -> None:
    assert [] == probe(flags, env)


def probe(flags: dict[str, str], env: dict[str, str]) -> list[str]:
    argv = [sys.executable, "-c", PROBE, json.dumps(flags), json.dumps(env), json.dumps(HEAVY)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert 0 == done.returncode, done.stderr
    return list(json.loads(done.stdout))


def test_a_cloud_to_resolve_does_load_them_so_the_probe_sees_imports() -> None:
    flags = {"auth_url": "http://127.0.0.1:9/v3", "username": "u", "password": "p"}
    assert {"openstack", "keystoneauth1"} <= set(probe(flags, {}))
