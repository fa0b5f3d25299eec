"""``--summary json``: one JSON document on stdout, whatever happened, with the exit code, so a
wrapper script needs no log parsing; and one run id in the document, every log event and the
metrics file, with the schema version the run_finished event, the document, the metrics and
``report --format json`` share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clitools import Done, fake_glance, isolated_env, refused_url, run_bulktag
from prometheus_client.parser import text_string_to_metric_families
from support import make_pairs, write_csv

from bulktag.journal import JournalLock
from bulktag.summary import SCHEMA_VERSION


def _document(done: Done) -> dict[str, Any]:
    """stdout holds exactly one JSON object, whose exit code is the process's."""
    lines = done.stdout.splitlines()
    assert 1 == len(lines), done
    document = json.loads(lines[0])
    assert done.code == document["exit_code"], done
    assert SCHEMA_VERSION == document["schema_version"]
    assert 32 == len(document["run_id"])
    return dict(document)


# name → (flags, fake's flags or None for a refused port, exit code, what the document holds)
CASES: dict[str, tuple[list[str], list[str] | None, int, dict[str, Any]]] = {
    "ok": ([], [], 0, {"exit_status": "ok", "ok": 12, "failed": 0, "stopped_by": None}),
    "some-failed": ([], ["--unknown-every", "3"], 1, {"exit_status": "some_failed", "failed": 4}),
    "incomplete": (["--max-items", "2"], [], 4, {"exit_status": "incomplete", "ok": 2}),
    "dry-run": (["--dry-run"], [], 0, {"dry_run": True, "would_send": 12}),
    "usage": (["--bogus"], [], 2, {"exit_status": "usage"}),
    "bad-value": (["--rate", "0"], [], 2, {"exit_status": "usage"}),
    "locked": (["--results", "held.jsonl"], [], 5, {"exit_status": "locked"}),
    "unreachable": ([], None, 75, {"exit_status": "tempfail"}),
}


def _run(tmp_path: Path, flags: list[str], fake_flags: list[str] | None, **env: str) -> Done:
    inventory = write_csv(tmp_path / "in.csv", make_pairs(images=12, tags_per_image=1))
    args = [str(inventory), "--rate", "500", *flags]
    with JournalLock(tmp_path / "held.jsonl") as lock:
        lock.acquire()
        if fake_flags is None:
            with refused_url() as url:
                return run_bulktag(
                    [*args, "--endpoint", url], tmp_path, env=isolated_env(tmp_path, **env)
                )
        with fake_glance(tmp_path, *fake_flags) as fake:
            return run_bulktag(
                [*args, "--endpoint", fake.url], tmp_path, env=isolated_env(tmp_path, **env)
            )


@pytest.mark.parametrize("name", list(CASES))
def test_the_document_says_what_happened_with_the_exit_code(tmp_path: Path, name: str) -> None:
    flags, fake_flags, code, expected = CASES[name]
    done = _run(tmp_path, [*flags, "--summary", "json"], fake_flags)
    assert code == done.code, done
    document = _document(done)
    assert expected == {key: document[key] for key in expected}
    if code in (2, 5, 75):  # could not start: the one error line is in the document too
        assert document["error"].startswith("bulktag"), document


def test_the_variable_asks_for_it_too(tmp_path: Path) -> None:
    done = _run(tmp_path, [], [], BULKTAG_SUMMARY="json")
    assert 0 == _document(done)["exit_code"]


def test_without_it_stdout_stays_empty(tmp_path: Path) -> None:
    done = _run(tmp_path, [], [])
    assert 0 == done.code, done
    assert "" == done.stdout


def test_one_run_id_in_the_document_the_logs_and_the_metrics(tmp_path: Path) -> None:
    metrics = tmp_path / "bulktag.prom"
    done = _run(tmp_path, ["--summary", "json", "--metrics-file", str(metrics)], [])
    run_id = _document(done)["run_id"]
    assert {run_id} == {event["run_id"] for event in done.events}  # every log event
    finished = done.event("run_finished")
    assert (SCHEMA_VERSION, 0) == (finished["schema_version"], finished["exit_code"])
    [info] = [
        sample
        for family in text_string_to_metric_families(metrics.read_text())
        for sample in family.samples
        if sample.name == "bulktag_run_info"
    ]
    assert {"run_id": run_id, "schema_version": str(SCHEMA_VERSION)} == info.labels


def test_two_runs_have_two_ids(tmp_path: Path) -> None:
    first = _document(_run(tmp_path, ["--summary", "json"], []))
    second = _document(_run(tmp_path, ["--summary", "json"], []))
    assert first["run_id"] != second["run_id"]
    assert 12 == second["skipped_done"]


def test_the_report_json_carries_the_schema_version(tmp_path: Path) -> None:
    _run(tmp_path, [], [])
    done = run_bulktag(["bulktag-results.jsonl", "--format", "json"], tmp_path, command="report")
    assert SCHEMA_VERSION == json.loads(done.stdout)["schema_version"]
