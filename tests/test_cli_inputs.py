"""Hostile and odd inputs through the real ``bulktag run``: each run ends with exit 0 (all ok) or
1 (some rows invalid), never a traceback, and the journal holds exactly the right records — one
per distinct row, every line valid UTF-8 JSON of bounded size; or, when the input as a whole is
not what bulktag reads (UTF-16, binary, an unknown header, one column), the run refuses it with
exit 2 and one line saying what to do, before anything is sent or written."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from clitools import (
    TIMEOUT,
    Done,
    FakeServer,
    Running,
    bulktag_argv,
    fake_glance,
    isolated_env,
    no_traceback,
    plain_http,
    run_bulktag,
)
from support import image_ids, make_pairs, read_journal, write_csv

MAX_RECORD_BYTES = 4096  # a journal line stays small whatever the input row was


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    with fake_glance(tmp_path_factory.mktemp("fake")) as server:
        yield server


def tag(fake: FakeServer, tmp_path: Path, source: str | Path, stdin: bytes | None = None) -> Done:
    args = [str(source)] if source != "" else []
    args += ["--endpoint", fake.url, "--results", "journal.jsonl", "--rate", "1000"]
    return run_bulktag([*args, "--log-format", "json"], tmp_path, stdin=stdin)


def refused(done: Done, *expected: str, started: bool = False) -> None:
    """Exit 2 with one line on stderr saying what is wrong (containing each of ``expected``).
    ``started``: a pipe's first row is read in the run, after its ``run_started`` event."""
    no_traceback(done)
    assert 2 == done.code, str(done)
    # In JSON log mode the one line is JSON too, the human line in its "message".
    errors = [event["message"] for event in done.events if event.get("level") == "error"]
    errors += [line for line in done.lines if not line.startswith("{")]
    assert 1 == len(errors), str(done)
    logged = [event["event"] for event in done.events if event.get("level") != "error"]
    assert ["run_started"] * started == logged, str(done)
    for text in expected:
        assert text in errors[0], str(done)


def checked_journal(tmp_path: Path) -> list[dict[str, Any]]:
    """The journal's records in input order, after checking every line is small UTF-8 JSON."""
    path = tmp_path / "journal.jsonl"
    for raw in path.read_bytes().splitlines():
        assert len(raw) < MAX_RECORD_BYTES, f"a {len(raw)}-byte journal line"
        raw.decode("utf-8")  # strict: bad input bytes must be escaped, not copied
    return sorted(read_journal(path), key=lambda record: int(record["line"]))


def test_binary_garbage_is_refused_up_front_and_nothing_is_sent(
    fake: FakeServer, tmp_path: Path
) -> None:
    garbage = random.Random(20261128).randbytes(64 * 1024) + b"\x00\x00,\x00\n\xff\xfe,\x00\n"
    assert b"\x00" in garbage
    (tmp_path / "garbage.csv").write_bytes(garbage)
    puts = fake.puts()

    done = tag(fake, tmp_path, "garbage.csv")

    refused(done, "garbage.csv: the input is not text")
    assert not (tmp_path / "journal.jsonl").exists()
    assert puts == fake.puts()


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 17 * 1024 * 1024], ids=["2MB", "17MB"])
def test_a_huge_line_is_one_invalid_row_and_the_next_row_still_goes(
    fake: FakeServer, tmp_path: Path, size: int
) -> None:
    """2 MB fits the CSV field limit (rejected as a too-long tag); 17 MB is above it (an
    unreadable row). Either way the valid row after it is tagged."""
    huge_image, valid_image = image_ids(2, seed=1)
    with (tmp_path / "huge.csv").open("w") as out:
        out.write(f"{huge_image},{'x' * size}\n")
        out.write(f"{valid_image},after-the-huge-one\n")

    done = tag(fake, tmp_path, "huge.csv")

    no_traceback(done)
    assert 1 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert ["invalid", "ok"] == [r["outcome"] for r in records], records
    assert (valid_image, "after-the-huge-one", 2) == (
        records[1]["image_id"],
        records[1]["tag"],
        records[1]["line"],
    )
    assert 1 == records[0]["line"]
    assert ["after-the-huge-one"] == fake.image(valid_image)["tags"]


