"""The journal on disk: the lock, torn-tail repair, reading it in blocks, and the writer.

In the order a run uses them:

* :class:`JournalLock` — one run per journal (below).
* :func:`prepare` — :func:`repair_torn_tail`: a run killed mid-write leaves a last line with no
  newline. It is cut off (and kept in ``<journal>.torn`` for the curious) so the next record
  never gets glued to it; every complete line before it stands. Then the resume index is
  loaded from :func:`read_blocks`. A file that is not a journal is refused
  (:func:`not_a_journal`).
* :class:`JournalWriter` — the single writer. Records are written with one ``write`` per batch
  as soon as the sink has no more in hand (so a ``kill -9`` loses at most what was not yet
  handed to the kernel), and ``fsync``-ed at most every ``fsync_interval`` seconds and at
  close (so a power cut loses at most that window; those rows are simply sent again — the
  PUT is idempotent).

The lock: One run per journal: an exclusive ``flock`` on the journal file itself.

The lock is taken on the open journal file, not on a name beside it, so every way of reaching
the same file — a symlink, another relative path, ``..`` through a symlinked directory, a hard
link, a bind mount — meets the same lock. (A lock keyed on the path's name let two runs share
one journal through a symlink or a hard link.)

``flock`` locks belong to the open file, so the kernel drops them when the holder dies — by
``kill -9``, a crash or a reboot: there is no stale lock to detect. After taking the lock the
holder checks that the path still names the locked file: a run that waited on a journal that
was then renamed aside (``--fresh``) or removed takes the file now at the path instead.

A journal that does not exist yet is created empty to be locked (``created`` says so, for a
run that cannot start to remove it again). Who holds the lock (PID, host, start time) is written to
``<journal>.lock`` beside the journal's real path, with the locked file's identity: that file
only names the holder, it is not the lock. Caveat: on some network file systems ``flock`` is
local to one client; keep journals of concurrent machines apart (sharding gives each shard
its own journal).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from bulktag.errors import BulktagError, ExitCode
from bulktag.journal.format import Record, parse
from bulktag.journal.index import ResumeIndex, load_index

# 64 KiB of journal per scan: under the 128 KiB from which cli.py has glibc map each block on
# its own, so a block's buffer comes from the heap again and again instead of a fresh mapping,
# page faults and all, every time.
_BLOCK_BYTES = 1 << 16


class JournalError(BulktagError):
    """The journal cannot be used (not a regular file, unreadable, unwritable)."""


def repair_torn_tail(path: Path) -> int:
    """Cut an unterminated last line off ``path``; return how many bytes were cut (0: none)."""
    with path.open("r+b") as journal:
        size = journal.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        journal.seek(size - 1)
        if journal.read(1) == b"\n":
            return 0
        keep = _end_of_last_complete_line(journal, size)
        journal.seek(keep)
        torn = journal.read()
        with path.with_name(path.name + ".torn").open("ab") as side:
            side.write(torn + b"\n")
        journal.truncate(keep)
        return size - keep


def _end_of_last_complete_line(journal: IO[bytes], size: int) -> int:
    """Offset just past the last newline (0 if none), scanning back in chunks."""
    position = size
    while position > 0:
        start = max(0, position - 65536)
        journal.seek(start)
        chunk = journal.read(position - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


_SNIFF_BYTES = 65536  # how far into a file its first line is looked for
_RECORD_START = b'{"line": '  # how every rendered record begins


def not_a_journal(path: Path) -> str | None:
    """Why the file at ``path`` is not a journal, or None when it is one (raises OSError).

    Judged on its first non-blank line, read at most 64 KiB in (a binary file with no newline
    costs no more): a journal's first line is a record or, when a run was killed while writing
    its very first record, the unterminated start of one. An empty file is a journal with no
    record yet: a run creates its journal before its first record, and a night with nothing
    to tag (an empty input, a shard no row hashed to) leaves it so; report and verify refused
    it, and the morning check failed with exit 2 on a night that went well.
    """
    with path.open("rb") as file:
        head = file.read(_SNIFF_BYTES)
    if not head:
        return None
    if not head.strip():
        return "it holds no journal record"
    first, newline, _ = head.lstrip().partition(b"\n")
    if newline:
        return None if parse(first) is not None else _NOT_A_RECORD
    torn_first_record = len(head) < _SNIFF_BYTES and first.startswith(_RECORD_START)
    return None if torn_first_record else _NOT_A_RECORD


_NOT_A_RECORD = "its first line is not a journal record"


def which_is_not_a_journal(paths: Iterable[Path]) -> str | None:
    """``"<path> is not a journal: <why>"`` for the first of ``paths`` that is not one, or
    None (raises OSError). For commands that read several (report, verify): all are checked
    before any is read, so a wrong one fails in a second, not after an hour of reading."""
    for path in paths:
        problem = not_a_journal(path)
        if problem is not None:
            return f"{path} is not a journal: {problem}"
    return None


def read_blocks(path: Path, size: int = _BLOCK_BYTES) -> Iterator[bytes]:
    """The journal in blocks of about ``size`` bytes, each cut just after a newline.

    A block is completed to its line end with ``readline`` (one copy of the block at most;
    cutting at the last newline and carrying the rest over made two).
    """
    with path.open("rb") as journal:
        while block := journal.read(size):
            if not block.endswith(b"\n"):
                block += journal.readline()
            yield block


@dataclass(slots=True)
class FileStats:
    """What reading one journal met: records, lines that were not, and a torn last line."""

    path: str
    records: int = 0
    unreadable: int = 0
    torn: int = 0


def read_records(path: Path, stats: FileStats) -> Iterator[tuple[int, Record]]:
    """``(journal line number, record)`` for every record of one journal, counting into
    ``stats`` the lines that are not (raises OSError when it cannot be opened or read)."""
    with path.open("rb") as journal:
        for number, raw in enumerate(journal, 1):
            if not raw.strip():
                continue
            record = parse(raw)
            if record is not None:
                stats.records += 1
                yield number, record
            elif raw.endswith(b"\n"):
                stats.unreadable += 1
            else:  # only the last line can lack its newline: a run killed mid-write
                stats.torn += 1


# ── writing ─────────────────────────────────────────────────────────────────────────────────


class JournalReplaced(OSError):
    """The journal's path no longer names the file this run appends to (deleted, moved,
    replaced) or the file was cut shorter than what was written: records would be lost."""


class JournalWriter:
    """Appends records to the journal. Only the engine's sink task calls it.

    At most every ``check_interval`` seconds while records come (one ``stat``), at every
    fsync and at close, it also checks that the journal is still there: that the path names
    the file it opened (st_dev, st_ino) and that the file is no shorter than what was
    written. A journal deleted, moved or replaced mid-run would otherwise take every later
    record with it, and the run would exit 0 with nothing to resume from.
    """

    def __init__(
        self, path: Path, fsync_interval: float = 1.0, check_interval: float = 1.0
    ) -> None:
        self.path = path
        self._file = path.open("ab", buffering=0)
        status = os.fstat(self._file.fileno())
        self._identity = identity(status)
        self._end = status.st_size  # where the file ends after our last write
        self._fsync_interval = fsync_interval
        self._last_fsync = time.monotonic()
        self._unsynced = False
        self._wrote = False  # anything written by this run: then losing the file loses it
        self._cut = False  # a write landed before where our last one ended
        self._check_interval = check_interval
        self._last_check = time.monotonic()

    def write_batch(self, lines: list[bytes]) -> None:
        """Hand a batch to the kernel in one write (raises OSError: disk full, quota, EIO...).

        A write that fails part-way is cut back off, so the journal never keeps half a record.
        """
        start = self._file.tell()
        data = b"".join(lines)
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), start)
            raise
        end = self._file.tell()
        if end < start + len(data):  # appended at an end nearer than ours: cut short
            self._cut = True
        self._end = end
        self._unsynced = self._wrote = True
        if time.monotonic() - self._last_check >= self._check_interval:
            self.check_in_place()  # not only at fsyncs, which may be an hour apart

    def fsync_due(self) -> bool:
        return self._unsynced and time.monotonic() - self._last_fsync >= self._fsync_interval

    def fsync(self) -> None:
        """Sync to disk, after checking the journal is still the one (raises JournalReplaced)."""
        self.check_in_place()
        os.fsync(self._file.fileno())
        self._last_fsync = time.monotonic()
        self._unsynced = False

    def check_in_place(self) -> None:
        """Raise JournalReplaced unless the path still names this file, whole."""
        self._last_check = time.monotonic()
        if _identity_at(self.path) != self._identity:
            raise JournalReplaced(
                0,
                "it was deleted, moved or replaced during the run; the records written "
                "since then are not in it (run again to send those rows again)",
            )
        if self._cut or os.fstat(self._file.fileno()).st_size < self._end:
            raise JournalReplaced(
                0,
                "it was cut shorter during the run; records written to it are gone "
                "(run again to send those rows again)",
            )

    def close(self) -> None:
        """Fsync what is unsynced and close, after checking the journal is in place if this
        run wrote to it; calling it again does nothing."""
        if self._file.closed:
            return
        try:
            if self._unsynced:
                self.fsync()
            elif self._wrote:
                self.check_in_place()
        finally:
            self._file.close()


def prepare(
    path: Path, fresh: bool, lock: JournalLock | None = None
) -> tuple[ResumeIndex, int, Path | None]:
    """Get the journal at ``path`` ready to append to.

    Returns the resume index, the bytes cut off a torn last line, and where an old journal was
    moved with ``fresh`` (never deleted; an empty one is simply reused). ``lock``, the run's
    lock on the journal, follows the new file when the old one is moved aside (LockHeld if
    another run took it first). Raises JournalError with a one-line reason.
    """
    moved = None
    try:
        if path.exists() and not path.is_file():
            raise JournalError(f"{path} is not a regular file")
        if fresh and path.exists() and path.stat().st_size > 0:
            moved = _move_aside(path)
            if lock is not None:
                lock.relock()
        if not path.exists():
            return ResumeIndex.empty(), 0, moved
        _refuse_what_is_not_a_journal(path)
        torn = repair_torn_tail(path)
        return load_index(read_blocks(path)), torn, moved
    except OSError as exc:
        raise JournalError(f"cannot use journal {path}: {exc.strerror or exc}") from None


def _refuse_what_is_not_a_journal(path: Path) -> None:
    """A journal (empty, or its first line a record) is appended to; anything else is refused,
    or the run would append records to (say) a CSV file and resume from its lines."""
    problem = not_a_journal(path)
    if problem is not None:
        raise JournalError(
            f"{path} is not a bulktag journal: {problem}; name the journal with --results "
            "(or move this file away)"
        )


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{stamp}-{counter}{path.suffix}")
        counter += 1
    path.rename(target)
    return target


# ── the lock ────────────────────────────────────────────────────────────────────────────────

Identity = tuple[int, int]  # (st_dev, st_ino): the file, whatever path reaches it


class LockHeld(BulktagError):
    """Another live process holds the journal's lock."""

    exit_code = ExitCode.LOCKED
    event = "journal_locked"


