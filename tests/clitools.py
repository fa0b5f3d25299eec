"""Helpers for the end-to-end CLI tests: run ``bulktag run`` in a subprocess the way a user does,
against the fake Glance running in another subprocess, and read back what it left behind.

* :func:`fake_glance` starts ``bulktag serve-fake --port 0`` (``--api ims`` among the flags:
  the fake IMS) and reads the port from its banner line; it always kills it on exit.
  :meth:`FakeServer.stats` reads what the server saw (PUT count, overlaps) from its
  ``GET /_fake/stats`` route.
* :func:`plain_http` runs a tiny stdlib HTTP server in a thread that answers every request with
  one fixed status and body (a web server that is not Glance, or one echoing the token back).
* :func:`run_bulktag` / :func:`start_bulktag` run the real CLI with an isolated environment
  (no ``OS_*``/``BULKTAG_*`` from the caller, ``HOME`` and the working directory in tmp).
* Image ids, pairs, CSV and reading the journal back are :mod:`support`'s, as for every test.
* :func:`one_error_line` checks that a refused command said so in one line with its exit code;
  :func:`run_all` runs a table of such cases at once.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import support
from support import image

from bulktag.fake.glance import STATS_PATH

if TYPE_CHECKING:
    from bulktag.fake.keystone import FakeKeystone

#: Every subprocess gets at most this long; a hung bulktag fails the test instead of the suite.
TIMEOUT = 60
#: The token the tests' servers accept by default.
TOKEN = "clitools-token-0123456789"

_BANNER = re.compile(r"fake (?:Glance|IMS) listening on (http://\S+) \(token: ")
_Case = TypeVar("_Case")


# ── ports and servers ─────────────────────────────────────────────────────────────────────────


def free_port() -> int:
    """A port nothing listens on right now (also a good 'closed port' for unreachable tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """A loopback URL whose port is bound but not listening, for as long as the block runs:
    connections are refused, and no other process on this busy machine can take the port in
    between (as it can with :func:`free_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class FakeServer:
    """A fake Glance subprocess and how to talk to it."""

    process: subprocess.Popen[bytes]
    url: str  # base URL, no /v2
    token: str | None
    log: Path

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path)
        if self.token is not None:
            request.add_header("X-Auth-Token", self.token)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """What the server saw (:meth:`bulktag.fake.glance.FakeGlance.stats`)."""
        return dict(self._get(STATS_PATH))

    def puts(self) -> int:
        """PUT requests the server has answered so far."""
        return int(self.stats()["put"])

    def image_tags(self) -> dict[str, list[str]]:
        """Every image the server knows and its tags, through the Glance API itself."""
        images = self._get("/v2/images?limit=1000")["images"]
        assert len(images) < 1000, "more images than one page: use image() per id"
        return {image["id"]: list(image["tags"]) for image in images}

    def image(self, image_id: str) -> dict[str, Any]:
        return dict(self._get(f"/v2/images/{image_id}"))

    def ims_tags(self, project_id: str, image_id: str) -> dict[str, str]:
        """An image's key/value tags, through IMS's own API (``serve-fake --api ims``)."""
        tags = self._get(f"/v2/{project_id}/images/{image_id}/tags")["tags"]
        return {tag["key"]: tag["value"] for tag in tags}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@contextlib.contextmanager
def fake_glance(
    workdir: Path,
    *flags: str,
    token: str | None = TOKEN,
) -> Iterator[FakeServer]:
    """Run the fake Glance on a free port until the block ends; yields it once it listens.

    ``flags`` are ``bulktag serve-fake`` flags (``--latency``, ``--fail-503`` ...).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"fake-glance-{uuid.uuid4().hex[:8]}.log"
    argv = [sys.executable, "-m", "bulktag", "serve-fake", "--port", "0", *flags]
    if token is not None:
        argv += ["--token", token]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    server = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            text = log.read_text(errors="replace")
            found = _BANNER.search(text)
            if found:
                server = FakeServer(process, found.group(1), token, log)
                break
            if process.poll() is not None:
                raise RuntimeError(f"fake Glance exited {process.returncode}:\n{text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake Glance printed no banner in {TIMEOUT} s:\n{text}")
            time.sleep(0.02)
        yield server
    finally:
        if server is not None:
            server.stop()
        elif process.poll() is None:
            process.kill()
            process.wait(timeout=5)


@dataclass
class PlainServer:
    url: str
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, path) per request

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextlib.contextmanager
def plain_http(
    status: int | Callable[[str, str], int],
    body: str = "",
    lists_images: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Iterator[PlainServer]:
    """A stdlib HTTP server in a thread answering every request ``status`` with ``body`` and
    ``headers``: a web server that is not Glance, or one that echoes credentials back (in
    ``body`` and ``headers``, ``{token}`` is replaced by the request's X-Auth-Token, ``{basic}``
    by its decoded Basic credentials: an endpoint's userinfo). ``status`` may be a function of
    (method, path). ``lists_images``: ``GET /v2/images?…`` answers 200 with Glance's empty
    image list, so the server passes bulktag's preflight and misbehaves only on the tag calls."""
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append((self.command, self.path))
            token = self.headers.get("X-Auth-Token", "")
            basic = self.headers.get("Authorization", "").removeprefix("Basic ")
            basic = base64.b64decode(basic).decode() if basic else ""

            def fill(text: str) -> str:
                return text.replace("{token}", token).replace("{basic}", basic)

            code = status(self.command, self.path) if callable(status) else status
            data = fill(body).encode()
            if lists_images and self.command == "GET" and self.path.startswith("/v2/images?"):
                code, data = 200, b'{"images": []}'
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, fill(value))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PlainServer(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def operator_keystone(image_url: str | None, password: str = "secret-pw-42") -> FakeKeystone:
    """A fake Keystone (in-process: serve it with ``serve_keystone``) where ``operator`` may log
    in to project ``images`` with ``password``; its catalog's image service is ``image_url``
    (None: the fake's default)."""
    from bulktag.fake import keystone

    config = keystone.FakeKeystoneConfig(
        users=[keystone.FakeUser("u1", "operator", password)],
        projects=[keystone.FakeProject("p1", "images")],
    )
    if image_url is not None:
        config.image_endpoints = [keystone.FakeEndpoint(image_url)]
    return keystone.FakeKeystone(config)


def operator_credentials(auth_url: str, password: str = "secret-pw-42") -> dict[str, str]:
    """The ``--os-*`` settings (flag names without ``--os-``) that log in as operator."""
    return {
        "auth-url": auth_url,
        "username": "operator",
        "password": password,
        "project-name": "images",
        "user-domain-name": "Default",
        "project-domain-name": "Default",
    }


# ── running bulktag ───────────────────────────────────────────────────────────────────────────


def isolated_env(home: Path, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    """:func:`support.isolated_env` with the token the tests' fakes accept, unless told."""
    return support.isolated_env(home, token, **extra)


@dataclass
class Done:
    """A finished bulktag process."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr (other lines are skipped)."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def event(self, name: str) -> dict[str, Any]:
        matches = [e for e in self.events if e.get("event") == name]
        assert matches, f"no {name!r} event\n{self}"
        return matches[-1]

    @property
    def lines(self) -> list[str]:
        """stderr's non-empty lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def error_lines(self) -> list[str]:
        """The human error lines on stderr: as written in console mode, or from the
        ``message`` of an error event in JSON mode."""
        found = [e["message"] for e in self.events if e.get("level") == "error" and "message" in e]
        return found + [line for line in self.lines if line.startswith("bulktag: error")]

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.argv[2:])}\nexit {self.code}\n--- stdout ---\n"
            f"{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-5000:]}"
        )


