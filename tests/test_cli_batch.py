"""The batch controls as a cron job meets them: the journal lock, --dry-run, --max-duration,
and logging in with OpenStack credentials instead of a token."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import anyio
import pytest
from support import make_pairs, write_csv

from bulktag.fake.keystone import serve_keystone
from bulktag.journal import JournalLock
from tests.clitools import (
    fake_glance,
    free_port,
    isolated_env,
    operator_credentials,
    operator_keystone,
    run_bulktag,
    start_bulktag,
)


def test_a_second_run_on_a_locked_journal_exits_5_at_once(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=3, tags_per_image=1))
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path) as server, JournalLock(journal) as held:
        held.acquire()
        done = run_bulktag(
            [str(inventory), "--endpoint", server.url, "--results", str(journal)], tmp_path
        )
    assert 5 == done.code, done
    assert "another run is using the journal" in done.stderr
    assert f"pid {os.getpid()}" in done.stderr  # says who holds it
    assert b"" == journal.read_bytes()  # the refused run wrote nothing (the holder made it)


def test_lock_wait_waits_for_the_other_run_to_finish(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=3, tags_per_image=1))
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path) as server:
        holder = JournalLock(journal)
        holder.acquire()
        args = [str(inventory), "--endpoint", server.url, "--results", str(journal)]
        with start_bulktag([*args, "--lock-wait", "20s"], tmp_path) as running:
            time.sleep(1.0)
            assert running.process.poll() is None  # still waiting for the lock
            holder.release()
            done = running.finish()
    assert 0 == done.code, done
    assert 3 == len(journal.read_text().splitlines())


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=200, tags_per_image=1))
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path, "--latency", "0.02") as server:
        args = [str(inventory), "--endpoint", server.url, "--results", str(journal), "--rate", "50"]
        with start_bulktag(args, tmp_path) as first:
            first.wait_for(lambda err: "run_started" in err)
            first.kill()  # SIGKILL: no chance to release anything
        done = run_bulktag(args, tmp_path)
    assert 0 == done.code, done
    assert (tmp_path / "journal.jsonl.lock").exists()  # the file stays; the flock died


def test_dry_run_reports_what_would_be_sent_and_sends_nothing(tmp_path: Path) -> None:
    pairs = make_pairs(images=4, tags_per_image=2)
    rows = [f"{i},{t}" for i, t in pairs] + [f"{pairs[0][0]},bad.tag", "nope,x"]
    inventory = tmp_path / "in.csv"
    inventory.write_text("image_id,tag\n" + "\n".join(rows) + "\n")
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path) as server:
        done = run_bulktag(
            [
                str(inventory),
                "--endpoint",
                server.url,
                "--results",
                str(journal),
                "--dry-run",
                "--log-format",
                "json",
            ],
            tmp_path,
        )
        puts = server.puts()
    event = done.event("dry_run")
    assert 1 == done.code, done  # invalid rows make a dry run exit 1
    assert (10, 8, 2) == (event["read"], event["would_send"], event["invalid"])
    errors = sorted(r["error"] for r in event["invalid_rows"])
    assert [
        "image_id is not a UUID: 'nope'",
        "tag contains '.' (allowed: letters, digits, '_' and '-')",
    ] == errors
    assert 0 == puts
    assert not journal.exists()


def test_a_dry_run_of_a_resume_counts_exactly_what_the_run_then_sends(tmp_path: Path) -> None:
    pairs = make_pairs(images=40, tags_per_image=2)
    again = [pairs[3], pairs[-1]]  # one done by the first run, one still to send
    rows = [f"{i},{t}" for i, t in [*pairs, *again]] + ["nope,x"]
    inventory = tmp_path / "in.csv"
    inventory.write_text("image_id,tag\n" + "\n".join(rows) + "\n")
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path) as server:
        args = [str(inventory), "--endpoint", server.url, "--results", str(journal)]
        args += ["--log-format", "json"]
        first = run_bulktag([*args, "--max-items", "30"], tmp_path)
        dry = run_bulktag([*args, "--dry-run"], tmp_path).event("dry_run")
        before = server.puts()
        rest = run_bulktag(args, tmp_path).event("run_finished")
        sent = server.puts() - before
    assert 4 == first.code, first
    assert (83, 50, 50) == (dry["read"], dry["would_send"], sent)
    counts = ("skipped_done", "skipped_duplicate", "invalid")
    assert (31, 1, 1) == tuple(dry[c] for c in counts) == tuple(rest[c] for c in counts)


def test_max_duration_stops_with_exit_4_and_the_next_run_finishes(tmp_path: Path) -> None:
    pairs = make_pairs(images=300, tags_per_image=1)
    inventory = write_csv(tmp_path / "in.csv", pairs)
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path) as server:
        args = [
            str(inventory),
            "--endpoint",
            server.url,
            "--results",
            str(journal),
            "--rate",
            "100",
            "--log-format",
            "json",
        ]
        first = run_bulktag([*args, "--max-duration", "1s"], tmp_path)
        second = run_bulktag(args, tmp_path)
    assert 4 == first.code, first
    assert "max_duration" == first.event("run_finished")["stopped_by"]
    assert 0 == second.code, second
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(pairs) == sorted((r["image_id"], r["tag"]) for r in records)


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_a_run_logs_in_to_keystone_and_finds_glance_in_the_catalog(
    tmp_path: Path, how: str
) -> None:
    pairs = make_pairs(images=5, tags_per_image=2)
    inventory = write_csv(tmp_path / "in.csv", pairs)
    journal = tmp_path / "journal.jsonl"

    async def scenario() -> tuple[int, str, int]:
        # Token validation against Keystone is tested in-process (tests/auth); here the
        # subprocess fake Glance takes any token, and the test is about the wiring.
        with fake_glance(tmp_path, token=None) as glance:
            keystone = operator_keystone(glance.url, password="secret-pw-42")
            async with serve_keystone(keystone) as auth_url:
                creds = operator_credentials(auth_url, password="secret-pw-42")
                args = [str(inventory), "--results", str(journal)]
                env = isolated_env(tmp_path, token=None)
                if how == "flags":
                    args += [f"--os-{k}={v}" for k, v in creds.items()]
                else:
                    env |= {f"OS_{k.upper().replace('-', '_')}": v for k, v in creds.items()}
                done = await anyio.to_thread.run_sync(lambda: run_bulktag(args, tmp_path, env=env))
                return done.code, done.stderr, keystone.logins

    code, stderr, logins = anyio.run(scenario)
    assert 0 == code, stderr
    assert 1 == logins
    assert "secret-pw-42" not in stderr
    assert len(pairs) == len(journal.read_text().splitlines())


def _one_line_error(done: object, code: int = 2) -> str:
    assert code == done.code, done  # type: ignore[attr-defined]
    lines = done.lines  # type: ignore[attr-defined]
    assert "Traceback" not in done.stderr  # type: ignore[attr-defined]
    [line] = [line for line in lines if "error" in line]
    return str(line)


def test_no_credentials_at_all_names_every_source_looked_at(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    done = run_bulktag([str(inventory)], tmp_path, env=isolated_env(tmp_path, token=None))
    line = _one_line_error(done)
    assert "no credentials found" in line
    assert "OS_AUTH_URL" in line
    assert "clouds.yaml" in line
    # Whole to its end: what to give, then where the settings came from (cut at 300
    # characters, the line stopped at "give a cloud (--os-cloud or OS_CLOUD, ...").
    assert "or --token and --endpoint (settings from no cloud named" in line


@pytest.mark.parametrize(
    "given",
    [
        ["--endpoint", "http://127.0.0.1:9", "--os-interface", "internal", "--insecure"],
        ["--token", "t0ken-only", "--os-region-name", "r1", "--cacert", "ca.pem"],
        ["--os-image-url", "http://127.0.0.1:9", "--os-endpoint-type", "internal"],
    ],
    ids=["endpoint-alone", "token-alone", "os-spellings"],
)
def test_half_the_light_path_names_what_is_missing_by_flags_that_exist(
    tmp_path: Path, given: list[str]
) -> None:
    """A token without an endpoint, or an endpoint without a token: the line says what else
    to give and which flags it was given, every one spelled as `bulktag run` takes it (the
    endpoint was once named --os-endpoint, which it does not)."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    done = run_bulktag([str(inventory), *given], tmp_path, env=isolated_env(tmp_path, token=None))
    line = _one_line_error(done)
    assert "(settings from no cloud named" in line
    help_text = run_bulktag(["--help"], tmp_path).stdout
    named = set(re.findall(r"--[a-z][a-z-]*[a-z]", line))
    assert {flag for flag in given if flag.startswith("--")} <= named
    assert [] == [flag for flag in sorted(named) if f"{flag} " not in help_text]