def identity(status: os.stat_result) -> Identity:
    return status.st_dev, status.st_ino


class JournalLock:
    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.path = owner_file(journal)  # who holds the lock: informative only
        self._fd: int | None = None
        self.created = False  # this lock created the (empty) journal
        self.identity: Identity | None = None

    def acquire(self, wait: float = 0.0, poll: float = 0.25) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise LockHeld if it stays taken.

        Raises OSError when the journal cannot be opened or is not a regular file."""
        deadline = time.monotonic() + wait
        while not self._try_lock():
            if time.monotonic() >= deadline:
                raise LockHeld(f"another run is using the journal {self._held()}")
            time.sleep(poll)
        self._write_owner()

    def relock(self) -> None:
        """The journal at the path was replaced (``--fresh`` moved it aside): lock the file
        now at the path, then let go of the old one. Raises LockHeld if another run got it."""
        old = self._fd
        self._fd = None
        try:
            if not self._try_lock():
                raise LockHeld(f"another run took the journal {self._held()}")
        finally:
            if old is not None:
                os.close(old)
        self._write_owner()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> JournalLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _try_lock(self) -> bool:
        """One attempt: open (or create) the journal, flock it, check the path still names it
        (else it was renamed or removed while we waited: open what is there now)."""
        while True:
            fd, created = _open_regular(self.journal)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            mine = identity(os.fstat(fd))
            if _identity_at(self.journal) == mine:
                self._fd, self.identity, self.created = fd, mine, created
                return True
            os.close(fd)

    def _write_owner(self) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "file": list(self.identity or ()),
        }
        with contextlib.suppress(OSError):  # a read-only directory: the lock still holds
            self.path.write_text(json.dumps(owner) + "\n")

    def _held(self) -> str:
        return f"{self.journal}: {self.journal} is held by {self._holder()}"

    def _holder(self) -> str:
        """Who holds it: the owner file, if it speaks of the very file that is locked (a hard
        link's owner file has another name), else the kernel's table of locks."""
        held = _identity_at(self.journal)
        try:
            owner = json.loads(self.path.read_bytes() or b"{}")
            if tuple(owner["file"]) == held:
                return f"pid {owner['pid']} on {owner['host']} since {owner['since']}"
        except (ValueError, KeyError, TypeError, OSError):
            pass
        pid = _flock_holder(held) if held else None
        return f"pid {pid}" if pid else "another process"


def _flock_holder(file: Identity) -> int | None:
    """The PID holding a flock on ``file``, from Linux's /proc/locks (None elsewhere)."""
    dev, ino = file
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for entry in table.splitlines():
        fields = entry.split()  # "1: FLOCK  ADVISORY  WRITE 1093 fd:01:123456 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return int(fields[4]) if fields[4].isdigit() else None
    return None


def owner_file(journal: Path) -> Path:
    """``<journal>.lock`` beside the journal's real path (symlinks and ``..`` resolved)."""
    real = journal.resolve()
    return real.with_name(real.name + ".lock")


def _open_regular(path: Path) -> tuple[int, bool]:
    """Open, creating it if needed (and saying so), without blocking on a FIFO; refuse
    anything that is not a regular file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:  # the usual case; a dangling symlink lands here too
        try:
            fd, created = os.open(path, flags), False
        except FileNotFoundError:
            fd, created = os.open(path, flags | os.O_CREAT, 0o644), True
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(0, "not a regular file", str(path))
    return fd, created


def _identity_at(path: Path) -> Identity | None:
    try:
        return identity(os.stat(path))
    except OSError:
        return None