@pytest.mark.parametrize(
    "content",
    [b"", b"image_id,tag\n", b"\xef\xbb\xbf\r\n\r\n# only a comment\r\n  \r\n"],
    ids=["empty", "header-only", "bom-blank-lines-and-comments"],
)
def test_an_input_without_rows_exits_0_with_an_empty_journal(
    fake: FakeServer, tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "empty.csv").write_bytes(content)

    done = tag(fake, tmp_path, "empty.csv")

    no_traceback(done)
    assert 0 == done.code, str(done)
    assert b"" == (tmp_path / "journal.jsonl").read_bytes()
    finished = done.event("run_finished")
    assert (0, 0, 0) == (finished["read"], finished["ok"], finished["requests"])


@pytest.mark.parametrize("source", ["-", ""], ids=["dash", "default"])
def test_stdin_input(fake: FakeServer, tmp_path: Path, source: str) -> None:
    pairs = make_pairs(5, 2, seed=2 if source else 3)
    data = write_csv(tmp_path / "in.csv", pairs).read_bytes()

    done = tag(fake, tmp_path, source, stdin=data)

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert sorted(pairs) == sorted(
        (r["image_id"], r["tag"]) for r in records if r["outcome"] == "ok"
    )
    assert len(pairs) == len(records)
    assert len(pairs) == done.event("run_finished")["read"]