def test_an_unknown_cloud_lists_the_known_ones(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  prod:\n    auth: {auth_url: 'http://127.0.0.1:9/v3'}\n"
    )
    done = run_bulktag(
        [str(inventory), "--os-cloud", "staging"], tmp_path, env=isolated_env(tmp_path, token=None)
    )
    line = _one_line_error(done)
    assert "'staging'" in line
    assert "prod" in line


def test_a_malformed_clouds_yaml_says_where(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    (tmp_path / "clouds.yaml").write_text("clouds:\n  prod: [unclosed\n  password: hunter22\n")
    done = run_bulktag(
        [str(inventory), "--os-cloud", "prod"], tmp_path, env=isolated_env(tmp_path, token=None)
    )
    line = _one_line_error(done)
    assert "malformed YAML" in line
    assert "line" in line
    assert "hunter22" not in done.stderr  # the file may hold secrets: never quoted


def test_an_identity_service_that_does_not_answer_is_exit_75(tmp_path: Path) -> None:
    """Not the command's fault (issue 14): try again later, not "fix your flags"."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    args = [
        str(inventory),
        "--os-auth-url",
        f"http://127.0.0.1:{free_port()}/v3",
        "--os-username",
        "u",
        "--os-password",
        "pw-secret-1",
        "--os-project-name",
        "p",
    ]
    done = run_bulktag(args, tmp_path, env=isolated_env(tmp_path, token=None))
    line = _one_line_error(done, code=75)
    assert "does not answer" in line
    assert "pw-secret-1" not in done.stderr


def test_a_wrong_password_is_credentials_refused_exit_2(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    journal = tmp_path / "journal.jsonl"

    async def scenario() -> object:
        keystone = operator_keystone(None, password="right-password")
        async with serve_keystone(keystone) as auth_url:
            args = [
                str(inventory),
                "--results",
                str(journal),
                "--os-auth-url",
                auth_url,
                "--os-username",
                "operator",
                "--os-password",
                "wrong-password-77",
                "--os-project-name",
                "images",
            ]
            env = isolated_env(tmp_path, token=None)
            return await anyio.to_thread.run_sync(lambda: run_bulktag(args, tmp_path, env=env))

    done = anyio.run(scenario)
    line = _one_line_error(done)
    assert "credentials refused" in line
    assert "wrong-password-77" not in done.stderr  # type: ignore[attr-defined]
    assert not journal.exists()  # nothing started: no empty journal left behind


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(["--outage", "0:inf"], id="503-to-everything"),
        pytest.param(["--outage", "0:inf", "--retry-after", "1"], id="503-with-retry-after"),
        pytest.param(["--fail-429", "1.0"], id="429-to-everything"),
    ],
)
def test_a_cloud_that_accepts_nothing_stops_the_run_with_exit_75_and_the_next_run_resumes(
    tmp_path: Path, refusal: list[str]
) -> None:
    pairs = make_pairs(images=30, tags_per_image=2)
    inventory = write_csv(tmp_path / "in.csv", pairs)
    journal = tmp_path / "journal.jsonl"
    args = [str(inventory), "--results", str(journal), "--rate", "200", "--log-format", "json"]
    with fake_glance(tmp_path, *refusal) as down:
        started = time.monotonic()
        first = run_bulktag([*args, "--endpoint", down.url, "--max-outage", "2s"], tmp_path)
        took = time.monotonic() - started
    assert 75 == first.code, first
    finished = first.event("run_finished")
    assert "outage" == finished["stopped_by"]
    assert 0 == finished["gave_up"]  # the outage burnt no row
    assert 0 == finished["accepted_per_second"]
    assert "the cloud accepted nothing" == finished["pace"]
    assert "run the same command later" in first.event("cloud_unavailable")["reason"]
    assert took < 15  # ~2 s of silence, then the grace for in-flight requests
    with fake_glance(tmp_path) as healthy:
        second = run_bulktag([*args, "--endpoint", healthy.url], tmp_path)
    assert 0 == second.code, second
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(pairs) == sorted(
        (r["image_id"], r["tag"]) for r in records if r["outcome"] == "ok"
    )


def test_a_run_with_nothing_left_to_send_does_not_report_a_silent_cloud(tmp_path: Path) -> None:
    """Every row done by an earlier run: run_finished's ``pace`` says nothing was sent. It said
    "the cloud accepted nothing", the outage's words, which a morning check greps for."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=3, tags_per_image=1))
    args = [str(inventory), "--results", str(tmp_path / "j.jsonl"), "--log-format", "json"]
    with fake_glance(tmp_path) as server:
        first = run_bulktag([*args, "--endpoint", server.url], tmp_path)
        again = run_bulktag([*args, "--endpoint", server.url], tmp_path)
    assert "the cloud accepted" in first.event("run_finished")["pace"]
    finished = again.event("run_finished")
    assert (0, 0, 3) == (again.code, finished["requests"], finished["skipped_done"])
    assert "nothing was sent" == finished["pace"]


def test_the_text_summary_says_the_pace_the_cloud_took(tmp_path: Path) -> None:
    """The line an operator reads to set --rate for the next night: a fixed window of 40 a
    second, asked 400/s. What it says must be what the findings hold (run_finished)."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=120, tags_per_image=1))
    common = ["--rate", "400", "--log-format", "console"]
    with fake_glance(tmp_path, "--limiter", "fixed:40") as server:
        done = run_bulktag(
            [str(inventory), "--endpoint", server.url, "--results", "j.jsonl", *common], tmp_path
        )
    assert 0 == done.code, done
    [line] = [line for line in done.stderr.splitlines() if line.startswith("  pacing ")]
    found = re.fullmatch(
        r"  pacing   the cloud accepted ~([0-9.]+)/s(?:; capacity ~([0-9.]+)/s)? "
        r"\(rate cut (once|[2-9]\d* times)\)",
        line,
    )
    assert found, line
    accepted = float(found.group(1))
    assert 20 <= accepted <= 80, line  # 40 a second, in a run of three seconds or so
    assert len(found.group(1).replace(".", "")) <= 3, line  # three figures at most
    # A capacity the run saw, if it saw one: the pacer's own figure, read off the fifth of a
    # second after the window's burst, was 105-421/s in nine runs of this test.
    assert found.group(2) is None or float(found.group(2)) <= 1.5 * 40, line


def test_a_run_its_own_rate_held_back_says_a_higher_one_may_go_faster(tmp_path: Path) -> None:
    """Nothing refused, and what got in came near --rate: the summary had no pacing line, and
    run_finished's pace said "the cloud accepted ~40/s", as if that were the cloud's."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=120, tags_per_image=1))
    args = [str(inventory), "--results", "j.jsonl", "--rate", "40"]
    with fake_glance(tmp_path) as server:
        text = run_bulktag([*args, "--endpoint", server.url, "--log-format", "console"], tmp_path)
        (tmp_path / "j.jsonl").unlink()
        logged = run_bulktag([*args, "--endpoint", server.url, "--log-format", "json"], tmp_path)
    assert (0, 0) == (text.code, logged.code), (text, logged)
    hint = "nothing was refused: --rate set the pace, a higher one may go faster"
    [line] = [line for line in text.stderr.splitlines() if line.startswith("  pacing ")]
    assert re.fullmatch(rf"  pacing   the cloud accepted ~[34]\d(\.\d)?/s; {hint}", line), line
    finished = logged.event("run_finished")
    assert finished["held_by_rate"] is True
    assert finished["pace"].endswith(hint)


def test_max_duration_zero_lifts_the_window_the_environment_sets(tmp_path: Path) -> None:
    """A one-off run under a unit whose environment sets a window: ``--max-duration 0`` is no
    limit, as ``timeout 0`` is; it was refused ("must be at least 0.001"), and nothing else
    could unset the variable's window."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=60, tags_per_image=1))
    args = [str(inventory), "--results", str(tmp_path / "j.jsonl"), "--log-format", "json"]
    env = {**isolated_env(tmp_path), "BULKTAG_MAX_DURATION": "0.5s"}
    with fake_glance(tmp_path) as server:
        args += ["--endpoint", server.url, "--rate", "40"]
        windowed = run_bulktag(args, tmp_path, env=env)
        lifted = run_bulktag([*args, "--max-duration", "0"], tmp_path, env=env)
    assert 4 == windowed.code, windowed
    assert "max_duration" == windowed.event("run_finished")["stopped_by"]
    assert 0 == lifted.code, lifted
    assert lifted.event("run_finished")["stopped_by"] is None


def test_max_outage_zero_never_stops_for_silence(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=3, tags_per_image=1))
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path, "--outage", "0:inf") as down:
        done = run_bulktag(
            [
                str(inventory),
                *("--endpoint", down.url, "--results", str(journal), "--log-format", "json"),
                *("--max-outage", "0", "--max-duration", "3s"),
            ],
            tmp_path,
        )
    assert 4 == done.code, done  # the time window ended it, not the silence
    assert "max_duration" == done.event("run_finished")["stopped_by"]


def test_a_metrics_file_that_cannot_be_written_mid_run_is_warned_of_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """The metrics file turned into a directory mid-run (a full or broken disk fails the same
    way: the write raises): each failure is a warning naming the file and the OS's reason,
    not the temporary file beside it, none is left behind, and every row still gets its
    outcome."""
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=120, tags_per_image=1))
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    prom = textfile / "bulktag.prom"

    def break_the_file() -> None:
        prom.unlink()
        prom.mkdir()
        (prom / "in-the-way").write_text("")

    args = [str(inventory), "--results", "j.jsonl", "--metrics-file", str(prom)]
    args += ["--rate", "40", "--progress-interval", "1", "--log-format", "json"]
    with fake_glance(tmp_path) as server:
        breaker = threading.Timer(1.2, break_the_file)
        breaker.start()
        done = run_bulktag([*args, "--endpoint", server.url], tmp_path)
        breaker.join()
    assert 0 == done.code, done
    assert 120 == done.event("run_finished")["ok"]
    warnings = [e for e in done.events if e["event"] == "metrics_write_failed"]
    assert warnings, done.stderr
    assert {(str(prom), "Is a directory")} == {(e["path"], e["error"]) for e in warnings}
    assert [prom] == list(textfile.iterdir())  # no temporary file left


def test_metrics_file_is_a_flag_as_the_systemd_unit_uses_it(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=4, tags_per_image=2))
    prom = tmp_path / "textfile" / "bulktag.prom"
    prom.parent.mkdir()
    with fake_glance(tmp_path) as server:
        done = run_bulktag(
            [
                str(inventory),
                *("--endpoint", server.url, "--results", str(tmp_path / "j.jsonl")),
                *("--metrics-file", str(prom)),
            ],
            tmp_path,
        )
    assert 0 == done.code, done
    text = prom.read_text()
    assert 'bulktag_rows_total{outcome="ok"} 8.0' in text
    assert "bulktag_accepted_rate_requests_per_second" in text
    assert "bulktag_run_finished 1.0" in text
