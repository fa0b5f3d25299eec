"""Crash safety of the real ``bulktag run``, as an operator meets it: ``kill -9``, Ctrl-C,
SIGTERM and a full disk in the middle of a run, then the same command again. Whatever happened,
the journal is valid JSON lines, and after the rerun every input pair has exactly one ``ok``
record and its tag on the server."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clitools import (
    TOKEN,
    Done,
    FakeServer,
    fake_glance,
    free_port,
    isolated_env,
    no_traceback,
    ok_counts,
    run_bulktag,
    start_bulktag,
)
from support import journal_lines, make_pairs, read_journal, write_csv

Pairs = list[tuple[str, str]]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with fake_glance(tmp_path_factory.mktemp("fake"), "--latency", "0.01") as server:
        yield server


def run_args(fake: FakeServer, rate: str = "200", *extra: str) -> list[str]:
    return [
        "in.csv",
        "--endpoint",
        fake.url,
        "--results",
        "journal.jsonl",
        "--rate",
        rate,
        "--log-format",
        "json",
        *extra,
    ]


def started(stderr: str) -> bool:
    return '"run_started"' in stderr


def records_written(journal: Path, at_least: int) -> Callable[[str], bool]:
    return lambda _stderr: len(journal_lines(journal)) >= at_least


def assert_all_done_once(journal: Path, pairs: Pairs, fake: FakeServer) -> None:
    """Every pair has exactly one ok record, and its tag is on the server."""
    counts = ok_counts(read_journal(journal))
    twice = {pair: n for pair, n in counts.items() if n > 1}
    assert not twice, f"pairs recorded ok more than once: {twice}"
    missing = set(pairs) - set(counts)
    assert not missing, f"{len(missing)} pairs never recorded ok, e.g. {sorted(missing)[:3]}"
    assert set(pairs) == set(counts)
    on_server = fake.image_tags()
    expected: dict[str, set[str]] = {}
    for image, tag in pairs:
        expected.setdefault(image, set()).add(tag)
    for image, tags in expected.items():
        assert tags == set(on_server.get(image, ())), f"image {image} on the server"


def finish_and_check(fake: FakeServer, tmp_path: Path, pairs: Pairs) -> Done:
    done = run_bulktag(run_args(fake, "500"), tmp_path)
    no_traceback(done)
    assert 0 == done.code, str(done)
    assert_all_done_once(tmp_path / "journal.jsonl", pairs, fake)
    return done


# ── kill -9 ───────────────────────────────────────────────────────────────────────────────────


def test_kill_9_mid_run_then_rerun_completes_each_pair_once(
    fake: FakeServer, tmp_path: Path
) -> None:
    pairs = make_pairs(200, 3, seed=10)  # 600 rows: 3 s at --rate 200
    write_csv(tmp_path / "in.csv", pairs)
    journal = tmp_path / "journal.jsonl"

    with start_bulktag(run_args(fake), tmp_path) as running:
        running.wait_for(started)
        running.wait_for(records_written(journal, 50))
        time.sleep(0.5)
        running.signal(signal.SIGKILL)
        assert -signal.SIGKILL == running.process.wait(timeout=10)

    before = read_journal(journal)  # also: every line the killed run wrote is complete JSON
    assert 50 <= len(before) < len(pairs), "the kill should land mid-run"
    # A kill in the middle of write() would leave half a record: simulate one.
    torn = b'{"line": 7, "image_id": "8a3f1c2e-5b7d-4c1e-9f00-3c2b1a0d9e87", "tag": "te'
    with journal.open("ab") as out:
        out.write(torn)

    done = finish_and_check(fake, tmp_path, pairs)

    assert torn in (tmp_path / "journal.jsonl.torn").read_bytes()
    removed = done.event("journal_torn_line_removed")
    assert len(torn) == removed["bytes"]
    finished = done.event("run_finished")
    assert len(before) == finished["skipped_done"]
    assert len(pairs) - len(before) == finished["ok"]
    assert 0 == fake.stats()["overlaps"], "two requests were in flight for one image"


# ── SIGINT / SIGTERM ──────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("signum", "log_format"),
    [(signal.SIGINT, "console"), (signal.SIGTERM, "json"), (signal.SIGHUP, "json")],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_signal_mid_run_exits_130_then_rerun_completes(
    fake: FakeServer, tmp_path: Path, signum: int, log_format: str
) -> None:
    pairs = make_pairs(100, 3, seed=20 + signum)
    write_csv(tmp_path / "in.csv", pairs)
    journal = tmp_path / "journal.jsonl"
    args = [*run_args(fake), "--log-format", log_format]

    with start_bulktag(args, tmp_path) as running:
        running.wait_for(lambda err: "run_started" in err)
        running.wait_for(records_written(journal, 20))
        running.signal(signum)
        done = running.finish()

    no_traceback(done)
    assert 130 == done.code, str(done)
    if log_format == "json":
        finished = done.event("run_finished")
        assert finished.get("interrupted") is True or finished.get("stopped_by") == "signal"
        assert signal.Signals(signum).name == done.event("stopping")["signal"]
    else:
        assert "run interrupted" in done.stderr, str(done)
        assert "run the same command again" in done.stderr
    before = read_journal(journal)
    assert 20 <= len(before) < len(pairs), "the signal should land mid-run"

    finish_and_check(fake, tmp_path, pairs)


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    """PUTs that hang for 5 s, a 30 s grace period: the second Ctrl-C does not wait for them."""
    pairs = make_pairs(8, 1, seed=12)
    write_csv(tmp_path / "in.csv", pairs)
    with fake_glance(tmp_path / "slow", "--write-latency", "5") as slow:
        args = [*run_args(slow, "1000"), "--grace-period", "30", "--concurrency", "8"]
        with start_bulktag(args, tmp_path) as running:
            running.wait_for(started)
            time.sleep(0.3)
            running.signal(signal.SIGINT)
            running.wait_for(lambda err: '"stopping"' in err)
            signalled = time.monotonic()
            running.signal(signal.SIGINT)
            done = running.finish()
            took = time.monotonic() - signalled
    no_traceback(done)
    assert 130 == done.code, str(done)
    assert took < 2.5, f"took {took:.1f} s after the second signal"
    assert done.event("stopping_now")
    assert [] == read_journal(tmp_path / "journal.jsonl"), "no PUT had finished"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_with_nothing_in_flight_does_not_wait_out_the_grace_period(
    tmp_path: Path, signum: int
) -> None:
    """Every row asleep in a back-off (503 with Retry-After: 300), a 10-minute grace period:
    nothing is in flight, so the stop ends the run at once (here: within the test's timeout),
    with the summary and exit 130."""
    pairs = make_pairs(20, 1, seed=14)
    write_csv(tmp_path / "in.csv", pairs)
    with fake_glance(tmp_path / "busy", "--fail-503", "1", "--retry-after", "300") as busy:
        args = [*run_args(busy, "1000"), "--grace-period", "600"]
        with start_bulktag(args, tmp_path) as running:
            running.wait_for(started)
            running.wait_for(lambda err: '"pace_' in err or "503" in err, timeout=30)
            running.signal(signum)
            done = running.finish(timeout=45)
    no_traceback(done)
    assert 130 == done.code, str(done)
    assert "signal" == done.event("run_finished")["stopped_by"]


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_signal_during_preflight_exits_130_without_traceback(tmp_path: Path, signum: int) -> None:
    """An endpoint that accepts the connection and never answers: the signal arrives while
    bulktag waits for the preflight. Nothing was sent; the exit says interrupted."""
    write_csv(tmp_path / "in.csv", make_pairs(2, 1, seed=13))
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(30)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = ["in.csv", "--endpoint", url, "--results", "journal.jsonl", "--log-format", "json"]
        with start_bulktag(args, tmp_path) as running:
            connection, _ = silent.accept()  # bulktag is now in its preflight GET
            with connection:
                time.sleep(0.2)
                running.signal(signum)
                done = running.finish(timeout=20)
    no_traceback(done)
    assert 130 == done.code, str(done)
    assert b"" == (tmp_path / "journal.jsonl").read_bytes()


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_a_signal_stops_verify_with_130_without_traceback(tmp_path: Path, signum: int) -> None:
    """verify waiting on a server that never answers: a stop signal exits 130, like run."""
    pairs = make_pairs(2, 1, seed=15)
    _old_journal(tmp_path / "old.jsonl", pairs)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(30)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        argv = [sys.executable, "-m", "bulktag", "verify", "old.jsonl", "--endpoint", url]
        process = subprocess.Popen(
            argv, cwd=tmp_path, env=isolated_env(tmp_path), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            connection, _ = silent.accept()  # verify is now in its first GET
            with connection:
                time.sleep(0.2)
                process.send_signal(signum)
                _out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert b"Traceback" not in err, err
    assert 130 == process.returncode, err


def test_a_signal_while_verify_reads_stops_it_with_130_without_traceback(tmp_path: Path) -> None:
    """Past the preflight, in the middle of its reads (each answered 0.2 s late): the stop
    cancels the reads rather than raising KeyboardInterrupt inside the task group."""
    pairs = make_pairs(200, 1, seed=16)
    _old_journal(tmp_path / "old.jsonl", pairs)
    with fake_glance(tmp_path / "slow", "--latency", "0.2") as slow:
        argv = [sys.executable, "-m", "bulktag", "verify", "old.jsonl", "--endpoint", slow.url]
        argv += ["--token", str(slow.token), "--rate", "50"]
        process = subprocess.Popen(
            argv, cwd=tmp_path, env=isolated_env(tmp_path), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stderr is not None
            outline = process.stderr.readline()  # what it will read
            first = process.stderr.readline()  # the first problem: the reads are under way
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert outline.startswith(b"bulktag verify: reading back 200 images"), outline
    assert b"lacks" in first or b"gone" in first, first
    assert b"Traceback" not in err, err
    assert 130 == process.returncode, err


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_while_loading_a_big_journal_exits_130_without_traceback(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    record = (
        '{{"line": {n}, "image_id": "00000000-0000-4000-8000-{n:012d}", "tag": "t0", '
        '"outcome": "ok", "status": 204, "attempts": 1, "error": null, "request_id": null, '
        '"at": "2026-11-28T02:00:01.123Z", "elapsed_ms": 4}}\n'
    )
    journal.write_text("".join(record.format(n=n) for n in range(150_000)))  # ~30 MB
    write_csv(tmp_path / "in.csv", make_pairs(1, 1, seed=16))
    url = f"http://127.0.0.1:{free_port()}"
    args = ["in.csv", "--endpoint", url, "--results", "journal.jsonl", "--log-format", "json"]
    with start_bulktag(args, tmp_path) as running:
        fds = Path(f"/proc/{running.process.pid}/fd")

        def loading(stderr: str) -> bool:
            with contextlib.suppress(OSError):
                return any(Path(os.readlink(fd)) == journal.resolve() for fd in fds.iterdir())
            return False

        running.wait_for(loading)
        # Freeze it before looking: a 150k-record journal loads in a fraction of a second, so
        # the signal must not race the load's end. A SIGINT sent to a stopped process waits
        # and is handled where it stopped — in the load, or just before it.
        os.kill(running.process.pid, signal.SIGSTOP)
        try:
            assert '"resuming"' not in running.stderr_text(), "the journal loaded too fast"
            running.signal(signal.SIGINT)
        finally:
            os.kill(running.process.pid, signal.SIGCONT)
        done = running.finish()
    no_traceback(done)
    assert 130 == done.code, str(done)


# ── a full disk ───────────────────────────────────────────────────────────────────────────────


def limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@dataclass
class FullDisk:
    pairs: Pairs
    done: Done  # the run that hit the cap
    cap: int
    journal: bytes  # the journal as that run left it
    workdir: Path


@pytest.fixture(scope="module")
def full_disk(fake: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> FullDisk:
    """A finished first run over 20 rows, then the whole input with the journal's size capped
    (RLIMIT_FSIZE) 4.5 records above what it is: the 5th record's write() is cut short."""
    workdir = tmp_path_factory.mktemp("full-disk")
    pairs = make_pairs(100, 2, seed=14)
    write_csv(workdir / "in.csv", pairs[:20])
    first = run_bulktag(run_args(fake, "1000"), workdir)
    assert 0 == first.code, str(first)
    size = (workdir / "journal.jsonl").stat().st_size
    cap = size + size // 20 * 9 // 2  # records are about the same length
    write_csv(workdir / "in.csv", pairs)
    done = run_bulktag(run_args(fake, "1000"), workdir, preexec_fn=limit_file_size(cap))
    return FullDisk(pairs, done, cap, (workdir / "journal.jsonl").read_bytes(), workdir)


def test_full_disk_aborts_with_exit_3_then_rerun_finishes(
    fake: FakeServer, full_disk: FullDisk
) -> None:
    done = full_disk.done
    no_traceback(done)
    assert 3 == done.code, str(done)
    aborted = done.event("run_aborted")
    assert "journal.jsonl" in aborted["reason"]
    assert "File too large" in aborted["reason"]
    assert len(full_disk.journal) <= full_disk.cap

    finish_and_check(fake, full_disk.workdir, full_disk.pairs)


def test_full_disk_leaves_a_journal_of_complete_records(full_disk: FullDisk) -> None:
    """README: exit 3 — 'the journal is intact'. Every line on disk is a complete record."""
    assert 3 == full_disk.done.code, str(full_disk.done)
    copy = full_disk.workdir / "as-left.jsonl"
    copy.write_bytes(full_disk.journal)
    read_journal(copy)


# ── a finished journal ────────────────────────────────────────────────────────────────────────


def test_rerun_over_a_finished_journal_sends_nothing(fake: FakeServer, tmp_path: Path) -> None:
    pairs = make_pairs(25, 2, seed=15)
    write_csv(tmp_path / "in.csv", pairs)
    finish_and_check(fake, tmp_path, pairs)
    journal = (tmp_path / "journal.jsonl").read_bytes()
    puts = fake.puts()

    done = run_bulktag(run_args(fake, "500"), tmp_path)

    no_traceback(done)
    assert 0 == done.code, str(done)
    assert puts == fake.puts()
    assert journal == (tmp_path / "journal.jsonl").read_bytes()
    finished = done.event("run_finished")
    assert (len(pairs), 0, 0) == (finished["skipped_done"], finished["ok"], finished["requests"])


# ── closed standard streams: every command × stdin, stdout, stderr closed ─────────────────────
#
# `bulktag run … 2>&-` from a cron line, `bulktag report … >&-`: a closed stream is a stream
# nobody reads. The command does its work and exits with its own code; a closed stdin reads
# as empty. (With stderr closed a traceback could not even be seen: the exit code and the
# journal tell.) And a reader that goes away (`| head`) is the same: no BrokenPipeError.

STREAMS = {"stdin": 0, "stdout": 1, "stderr": 2}


def _closing(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


@dataclass(frozen=True)
class Command:
    args: tuple[str, ...]
    code: int
    command: str | None = "run"
    records: int | None = None  # journal records the command must leave


def _commands(fake: FakeServer) -> dict[str, Command]:
    endpoint = ("--endpoint", fake.url)
    return {
        "run": Command(
            ("in.csv", *endpoint, "--results", "j.jsonl", "--rate", "500"), 0, records=3
        ),
        "run-stdin": Command(("-", *endpoint, "--results", "j.jsonl"), 0, records=0),
        "run-dry": Command(("in.csv", "--dry-run", *endpoint, "--results", "j.jsonl"), 0),
        "run-usage-error": Command(("in.csv", *endpoint, "--rate", "x"), 2),
        "run-config-error": Command(("in.csv", "--endpoint", "ftp://x"), 2),
        "report": Command(("old.jsonl",), 0, command="report"),
        "report-json": Command(("old.jsonl", "--format", "json"), 0, command="report"),
        "verify": Command(("old.jsonl", *endpoint, "--rate", "500"), 0, command="verify"),
        "version": Command(("--version",), 0, command=None),
        "help": Command(("--help",), 0, command=None),
        "no-command": Command((), 2, command=None),
        "demo": Command((), 0, command="demo"),  # its own fake, two runs and a resume
    }


_COMMAND_NAMES = [
    "run",
    "run-stdin",
    "run-dry",
    "run-usage-error",
    "run-config-error",
    "report",
    "report-json",
    "verify",
    "version",
    "help",
    "no-command",
    "demo",
]


def _old_journal(path: Path, pairs: Pairs) -> None:
    lines = [
        f'{{"line":{n},"image_id":"{i}","tag":"{t}","outcome":"ok","status":204}}\n'
        for n, (i, t) in enumerate(pairs, 2)
    ]
    path.write_text("".join(lines))


_PAIRS = make_pairs(3, 1, seed=77)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    """A fake of its own whose images already have the tags of _PAIRS (for verify)."""
    with fake_glance(tmp_path_factory.mktemp("streams")) as server:
        for image, tag in _PAIRS:
            put = urllib.request.Request(
                f"{server.url}/v2/images/{image}/tags/{tag}",
                method="PUT",
                headers={"X-Auth-Token": TOKEN},
            )
            urllib.request.urlopen(put, timeout=10).close()
        yield server


@pytest.mark.parametrize("stream", list(STREAMS))
@pytest.mark.parametrize("name", _COMMAND_NAMES)
def test_a_closed_standard_stream_is_silent(
    tagged: FakeServer, tmp_path: Path, name: str, stream: str
) -> None:
    write_csv(tmp_path / "in.csv", _PAIRS)
    _old_journal(tmp_path / "old.jsonl", _PAIRS)
    command = _commands(tagged)[name]
    done = run_bulktag(
        command.args, tmp_path, command=command.command, preexec_fn=_closing(STREAMS[stream])
    )
    no_traceback(done)
    assert "Exception ignored" not in done.stderr, str(done)
    assert command.code == done.code, str(done)
    if command.records is not None:
        journal = tmp_path / "j.jsonl"
        assert command.records == len(read_journal(journal) if journal.exists() else []), str(done)


#: command → (its argv, the stream it writes its output to)
_EPIPE_COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "report": (("report", "old.jsonl", "--top", "300"), "stdout"),
    "report-json": (("report", "old.jsonl", "--format", "json"), "stdout"),
    "run-dry": (("run", "in.csv", "--dry-run", "--endpoint", "{fake}", "--log-format", "console"),
                "stderr"),
    "version": (("--version",), "stdout"),
    "help": (("run", "--help"), "stdout"),
    "usage-error": (("frobnicate",), "stderr"),
}  # fmt: skip


@pytest.mark.parametrize("command", list(_EPIPE_COMMANDS))
def test_a_reader_that_goes_away_is_no_error(
    fake: FakeServer, tmp_path: Path, command: str
) -> None:
    """`bulktag report … | head -1`: the rest of the output is dropped, the exit code stands."""
    pairs = make_pairs(300, 1, seed=78)
    write_csv(tmp_path / "in.csv", pairs)
    _old_journal(tmp_path / "old.jsonl", pairs)
    argv, stream = _EPIPE_COMMANDS[command]
    args = [a.replace("{fake}", fake.url) for a in argv]
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: every write is EPIPE
    with contextlib.closing(os.fdopen(writer, "wb")) as sink:
        done = subprocess.run(
            [sys.executable, "-m", "bulktag", *args],
            cwd=tmp_path,
            env=isolated_env(tmp_path),
            stdout=sink if stream == "stdout" else subprocess.PIPE,
            stderr=sink if stream == "stderr" else subprocess.PIPE,
            timeout=60,
            check=False,
        )
    text = (done.stderr or done.stdout or b"").decode()
    assert "Traceback" not in text
    assert "Exception ignored" not in text
    assert (2 if command == "usage-error" else 0) == done.returncode, text


# ── rows_left: what the next run still has to do, however this one stopped ───────────────────


def _stopped_by(kind: str, tmp_path: Path) -> tuple[Done, int]:
    """A 4,500-row run stopped by ``kind`` (more rows than one read-ahead: some are never
    read); returns it and the number of input pairs."""
    pairs = make_pairs(1500, 3, seed=90)
    write_csv(tmp_path / "in.csv", pairs)
    flags = {
        "max_duration": ("--latency", "0.02"),
        "signal": ("--latency", "0.02"),
        "breaker": ("--unknown-every", "1", "--latency", "0.01"),
        "outage": ("--outage", "0.5:inf"),
    }[kind]
    extra = {
        "max_duration": ("--max-duration", "2s"),
        "signal": (),
        "breaker": ("--max-consecutive-failures", "30"),
        "outage": ("--max-outage", "2s"),
    }[kind]
    with fake_glance(tmp_path / "server", *flags) as server:
        args = [*run_args(server, "100"), "--concurrency", "4", *extra]
        with start_bulktag(args, tmp_path) as running:
            if kind == "signal":
                running.wait_for(records_written(tmp_path / "journal.jsonl", 20))
                running.signal(signal.SIGTERM)
            done = running.finish()
    return done, len(pairs)


@pytest.mark.parametrize(
    ("kind", "code"),
    [("max_duration", 4), ("signal", 130), ("breaker", 3), ("outage", 75)],
)
def test_rows_left_counts_every_row_the_next_run_will_do(
    tmp_path: Path, kind: str, code: int
) -> None:
    done, total = _stopped_by(kind, tmp_path)
    no_traceback(done)
    assert code == done.code, str(done)
    settled = len(read_journal(tmp_path / "journal.jsonl"))
    assert 0 < total - settled, "the run should stop with rows left"
    assert total - settled == done.event("run_finished")["rows_left"], str(done)
