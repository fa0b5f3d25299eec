"""``--dry-run`` works offline: it validates and counts with no credentials and no network
(a laptop, a CI job, a cron box before its clouds.yaml is in place). ``--dry-run-online``
also logs in and reads the image service once, with the run's own exit codes (2: fix the
credentials or endpoint, 75: try again later), and still sends nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import (
    TOKEN,
    Done,
    fake_glance,
    isolated_env,
    no_traceback,
    one_error_line,
    plain_http,
    refused_url,
    run_bulktag,
)
from support import image_ids, write_csv

IMAGES = image_ids(4, seed=3)


def _glance_input(path: Path) -> Path:
    return write_csv(path / "in.csv", [(i, "nightly") for i in IMAGES] + [("not-a-uuid", "x")])


def _ims_input(path: Path) -> Path:
    (path / "in.csv").write_text("".join(f"{i},env,prod\n" for i in IMAGES) + "bad id,env,x\n")
    return path / "in.csv"


# (input writer, extra flags): each shape of run a dry run must count without credentials.
SHAPES = {
    "glance": (_glance_input, ()),
    "ims-without-project-id": (_ims_input, ("--api", "ims")),
    "remove": (_glance_input, ("--op", "remove")),
    "sharded": (_glance_input, ("--shard", "1/2")),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_dry_run_needs_no_credentials_and_no_network(tmp_path: Path, shape: str) -> None:
    write, extra = SHAPES[shape]
    inventory = write(tmp_path)
    with plain_http(500) as server:  # would be seen if anything were sent
        args = [str(inventory), "--endpoint", server.url, "--log-format", "json", *extra]
        done = run_bulktag([*args, "--dry-run"], tmp_path, env=isolated_env(tmp_path, token=None))
    no_traceback(done)
    assert 1 == done.code, done  # the one invalid row
    event = done.event("dry_run")
    assert (5, 1) == (event["read"], event["invalid"]), event
    assert 4 == event["would_send"] + event["skipped_other_shard"]
    assert [] == server.seen
    assert not (tmp_path / "bulktag-results.jsonl").exists()


def _offline_dry_run(tmp_path: Path, *flags: str) -> Done:
    """``--dry-run`` over the Glance input with ``flags``, and no credentials at all."""
    inventory = _glance_input(tmp_path)
    args = [str(inventory), "--dry-run", *flags]
    return run_bulktag(args, tmp_path, env=isolated_env(tmp_path, token=None))


def test_a_dry_run_without_an_endpoint_counts_too(tmp_path: Path) -> None:
    done = _offline_dry_run(tmp_path, "--log-format", "json")
    assert 1 == done.code, done
    assert 4 == done.event("dry_run")["would_send"]


def test_an_offline_dry_run_still_refuses_a_malformed_endpoint(tmp_path: Path) -> None:
    done = _offline_dry_run(tmp_path, "--endpoint", "ftp://x")
    assert "--endpoint" in one_error_line(done, 2), done


def test_an_online_dry_run_logs_in_and_reads_once_but_sends_nothing(tmp_path: Path) -> None:
    inventory = _glance_input(tmp_path)
    with fake_glance(tmp_path) as fake:
        args = [str(inventory), "--endpoint", fake.url, "--log-format", "json"]
        done = run_bulktag([*args, "--dry-run-online"], tmp_path)
        stats = fake.stats()
    assert 1 == done.code, done
    assert fake.url in done.event("dry_run_cloud_ok")["endpoint"]
    assert 4 == done.event("dry_run")["would_send"]
    assert (0, 1) == (stats["put"], stats["get"]), stats  # the preflight read, no PUT
    assert not (tmp_path / "bulktag-results.jsonl").exists()


# name → (token, endpoint, exit code, in the one error line)
ONLINE_FAILURES = {
    "no-credentials": (None, "fake", 2, "OS_AUTH_TOKEN"),
    "token-refused": ("not-it", "fake", 2, "credentials refused"),
    "unreachable": (TOKEN, "closed", 75, "try again later"),
}


@pytest.mark.parametrize("name", list(ONLINE_FAILURES))
def test_an_online_dry_run_fails_as_the_run_would(tmp_path: Path, name: str) -> None:
    token, endpoint, code, needle = ONLINE_FAILURES[name]
    inventory = _glance_input(tmp_path)
    with fake_glance(tmp_path) as fake, refused_url() as closed:
        url = fake.url if endpoint == "fake" else closed
        done = run_bulktag(
            [str(inventory), "--endpoint", url, "--dry-run-online", "--log-format", "json"],
            tmp_path,
            env=isolated_env(tmp_path, token=token),
        )
    assert needle in one_error_line(done, code), done
