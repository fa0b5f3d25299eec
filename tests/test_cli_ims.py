"""``bulktag run --api ims`` as an operator meets it: key/value input, the project id from the
flag or the token's scope, a clear exit 2 without one, a dry run by IMS's rules, and kill -9
mid-run then a rerun that finishes with one record per row."""

from __future__ import annotations

import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import anyio.to_thread
from support import image_ids, read_journal

from bulktag.fake.keystone import serve_keystone
from tests.clitools import (
    fake_glance,
    isolated_env,
    no_traceback,
    one_error_line,
    operator_credentials,
    operator_keystone,
    run_bulktag,
    start_bulktag,
)

PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
Rows = list[tuple[str, str, str]]


def kv_rows(images: int, keys: int, seed: int = 0) -> Rows:
    return [(i, f"k{n}", f"v{n}") for i in image_ids(images, seed) for n in range(keys)]


def write_kv(path: Path, rows: Rows) -> Path:
    path.write_text("image_id,key,value\n" + "".join(f"{i},{k},{v}\n" for i, k, v in rows))
    return path


def ims_args(url: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        str(tmp_path / "in.csv"),
        "--api",
        "ims",
        "--endpoint",
        url,
        "--results",
        str(tmp_path / "journal.jsonl"),
        "--log-format",
        "json",
        *extra,
    ]


def test_an_ims_run_sets_every_key_value_and_journals_them(tmp_path: Path) -> None:
    rows = kv_rows(images=6, keys=3)
    write_kv(tmp_path / "in.csv", rows)
    with fake_glance(tmp_path, "--api", "ims", "--project-id", PROJECT) as server:
        done = run_bulktag(ims_args(server.url, tmp_path, "--project-id", PROJECT), tmp_path)
        stored = {i: server.ims_tags(PROJECT, i) for i in image_ids(6)}
    no_traceback(done)
    assert 0 == done.code, done
    assert "ims" == done.event("run_started")["api"]
    assert {i: {"k0": "v0", "k1": "v1", "k2": "v2"} for i in image_ids(6)} == stored
    records = read_journal(tmp_path / "journal.jsonl")
    assert {("ok", "ims")} == {(r["outcome"], r["api"]) for r in records}
    assert sorted(rows) == sorted((r["image_id"], r["tag"], r["value"]) for r in records)
    assert 6 == done.event("run_finished")["requests"]  # one request per image


def test_a_bare_token_with_no_project_id_stops_before_sending_with_exit_2(
    tmp_path: Path,
) -> None:
    write_kv(tmp_path / "in.csv", kv_rows(images=1, keys=1))
    with fake_glance(tmp_path, "--api", "ims") as server:
        done = run_bulktag(ims_args(server.url, tmp_path), tmp_path)
    no_traceback(done)
    assert 2 == done.code, done
    assert "--api ims needs a project id" in done.stderr
    assert "--project-id" in done.stderr
    assert not (tmp_path / "journal.jsonl").exists()


def test_os_project_id_names_the_project_of_a_bare_token(tmp_path: Path) -> None:
    write_kv(tmp_path / "in.csv", kv_rows(images=2, keys=2))
    env = isolated_env(tmp_path, OS_PROJECT_ID=PROJECT)
    with fake_glance(tmp_path, "--api", "ims", "--project-id", PROJECT) as server:
        done = run_bulktag(ims_args(server.url, tmp_path), tmp_path, env=env)
    assert 0 == done.code, done


def test_api_ims_against_a_server_without_ims_exits_2_naming_the_call(tmp_path: Path) -> None:
    write_kv(tmp_path / "in.csv", kv_rows(images=1, keys=1))
    with fake_glance(tmp_path) as glance_only:
        done = run_bulktag(ims_args(glance_only.url, tmp_path, "--project-id", "p"), tmp_path)
    assert 2 == done.code, done
    assert "GET /v2/p/images/tags answered 404 (is the project id right?)" in done.stderr


def test_the_project_comes_from_the_tokens_scope_after_a_keystone_login(tmp_path: Path) -> None:
    write_kv(tmp_path / "in.csv", kv_rows(images=3, keys=2))

    async def scenario() -> tuple[int, str]:
        with fake_glance(tmp_path, "--api", "ims", "--project-id", "p1", token=None) as ims:
            keystone = operator_keystone(ims.url, password="secret-pw-42")
            async with serve_keystone(keystone) as auth_url:
                args = ims_args("", tmp_path)
                args[args.index("--endpoint") : args.index("--endpoint") + 2] = []
                creds = operator_credentials(auth_url, password="secret-pw-42")
                args += [f"--os-{k}={v}" for k, v in creds.items()]
                env = isolated_env(tmp_path, token=None)
                done = await anyio.to_thread.run_sync(lambda: run_bulktag(args, tmp_path, env=env))
                return done.code, done.stderr

    code, stderr = anyio.run(scenario)
    assert 0 == code, stderr
    assert 6 == len(read_journal(tmp_path / "journal.jsonl"))


