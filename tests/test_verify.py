"""``bulktag verify`` against the fake Glance over real HTTP: one GET per image, lost tags and
deleted images found, the rate ceiling kept, throttling retried, bad credentials refused early.

The command runs in a worker thread (it starts its own event loop, as from the shell) while the
fake serves from the test's loop."""

from __future__ import annotations

import argparse
import io
import json
import re
import socket
from collections import Counter
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from clitools import journal_record, write_journal
from support import image

from bulktag.auth import StaticToken
from bulktag.fake.glance import FakeGlance, FakeGlanceConfig, serve
from bulktag.model import Answer
from bulktag.policy import RetryPolicy
from bulktag.transport import ImageRead
from bulktag.verify import (
    Expectation,
    Problem,
    Verifier,
    VerifySettings,
    add_verify_arguments,
    command_verify,
    judge,
)

TOKEN = "verify-secret-token"


def ok(n: int, tag: str, **fields: Any) -> dict[str, Any]:
    """A journal record saying ``tag`` was put on image ``n`` (no request id: any a problem
    carries is the GET's)."""
    return journal_record(n, tag, **({"request_id": None} | fields))


def fake(**config: Any) -> FakeGlance:
    return FakeGlance(FakeGlanceConfig(token=TOKEN, **config))


def image_gets(server: FakeGlance) -> list[str]:
    return [r.image_id for r in server.requests if r.method == "GET" and r.image_id]


