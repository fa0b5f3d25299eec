"""Exit 2 is for what a retry cannot fix; exit 75 (EX_TEMPFAIL) for what a retry may.

A scheduler acts on the code alone (the Kubernetes example fails the whole Job on 2 and retries
75; the systemd unit restarts on 75 only), so a network blip or an API restart must never look
like a bad flag, and a bad flag must never be retried all night. Every start-up condition here
runs the real CLI in a subprocess against a local server answering one fixed status (or a
closed port): one line on stderr, no traceback, nothing sent, no journal left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from clitools import (
    TOKEN,
    Done,
    PlainServer,
    isolated_env,
    one_error_line,
    plain_http,
    refused_url,
    run_all,
    run_bulktag,
)
from support import write_csv

VALID = [("8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87", "team-web")]
TEMPFAIL, USAGE = 75, 2
# Statuses a local server answers with; each one a server of its own.
IMAGE_STATUSES = (503, 404)
IDENTITY_STATUSES = (500, 503, 429, 401, 404)
# How every identity-service error ends: where the password settings came from.
SETTINGS = (
    "(settings from environment OS_AUTH_URL, OS_PASSWORD, OS_PROJECT_DOMAIN_NAME, "
    "OS_PROJECT_NAME, OS_USERNAME, OS_USER_DOMAIN_NAME)"
)


@dataclass(frozen=True)
class Case:
    """``image``/``identity``: the status the image/identity service answers, ``None`` for a
    closed port, or absent. With an identity service, bulktag logs in with a password."""

    code: int
    needles: tuple[str, ...]
    image: int | str | None = "absent"
    identity: int | str | None = "absent"
    args: tuple[str, ...] = ()


CASES: dict[str, Case] = {
    # ── try again later ──────────────────────────────────────────────────────────────────
    "image-unreachable": Case(TEMPFAIL, ("cannot reach", "try again later"), image=None),
    # The library's words are cut, never what bulktag says after them: a connection error's
    # urllib3 chain took the whole line, and where the settings came from was lost.
    "identity-unreachable": Case(
        TEMPFAIL,
        ("identity service", "does not answer", f"{SETTINGS}; try again later"),
        identity=None,
    ),
    "identity-500": Case(TEMPFAIL, ("identity service", "500", SETTINGS), identity=500),
    "identity-503": Case(TEMPFAIL, ("identity service", "503", SETTINGS), identity=503),
    "identity-429": Case(TEMPFAIL, ("identity service", "429", SETTINGS), identity=429),
    # ── fix the command or the credentials ───────────────────────────────────────────────
    "image-not-an-image-service": Case(USAGE, ("does not look like", "404"), image=404),
    "identity-refuses-credentials": Case(
        USAGE, ("credentials refused", "401", SETTINGS), identity=401
    ),
    "identity-not-an-identity-service": Case(
        USAGE, ("identity service", "404", SETTINGS), identity=404
    ),
    "bad-flag": Case(USAGE, ("--rat",), image=503, args=("--rat", "5")),
    "bad-value": Case(USAGE, ("--rate",), image=503, args=("--rate", "-1")),
}


def _password_env(auth_url: str) -> dict[str, str]:
    return {
        "OS_AUTH_URL": auth_url,
        "OS_USERNAME": "operator",
        "OS_PASSWORD": "s3cret-password",
        "OS_PROJECT_NAME": "images",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
    }


def _url(servers: dict[object, PlainServer], status: int | str | None, closed: str) -> str:
    return closed if status is None else servers[status].url


def _run(directory: Path, case: Case, servers: dict[object, PlainServer], closed: str) -> Done:
    directory.mkdir()
    write_csv(directory / "in.csv", VALID)
    args = ["--log-format", "json", "in.csv", *case.args]
    if case.image != "absent":
        args += ["--endpoint", _url(servers, case.image, closed)]
    if case.identity != "absent":
        env = isolated_env(
            directory, token=None, **_password_env(_url(servers, case.identity, closed) + "/v3")
        )
    else:
        env = isolated_env(directory, token=TOKEN)
    return run_bulktag(args, directory, env=env)


@dataclass
class Results:
    done: dict[str, Done]
    servers: dict[object, PlainServer]
    base: Path


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    base = tmp_path_factory.mktemp("exit-codes")
    with ExitStack() as stack:
        closed = stack.enter_context(refused_url())
        servers: dict[object, PlainServer] = {
            status: stack.enter_context(plain_http(status, f"scripted {status}\n"))
            for status in {*IMAGE_STATUSES, *IDENTITY_STATUSES}
        }
        done = run_all(
            CASES, lambda name, case: _run(base / name, case, servers, closed), workers=6
        )
        yield Results(done, servers, base)


@pytest.mark.parametrize("name", list(CASES))
def test_start_up_failure_is_one_line_with_the_right_code(results: Results, name: str) -> None:
    case, done = CASES[name], results.done[name]
    line = one_error_line(done, case.code)
    for needle in case.needles:
        assert needle in line, f"{needle!r} not in the error\n{done}"
    assert "s3cret-password" not in done.stderr


def test_nothing_was_sent_and_no_journal_was_left(results: Results) -> None:
    for server in results.servers.values():
        assert [] == [seen for seen in server.seen if seen[0] == "PUT"]
    for name in CASES:
        assert [] == list((results.base / name).glob("*.jsonl")), name


@pytest.mark.parametrize(
    ("cause", "code", "event"),
    [
        ("bulktag.cli:UsageError", 2, "usage_error"),
        ("bulktag.config:ConfigError", 2, "config_error"),
        ("bulktag.source:InputRefused", 2, "input_refused"),
        ("bulktag.journal:JournalError", 2, "config_error"),
        ("bulktag.auth:CredentialsError", 2, "config_error"),
        ("bulktag.auth:AuthRefused", 2, "config_error"),
        ("bulktag.auth.keystone:CredentialsElsewhere", 2, "config_error"),
        ("bulktag.journal:LockHeld", 5, "journal_locked"),
        ("bulktag.auth:IdentityUnavailable", 75, "cloud_unavailable"),
        ("bulktag.errors:CloudUnavailable", 75, "cloud_unavailable"),
    ],
)
def test_every_cause_is_a_bulktag_error_carrying_its_exit_code(
    cause: str, code: int, event: str
) -> None:
    """The one table of cause -> exit code: the classes themselves (README's table in words)."""
    import importlib

    from bulktag.errors import BulktagError

    module, _, name = cause.partition(":")
    error = getattr(importlib.import_module(module), name)
    assert issubclass(error, BulktagError)
    assert (code, event) == (error.exit_code, error.event)
