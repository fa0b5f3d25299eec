"""One run per journal: an exclusive ``flock`` on ``<journal>.lock``.

``flock`` locks belong to the open file, so the kernel drops them when the holder dies — by
``kill -9``, a crash or a reboot. A lock left by a dead process is therefore never in the way:
there is no stale lock to detect, and no PID file to clean up. (The PID, host and start time
written into the lock file are only there to say *who* holds it.) Caveat: on some network file
systems ``flock`` is local to one client; keep journals of concurrent machines apart (sharding
gives each shard its own journal).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path


class LockHeld(Exception):
    """Another live process holds the journal's lock."""


class JournalLock:
    def __init__(self, journal: Path) -> None:
        self.path = journal.with_name(journal.name + ".lock")
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0, poll: float = 0.25) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise LockHeld if it stays taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise LockHeld(f"{self.path} is held by {holder}") from None
                time.sleep(poll)
        self._fd = fd
        self._write_owner(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays for the next run
            self._fd = None

    def __enter__(self) -> JournalLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _write_owner(fd: int) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {owner['pid']} on {owner['host']} since {owner['since']}"
        except (ValueError, KeyError, OSError):
            return "another process"
