"""Hand-offs between the engine's tasks without a trip through the event loop when possible.

anyio's ``MemoryObjectSendStream.send`` and ``...ReceiveStream.receive`` begin with a
checkpoint (a yield to the event loop) even when the item can pass at once. At thousands of
rows a second those yields were a large share of the engine's CPU (measured by
``benchmarks/engine_overhead.py``). These helpers try the non-blocking call first and only
await when the stream is full or empty, which is exactly when waiting is needed; every task
on this path awaits real I/O each row, so no loop can run long without yielding.

:class:`ThreadFeed` brings rows read in a thread (a pipe's) into the loop as they come.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.lowlevel import EventLoopToken
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")


async def put(stream: MemoryObjectSendStream[T], item: T) -> None:
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def get(stream: MemoryObjectReceiveStream[T]) -> T:
    """The next item; raises ``anyio.EndOfStream`` once the stream is closed and drained."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return await stream.receive()


class ThreadFeed(Generic[T]):
    """Chunks made by a blocking iterator — the rows of each read of a pipe — in a thread of
    their own, for the event loop.

    Each chunk is handed over as soon as it is made, so a row that has arrived is on its way
    whatever the producer does next (pauses, keeps the pipe open, never closes it: ``tail
    -f``); a small bounded buffer of chunks is the backpressure, so memory stays flat. The
    thread is a daemon and nobody ever waits for it: a run that stops (a signal, a time limit)
    returns without waiting for the producer to write or close, and the process can exit
    while the thread still waits in its read.
    """

    def __init__(self, chunks: Iterator[list[T]], buffer: int = 4) -> None:
        self._chunks = chunks
        self._send, self._receive = anyio.create_memory_object_stream[list[T] | BaseException](
            buffer
        )
        self._thread: threading.Thread | None = None
        self._closed = False

    async def next_batch(self, limit: int, wait: float = math.inf) -> list[T]:
        """What has been read and not yet taken: the next chunk, waiting for it at most
        ``wait`` seconds, then more chunks only while they are already there (up to about
        ``limit`` items). An empty list at the end of the input or when the wait is over."""
        if self._thread is None:
            self._start(anyio.lowlevel.current_token())
        batch: list[T] = []
        with anyio.move_on_after(wait):
            try:
                batch = _unpacked(await get(self._receive))
            except anyio.EndOfStream:
                return []
        while 0 < len(batch) < limit:
            try:
                batch += _unpacked(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        return batch

    def close(self) -> None:
        """No more chunks are wanted: the thread ends at its next hand-over."""
        self._closed = True
        self._receive.close()

    def _start(self, token: EventLoopToken) -> None:
        self._thread = threading.Thread(
            target=self._pump, args=(token,), name="bulktag-input", daemon=True
        )
        self._thread.start()

    def _pump(self, token: EventLoopToken) -> None:
        """The thread: read, hand over, repeat. An error of the reading goes to the loop."""
        try:
            for chunk in self._chunks:
                if self._closed:
                    return
                if chunk:
                    anyio.from_thread.run(self._send.send, chunk, token=token)
        except BaseException as exc:  # handed to the loop, which raises it
            if not self._closed:
                with contextlib.suppress(BaseException):
                    anyio.from_thread.run(self._send.send, exc, token=token)
        finally:
            with contextlib.suppress(BaseException):  # the loop may be gone already
                anyio.from_thread.run_sync(self._send.close, token=token)


def _unpacked(item: list[T] | BaseException) -> list[T]:
    if isinstance(item, BaseException):
        raise item
    return item