async def verify(
    journal: Path | list[Path],
    *flags: str,
    endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """Run ``bulktag verify`` as the CLI would; return its exit code and stderr."""
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    journals = journal if isinstance(journal, list) else [journal]
    argv = [*map(str, journals), *flags]
    if endpoint is not None:
        argv += ["--endpoint", endpoint, "--token", TOKEN]
    stderr = io.StringIO()
    call = partial(command_verify, parser.parse_args(argv), env or {}, stderr)
    code = await anyio.to_thread.run_sync(call)
    return code, stderr.getvalue()


def problems_in(path: Path) -> list[dict[str, Any]]:
    return sorted(
        (json.loads(line) for line in path.read_text().splitlines()), key=lambda p: p["image_id"]
    )


@pytest.mark.asyncio
async def test_every_image_is_read_once_and_all_tags_found_exits_0(tmp_path: Path) -> None:
    records = [ok(n, tag) for n in range(6) for tag in ("web", "db", "nightly")]
    journal = write_journal(tmp_path / "j.jsonl", records)
    server = fake(latency=0.01)
    for n in range(6):
        server.tags[image(n)] = ["nightly", "web", "db", "unrelated"]
    async with serve(server) as url:
        code, err = await verify(journal, "--rate", "1000", "--concurrency", "3", endpoint=url)
    assert 0 == code
    assert {image(n): 1 for n in range(6)} == dict(Counter(image_gets(server)))
    assert 1 == sum(r.image_id is None for r in server.requests)  # the preflight
    assert server.max_in_flight <= 3
    assert "6 images (18 tags) read back with 6 requests" in err
    assert "6 complete, 0 missing 0 tags, 0 gone, 0 unverified" in err
    # Said first: what it will read, and the least time that takes at --rate.
    assert err.startswith(
        "bulktag verify: reading back 6 images (18 tags) at up to 1,000 GETs/s (--rate): "
        "0:00:00 at least\n"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.asyncio
@pytest.mark.parametrize("terminal", [False, True], ids=["cron", "terminal"])
async def test_a_long_verify_shows_how_far_it_is(tmp_path: Path, terminal: bool) -> None:
    """Never silent for long: in cron a progress line every --progress-interval; on a
    terminal a status line redrawn in place, which problem lines and the summary clear."""
    journal = write_journal(tmp_path / "j.jsonl", [ok(n, "web") for n in range(24)])
    server = fake(latency=0.05)
    for n in range(23):  # the last image lost its tag
        server.tags[image(n)] = ["web"]
    stderr = _Terminal() if terminal else io.StringIO()
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    async with serve(server) as url:
        flags = ["--rate", "10", "--progress-interval", "0.2", "--endpoint", url, "--token", TOKEN]
        args = parser.parse_args([str(journal), *flags])
        call = partial(command_verify, args, {}, stderr)
        assert 1 == await anyio.to_thread.run_sync(call)
    err = stderr.getvalue()
    if terminal:
        shown = re.findall(r"\r\x1b\[K(\d+)/24 images read back", err)
        assert f"\r\x1b[K  missing      {image(23)}" in err  # over the status line
        assert "\r\x1b[Kbulktag verify: 24 images (24 tags) read back" in err  # wiped first
    else:
        shown = re.findall(r"^bulktag verify: (\d+)/24 images read back · \d+ problems · "
                           r"[\d.]+ GETs/s", err, re.MULTILINE)  # fmt: skip
        assert "\r" not in err
    counts = [int(count) for count in shown]
    assert len(counts) >= 2, err
    assert counts == sorted(counts)
    assert counts[-1] <= 24


@pytest.mark.asyncio
async def test_a_lost_tag_is_missing_and_a_deleted_image_is_gone(tmp_path: Path) -> None:
    records = [ok(0, "web"), ok(0, "db"), ok(1, "web"), ok(2, "web"), ok(2, "db")]
    journal = write_journal(tmp_path / "j.jsonl", records)
    server = fake(known_images={image(0), image(2)})  # image 1 was deleted since the run
    server.tags[image(0)] = ["web"]  # "db" lost to a concurrent update
    server.tags[image(2)] = ["db", "web"]
    output = tmp_path / "problems.jsonl"
    async with serve(server) as url:
        code, err = await verify(journal, "--output", str(output), endpoint=url)
    assert 1 == code
    found = problems_in(output)
    assert [(image(0), "missing", ["db"], 200), (image(1), "gone", ["web"], 404)] == [
        (p["image_id"], p["problem"], p["tags"], p["status"]) for p in found
    ]
    assert all(p["request_id"].startswith("req-") for p in found)
    assert "1 complete, 1 missing 1 tags, 1 gone, 0 unverified" in err


@pytest.mark.asyncio
async def test_a_removed_tag_still_on_the_image_is_reported_not_removed(tmp_path: Path) -> None:
    records = [ok(0, "web"), ok(0, "old"), ok(0, "old", op="remove"), ok(0, "gone", op="remove")]
    journal = write_journal(tmp_path / "j.jsonl", records)
    server = fake()
    server.tags[image(0)] = ["web", "old"]
    output = tmp_path / "problems.jsonl"
    async with serve(server) as url:
        code, _ = await verify(journal, "--output", str(output), endpoint=url)
    assert 1 == code
    assert [(image(0), "not_removed", ["old"])] == [
        (p["image_id"], p["problem"], p["tags"]) for p in problems_in(output)
    ]


@pytest.mark.asyncio
async def test_reads_never_exceed_the_rate_ceiling(tmp_path: Path) -> None:
    rate, images = 40, 50
    journal = write_journal(tmp_path / "j.jsonl", [ok(n, "web") for n in range(images)])
    server = fake()
    async with serve(server) as url:
        code, _ = await verify(journal, "--rate", str(rate), "--concurrency", "16", endpoint=url)
    arrivals = sorted(r.at for r in server.requests if r.image_id)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert 1 == code  # the fake creates unseen images with no tags: all "missing"
    assert images == len(arrivals)
    assert busiest <= rate + 1  # + the burst of 1
    assert arrivals[-1] - arrivals[0] >= (images - 2) / rate


@pytest.mark.asyncio
async def test_throttled_reads_are_retried_until_the_image_answers(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "j.jsonl", [ok(n, "web") for n in range(10)])
    server = fake(fail_503=0.4, retry_after="0", seed=7)
    for n in range(10):
        server.tags[image(n)] = ["web"]
    async with serve(server) as url:
        code, _ = await verify(journal, "--rate", "200", "--max-attempts", "40", endpoint=url)
    answered = [(r.image_id, r.status) for r in server.requests if r.image_id]
    assert 0 == code
    assert any(status == 503 for _, status in answered)
    assert {image(n): 1 for n in range(10)} == dict(
        Counter(image_id for image_id, status in answered if status == 200)
    )


@pytest.mark.asyncio
async def test_a_refused_token_exits_2_before_any_image_is_read(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "j.jsonl", [ok(0, "web")])
    server = FakeGlance(FakeGlanceConfig(token="the-right-token"))
    async with serve(server) as url:
        code, err = await verify(journal, endpoint=url)
    assert 2 == code
    # As for ``run``: a 401 to the first GET is answered by renewing the token, once.
    refused = "the image service refused the token (401); a static token cannot be renewed"
    assert [f"bulktag verify: error: credentials refused: {refused}"] == err.splitlines()
    assert [] == image_gets(server)
    assert TOKEN not in err


@pytest.mark.asyncio
async def test_a_token_refused_part_way_stops_with_exit_3(tmp_path: Path) -> None:
    calls = []

    def first_three(token: str) -> bool:
        calls.append(token)
        return len(calls) <= 3  # the preflight and two images

    journal = write_journal(tmp_path / "j.jsonl", [ok(n, "web") for n in range(6)])
    server = FakeGlance(FakeGlanceConfig(token_validator=first_three))
    async with serve(server) as url:
        code, err = await verify(journal, "--concurrency", "1", endpoint=url)
    assert 3 == code
    assert 3 == len(image_gets(server))  # the refused one, and no more
    assert "stopped: the image service refused the token (401)" in err


@pytest.mark.asyncio
async def test_an_unreachable_endpoint_exits_75_with_one_line(tmp_path: Path) -> None:
    """As for ``run``: not the command's fault, so a scheduler may try again later."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    journal = write_journal(tmp_path / "j.jsonl", [ok(0, "web")])
    code, err = await verify(journal, endpoint=f"http://127.0.0.1:{port}")
    assert 75 == code
    assert 1 == len(err.splitlines())
    reason = f"cannot reach the image service at http://127.0.0.1:{port}: connect: "
    assert err.startswith(f"bulktag verify: error: {reason}")
    assert err.rstrip().endswith("; try again later")


@pytest.mark.asyncio
async def test_endpoint_and_token_come_from_the_openrc_variables(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "j.jsonl", [ok(0, "web")])
    server = fake()
    server.tags[image(0)] = ["web"]
    async with serve(server) as url:
        code, _ = await verify(journal, env={"OS_IMAGE_URL": url, "OS_AUTH_TOKEN": TOKEN})
    assert 0 == code


@pytest.mark.asyncio
async def test_without_output_the_first_problems_go_to_stderr(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "j.jsonl", [ok(n, "web") for n in range(25)])
    server = fake()  # every image exists with no tags: 25 missing
    async with serve(server) as url:
        code, err = await verify(journal, "--rate", "1000", endpoint=url)
    lines = err.splitlines()
    assert 1 == code
    assert 20 == sum(line.startswith("  missing ") for line in lines)
    assert "  … and 5 more problems (--output PATH lists them all)" in lines
    assert TOKEN not in err


@pytest.mark.asyncio
async def test_unreadable_journal_lines_are_ignored_and_mentioned(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "j.jsonl", [ok(0, "web")], extra=b"junk\n{torn")
    server = fake()
    server.tags[image(0)] = ["web"]
    async with serve(server) as url:
        code, err = await verify(journal, endpoint=url)
    assert 0 == code
    assert "  the journal had 2 unreadable or torn lines (ignored)" in err.splitlines()


@pytest.mark.asyncio
async def test_the_journals_of_shards_are_verified_together(tmp_path: Path) -> None:
    """``bulktag verify s0.jsonl s1.jsonl …`` as ``report`` takes them: one read-back of every
    shard's images, one summary; a pair in two journals as the one named last says."""
    shard0 = write_journal(tmp_path / "s0.jsonl", [ok(0, "web"), ok(1, "web"), ok(2, "db")])
    shard1 = write_journal(
        tmp_path / "s1.jsonl",
        [ok(3, "web"), ok(4, "web"), ok(2, "db", op="remove")],  # named last: db removed
        extra=b"junk\n",
    )
    server = fake()
    for n in (0, 1, 3):
        server.tags[image(n)] = ["web"]
    server.tags[image(2)] = []  # db removed, as s1 (named last) says
    server.tags[image(4)] = []  # web lost
    async with serve(server) as url:
        code, err = await verify([shard0, shard1], "--output", str(tmp_path / "p.jsonl"),
                                 endpoint=url)  # fmt: skip
    assert 1 == code
    assert {image(n): 1 for n in range(5)} == dict(Counter(image_gets(server)))
    assert "5 images (5 tags) read back with 5 requests" in err
    assert "4 complete, 1 missing 1 tags, 0 gone, 0 unverified" in err
    assert [(image(4), "missing", ["web"])] == [
        (p["image_id"], p["problem"], p["tags"]) for p in problems_in(tmp_path / "p.jsonl")
    ]
    assert f"  {shard1} had 1 unreadable or torn lines (ignored)" in err.splitlines()


def test_a_journal_that_is_missing_among_several_exits_2_before_any_is_read(
    tmp_path: Path,
) -> None:
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    here = write_journal(tmp_path / "s0.jsonl", [ok(0, "web")])
    missing = tmp_path / "s1.jsonl"
    args = parser.parse_args([str(here), str(missing), "--endpoint", "http://h", "--token", "t"])
    stderr = io.StringIO()
    assert 2 == command_verify(args, {}, stderr)
    reason = f"cannot read journal {missing}: No such file or directory"
    assert [f"bulktag verify: error: {reason}"] == stderr.getvalue().splitlines()


NO_CREDENTIALS = "no credentials found; looked at flags"  # the same search as `bulktag run`


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        pytest.param({}, [], NO_CREDENTIALS, id="no-credentials"),
        pytest.param(
            {"OS_AUTH_TOKEN": "t"},
            ["--endpoint", "ftp://x"],
            "--endpoint: not an http(s) URL: 'ftp://x'",
            id="bad-endpoint",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, env: dict[str, str], flags: list[str], message: str
) -> None:
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    journal = write_journal(tmp_path / "j.jsonl", [ok(0, "web")])
    stderr = io.StringIO()
    code = command_verify(parser.parse_args([str(journal), *flags]), env, stderr)
    [line] = stderr.getvalue().splitlines()
    assert 2 == code
    assert line.startswith(f"bulktag verify: error: {message}")


def test_a_missing_journal_exits_2(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    missing = tmp_path / "nope.jsonl"
    args = parser.parse_args([str(missing), "--endpoint", "http://h", "--token", "t"])
    stderr = io.StringIO()
    assert 2 == command_verify(args, {}, stderr)
    reason = f"cannot read journal {missing}: No such file or directory"
    assert [f"bulktag verify: error: {reason}"] == stderr.getvalue().splitlines()


def test_a_zero_rate_is_a_usage_error() -> None:
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["j.jsonl", "--rate", "0"])
    assert 2 == exited.value.code


# ── the pure parts ──────────────────────────────────────────────────────────────────────────

WANT = Expectation(present=frozenset({"a", "b"}), absent=frozenset({"x"}))


def tags_read(*tags: str) -> ImageRead:
    return ImageRead(Answer(200), frozenset(tags))


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        pytest.param(tags_read("a", "b", "c"), [], id="complete"),
        pytest.param(tags_read("a"), [("missing", ("b",))], id="missing"),
        pytest.param(tags_read("a", "b", "x"), [("not_removed", ("x",))], id="not-removed"),
        pytest.param(tags_read("x"), [("missing", ("a", "b")), ("not_removed", ("x",))], id="both"),
        pytest.param(ImageRead(Answer(404)), [("gone", ("a", "b"))], id="404"),
        pytest.param(ImageRead(Answer(403)), [("unverified", ("a", "b", "x"))], id="403"),
        pytest.param(
            ImageRead(Answer(None, error="timeout after 30 s")),
            [("unverified", ("a", "b", "x"))],
            id="no-answer",
        ),
    ],
)
def test_judge_compares_the_tags_read_with_what_the_journal_says(
    read: ImageRead, expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    assert expected == [(p.kind, p.tags) for p in judge("img", WANT, read)]


def test_an_image_with_only_removed_tags_that_is_gone_is_no_problem() -> None:
    only_removed = Expectation(present=frozenset(), absent=frozenset({"x"}))
    assert [] == judge("img", only_removed, ImageRead(Answer(404)))


class ScriptedReader:
    """Answers each image's GETs from a script of statuses (then 200 with the tag "t")."""

    def __init__(self, script: list[int | None]) -> None:
        self.script = list(script)
        self.calls = 0

    async def get_image(self, image_id: str, token: str) -> ImageRead:
        self.calls += 1
        if self.script:
            status = self.script.pop(0)
            return ImageRead(Answer(status, error=None if status else "connect: refused"))
        return ImageRead(Answer(200), frozenset({"t"}))


async def _no_sleep(_: float) -> None:
    return None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("script", "calls", "problems"),
    [
        pytest.param([429, 503, 502, 504, None], 6, [], id="transient-retried"),
        pytest.param([404], 1, ["gone"], id="404-not-retried"),
        pytest.param([403], 1, ["unverified"], id="403-not-retried"),
        pytest.param([503] * 9, 8, ["unverified"], id="gave-up-after-max-attempts"),
    ],
)
async def test_transient_answers_are_retried_and_permanent_ones_are_not(
    script: list[int | None], calls: int, problems: list[str]
) -> None:
    reader = ScriptedReader(script)
    found: list[Problem] = []
    settings = VerifySettings(rate=1000, retry=RetryPolicy(max_attempts=8))
    verifier = Verifier(reader, StaticToken("t"), settings, found.append, sleep=_no_sleep)
    tally = await verifier.run({"img": {"t": True}})
    assert (calls, calls) == (reader.calls, tally.requests)
    assert problems == [p.kind for p in found]