def test_a_dry_run_checks_rows_by_imss_rules(tmp_path: Path) -> None:
    [image] = image_ids(1)
    (tmp_path / "in.csv").write_text(
        f"{image},env,prod\n{image},{'k' * 37},x\n{image},team,a/b\n{image},bare\n"
    )
    done = run_bulktag([*ims_args("http://127.0.0.1:9", tmp_path), "--dry-run"], tmp_path)
    event = done.event("dry_run")
    assert 1 == done.code, done
    assert (4, 2, 2, "ims", 10) == (
        event["read"],
        event["would_send"],
        event["invalid"],
        event["api"],
        event["tags_per_call"],
    )
    assert [
        "key is 37 characters long (at most 36)",
        "value contains '/' (allowed: letters, digits, '_', '.' and '-')",
    ] == sorted(r["error"] for r in event["invalid_rows"])


def test_kill_9_mid_run_then_rerun_sets_each_row_once(tmp_path: Path) -> None:
    rows = kv_rows(images=150, keys=4, seed=3)
    write_kv(tmp_path / "in.csv", rows)
    journal = tmp_path / "journal.jsonl"
    flags = ("--api", "ims", "--project-id", PROJECT, "--latency", "0.05")
    with fake_glance(tmp_path, *flags) as server:
        args = ims_args(server.url, tmp_path, "--project-id", PROJECT)
        with start_bulktag([*args, "--rate", "30", "--concurrency", "4"], tmp_path) as running:
            running.wait_for(lambda _: len(read_journal_safely(journal)) >= 40)
            time.sleep(0.3)
            running.signal(signal.SIGKILL)
            assert -signal.SIGKILL == running.process.wait(timeout=10)
        before = read_journal(journal)
        done = run_bulktag([*args, "--rate", "300"], tmp_path)
        with ThreadPoolExecutor(16) as pool:  # each read takes the fake's latency too
            ids = image_ids(150, seed=3)
            stored = dict(
                zip(ids, pool.map(lambda i: server.ims_tags(PROJECT, i), ids), strict=True)
            )
    no_traceback(done)
    assert 0 == done.code, done
    assert 40 <= len(before) < len(rows), "the kill should land mid-run"
    records = read_journal(journal)
    counts = Counter((r["image_id"], r["tag"], r["value"]) for r in records if r["outcome"] == "ok")
    assert set(rows) == set(counts)
    assert {1} == set(counts.values()), "a row recorded ok twice"
    assert len(records) == len(rows)
    assert len(before) == done.event("run_finished")["skipped_done"]
    assert all(tags == {f"k{n}": f"v{n}" for n in range(4)} for tags in stored.values())


def read_journal_safely(journal: Path) -> list[bytes]:
    """Complete lines so far (the writer may be mid-line)."""
    if not journal.exists():
        return []
    return [line for line in journal.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]


def test_an_inventory_sorted_by_key_costs_one_request_per_image(tmp_path: Path) -> None:
    """Built per tag (every image's k0, then every image's k1...): still one call an image;
    with --ims-read-ahead too small to hold an image's rows together, more."""
    rows = sorted(kv_rows(images=40, keys=4), key=lambda row: (row[1], row[0]))
    write_kv(tmp_path / "in.csv", rows)
    requests = {}
    for read_ahead in ("200000", "1"):
        (tmp_path / "journal.jsonl").unlink(missing_ok=True)
        with fake_glance(tmp_path, "--api", "ims", "--project-id", PROJECT) as server:
            args = ims_args(server.url, tmp_path, "--project-id", PROJECT)
            done = run_bulktag([*args, "--rate", "1000", "--ims-read-ahead", read_ahead], tmp_path)
            stored = {i: server.ims_tags(PROJECT, i) for i in image_ids(40)}
        assert 0 == done.code, done
        assert {i: {f"k{n}": f"v{n}" for n in range(4)} for i in image_ids(40)} == stored
        requests[read_ahead] = done.event("run_finished")["requests"]
    assert 40 == requests["200000"]
    assert requests["1"] > 40


def test_a_read_ahead_below_one_row_is_exit_2_in_one_line(tmp_path: Path) -> None:
    write_kv(tmp_path / "in.csv", kv_rows(images=1, keys=1))
    done = run_bulktag(
        [*ims_args("http://127.0.0.1:9", tmp_path), "--ims-read-ahead", "0"], tmp_path
    )
    line = one_error_line(done, 2)
    assert "ims-read-ahead" in line or "ims_read_ahead" in line
