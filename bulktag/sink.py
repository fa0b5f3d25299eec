"""The journal's single writer, fed by direct calls instead of a stream.

Every settled row is recorded by a plain method call (:meth:`JournalSink.record`) from the
task that settled it — a worker, or the producer for an invalid row. The call counts the
result, renders its line into a list, and feeds the failure breaker; one writer task
(:meth:`JournalSink.run`) wakes when lines are waiting and hands all of them to the kernel in
one ``write``, fsyncing now and then. Only that task touches the file.

A stream between the workers and the writer cost two awaits and the stream's bookkeeping for
every row; with one event loop thread, a list is all the hand-off needs. Memory stays bounded:
past ``limit`` lines waiting (the writer is stuck in an fsync on a slow disk), recording tasks
wait in :meth:`room` until the writer has caught up.

Nothing settled is lost and nothing unsettled is recorded: when the run ends — finished,
stopped or aborted — :meth:`close` wakes the writer for a last write and closes the journal.
A write error stops recording (a journal with holes would lie) and aborts the run.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.to_thread

from bulktag.journal import JournalWriter, render
from bulktag.model import Outcome, Result
from bulktag.summary import FailureBreaker, Tally

_OK = Outcome.OK
DEFAULT_LIMIT = 4096  # lines waiting for the writer before recording tasks wait (~1 MB)


class JournalSink:
    def __init__(
        self,
        journal: JournalWriter,
        tally: Tally,
        breaker: FailureBreaker,
        abort: Callable[[str], None],
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self._journal = journal
        self._tally = tally
        self._breaker = breaker
        self._abort = abort
        self.limit = limit
        self._lines: list[bytes] = []
        self._waiting = anyio.Event()  # set when lines wait for the writer (or at close)
        self._written = anyio.Event()  # set after each write, for tasks waiting for room
        self._closing = False
        self.broken = False  # a write failed: nothing more is recorded

    @property
    def full(self) -> bool:
        return len(self._lines) >= self.limit

    def record(self, result: Result) -> None:
        """Count ``result`` and queue its journal line (the writer wakes for it)."""
        if self.broken:
            return
        self._tally.add(result)
        lines = self._lines
        lines.append(render(result))
        if len(lines) == 1:
            self._waiting.set()
        if result.outcome is _OK and self._breaker.clear:
            return  # the common case: nothing for the breaker to learn
        reason = self._breaker.observe(result)
        if reason is not None:
            self._abort(reason)

    async def room(self) -> None:
        """Wait until the writer has taken the lines waiting (call it when :attr:`full`)."""
        while self.full and not self.broken:
            self._waiting.set()
            await self._written.wait()

    async def run(self) -> None:
        """The writer: one write per wake-up, an fsync when due, until :meth:`close`."""
        while True:
            await self._waiting.wait()
            self._waiting = anyio.Event()
            await self._write()
            if self._closing and not self._lines:
                break
        await self._close_journal()

    def close(self) -> None:
        """No more records: the writer writes what is left, closes the journal and returns."""
        self._closing = True
        self._waiting.set()

    async def _write(self) -> None:
        lines, self._lines = self._lines, []
        try:
            if lines and not self.broken:
                self._journal.write_batch(lines)
            if self._journal.fsync_due():
                await anyio.to_thread.run_sync(self._journal.fsync)
        except OSError as exc:
            self._failed(exc)
        finally:
            written, self._written = self._written, anyio.Event()
            written.set()

    async def _close_journal(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._journal.close)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.broken = True
        self._lines.clear()
        self._abort(f"cannot write the journal {self._journal.path}: {exc.strerror or exc}")