def test_crlf_bom_header_extra_columns_and_quotes(fake: FakeServer, tmp_path: Path) -> None:
    """A spreadsheet export: BOM, CRLF, a header naming extra columns in another order, quoted
    fields (one with a comma) — the pairs arrive intact."""
    first, second, third = image_ids(3, seed=4)
    text = (
        "owner,tag,image_id\r\n"
        f'"Smith, J.",gold,{first}\r\n'
        f'alice,"silver",{second.upper()}\r\n'
        "\r\n"
        f'"Jones",bronze,"{third}"\r\n'
    )
    (tmp_path / "export.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())

    done = tag(fake, tmp_path, "export.csv")

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert [(first, "gold", 2), (second, "silver", 3), (third, "bronze", 5)] == [
        (r["image_id"], r["tag"], r["line"]) for r in records
    ]
    assert {"ok"} == {r["outcome"] for r in records}
    assert ["gold"] == fake.image(first)["tags"]
    assert ["silver"] == fake.image(second)["tags"]
    assert ["bronze"] == fake.image(third)["tags"]


def test_duplicate_pairs_are_sent_and_recorded_once(fake: FakeServer, tmp_path: Path) -> None:
    pairs = make_pairs(6, 3, seed=5)
    repeats = [pairs[0], pairs[0], pairs[7], (pairs[3][0].upper(), pairs[3][1]), pairs[17]]
    write_csv(tmp_path / "dups.csv", [*pairs, *repeats, *pairs[:4]])
    puts = fake.puts()

    done = tag(fake, tmp_path, "dups.csv")

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert sorted(pairs) == sorted((r["image_id"], r["tag"]) for r in records)
    assert len(pairs) == fake.puts() - puts
    finished = done.event("run_finished")
    assert (len(repeats) + 4, len(pairs)) == (finished["skipped_duplicate"], finished["ok"])
    for image in image_ids(6, seed=5):
        assert ["t0", "t1", "t2"] == sorted(fake.image(image)["tags"])


def test_invalid_rows_are_not_recorded_again_on_rerun(fake: FakeServer, tmp_path: Path) -> None:
    (good,) = image_ids(1, seed=6)
    (tmp_path / "mixed.csv").write_text(
        f"{good},fine\nnot-a-uuid,fine\n{good},bad tag\n{good}\nfine\n"
    )

    first = tag(fake, tmp_path, "mixed.csv")
    assert 1 == first.code, str(first)
    records = checked_journal(tmp_path)
    assert ["ok", "invalid", "invalid", "invalid", "invalid"] == [r["outcome"] for r in records]

    second = tag(fake, tmp_path, "mixed.csv")
    no_traceback(second)
    assert records == checked_journal(tmp_path)
    finished = second.event("run_finished")
    assert (1, 4) == (finished["skipped_done"], finished["skipped_still_bad"])
    assert 1 == second.code  # the invalid rows are still not tagged: not a clean night


# -- inputs that can be read only once: a FIFO, <(...), /dev/stdin, a pipe ---------------------


def run_fed(args: list[str], cwd: Path, data: bytes, argv: list[str] | None = None) -> Done:
    """``bulktag run <args>`` (or ``argv``) with ``data`` written into its stdin pipe."""
    argv = argv or bulktag_argv(args)
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=isolated_env(cwd),
        input=data,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    return Done(argv, done.returncode, done.stdout.decode(), done.stderr.decode())


def through_fifo(fake: FakeServer, tmp_path: Path, data: bytes) -> Done:
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        with fifo.open("wb") as pipe:  # waits for bulktag to open it
            pipe.write(data)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    done = run_fed([str(fifo), *common(fake)], tmp_path, b"")
    thread.join(timeout=TIMEOUT)
    return done


def through_process_substitution(fake: FakeServer, tmp_path: Path, data: bytes) -> Done:
    (tmp_path / "rows.csv").write_bytes(data)
    script = 'exec "$0" -m bulktag run <(cat rows.csv) "$@"'
    argv = ["bash", "-c", script, sys.executable, *common(fake)]
    return run_fed([], tmp_path, b"", argv)


def through_dev_stdin(fake: FakeServer, tmp_path: Path, data: bytes) -> Done:
    return run_fed(["/dev/stdin", *common(fake)], tmp_path, data)


def through_stdin(fake: FakeServer, tmp_path: Path, data: bytes) -> Done:
    return run_fed(["-", *common(fake)], tmp_path, data)


def common(fake: FakeServer) -> list[str]:
    return ["--endpoint", fake.url, "--results", "journal.jsonl", "--log-format", "json"]


@pytest.mark.parametrize(
    "feed",
    [through_fifo, through_process_substitution, through_dev_stdin, through_stdin],
    ids=["fifo", "process-substitution", "dev-stdin", "stdin"],
)
def test_an_input_that_can_be_read_once_is_read_once_and_every_row_goes(
    fake: FakeServer, tmp_path: Path, feed: Callable[[FakeServer, Path, bytes], Done]
) -> None:
    """A FIFO or <(...) as INPUT used to send nothing and exit 0: the progress line count read
    it to its end before the run."""
    pairs = make_pairs(20, 2, seed=7)
    data = write_csv(tmp_path / "source.csv", pairs).read_bytes()

    done = feed(fake, tmp_path, data)

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert sorted(pairs) == sorted((r["image_id"], r["tag"]) for r in records)
    assert {"ok"} == {r["outcome"] for r in records}
    assert TERMINAL_NOTICE not in done.stderr  # piped in: nothing to remind anyone of


TERMINAL_NOTICE = "reading_rows_from_the_terminal"


def test_rows_typed_at_a_terminal_are_read_after_a_notice_saying_so(
    fake: FakeServer, tmp_path: Path
) -> None:
    """No input named and stdin a terminal, most often a forgotten argument: the run says it
    reads the terminal (it used to wait in silence), then takes the typed rows to Ctrl-D."""
    pairs = make_pairs(3, 1, seed=3)
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        bulktag_argv(common(fake)),
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    try:
        typed = "".join(f"{image},{tag}\n" for image, tag in pairs)
        os.write(controller, typed.encode() + b"\x04")  # Ctrl-D at a line's start: the end
        _out, err = process.communicate(timeout=TIMEOUT)
    finally:
        os.close(controller)
    assert 0 == process.returncode, err
    assert TERMINAL_NOTICE in err.decode()
    records = checked_journal(tmp_path)
    assert sorted(pairs) == sorted((r["image_id"], r["tag"]) for r in records)


# -- a producer that keeps its pipe open ------------------------------------------------------

PATIENCE = 20.0  # seconds to wait for what must happen at once; only a hang reaches it


@contextlib.contextmanager
def fed_by_a_pipe(args: list[str], cwd: Path) -> Iterator[tuple[Running, IO[bytes]]]:
    """``bulktag run - <args>`` with our end of its stdin pipe, kept open until the block
    ends (a producer such as ``tail -f``)."""
    argv = bulktag_argv(["-", *args])
    out, err = cwd / "bulktag.out", cwd / "bulktag.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            argv, cwd=cwd, env=isolated_env(cwd), stdin=subprocess.PIPE, stdout=stdout,
            stderr=stderr,
        )  # fmt: skip
    running = Running(process, argv, out, err)
    assert process.stdin is not None
    try:
        yield running, process.stdin
    finally:
        running.kill()
        process.stdin.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("stop", ["sigterm", "max-duration"])
