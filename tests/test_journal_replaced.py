"""A journal deleted, moved, replaced or cut short mid-run is noticed, and the run stops with the
journal-error exit code (3) and one line saying so — instead of writing on into a file nobody
will read and exiting 0."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from support import U1, journal_lines, make_pairs, write_csv

from bulktag.journal import JournalReplaced, JournalWriter, render
from bulktag.model import Outcome, Result
from tests.clitools import fake_glance, no_traceback, start_bulktag


def _delete(journal: Path) -> None:
    journal.unlink()


def _move_aside(journal: Path) -> None:
    journal.rename(journal.with_name("moved.jsonl"))


def _replace_by_rename(journal: Path) -> None:
    new = journal.with_name("new.jsonl")
    new.write_bytes(journal.read_bytes())  # same content, another file: still not ours
    new.replace(journal)


def _delete_and_recreate(journal: Path) -> None:
    journal.unlink()
    journal.touch()


def _truncate(journal: Path) -> None:
    with journal.open("r+b") as file:
        file.truncate(0)


MUTATIONS: list[Callable[[Path], None]] = [
    _delete,
    _move_aside,
    _replace_by_rename,
    _delete_and_recreate,
    _truncate,
]
IDS = [m.__name__.strip("_") for m in MUTATIONS]
LINE = render(Result(1, U1, "gold", Outcome.OK))


@pytest.fixture(params=MUTATIONS, ids=IDS)
def mutate(request: pytest.FixtureRequest) -> Callable[[Path], None]:
    """Each way a journal can stop being the file the writer opened."""
    mutation: Callable[[Path], None] = request.param
    return mutation


def _synced_then_mutated(path: Path, mutate: Callable[[Path], None]) -> JournalWriter:
    """A writer that wrote and synced a line in place (fine), then had its journal ``mutate``d."""
    writer = JournalWriter(path, fsync_interval=0)
    writer.write_batch([LINE])
    writer.fsync()
    mutate(path)
    return writer


def test_the_writer_refuses_to_sync_into_a_journal_that_is_no_longer_there(
    tmp_path: Path, mutate: Callable[[Path], None]
) -> None:
    writer = _synced_then_mutated(tmp_path / "journal.jsonl", mutate)
    writer.write_batch([LINE])
    with pytest.raises(JournalReplaced):
        writer.fsync()
    with pytest.raises(JournalReplaced):
        writer.close()


def test_close_notices_it_even_when_nothing_was_left_to_sync(
    tmp_path: Path, mutate: Callable[[Path], None]
) -> None:
    writer = _synced_then_mutated(tmp_path / "journal.jsonl", mutate)
    with pytest.raises(JournalReplaced):
        writer.close()


def test_a_write_notices_it_at_the_check_cadence_even_between_rare_fsyncs(
    tmp_path: Path, mutate: Callable[[Path], None]
) -> None:
    path = tmp_path / "journal.jsonl"
    hourly = JournalWriter(path, fsync_interval=3600, check_interval=0)
    hourly.write_batch([LINE])
    mutate(path)
    with pytest.raises(JournalReplaced):
        hourly.write_batch([LINE])


def test_between_checks_a_write_does_not_stat_and_close_still_checks(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    rare = JournalWriter(path, fsync_interval=3600, check_interval=3600)
    rare.write_batch([LINE])
    _delete(path)
    rare.write_batch([LINE])  # the next check is due in an hour
    with pytest.raises(JournalReplaced):
        rare.close()


def test_a_journal_left_in_place_or_reached_through_a_new_symlink_is_fine(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    writer = JournalWriter(path, fsync_interval=0, check_interval=0)
    writer.write_batch([LINE])
    writer.fsync()
    real = tmp_path / "real.jsonl"
    path.rename(real)
    os.symlink(real, path)  # the same file, by another way: still the journal
    writer.write_batch([LINE, LINE])
    writer.close()
    assert [LINE] * 3 == journal_lines(real)


def test_a_writer_that_wrote_nothing_does_not_mind(tmp_path: Path) -> None:
    untouched = JournalWriter(tmp_path / "never-written.jsonl")
    (tmp_path / "never-written.jsonl").unlink()
    untouched.close()  # nothing of this run's was in it


def test_a_run_whose_journal_goes_away_stops_with_exit_3_and_says_why(
    tmp_path: Path, mutate: Callable[[Path], None]
) -> None:
    pairs = make_pairs(images=400, tags_per_image=1)
    write_csv(tmp_path / "in.csv", pairs)
    journal = tmp_path / "journal.jsonl"
    with fake_glance(tmp_path, "--latency", "0.01") as server:
        args = ["in.csv", "--endpoint", server.url, "--results", "journal.jsonl",
                "--rate", "100", "--fsync-interval", "0.2", "--log-format", "json"]  # fmt: skip
        with start_bulktag(args, tmp_path) as running:
            running.wait_for(lambda _err: len(journal_lines(journal)) >= 20)
            mutate(journal)
            done = running.finish()
    no_traceback(done)
    assert 3 == done.code, done
    reasons = [e["reason"] for e in done.events if e.get("event") == "run_aborted"]
    assert 1 == len(reasons), done
    assert "journal" in reasons[0]
    assert ("deleted, moved or replaced" in reasons[0]) or ("cut shorter" in reasons[0])
    assert os.path.basename(journal) in reasons[0]
