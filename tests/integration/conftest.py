"""Session fixtures: real MariaDB, Keystone and Glance on 127.0.0.1, started once per session.

What runs (all from the OpenStack venv that ``setup.sh`` builds, never from bulktag's):

* MariaDB on a unix socket only (``--skip-networking``), data in a temp dir.
* Keystone (gunicorn, 1 worker) with Fernet tokens that live ``BULKTAG_IT_TOKEN_LIFETIME``
  seconds (default 10, so that a 40-second run sees several expiries), an in-memory cache,
  bootstrapped with an admin, a ``bulktag`` user (member of project ``bulktag``), a ``glance``
  service user, and the ``image`` service in the catalog.
* ``glance``: Glance (gunicorn, 2 workers x 2 threads) validating tokens through
  keystonemiddleware's authtoken filter; the catalog's image endpoint.
* ``glance_open``: a second Glance API node on the same database with no auth at all. A static
  token would expire within a lifetime mid-run on the first one, so tests that are not about
  tokens (the race, kill -9) run here, independent of the credentials work.

Both Glances set ``image_tag_quota`` to ``TAG_QUOTA`` so that a 413 is cheap to provoke.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import isolated_env

from . import openstack, servers
from .bulktag_cli import UNLIMITED_RATE, Invocation

TAG_QUOTA = 20
SERVICE_PASSWORD = "glance-service-secret"
USER_PASSWORD = "bulktag-user-secret"
RUNNER_PASSWORD = "runner-user-secret"


@dataclass(frozen=True)
class Cloud:
    keystone: servers.Keystone
    glance: servers.Glance  # with Keystone auth; in the catalog
    glance_open: servers.Glance  # no auth; same database
    token_lifetime: int
    admin: openstack.Session  # admin of project "admin"
    user: openstack.Session  # member of project "bulktag": what bulktag logs in as
    identity: openstack.KeystoneAdmin

    @property
    def user_creds(self) -> openstack.Credentials:
        return self.user.creds

    @property
    def runner_creds(self) -> openstack.Credentials:
        """What bulktag runs log in with: a member of the same project as ``user``."""
        return openstack.Credentials(self.keystone.auth_url, "runner", RUNNER_PASSWORD, "bulktag")

    def as_admin(self) -> openstack.Glance:
        return openstack.Glance(self.glance.url, self.admin)

    def as_user(self) -> openstack.Glance:
        return openstack.Glance(self.glance.url, self.user)

    def open(self) -> openstack.Glance:
        return openstack.Glance(self.glance_open.url, None)

    def open_glance_args(self) -> tuple[str, ...]:
        """bulktag's flags for a run on ``glance_open``, unthrottled: that Glance checks no
        token, but bulktag needs one to start."""
        return (
            "--endpoint",
            self.glance_open.url,
            "--token",
            "unused-by-this-glance",
            "--rate",
            UNLIMITED_RATE,
        )


def _token_lifetime() -> int:
    return int(os.environ.get("BULKTAG_IT_TOKEN_LIFETIME", "10"))


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    missing = servers.missing_prerequisites()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: {servers.SETUP_HINT}", pytrace=False)
    venv = servers.openstack_venv()
    root = tmp_path_factory.mktemp("openstack")
    lifetime = _token_lifetime()

    with contextlib.ExitStack() as stack:
        db = servers.MariaDB(root / "mariadb")
        stack.callback(db.stop)
        db.start()

        keystone = servers.Keystone(
            root / "keystone", venv, db.create_database("keystone"), token_lifetime=lifetime
        )
        glance_db = db.create_database("glance")
        glance = servers.Glance(
            "glance",
            root / "glance",
            venv,
            glance_db,
            servers.GlanceAuth(keystone.auth_url, "glance", SERVICE_PASSWORD),
            TAG_QUOTA,
        )
        glance_open = servers.Glance(
            "glance-open", root / "glance-open", venv, glance_db, None, TAG_QUOTA
        )
        glance.configure()
        glance_open.configure()
        for server in (keystone, glance, glance_open):
            stack.callback(server.stop)

        # Keystone's setup (three keystone-manage runs) overlaps Glance's migrations and start:
        # Glance needs Keystone only once a request arrives. Servers are started from this
        # thread only: they are tied to the life of the thread that starts them.
        with ThreadPoolExecutor(max_workers=1) as pool:
            identity_configured = pool.submit(keystone.configure)
            glance.db_sync()
            glance.start()
            glance_open.start()
            identity_configured.result()
        keystone.start()
        for server in (keystone, glance, glance_open):
            server.wait()

        admin = openstack.Session(
            openstack.Credentials(keystone.auth_url, "admin", keystone.admin_password, "admin"),
            lifetime,
        )
        identity = openstack.KeystoneAdmin(admin)
        # The service user keystonemiddleware validates tokens with: the "service" role is
        # what Keystone's validate-token policy asks of a service.
        service_project = identity.project("service")
        identity.grant(service_project, identity.user("glance", SERVICE_PASSWORD), "service")
        user_project = identity.project("bulktag")
        identity.grant(user_project, identity.user("bulktag", USER_PASSWORD), "member")
        # bulktag itself logs in as its own user of the same project, so that counting its
        # logins is not muddled by the fixtures' own (as "bulktag") around a run.
        identity.grant(user_project, identity.user("runner", RUNNER_PASSWORD), "member")
        identity.register_service("image", "glance", glance.url, keystone.region)

        user = openstack.Session(
            openstack.Credentials(keystone.auth_url, "bulktag", USER_PASSWORD, "bulktag"),
            lifetime,
        )
        yield Cloud(keystone, glance, glance_open, lifetime, admin, user, identity)


@pytest.fixture
def bulktag(tmp_path: Path) -> Callable[..., Invocation]:
    """``bulktag("run args"...)`` → an Invocation in an isolated working directory and HOME."""

    def make(*args: str, env: dict[str, str] | None = None) -> Invocation:
        return Invocation(args, tmp_path, isolated_env(tmp_path / "home", **(env or {})))

    (tmp_path / "home").mkdir()
    return make
