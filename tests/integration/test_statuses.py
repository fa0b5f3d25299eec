"""Every answer class of real Glance with Keystone auth, end to end through bulktag.

One mixed input, as an operator's real inventory would be: rows that succeed, a tag that is
already there, images that do not exist or are not visible, an image this project may not
modify, an image at its tag quota, and a row bulktag must refuse before sending it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import grouped, read_journal, write_csv

from bulktag.errors import ExitCode

from . import openstack
from .bulktag_cli import UNLIMITED_RATE, Invocation, describe, wait_for_records
from .conftest import TAG_QUOTA, Cloud

pytestmark = pytest.mark.integration


def by_pair(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["image_id"], r["tag"]): r for r in records}


def test_every_status_class(
    cloud: Cloud, bulktag: Callable[..., Invocation], tmp_path: Path
) -> None:
    mine = cloud.as_user()
    target = mine.create_image("statuses-target")
    tagged = mine.create_image("statuses-tagged")
    mine.add_tag(tagged, "already")
    full = mine.create_image("statuses-full")
    for n in range(TAG_QUOTA):
        mine.add_tag(full, f"q{n:02d}")
    # Owned by another project: private is invisible to our user (404), public is visible
    # but not ours to modify (403).
    private = cloud.as_admin().create_image("statuses-private")
    public = cloud.as_admin().create_image("statuses-public", visibility="public")
    unknown = str(uuid.uuid4())

    expected = {
        (target, "fresh"): ("ok", 204),
        (tagged, "already"): ("ok", 204),  # adding a present tag is a no-op 204
        (unknown, "x"): ("failed", 404),
        (private, "x"): ("failed", 404),
        (public, "x"): ("failed", 403),
        (full, "one-too-many"): ("failed", 413),  # quota: 413 without Retry-After
        (target, "bad/tag"): ("invalid", None),  # Glance would 404 it; never sent
    }
    journal = tmp_path / "journal.jsonl"
    # Password credentials, not a static token: the fixtures' tokens live 10 s, and on a loaded
    # machine this run can outlive one (a static token would then abort the run, exit 3).
    done = bulktag(
        str(write_csv(tmp_path / "input.csv", expected)),
        *cloud.user_creds.cli_args(),
        "--endpoint",
        cloud.glance.url,
        "--results",
        str(journal),
    ).run()

    assert done.returncode == ExitCode.SOME_FAILED, describe(done)
    records = by_pair(read_journal(journal))
    assert {pair: (r["outcome"], r["status"]) for pair, r in records.items()} == expected
    for pair, record in records.items():
        if record["status"] is not None:
            # Glance's request id: what an operator quotes to the cloud's support.
            assert str(record["request_id"]).startswith("req-"), record
        if record["outcome"] == "failed":
            # 403/404/413 are facts about the image: retrying cannot help.
            assert record["attempts"] == 1, (pair, record)

    assert "fresh" in mine.tags(target)
    assert mine.tags(full) == {f"q{n:02d}" for n in range(TAG_QUOTA)}
    assert cloud.as_admin().tags(public) == set()
    sent = {r.path for r in cloud.glance.requests() if r.method == "PUT"}
    assert f"/v2/images/{target}/tags/bad%2Ftag" not in sent
    assert f"/v2/images/{target}/tags/bad/tag" not in sent
    assert cloud.user_creds.password not in done.stdout + done.stderr + journal.read_text()


def test_refused_token_fails_before_sending_anything(
    cloud: Cloud, bulktag: Callable[..., Invocation], tmp_path: Path
) -> None:
    """A token Glance refuses from the start (expired, revoked or garbage: all 401) is a
    configuration error: one line, exit 2, and not a single row sent or journaled."""
    images = cloud.as_user().create_images("refused", 3)
    token, _ = openstack.login(cloud.user_creds)
    cloud.identity.revoke_token(token)
    journal = tmp_path / "journal.jsonl"

    done = bulktag(
        str(write_csv(tmp_path / "input.csv", [(image, "t") for image in images])),
        "--endpoint",
        cloud.glance.url,
        "--results",
        str(journal),
        env={"OS_AUTH_TOKEN": token},
    ).run()

    assert done.returncode == ExitCode.USAGE, describe(done)
    assert "401" in done.stderr, describe(done)
    assert not (journal.exists() and read_journal(journal))
    assert cloud.glance.tag_puts(images) == []
    assert token not in done.stdout + done.stderr


def test_static_token_revoked_mid_run_stops_cleanly_then_resumes(
    cloud: Cloud, bulktag: Callable[..., Invocation], tmp_path: Path
) -> None:
    """A static token cannot be renewed: when Glance starts answering 401 mid-run, the run
    must stop (exit 3) with an intact journal, no row blamed for it, and a rerun with a new
    token must finish exactly the rest."""
    images = cloud.as_user().create_images("revoked-static", 10)
    rows = grouped(images, 10)
    source = write_csv(tmp_path / "input.csv", rows)
    journal = tmp_path / "journal.jsonl"
    token, _ = openstack.login(cloud.user_creds)
    # 100 rows at 20/s: ~5 s, within one token lifetime (so is the resume, unthrottled); the
    # revocation comes after ~0.5 s.
    args = (str(source), "--endpoint", cloud.glance.url, "--results", str(journal))
    proc = bulktag(*args, "--rate", "20", env={"OS_AUTH_TOKEN": token}).start(tmp_path / "out")
    try:
        wait_for_records(journal, 10, proc)
        cloud.identity.revoke_token(token)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    output = (tmp_path / "out").read_text()
    assert proc.returncode == ExitCode.ABORTED, output
    first = read_journal(journal)
    assert first, "nothing was journaled before the revocation"
    assert len(first) < len(rows), "the run finished before the revocation: nothing shown"
    # 401 is about the token, not the row: no row may be settled as failed because of it.
    assert {r["outcome"] for r in first} == {"ok"}, first
    assert token not in output

    fresh, _ = openstack.login(cloud.user_creds)
    done = bulktag(*args, "--rate", UNLIMITED_RATE, env={"OS_AUTH_TOKEN": fresh}).run()

    assert done.returncode == ExitCode.OK, describe(done)
    settled = {(r["image_id"], r["tag"]) for r in read_journal(journal) if r["outcome"] == "ok"}
    assert settled == set(rows)
    stored = cloud.as_user().all_tags(images)
    assert all(tag in stored[image] for image, tag in rows)
