"""Every mistake a user can make on the ``bulktag run`` command line ends the same way: exit 2,
ONE line on stderr that says ``error`` and what is wrong (naming the flag, variable or file at
fault), no Python traceback, and nothing sent to the cloud.

The cases run as real subprocesses, all at once (a module fixture runs them in a thread pool and
each test checks one), against the fake Glance as another subprocess.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clitools import (
    TOKEN,
    Done,
    FakeServer,
    PlainServer,
    fake_glance,
    free_port,
    isolated_env,
    no_traceback,
    one_error_line,
    plain_http,
    run_all,
    run_bulktag,
)
from support import write_csv

from bulktag import cli

VALID = [("8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87", "team-web")]


@dataclass(frozen=True)
class Case:
    """One mistaken invocation. In ``args``, ``{fake}`` is the fake Glance's URL, ``{plain}`` a
    web server answering 404 to everything, ``{portal}`` one answering 200 with an HTML page to
    everything (a dashboard, a login proxy), and ``{closed}`` a port nobody listens on."""

    args: tuple[str, ...]
    needles: tuple[str, ...]  # all must appear in the error line
    env: dict[str, str] = field(default_factory=dict)
    token: str | None = TOKEN
    code: int = 2


def case(*args: str, needles: tuple[str, ...], **kw: object) -> Case:
    return Case(args, needles, **kw)  # type: ignore[arg-type]


FAKE = ("--endpoint", "{fake}")

CASES: dict[str, Case] = {
    # -- flags ----------------------------------------------------------------------------------
    "unknown-flag": case("in.csv", *FAKE, "--bogus", needles=("--bogus",)),
    # argparse would take these as --rate and --project-id: a typo must not change a run
    "abbreviated-flag": case("in.csv", *FAKE, "--rat", "5", needles=("--rat",)),
    "abbreviated-flag-ims": case("in.csv", *FAKE, "--project", "x", needles=("--project",)),
    "rate-negative": case("in.csv", *FAKE, "--rate", "-1", needles=("--rate",)),
    "rate-zero": case("in.csv", *FAKE, "--rate", "0", needles=("--rate",)),
    "rate-not-a-number": case("in.csv", *FAKE, "--rate", "abc", needles=("--rate", "abc")),
    "rate-nan": case("in.csv", *FAKE, "--rate", "nan", needles=("--rate",)),
    "concurrency-zero": case("in.csv", *FAKE, "--concurrency", "0", needles=("--concurrency",)),
    "log-format-bad": case("in.csv", *FAKE, "--log-format", "xml", needles=("--log-format", "xml")),
    "unknown-command": Case(("frobnicate",), ("frobnicate",)),
    # -- input ----------------------------------------------------------------------------------
    "input-missing": case("missing.csv", *FAKE, needles=("missing.csv", "No such file")),
    "input-is-directory": case("subdir", *FAKE, needles=("subdir", "directory")),
    # -- journal --------------------------------------------------------------------------------
    "journal-under-a-file": case(
        "in.csv",
        *FAKE,
        "--results",
        "afile/journal.jsonl",
        needles=("afile/journal.jsonl", "Not a directory"),
    ),
    "journal-in-a-missing-directory": case(
        "in.csv",
        *FAKE,
        "--results",
        "nodir/journal.jsonl",
        needles=("nodir/journal.jsonl", "its directory nodir does not exist", "--results"),
    ),
    "metrics-file-in-a-missing-directory": case(
        "in.csv",
        *FAKE,
        "--metrics-file",
        "nodir/bulktag.prom",
        needles=("--metrics-file nodir/bulktag.prom", "its directory nodir does not exist"),
    ),
    "journal-is-the-input": case(  # a closed port: while the bug lasts, nothing is sent
        "in.csv",
        "--endpoint",
        "http://127.0.0.1:{closed}",
        "--results",
        "./in.csv",
        needles=("in.csv", "input"),
    ),
    "journal-is-directory": case(  # it said "cannot lock journal: not a regular file"
        "in.csv",
        *FAKE,
        "--results",
        "subdir",
        needles=("--results subdir is a directory", "e.g. subdir/bulktag-results.jsonl"),
    ),
    "metrics-file-is-directory": case(
        "in.csv",
        *FAKE,
        "--metrics-file",
        "subdir",
        needles=("--metrics-file subdir is a directory", "e.g. subdir/bulktag.prom"),
    ),
    # -- endpoint and credentials -----------------------------------------------------------------
    "endpoint-ftp": case("in.csv", "--endpoint", "ftp://x", needles=("--endpoint", "ftp://x")),
    "endpoint-not-a-url": case(
        "in.csv", "--endpoint", "not a url", needles=("--endpoint", "not a url")
    ),
    "endpoint-without-a-scheme": case(  # as a host is often written
        "in.csv",
        "--endpoint",
        "glance.example.com:9292",
        needles=("not an http(s) URL", "did you mean 'https://glance.example.com:9292'?"),
    ),
    "endpoint-port-out-of-range": case(
        "in.csv", "--endpoint", "http://127.0.0.1:99999", needles=("--endpoint",)
    ),
    "os-image-url-bad": case("in.csv", needles=("ftp://x",), env={"OS_IMAGE_URL": "ftp://x"}),
    "no-endpoint": case("in.csv", needles=("--endpoint", "OS_IMAGE_URL")),
    "no-token": case("in.csv", *FAKE, needles=("--token", "OS_AUTH_TOKEN"), token=None),
    # Not a mistake in the command: a network blip or an API restart. Exit 75, "try again
    # later" (sysexits' EX_TEMPFAIL), so a scheduler retries it instead of failing the job.
    "unreachable": case(
        "in.csv", "--endpoint", "http://127.0.0.1:{closed}", needles=("cannot reach",), code=75
    ),
    "token-refused": case("in.csv", *FAKE, needles=("credentials refused",), token="not-it"),
    "not-an-image-service-path": case(
        "in.csv", "--endpoint", "{fake}/not-glance", needles=("{fake}/not-glance", "404")
    ),
    "not-an-image-service-server": case(
        "in.csv", "--endpoint", "{plain}", needles=("does not look like", "404")
    ),
    "not-an-image-service-200-html": case(
        "in.csv", "--endpoint", "{portal}", needles=("does not look like",)
    ),
    # -- configuration file and variables --------------------------------------------------------
    "config-malformed": case(
        "in.csv", *FAKE, "--config", "bad.toml", needles=("bad.toml", "not valid TOML")
    ),
    "config-unknown-key": case(
        "in.csv", *FAKE, "--config", "unknown.toml", needles=("unknown.toml", "'bogus'")
    ),
    "config-missing": case("in.csv", *FAKE, "--config", "nope.toml", needles=("nope.toml",)),
    "config-not-utf8": case("in.csv", *FAKE, "--config", "binary.toml", needles=("binary.toml",)),
    "default-config-malformed": case(
        "in.csv", *FAKE, needles=("bulktag.toml", "not valid TOML")
    ),  # ./bulktag.toml is read without --config: see _prepare
    "env-rate-not-a-number": case(
        "in.csv", *FAKE, needles=("BULKTAG_RATE", "abc"), env={"BULKTAG_RATE": "abc"}
    ),
    # -- TLS --------------------------------------------------------------------------------------
    "cacert-missing": case(
        "in.csv",
        "--endpoint",
        "https://127.0.0.1:{closed}",
        "--cacert",
        "nope.pem",
        needles=("nope.pem",),
    ),
    "cacert-not-a-certificate": case(
        "in.csv",
        "--endpoint",
        "https://127.0.0.1:{closed}",
        "--cacert",
        "in.csv",
        needles=("in.csv",),
    ),
}

# A credential with a control character (a CR from an env file with Windows line ends, a tab
# pasted in) cannot go into a header: one line naming the credential, never its value.
_KEYSTONE = {
    "OS_AUTH_URL": "http://127.0.0.1:9/v3",
    "OS_USERNAME": "tagger",
    "OS_PASSWORD": "s3cret-pw",
    "OS_PROJECT_NAME": "images",
    "OS_USER_DOMAIN_NAME": "Default",
    "OS_PROJECT_DOMAIN_NAME": "Default",
}
_APP_CREDENTIAL = {  # as Horizon's openrc for an application credential sets them
    "OS_AUTH_TYPE": "v3applicationcredential",
    "OS_AUTH_URL": "http://127.0.0.1:9/v3",
    "OS_APPLICATION_CREDENTIAL_ID": "0123abcd",
    "OS_APPLICATION_CREDENTIAL_SECRET": "app-s3cret",
}
CASES.update(
    {
        "token-env-crlf": case(
            "in.csv", *FAKE, needles=("token", "control character", "CRLF"), token=TOKEN + "\r"
        ),
        "token-flag-crlf": case(
            "in.csv", *FAKE, "--token", TOKEN + "\r", needles=("token", "\\r"), token=None
        ),
        "token-tab": case("in.csv", *FAKE, needles=("token", "\\t"), token="tok\ten-123"),
        "password-crlf": case(
            "in.csv",
            needles=("password", "control character"),
            env={**_KEYSTONE, "OS_PASSWORD": "s3cret-pw\r"},
            token=None,
        ),
        "username-newline": case(
            "in.csv",
            needles=("username", "\\n"),
            env={**_KEYSTONE, "OS_USERNAME": "tagger\n"},
            token=None,
        ),
        "app-credential-secret-crlf": case(
            "in.csv",
            needles=("application credential secret", "control character"),
            env={**_APP_CREDENTIAL, "OS_APPLICATION_CREDENTIAL_SECRET": "app-s3cret\r"},
            token=None,
        ),
    }
)

XFAIL: dict[str, pytest.MarkDecorator] = {}  # known bugs, as strict xfails (none now)


def _prepare(directory: Path, name: str) -> None:
    directory.mkdir()
    write_csv(directory / "in.csv", VALID)
    (directory / "subdir").mkdir()
    (directory / "afile").write_text("a regular file\n")
    (directory / "bad.toml").write_text("rate = [\n")
    (directory / "unknown.toml").write_text("rate = 5\nbogus = 1\n")
    (directory / "binary.toml").write_bytes(b"\xff\xfe\x00rate")
    if name == "default-config-malformed":
        (directory / "bulktag.toml").write_text("rate = = 3\n")


def _run_case(directory: Path, case: Case, urls: dict[str, str]) -> Done:
    args = [a.format(**urls) for a in case.args]
    if case.args and case.args[0] == "frobnicate":
        return run_bulktag(args, directory, command=None)
    env = isolated_env(directory, token=case.token, **case.env)
    # JSON logs, as from cron; a case's own --log-format comes later and wins.
    return run_bulktag(["--log-format", "json", *args], directory, env=env)


@dataclass
class Results:
    done: dict[str, Done]
    urls: dict[str, str]
    fake: FakeServer
    plain: PlainServer
    base: Path


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    base = tmp_path_factory.mktemp("cli-errors")
    with (
        fake_glance(base) as fake,
        plain_http(404, "404 Not Found\n") as plain,
        plain_http(200, "<html><body>Welcome to the dashboard</body></html>\n") as portal,
    ):
        urls = {
            "fake": fake.url,
            "plain": plain.url,
            "portal": portal.url,
            "closed": str(free_port()),
        }
        for name in CASES:
            _prepare(base / name, name)
        done = run_all(CASES, lambda name, case: _run_case(base / name, case, urls), workers=8)
        yield Results(done, urls, fake, plain, base)


@pytest.mark.parametrize("name", [pytest.param(name, marks=XFAIL.get(name, ())) for name in CASES])
def test_error_is_one_clear_line_and_its_exit_code(results: Results, name: str) -> None:
    case, done = CASES[name], results.done[name]
    line = one_error_line(done, case.code)
    assert "error" in line.lower(), str(done)
    for needle in case.needles:
        assert needle.format(**results.urls) in line, f"{needle!r} not in the error\n{done}"
    assert "" == done.stdout, str(done)


def test_no_error_case_sent_a_tag_or_wrote_a_record(results: Results) -> None:
    """Exit 2 means nothing was sent: the servers saw no PUT, and no journal has a record."""
    assert 0 == results.fake.puts()
    assert [] == [seen for seen in results.plain.seen if seen[0] != "GET"]
    for name in CASES.keys() - XFAIL.keys():  # the known bugs are described where marked
        for journal in (results.base / name).glob("*.jsonl"):
            assert b"" == journal.read_bytes(), f"{name}: {journal} has records"


def test_unreachable_and_refused_say_where(results: Results) -> None:
    """The preflight failures name the endpoint, so a typo in it is visible."""
    closed = f"http://127.0.0.1:{results.urls['closed']}"
    assert closed in results.done["unreachable"].stderr
    assert "401" in results.done["token-refused"].stderr


def test_no_arguments_prints_usage_and_exits_2(tmp_path: Path) -> None:
    done = run_bulktag([], tmp_path, command=None, env=isolated_env(tmp_path))
    no_traceback(done)
    assert 2 == done.code, str(done)
    assert "usage: bulktag" in done.stderr
    assert "run" in done.stderr


def test_run_help_exits_0(tmp_path: Path) -> None:
    done = run_bulktag(["--help"], tmp_path, env=isolated_env(tmp_path))
    assert 0 == done.code, str(done)
    assert "--endpoint" in done.stdout
    assert "--unsafe-no-image-lock" not in done.stdout  # testing-only flag stays hidden


def test_version_exits_0(tmp_path: Path) -> None:
    done = run_bulktag(["--version"], tmp_path, command=None, env=isolated_env(tmp_path))
    assert 0 == done.code, str(done)
    assert done.stdout.startswith("bulktag ")
    assert "" == done.stderr


def test_the_program_exits_with_mains_code_and_skips_the_last_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``bulktag`` exits with main()'s code, the cyclic GC frozen (nothing left for it)."""
    monkeypatch.setattr(cli, "main", lambda: 3)
    assert 0 == gc.get_freeze_count()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.entry_point()
        assert 3 == exited.value.code
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("token-env-crlf", TOKEN),
        ("token-flag-crlf", TOKEN),
        ("password-crlf", "s3cret-pw"),
        ("app-credential-secret-crlf", "app-s3cret"),
    ],
)
def test_a_credential_refused_for_a_control_character_is_not_quoted(
    results: Results, name: str, secret: str
) -> None:
    assert secret not in results.done[name].stderr, str(results.done[name])
