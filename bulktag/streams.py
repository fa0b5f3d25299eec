"""Hand-offs between the engine's tasks without a trip through the event loop when possible.

anyio's ``MemoryObjectSendStream.send`` and ``...ReceiveStream.receive`` begin with a
checkpoint (a yield to the event loop) even when the item can pass at once. At thousands of
rows a second those yields were a large share of the engine's CPU (commit ec5e8f9: with the
journal line assembled by hand, 32.2 -> 25.4-26.3 us a row, the engine with an instant
sender, when rows went through three streams). These helpers try the non-blocking call
first and only await when the stream is full or empty, which is exactly when waiting is
needed; every task on this path awaits real I/O each row, so no loop can run long without
yielding.
"""

from __future__ import annotations

from typing import TypeVar

import anyio
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