def test_rows_on_a_pipe_left_open_are_sent_and_a_stop_does_not_wait_for_the_producer(
    fake: FakeServer, tmp_path: Path, stop: str
) -> None:
    """One row, then seven in one write, into a pipe the producer keeps open: each goes at
    once (they used to wait for the next row or EOF), and the stop ends the run while the
    pipe is still open (it used to wait for the producer: forever with tail -f)."""
    pairs = make_pairs(8, 1, seed=8)
    rows = [f"{image_id},{tag}\n".encode() for image_id, tag in pairs]
    args = [*common(fake)[:-2], "--log-format", "json"]
    if stop == "max-duration":
        args += ["--max-duration", "4s"]
    before = fake.puts()
    with fed_by_a_pipe(args, tmp_path) as (running, pipe):
        running.wait_for(lambda err: "run_started" in err)
        pipe.write(rows[0])
        pipe.flush()
        wait_until(lambda: fake.puts() - before == 1, "the first row was sent")
        pipe.write(b"".join(rows[1:]))
        pipe.flush()
        wait_until(lambda: fake.puts() - before == 8, "the seven rows were sent")
        if stop == "sigterm":
            running.signal(signal.SIGTERM)
        done = running.finish(timeout=PATIENCE)  # the pipe is still open

    no_traceback(done)
    assert (130 if stop == "sigterm" else 4) == done.code, str(done)
    records = checked_journal(tmp_path)
    assert sorted(pairs) == sorted((r["image_id"], r["tag"]) for r in records)
    assert {"ok"} == {r["outcome"] for r in records}


def test_a_second_sigterm_stops_at_once_with_130(tmp_path: Path) -> None:
    """README: 130 for SIGTERM, and a second signal stops at once — even with a request in
    flight inside the grace period and the producer's pipe still open (it used to wait for
    the producer, and a signal then killed it with 143)."""
    release = threading.Event()

    def answer(method: str, path: str) -> int:
        if method == "PUT":
            release.wait(PATIENCE)  # in flight until the test ends
        return 204 if method == "PUT" else 200

    (image_id,) = image_ids(1, seed=9)
    args = ["--endpoint", "", "--results", "journal.jsonl", "--grace-period", "60"]
    args += ["--timeout", "60", "--log-format", "json"]
    try:
        with plain_http(answer, lists_images=True) as server:
            args[1] = server.url
            with fed_by_a_pipe(args, tmp_path) as (running, pipe):
                running.wait_for(lambda err: "run_started" in err)
                pipe.write(f"{image_id},gold\n".encode())
                pipe.flush()
                wait_until(lambda: any(m == "PUT" for m, _ in server.seen), "a PUT in flight")
                running.signal(signal.SIGTERM)
                running.wait_for(lambda err: '"stopping"' in err)
                running.signal(signal.SIGTERM)
                done = running.finish(timeout=PATIENCE)
    finally:
        release.set()

    no_traceback(done)
    assert 130 == done.code, str(done)
    assert "stopping_now" in done.stderr


def test_a_stray_quote_costs_its_own_line_only(fake: FakeServer, tmp_path: Path) -> None:
    """``id,"oops`` at row 4 of 1,501 used to swallow the 1,497 rows after it (one ~70 KB
    journal record): now it is one invalid row naming its line, and every other row goes."""
    pairs = make_pairs(500, 3, seed=10)
    (stray,) = image_ids(1, seed=11)
    lines = [f"{image_id},{tag}\n" for image_id, tag in pairs]
    lines.insert(3, f'{stray},"oops\n')
    (tmp_path / "stray.csv").write_text("".join(lines))

    done = tag(fake, tmp_path, "stray.csv")

    no_traceback(done)
    assert 1 == done.code, str(done)
    records = checked_journal(tmp_path)
    invalid = [r for r in records if r["outcome"] == "invalid"]
    assert [4] == [r["line"] for r in invalid]
    assert "quoted field is not closed" in invalid[0]["error"]
    assert sorted(pairs) == sorted(
        (r["image_id"], r["tag"]) for r in records if r["outcome"] == "ok"
    )


