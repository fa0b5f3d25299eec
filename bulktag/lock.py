"""One run per journal: an exclusive ``flock`` on the journal file itself.

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
from datetime import UTC, datetime
from pathlib import Path

Identity = tuple[int, int]  # (st_dev, st_ino): the file, whatever path reaches it


class LockHeld(Exception):
    """Another live process holds the journal's lock."""


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
                raise LockHeld(f"{self.journal} is held by {self._holder()}")
            time.sleep(poll)
        self._write_owner()

    def relock(self) -> None:
        """The journal at the path was replaced (``--fresh`` moved it aside): lock the file
        now at the path, then let go of the old one. Raises LockHeld if another run got it."""
        old = self._fd
        self._fd = None
        try:
            if not self._try_lock():
                raise LockHeld(f"{self.journal} is held by {self._holder()}")
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
