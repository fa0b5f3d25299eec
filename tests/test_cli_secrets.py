"""The token never leaves bulktag in anything it writes: not on stdout, not in the (debug) logs,
not in the journal, not in ``--help`` — whether it came from ``--token`` or ``OS_AUTH_TOKEN``,
and whether the server took it, refused it, or echoed it back in an error message."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from clitools import Done, fake_glance, isolated_env, no_traceback, plain_http, run_bulktag
from support import image_ids, write_csv

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


# ── every place a secret can come back from the server × every place it could leak ──────────
#
# Sources: the token echoed in the request id header, in an error body, in a redirect's
# Location (and the body that points there), and the endpoint's userinfo (user:password in
# the URL, which the server also receives as Basic credentials and may echo). Sinks: the log
# (JSON and console), the journal, `bulktag report` (text and JSON), and stderr's error lines.

PASSWORD = "pw-Sw0rdf1sh-4e2c"
USERINFO_ENDPOINT = "http://admin:{password}@127.0.0.1:{port}"


SOURCES = {
    # (status of the tag calls, body, request id header, Location header)
    "request-id-header": (204, "", "req-{token}", ""),
    "request-id-on-error": (403, "denied", "req-{token}-{basic}", ""),
    "error-body": (500, "you sent X-Auth-Token: {token} as {basic}", "", ""),
    "location": (302, "Moved to http://{basic}@elsewhere/?t={token}", "", "/?token={token}"),
    "url-userinfo": (403, "hello {basic}", "req-1", ""),
}


def _leaks(text: str) -> list[str]:
    return [secret for secret in (SECRET, PASSWORD, f"admin:{PASSWORD}") if secret in text]


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_no_secret_the_server_sends_back_reaches_log_journal_or_report(
    tmp_path: Path, source: str, log_format: str
) -> None:
    status, body, request_id, location = SOURCES[source]
    write_csv(tmp_path / "in.csv", [(image, "t") for image in image_ids(3, seed=31)])
    # A server that takes any token, passes the preflight, and answers every tag call
    # ``status`` with headers and body made from what it received.
    headers = {"x-openstack-request-id": request_id, "Location": location}
    headers = {name: value for name, value in headers.items() if value}
    with plain_http(status, body, lists_images=True, headers=headers) as server:
        endpoint = USERINFO_ENDPOINT.format(password=PASSWORD, port=server.port)
        args = ["in.csv", "--endpoint", endpoint, "--results", "j.jsonl", "--rate", "1000"]
        args += ["--log-format", log_format, "--log-level", "debug", "--max-attempts", "2"]
        done = run_bulktag(args, tmp_path, env=isolated_env(tmp_path, SECRET))
    no_traceback(done)
    assert done.code in (0, 1), str(done)
    journal = (tmp_path / "j.jsonl").read_text()
    assert 3 == len(journal.splitlines()), str(done)
    assert [] == _leaks(done.stdout + done.stderr), str(done)
    assert [] == _leaks(journal), journal
    for form in ("text", "json"):
        shown = run_bulktag(["j.jsonl", "--format", form], tmp_path, command="report")
        assert [] == _leaks(shown.stdout + shown.stderr), str(shown)


@pytest.mark.parametrize(
    "endpoint",
    [
        pytest.param("http://admin:{password}@127.0.0.1:{port}", id="unreachable"),
        pytest.param("ftp://admin:{password}@127.0.0.1:{port}", id="not-http"),
        pytest.param("admin:{password}@127.0.0.1:{port}", id="no-scheme"),
    ],
)
@pytest.mark.parametrize("command", ["run", "verify"])
def test_an_endpoint_password_is_not_in_error_lines(
    tmp_path: Path, endpoint: str, command: str
) -> None:
    from clitools import free_port

    url = endpoint.format(password=PASSWORD, port=free_port())
    write_csv(tmp_path / "in.csv", [(image, "t") for image in image_ids(1, seed=32)])
    record = {"line": 2, "image_id": image_ids(1, 32)[0], "tag": "t", "outcome": "ok"}
    (tmp_path / "j.jsonl").write_text(json.dumps({**record, "status": 204}) + "\n")
    first = ["in.csv", "--results", "j.jsonl"] if command == "run" else ["j.jsonl"]
    done = run_bulktag(
        [*first, "--endpoint", url], tmp_path, command=command, env=isolated_env(tmp_path, SECRET)
    )
    no_traceback(done)
    assert done.code in (2, 75), str(done)
    assert [] == _leaks(done.stdout + done.stderr), str(done)
    assert "<redacted>@127.0.0.1" in done.stderr, str(done)


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("http://admin:pw@host:9292/v2", "http://<redacted>@host:9292/v2"),
        ("https://token-only@host", "https://<redacted>@host"),
        ("admin:pw@host", "<redacted>@host"),
        ("http://a%40b:p%3Aw@h/x?y=z", "http://<redacted>@h/x?y=z"),
        ("http://host/x?mail=a@b", "http://host/x?mail=a@b"),  # an @ past the host is no userinfo
        ("http://host:9292", "http://host:9292"),
    ],
)
def test_urls_are_printed_without_userinfo(given: str, shown: str) -> None:
    from bulktag.auth.redact import redact_url, redact_urls

    assert shown == redact_url(given)
    if "://" in given:
        assert f"at {shown}: refused" == redact_urls(f"at {given}: refused")
