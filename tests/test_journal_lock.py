"""One run per journal, whatever path reaches it: the lock is on the journal file itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import U1, make_pairs, write_csv

from bulktag.journal import JournalLock, LockHeld, prepare, render
from bulktag.model import Outcome, Result
from tests.clitools import free_port, no_traceback, plain_http, run_bulktag


def _same(journal: Path) -> Path:
    return journal


def _relative(journal: Path) -> Path:
    return Path(os.path.relpath(journal))


def _dot_dot(journal: Path) -> Path:
    (journal.parent / "sub").mkdir(exist_ok=True)
    return journal.parent / "sub" / ".." / journal.name


def _dot_dot_through_a_symlinked_dir(journal: Path) -> Path:
    elsewhere = journal.parent / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True, exist_ok=True)
    os.symlink(journal.parent / "elsewhere" / "deep", journal.parent / "shortcut")
    return journal.parent / "shortcut" / ".." / ".." / journal.name


def _symlink(journal: Path) -> Path:
    link = journal.parent / "link.jsonl"
    os.symlink(journal, link)
    return link


def _symlinked_dir(journal: Path) -> Path:
    os.symlink(journal.parent, journal.parent.parent / f"{journal.parent.name}-alias")
    return journal.parent.parent / f"{journal.parent.name}-alias" / journal.name


def _hard_link(journal: Path) -> Path:
    journal.touch()
    link = journal.parent / "hard.jsonl"
    os.link(journal, link)
    return link


ALIASES: list[Callable[[Path], Path]] = [
    _same,
    _relative,
    _dot_dot,
    _dot_dot_through_a_symlinked_dir,
    _symlink,
    _symlinked_dir,
    _hard_link,
]


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "jobs"
    home.mkdir()
    monkeypatch.chdir(home)
    return home / "journal.jsonl"


@pytest.mark.parametrize("alias", ALIASES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("holder_uses_alias", [False, True], ids=["held-by-path", "held-by-alias"])
def test_a_second_lock_on_the_same_file_by_any_path_is_refused(
    journal: Path, alias: Callable[[Path], Path], holder_uses_alias: bool
) -> None:
    other = alias(journal)
    first, second = (other, journal) if holder_uses_alias else (journal, other)
    with JournalLock(first) as held:
        held.acquire()
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
            JournalLock(second).acquire()
    JournalLock(second).acquire()  # released: free again


@pytest.mark.parametrize("alias", ALIASES, ids=lambda f: f.__name__.strip("_"))
def test_a_run_through_another_path_to_a_held_journal_exits_5_with_one_line(
    journal: Path, alias: Callable[[Path], Path]
) -> None:
    inventory = write_csv(journal.parent / "in.csv", make_pairs(images=3, tags_per_image=1))
    other = alias(journal)
    with JournalLock(journal) as held:
        held.acquire()
        endpoint = f"http://127.0.0.1:{free_port()}"
        done = run_bulktag(
            [str(inventory), "--endpoint", endpoint, "--results", str(other)], journal.parent
        )
    assert 5 == done.code, done
    no_traceback(done)
    refusals = [line for line in done.lines if "another run is using the journal" in line]
    assert 1 == len(refusals), done
    assert f"pid {os.getpid()}" in refusals[0]


def test_a_waiter_whose_journal_was_moved_aside_locks_the_new_file(journal: Path) -> None:
    journal.write_bytes(render(Result(1, U1, "gold", Outcome.OK)))
    holder = JournalLock(journal)
    holder.acquire()
    prepare(journal, fresh=True, lock=holder)  # the old journal goes aside, the lock follows
    assert holder.identity == (journal.stat().st_dev, journal.stat().st_ino)
    with pytest.raises(LockHeld):
        JournalLock(journal).acquire()  # the new journal at the path is held too
    holder.release()
    JournalLock(journal).acquire()


def test_the_lock_says_whether_it_created_the_journal(journal: Path) -> None:
    with JournalLock(journal) as lock:
        lock.acquire()
        assert lock.created
        assert journal.exists()
    with JournalLock(journal) as lock:
        lock.acquire()
        assert not lock.created


def test_a_run_that_cannot_start_leaves_no_journal_behind(journal: Path) -> None:
    inventory = write_csv(journal.parent / "in.csv", make_pairs(images=3, tags_per_image=1))
    with plain_http(200, "<html>a web server, not Glance</html>") as server:
        done = run_bulktag([str(inventory), "--endpoint", server.url, "--results", str(journal)],
                           journal.parent)  # fmt: skip
    assert 2 == done.code, done  # found at the preflight, after the journal was locked
    assert not journal.exists()


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_journal_that_is_not_a_regular_file_cannot_be_locked(journal: Path, kind: str) -> None:
    if kind == "directory":
        journal.mkdir()
    else:
        os.mkfifo(journal)
    with pytest.raises(OSError):  # noqa: PT011 - is-a-directory or not-a-regular-file
        JournalLock(journal).acquire()


_TRY_LOCK = """
import sys
from pathlib import Path
from bulktag.journal import JournalLock, LockHeld
try:
    JournalLock(Path(sys.argv[1])).acquire()
except LockHeld as exc:
    print("held:", exc)
else:
    print("acquired")
"""


def test_a_lock_through_a_bind_mount_of_the_journal_is_refused(tmp_path: Path) -> None:
    """The second locker runs in its own mount namespace (``unshare -m``), where the journal
    file is bind-mounted onto another name: the machine's mount table is never touched."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a private bind mount")
    journal, elsewhere = tmp_path / "journal.jsonl", tmp_path / "elsewhere" / "other.jsonl"
    elsewhere.parent.mkdir()
    elsewhere.touch()  # a file bind mount needs a file to cover
    script = 'mount --bind "$1" "$2" && exec "$3" -c "$4" "$2"'
    argv = ["unshare", "-m", "sh", "-c", script, "sh", str(journal), str(elsewhere),
            sys.executable, _TRY_LOCK]  # fmt: skip
    with JournalLock(journal) as held:
        held.acquire()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"no private bind mount here: {done.stderr.strip()}")
    assert 0 == done.returncode, done.stderr
    assert done.stdout.startswith("held:"), done.stdout
