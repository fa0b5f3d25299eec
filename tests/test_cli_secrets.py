"""The token never leaves bulktag in anything it writes: not on stdout, not in the (debug) logs,
not in the journal, not in ``--help`` — whether it came from ``--token`` or ``OS_AUTH_TOKEN``,
and whether the server took it, refused it, or echoed it back in an error message."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from clitools import (
    Done,
    fake_glance,
    image_ids,
    isolated_env,
    no_traceback,
    plain_http,
    run_bulktag,
    write_csv,
)

SECRET = "gAAAAAB-SeCrEt-7f3a9c2b-e1d4-4b6f-a0c8-do-not-print"


def _echo_status(method: str, path: str) -> int:
    return 200 if method == "GET" else 403


#: Each yields something with a ``url``.
SERVERS: dict[str, Callable[[Path], AbstractContextManager[Any]]] = {
    # Takes the token; every 3rd image is unknown, so there are error records too.
    "accepting": lambda d: fake_glance(d, "--unknown-every", "3", token=SECRET),
    "refusing": lambda d: fake_glance(d, token="some-other-token"),
    # Takes any token on GET, then refuses every PUT quoting the token back (403).
    "echoing": lambda d: plain_http(
        _echo_status, "token {token} may not tag this image", lists_images=True
    ),
}
EXIT = {"accepting": 1, "refusing": 2, "echoing": 1}  # accepting: some images are unknown


def run_with_secret(tmp_path: Path, url: str, via: str) -> Done:
    write_csv(tmp_path / "in.csv", [(image, "secret-test") for image in image_ids(6, seed=30)])
    args = ["in.csv", "--endpoint", url, "--results", "journal.jsonl", "--log-level", "debug"]
    args += ["--log-format", "json", "--rate", "1000"]
    if via == "flag":
        return run_bulktag([*args, "--token", SECRET], tmp_path, env=isolated_env(tmp_path, None))
    return run_bulktag(args, tmp_path, env=isolated_env(tmp_path, SECRET))


@pytest.mark.parametrize("via", ["flag", "env"])
@pytest.mark.parametrize(
    "server",
    list(SERVERS),
)
def test_the_token_appears_in_no_output(tmp_path: Path, server: str, via: str) -> None:
    with SERVERS[server](tmp_path / "server") as running:
        done = run_with_secret(tmp_path, running.url, via)

    no_traceback(done)
    assert EXIT[server] == done.code, str(done)
    assert SECRET not in done.stdout
    assert SECRET not in done.stderr
    journal = tmp_path / "journal.jsonl"
    if server != "refusing":
        assert journal.read_bytes(), "the run should have recorded rows"
    if journal.exists():
        assert SECRET.encode() not in journal.read_bytes()
    for leftover in tmp_path.glob("journal.jsonl*"):
        assert SECRET.encode() not in leftover.read_bytes(), leftover


def test_the_token_is_not_in_help(tmp_path: Path) -> None:
    done = run_bulktag(["--help"], tmp_path, env=isolated_env(tmp_path, SECRET))
    assert 0 == done.code, str(done)
    assert SECRET not in done.stdout + done.stderr
    assert "OS_AUTH_TOKEN" in done.stdout  # the help does say where the token comes from
