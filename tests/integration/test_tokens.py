"""bulktag logging in to real Keystone: tokens that expire, and a token revoked mid-run.

Keystone here issues tokens that live ``cloud.token_lifetime`` seconds (10 by default, not
3600), so a run of under a minute sees several expiries. bulktag finds Glance through the
catalog.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import grouped, read_journal, write_csv

from bulktag.errors import ExitCode

from . import openstack
from .bulktag_cli import Invocation, describe, require
from .conftest import Cloud

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _needs_credentials() -> None:
    require("--os-auth-url", "Keystone credentials, issue 3")


def logins(cloud: Cloud) -> int:
    return openstack.count_logins(cloud.keystone.log, cloud.runner_creds.username)


def keystone_run(
    bulktag: Callable[..., Invocation], cloud: Cloud, tmp_path: Path, rows: list[tuple[str, str]]
) -> Invocation:
    return bulktag(
        str(write_csv(tmp_path / "input.csv", rows)),
        *cloud.runner_creds.cli_args(),
        "--results",
        str(tmp_path / "journal.jsonl"),
        # Fixed pace, so the run's length (in token lifetimes) does not depend on the machine.
        "--rate",
        "20",
    )


def assert_all_done(cloud: Cloud, tmp_path: Path, rows: list[tuple[str, str]]) -> None:
    records = read_journal(tmp_path / "journal.jsonl")
    assert {(r["image_id"], r["tag"]) for r in records if r["outcome"] == "ok"} == set(rows)
    stored = cloud.as_user().all_tags({image for image, _ in rows})
    lost = [(image, tag) for image, tag in rows if tag not in stored[image]]
    assert not lost, f"{len(lost)} tags missing on read-back, e.g. {lost[:5]}"


def test_long_run_renews_expiring_tokens_with_few_logins(
    cloud: Cloud, bulktag: Callable[..., Invocation], tmp_path: Path
) -> None:
    images = cloud.as_user().create_images("long-run", 50)
    rows = grouped(images, 16)  # 800 rows at 20/s: ~40 s, about four token lifetimes
    before = logins(cloud)
    started = time.monotonic()

    done = keystone_run(bulktag, cloud, tmp_path, rows).run()

    elapsed = time.monotonic() - started
    assert done.returncode == ExitCode.OK, describe(done)
    assert_all_done(cloud, tmp_path, rows)
    lifetimes = elapsed / cloud.token_lifetime
    assert lifetimes >= 3, f"run took {elapsed:.0f}s: too short to see tokens expire"
    count = logins(cloud) - before
    # Each token lives one lifetime, so the run needed at least this many...
    assert count >= int(lifetimes), f"{count} logins in {lifetimes:.1f} token lifetimes"
    # ...and renewing ahead of expiry (bulktag: at half-life), once for all workers, needs few
    # more. A login per worker, or per request, would be dozens to hundreds.
    assert count <= 3 * lifetimes + 2, f"{count} logins in {lifetimes:.1f} token lifetimes"
    # Renewed before expiry, so Glance never had to refuse an expired token.
    refused = [r for r in cloud.glance.tag_puts(images) if r.status == 401]
    assert refused == [], f"{len(refused)} PUTs refused with 401"


def test_token_revoked_mid_run_is_renewed_once(
    cloud: Cloud, bulktag: Callable[..., Invocation], tmp_path: Path
) -> None:
    """Revoked tokens happen (a permission change, an operator, a security tool): Glance answers
    401 for every request in flight with it; bulktag must log in again once for all of them
    and carry on, with no row lost or failed."""
    images = cloud.as_user().create_images("revoked", 30)
    rows = grouped(images, 10)  # 300 rows at 20/s: ~15 s
    before = logins(cloud)
    started = time.monotonic()
    proc = keystone_run(bulktag, cloud, tmp_path, rows).start(tmp_path / "out")
    try:
        # The first token bulktag uses, revoked as soon as Glance sees it: it is at most a
        # second or two old, so Glance (caching validations for 2 s) refuses it well before
        # bulktag would renew it at half its lifetime.
        revoked = None
        deadline = time.monotonic() + 60
        while revoked is None and time.monotonic() < deadline and proc.poll() is None:
            seen = [r.token for r in cloud.glance.tag_puts(images) if r.token]
            revoked = seen[0] if seen else None
            time.sleep(0.05)
        assert revoked is not None, "bulktag sent no PUT"
        cloud.identity.revoke_token(revoked)
        proc.wait(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    elapsed = time.monotonic() - started
    output = (tmp_path / "out").read_text()

    assert proc.returncode == ExitCode.OK, output
    assert_all_done(cloud, tmp_path, rows)
    puts = cloud.glance.tag_puts(images)
    refused = [r for r in puts if r.status == 401]
    assert refused, "Glance never refused the revoked token: the renewal path was not exercised"
    assert {r.token for r in refused} == {revoked}, "a renewed token was refused too"
    count = logins(cloud) - before
    lifetimes = elapsed / cloud.token_lifetime
    # The refresh after the 401s is one login, however many requests saw the 401.
    assert count <= 3 * lifetimes + 3, f"{count} logins in {lifetimes:.1f} token lifetimes"
    assert revoked not in output
