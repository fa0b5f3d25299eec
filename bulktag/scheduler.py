"""Per-image serialization: never two requests in flight for one image.

Glance saves a tag by rewriting the image's whole tag list with no version check, so two
concurrent PUTs on one image can lose a tag (API-FACTS.md, "Lost updates"). The scheduler
hands a row to the worker pool only when no other row of its image is out; rows of a busy
image are *parked* behind it, and the worker that finishes a row takes the next parked row of
the same image itself (:meth:`release`). So input sorted by image does not stall the pool:
the pool keeps working on the other images it finds further down the input.

Parked rows are bounded (``max_parked``): when the limit is hit, the producer waits — that is
the backpressure that keeps memory flat even when one image has a thousand tags.
"""

from __future__ import annotations

from collections import deque

import anyio
from anyio.streams.memory import MemoryObjectSendStream as ObjectSendStream

from bulktag.model import Row


class ImageScheduler:
    def __init__(self, ready: ObjectSendStream[Row], max_parked: int, serialize: bool = True):
        self._ready = ready
        self._max_parked = max_parked
        self._serialize = serialize
        self._busy: dict[str, deque[Row]] = {}  # image → rows parked behind its in-flight row
        self._parked = 0
        self._room: anyio.Event | None = None  # set while the producer waits for room

    @property
    def parked(self) -> int:
        return self._parked

    async def submit(self, row: Row) -> None:
        """Producer side: dispatch ``row`` now, or park it behind its image's in-flight row."""
        if not self._serialize:  # testing switch (--unsafe-no-image-lock): shows the race
            await self._ready.send(row)
            return
        while self._parked >= self._max_parked:
            self._room = anyio.Event()
            await self._room.wait()
        waiting = self._busy.get(row.image_id)
        if waiting is None:
            self._busy[row.image_id] = deque()
            await self._ready.send(row)
        else:
            waiting.append(row)
            self._parked += 1

    def release(self, image_id: str) -> Row | None:
        """Worker side: the row of ``image_id`` is settled; return the image's next row, if any.

        The caller then owns that row (the image stays busy); None means the image is free.
        """
        if not self._serialize:
            return None
        waiting = self._busy[image_id]
        if not waiting:
            del self._busy[image_id]
            return None
        self._parked -= 1
        if self._room is not None:  # the producer is waiting for room: wake it
            self._room.set()
            self._room = None
        return waiting.popleft()

    def close(self) -> None:
        """No more rows will come: workers end once the ready rows and their chains are done."""
        self._ready.close()
