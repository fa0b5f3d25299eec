"""In JSON mode every line on stderr is JSON: a start-up error, a held lock, a cloud to try
again later included, each with the one-line human message as its ``message`` field and the
exit code as ``exit_code``. JSON mode is ``--log-format json`` (or ``=json``),
``BULKTAG_LOG_FORMAT=json``, or the default ``auto`` with stderr not a terminal (cron).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import Done, fake_glance, isolated_env, refused_url, run_bulktag
from support import make_pairs, write_csv

from bulktag.journal import JournalLock


def _json_lines(done: Done) -> list[dict[str, object]]:
    """Every stderr line, parsed; fails on the first that is not a JSON object."""
    records = []
    for line in done.stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\n{done}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


# name → (arguments after the input, extra environment, exit code, words of the message)
FAILURES = {
    "unknown-flag": (["--bogus"], {}, 2, "unrecognized arguments: --bogus"),
    "abbreviated-flag": (["--rat", "5"], {}, 2, "--rat"),
    "bad-value": (["--rate", "-1"], {}, 2, "--rate"),
    "bad-env-value": ([], {"BULKTAG_RATE": "abc"}, 2, "BULKTAG_RATE"),
    "config-malformed": (["--config", "bad.toml"], {}, 2, "not valid TOML"),
    "no-credentials": ([], {"OS_AUTH_TOKEN": ""}, 2, "OS_AUTH_TOKEN"),
    "lock-held": (["--results", "held.jsonl"], {}, 5, "another run is using the journal"),
    "unreachable": (["--endpoint", "{closed}"], {}, 75, "try again later"),
}
# How JSON mode is asked for: each failure is tried every way.
MODES = {
    "flag": ["--log-format", "json"],
    "flag-equals": ["--log-format=json"],
    "variable": [],  # BULKTAG_LOG_FORMAT=json
    "auto-not-a-terminal": [],
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(FAILURES))
def test_every_start_up_failure_is_a_json_line(tmp_path: Path, name: str, mode: str) -> None:
    extra, env, code, words = FAILURES[name]
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    (tmp_path / "bad.toml").write_text("rate = [\n")
    environment = isolated_env(tmp_path, **env)
    if mode == "variable":
        environment["BULKTAG_LOG_FORMAT"] = "json"
    if not env.get("OS_AUTH_TOKEN", "x"):
        del environment["OS_AUTH_TOKEN"]
    with refused_url() as closed, JournalLock(tmp_path / "held.jsonl") as lock:
        args = [str(inventory), *MODES[mode], *(a.format(closed=closed) for a in extra)]
        if "--endpoint" not in args:
            args += ["--endpoint", closed]
        lock.acquire()
        done = run_bulktag(args, tmp_path, env=environment)
    assert code == done.code, done
    [record] = [r for r in _json_lines(done) if r["level"] == "error"]
    assert code == record["exit_code"]
    assert str(record["message"]).startswith("bulktag"), record
    assert words in str(record["message"]), record
    assert {"event", "timestamp"} <= set(record)


def test_a_whole_run_in_json_mode_writes_only_json(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=3, tags_per_image=2))
    with fake_glance(tmp_path, "--unknown-every", "3") as fake:
        done = run_bulktag([str(inventory), "--endpoint", fake.url, "--rate", "500"], tmp_path)
    assert 1 == done.code, done
    events = [r["event"] for r in _json_lines(done)]
    assert "run_started" in events
    assert "run_finished" in events


def test_console_mode_keeps_the_plain_line(tmp_path: Path) -> None:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=1, tags_per_image=1))
    done = run_bulktag([str(inventory), "--log-format", "console", "--bogus"], tmp_path)
    assert 2 == done.code, done
    [line] = done.lines
    assert line.startswith("bulktag: error: unrecognized arguments: --bogus"), line


def test_other_commands_keep_plain_errors(tmp_path: Path) -> None:
    """Only ``run`` has JSON logs; ``report`` of a missing journal says so in plain text."""
    done = run_bulktag(["missing.jsonl"], tmp_path, command="report")
    assert 2 == done.code, done
    assert done.lines[0].startswith("bulktag")
