"""``report``, ``verify`` and ``run --results`` refuse a file that is not a journal (a CSV, a
binary file, blank lines...) with one line and exit 2, instead of reporting nothing with exit
0 or appending records to it; a journal cut off mid-line is still a journal, and so is an
empty one (a run that had nothing to record leaves it so)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import AT, U1, write_csv

from bulktag.journal import not_a_journal, render
from bulktag.model import Outcome, Result
from tests.clitools import fake_glance, free_port, no_traceback, run_bulktag

RECORD = render(Result(1, U1, "gold", Outcome.OK, status=204, attempts=1, at=AT))

NOT_JOURNALS = {
    "csv": f"image_id,tag\n{U1},gold\n".encode(),
    "binary-no-newline": bytes(range(256)) * 8,
    "binary-with-newlines": os.urandom(4096).replace(b"\n", b"") + b"\n\x00\x01\n",
    "huge-line-no-newline": b"x" * 3_000_000,
    "blank-lines": b"\n\n  \n",
    "json-not-records": b'{"a": 1}\n{"b": 2}\n',
    "records-after-junk": b"junk\n" + RECORD,
    "torn-non-record": b'{"some": "thing',
    "status-as-text": RECORD.replace(b'"status": 204', b'"status": "204"'),
}
JOURNALS = {
    "empty": b"",  # what a run with nothing to record leaves
    "one-record": RECORD,
    "torn-tail": RECORD + RECORD[:30],
    "only-a-torn-first-record": RECORD[:30],
    "junk-after-a-record": RECORD + b"junk\n",
    "crlf": RECORD[:-1] + b"\r\n",
}


@pytest.mark.parametrize("content", NOT_JOURNALS.values(), ids=NOT_JOURNALS.keys())
def test_a_file_that_is_not_a_journal_says_why(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    assert not_a_journal(path)


@pytest.mark.parametrize("content", JOURNALS.values(), ids=JOURNALS.keys())
def test_a_journal_torn_or_with_junk_later_is_a_journal(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(content)
    assert None is not_a_journal(path)


CLI_CASES = ["csv", "binary-no-newline", "blank-lines", "json-not-records", "status-as-text"]


@pytest.mark.parametrize("name", CLI_CASES)
@pytest.mark.parametrize("command", ["report", "verify"])
def test_report_and_verify_refuse_it_with_one_line_and_exit_2(
    tmp_path: Path, name: str, command: str
) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(NOT_JOURNALS[name])
    args = [str(path)]
    if command == "verify":
        args += ["--endpoint", f"http://127.0.0.1:{free_port()}"]
    done = run_bulktag(args, tmp_path, command=command)
    no_traceback(done)
    assert 2 == done.code, done
    assert [f"bulktag {command}: error: {path} is not a journal: {not_a_journal(path)}"] == (
        done.lines
    )
    assert "" == done.stdout


@pytest.mark.parametrize("name", ["torn-tail", "only-a-torn-first-record"])
def test_report_reads_a_journal_cut_off_mid_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(JOURNALS[name])
    done = run_bulktag([str(path), "--format", "json"], tmp_path, command="report")
    assert done.code in (0, 1), done  # a report, whatever it says
    assert '"torn": 1' in done.stdout


@pytest.mark.parametrize("name", ["csv", "binary-no-newline", "json-not-records"])
def test_a_run_refuses_results_that_are_not_a_journal_before_sending(
    tmp_path: Path, name: str
) -> None:
    inventory = write_csv(tmp_path / "in.csv", [(U1, "gold")])
    results = tmp_path / "results.jsonl"
    results.write_bytes(NOT_JOURNALS[name])
    endpoint = f"http://127.0.0.1:{free_port()}"
    done = run_bulktag([str(inventory), "--endpoint", endpoint, "--results", str(results)],
                       tmp_path)  # fmt: skip
    no_traceback(done)
    assert 2 == done.code, done
    assert any("is not a bulktag journal" in line for line in done.lines), done
    assert NOT_JOURNALS[name] == results.read_bytes()  # untouched


def test_a_night_with_nothing_to_tag_leaves_a_journal_report_and_verify_read(
    tmp_path: Path,
) -> None:
    """A nightly input with no rows (no new images today), or a shard no row hashed to: the
    run exits 0 and leaves an empty journal. The morning's report and verify must read it as
    the nothing it holds, not fail the check with exit 2 ("is not a journal: it is empty")."""
    inventory = write_csv(tmp_path / "in.csv", [])
    journal = tmp_path / "night.jsonl"
    with fake_glance(tmp_path) as server:
        endpoint = ["--endpoint", server.url]
        ran = run_bulktag([str(inventory), *endpoint, "--results", str(journal)], tmp_path)
        assert 0 == ran.code, ran
        assert b"" == journal.read_bytes()
        verify = run_bulktag([str(journal), *endpoint], tmp_path, command="verify")
    report = run_bulktag([str(journal), "--format", "json"], tmp_path, command="report")
    assert 0 == report.code, report
    assert (0, 0) == (json.loads(report.stdout)["records"], json.loads(report.stdout)["pairs"])

    no_traceback(verify)
    assert 0 == verify.code, verify
    assert [f"bulktag verify: nothing to verify: {journal} records no ok tag"] == verify.lines