# -- the input as a whole: refused up front, with what to do ----------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(
            "\ufeffimage_id,tag\r\n" + "".join(f"{i},gold\r\n" for i in image_ids(3, seed=12)),
            ["UTF-16", "iconv"],
            id="utf16",
        ),
        pytest.param(
            "image id,tag\n" + "".join(f"{i},gold\n" for i in image_ids(3, seed=12)),
            ["'image id'", "image_id"],
            id="image-space-id-header",
        ),
        pytest.param(
            "".join(f"{i}\n" for i in image_ids(3, seed=12)), ["one column", "--tag"], id="ids"
        ),
        pytest.param(
            '"ID","Name"\n' + "".join(f'"{i}","web-{i[:4]}"\n' for i in image_ids(3, seed=12)),
            ["names no tag column", "--tag"],
            id="openstack-image-list-csv",
        ),
    ],
)
@pytest.mark.parametrize("via", ["file", "stdin"])
def test_a_whole_input_problem_is_refused_with_exit_2_before_anything(
    fake: FakeServer, tmp_path: Path, content: str, says: list[str], via: str
) -> None:
    """UTF-16, a header bulktag does not know, one column, ``openstack image list -f csv``:
    one line that says what to do, exit 2, nothing sent, no journal — the image name never
    becomes a tag."""
    data = content.encode("utf-16") if "UTF-16" in says else content.encode()
    (tmp_path / "in.csv").write_bytes(data)
    puts = fake.puts()

    done = tag(fake, tmp_path, "in.csv") if via == "file" else tag(fake, tmp_path, "", data)

    refused(done, "in.csv:" if via == "file" else "stdin:", *says, started=via == "stdin")
    assert not (tmp_path / "journal.jsonl").exists()
    assert puts == fake.puts()
    for image_id in image_ids(3, seed=12):
        assert [] == fake.image(image_id)["tags"]


def test_tag_gives_a_list_of_ids_on_stdin_one_tag(fake: FakeServer, tmp_path: Path) -> None:
    """``openstack image list -f value -c ID | bulktag run --tag nightly-2026-12-04``"""
    ids = image_ids(12, seed=13)
    listing = "".join(f"{i}\n" for i in ids).encode()

    done = run_fed(["--tag", "nightly-2026-12-04", *common(fake)], tmp_path, listing)

    no_traceback(done)
    assert 0 == done.code, str(done)
    records = checked_journal(tmp_path)
    assert sorted((i, "nightly-2026-12-04") for i in ids) == sorted(
        (r["image_id"], r["tag"]) for r in records
    )
    for image_id in ids:
        assert ["nightly-2026-12-04"] == fake.image(image_id)["tags"]


def test_tag_with_ims_gives_each_id_a_key_and_value(tmp_path: Path) -> None:
    project = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    ids = image_ids(4, seed=14)
    listing = '"ID"\n' + "".join(f'"{i}"\n' for i in ids)  # openstack image list -f csv -c ID
    (tmp_path / "ids.csv").write_text(listing)
    with fake_glance(tmp_path / "ims", "--api", "ims", "--project-id", project) as server:
        args = ["ids.csv", "--api", "ims", "--project-id", project, "--tag", "backup=nightly"]
        done = run_bulktag([*args, *common(server)], tmp_path)
        stored = {i: server.ims_tags(project, i) for i in ids}

    no_traceback(done)
    assert 0 == done.code, str(done)
    assert {i: {"backup": "nightly"} for i in ids} == stored


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        pytest.param(["--tag", "night ly"], "--tag 'night ly': tag contains U+0020", id="space"),
        pytest.param(["--tag", "k=v"], "tag contains '='", id="key-value-without-ims"),
    ],
)
def test_a_bad_tag_flag_is_refused_with_exit_2(
    fake: FakeServer, tmp_path: Path, flags: list[str], says: str
) -> None:
    (tmp_path / "ids.csv").write_text("".join(f"{i}\n" for i in image_ids(2, seed=15)))
    done = run_bulktag(["ids.csv", *flags, *common(fake)], tmp_path)
    refused(done, says)