def bulktag_argv(args: Sequence[str], command: str | None = "run") -> list[str]:
    return [sys.executable, "-m", "bulktag", *([command] if command else []), *args]


def run_bulktag(
    args: Sequence[str],
    cwd: Path,
    *,
    command: str | None = "run",
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = TIMEOUT,
    preexec_fn: Callable[[], None] | None = None,
) -> Done:
    """Run ``bulktag <command> <args>`` to the end (stdin empty unless given)."""
    argv = bulktag_argv(args, command)
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=dict(env) if env is not None else isolated_env(cwd),
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )
    return Done(
        argv,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


@dataclass
class Running:
    """A bulktag process started in the background; its output goes to files."""

    process: subprocess.Popen[bytes]
    argv: list[str]
    out: Path
    err: Path

    def stderr_text(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20) -> None:
        """Wait until ``predicate(stderr so far)`` holds (fails if the process exits first)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.stderr_text()):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"bulktag exited {self.process.returncode} early:\n" + self.stderr_text()
                )
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting on bulktag:\n" + self.stderr_text())
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = TIMEOUT) -> Done:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill()
        return Done(
            self.argv,
            code,
            self.out.read_text(errors="replace"),
            self.stderr_text(),
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


@contextlib.contextmanager
def start_bulktag(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdin: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Running]:
    """``bulktag run <args>`` in the background; killed when the block ends if still running."""
    argv = bulktag_argv(args)
    tag = uuid.uuid4().hex[:8]
    out, err = cwd / f"bulktag-{tag}.out", cwd / f"bulktag-{tag}.err"
    with contextlib.ExitStack() as files:
        stdout = files.enter_context(out.open("wb"))
        stderr = files.enter_context(err.open("wb"))
        source = files.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else isolated_env(cwd),
            stdin=source,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only rlimits, set in the child
        )
    running = Running(process, argv, out, err)
    try:
        yield running
    finally:
        running.kill()


# ── inputs and the journal ────────────────────────────────────────────────────────────────────


def journal_record(n: int = 0, tag: str = "web", **fields: Any) -> dict[str, Any]:
    """A hand-written journal record for image ``n``: ok by default, fields overridden as given."""
    record: dict[str, Any] = {
        "line": n + 2,
        "image_id": image(n),
        "tag": tag,
        "outcome": "ok",
        "status": 204,
        "attempts": 1,
        "error": None,
        "request_id": f"req-{n}",
        "at": "2026-11-28T02:00:01.123Z",
        "elapsed_ms": 40,
    }
    return record | fields


def write_journal(path: Path, records: Iterable[Mapping[str, Any]], extra: bytes = b"") -> Path:
    """Write ``records`` as journal lines, then ``extra`` (a torn or foreign last line)."""
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + extra)
    return path


def ok_counts(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """How many ``ok`` records each pair has."""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        if record["outcome"] == "ok":
            pair = (record["image_id"], record["tag"])
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def no_traceback(done: Done) -> None:
    assert "Traceback" not in done.stderr, str(done)
    assert "Traceback" not in done.stdout, str(done)


def one_error_line(done: Done, code: int) -> str:
    """The one line on stderr a refused command ends with; fails the test on a traceback, on
    another exit code, or on any other line on stderr (a user reads that line and nothing more)."""
    no_traceback(done)
    assert code == done.code, str(done)
    assert 1 == len(done.lines), f"expected one line on stderr\n{done}"
    return done.lines[0]


def run_all(
    cases: Mapping[str, _Case], run: Callable[[str, _Case], Done], workers: int
) -> dict[str, Done]:
    """``run(name, case)`` for every case at once, on ``workers`` threads: each case is a
    subprocess, so threads overlap them and a module fixture pays for the slowest, not the sum."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(run, name, case) for name, case in cases.items()}
        return {name: future.result() for name, future in futures.items()}
