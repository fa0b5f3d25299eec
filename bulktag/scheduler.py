"""Per-image serialization: never two requests in flight for one image.

Glance saves a tag by rewriting the image's whole tag list with no version check, so two
concurrent PUTs on one image can lose a tag (API-FACTS.md, "Lost updates"). The scheduler
hands a row to the worker pool only when no other row of its image is out; rows of a busy
image are *parked* behind it, and the worker that finishes a row takes the next parked row of
the same image itself (:meth:`release`). So input sorted by image does not stall the pool:
the pool keeps working on the other images it finds further down the input.

Parked rows are bounded (``max_parked``): when the limit is hit, the producer waits — that is
the backpressure that keeps memory flat even when one image has a thousand tags.

Batching (IMS takes up to ten tags of one image in one call): a worker that holds a row also
takes the rows parked behind it, up to ``limit`` (:meth:`gather`), and again just before the
request goes (:meth:`top_up`): rows that arrived while it waited for its turn join it. Two rows
setting the same key never share a batch (IMS refuses a body with a key twice; and the later
row must win), so a batch stops at a repeated key; an image's rows are never reordered. If the
input is still inside this image's rows (the producer's last row was of this image) the worker
may *linger* a few milliseconds for siblings that are on their way.

The read-ahead window (``read_ahead`` > 0, batching only): an image's rows are grouped only if
they are in memory together, and an input sorted by key puts an image's rows far apart. So
when batching, the ready stream is as deep as the window and the rows waiting in it count
against the same bound as the parked ones: the producer reads ahead until ``read_ahead`` rows
wait (first rows of idle images, in input order, plus rows parked behind them), and the rows
that arrive for an image before its request goes ride along with it. Without batching the
ready stream stays as short as the pool, so a Glance run holds no more rows than before.

How the window holds its rows (batching only; a million-row window must fit the memory target):
an image is keyed by a lowercase UUID's 128-bit int, any other id as it is (:func:`_held_as`).
The ready stream carries one shared object an image, not a row: the images it stands for wait
in order in an array, a UUID as two 64-bit words (:meth:`_queue`; a worker's :meth:`taken`
takes the first), and their rows wait in a :class:`~bulktag.keyset.HeldMap` (a UUID image
with up to two rows in one 32-byte slot of an array; anything else in a dict) as *entries*:
one 64-bit word packing the line number with the codes of the key and value in a table of the
strings the
window shares (:meth:`_pack`), or, once that table is full, a ``(line, key, value)`` tuple. An
image's words wait as one int, its first row in the low 64 bits (up to :data:`_PACKED` rows:
one object an image, not a list and an int a row; 0 when none wait); a longer chain, or one
with a tuple, is a list of entries. A queued UUID image with one or two rows costs ~16 bytes in
the queue, 8 in the stream and a 32-byte slot of a table 50-75% full: ~70 bytes, against ~130
for an int key, an int of entries and a dict slot, and ~240 for a Row in the stream.
:meth:`taken` turns the image a worker received into its first row, and rows leave the window
as :class:`Row` again, with the image id of the key (:func:`_image_of`).
"""

from __future__ import annotations

import re
from array import array
from collections import deque
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream as ObjectSendStream

from bulktag.keyset import HeldMap
from bulktag.model import Row
from bulktag.streams import put

# A held row in the window: line << 26 | key code << 13 | value code (codes index the shared
# strings, 0 = no value; never 0 itself: a key's code is at least 1), or (line, key, value)
# when a string did not fit the table or the line not in 38 bits.
_Entry = int | tuple[int, str, str | None] | Row
_CODE_BITS = 13
_CODE_MASK = (1 << _CODE_BITS) - 1
_LINE_SHIFT = 2 * _CODE_BITS
_WORD_BITS = 64  # an image's waiting entries: one int, _WORD_BITS apiece, the first lowest
_WORD = (1 << _WORD_BITS) - 1
_MAX_LINE = 1 << (_WORD_BITS - _LINE_SHIFT)
# Entries an image's int holds at most; past that a list (an int grows by copying: a long
# chain of one image's rows would cost its length squared).
_PACKED = 8
_PACKED_BITS = (_PACKED - 1) * _WORD_BITS  # an int this long or shorter takes one more
# Distinct keys and values the window shares: 8191 strings, a few hundred KiB at most.
_MAX_SHARED = _CODE_MASK
_ABSENT = object()
_QUEUED = "queued"  # what the ready stream carries with read_ahead: see ImageScheduler._queue
_UUID_LIMIT = 1 << 128
_COMPACT_AFTER = 1 << 14  # words taken from the queue's array before it drops them
_Busy = HeldMap | dict[str | int, Any]


class ImageScheduler:
    def __init__(
        self,
        ready: ObjectSendStream[Any],
        max_parked: int,
        serialize: bool = True,
        *,
        read_ahead: int = 0,
    ):
        """``read_ahead`` > 0: the ready stream holds up to that many images (each standing for
        its first row: a worker passes what it receives to :meth:`taken`), and the bound on
        waiting rows (then ``read_ahead``, not ``max_parked``) counts them too. Otherwise the
        stream carries rows."""
        self._ready = ready
        self._max_held = read_ahead or max_parked
        self._count_ready = read_ahead > 0
        self._serialize = serialize
        # image → rows parked behind its in-flight row (None: one in flight, none parked yet).
        # With read_ahead, entries (_pack) packed in an int (0: none parked) or in a list, and
        # an image still queued for a worker holds its first row there too, first.
        self._busy: dict[str | int, Any] = {}
        # With read_ahead, a HeldMap instead (_part): a UUID image with up to two rows
        # waiting in one 32-byte slot of an array, not a dict entry, an int key and an int.
        self._held: _Busy = HeldMap() if read_ahead > 0 else self._busy
        # With read_ahead, the ready stream's items are all _QUEUED: the images they stand for
        # wait here, in order (_queue), and a worker's taken() takes the first.
        self._order = array("Q")
        self._head = 0
        self._order_others: deque[str | int] = deque()
        self._parked = 0
        self._queued = 0  # rows in the ready stream, counted only with read_ahead
        self._codes: dict[str, int] = {}  # keys and values held rows share → their codes
        self._texts: list[str | None] = [None]  # code → string (0: no value)
        self._room: anyio.Event | None = None  # set while the producer waits for room
        self._last_image: str | None = None  # image of the row the producer handed in last
        self._arrived: anyio.Event | None = None  # set while a worker lingers for siblings
        self._closed = False

    @property
    def parked(self) -> int:
        return self._parked

    @property
    def held(self) -> int:
        """Rows handed in and waiting (parked, or with read_ahead also queued for a worker)."""
        return self._parked + self._queued

    async def submit(self, row: Row) -> None:
        """Producer side: dispatch ``row`` now, or park it behind its image's in-flight row."""
        if not self.submit_nowait(row):
            await self.submit_waiting(row)

    def submit_nowait(self, row: Row) -> bool:
        """:meth:`submit` when it needs no wait (nearly always): True if ``row`` was taken.

        False when there is no room (the parking is full, or the pool's ready stream is):
        the caller then awaits :meth:`submit`, which waits for room. A plain call, because
        the producer hands over every row of the input.
        """
        if not self._serialize or self._parked + self._queued >= self._max_held:
            return False
        if self._count_ready:
            return self._hold(row)
        image_id = row.image_id
        self._last_image = image_id  # a lingering worker expects rows of it
        if image_id in self._busy:
            waiting = self._busy[image_id]
            if waiting is None:
                waiting = self._busy[image_id] = []
            waiting.append(row)
            self._parked += 1
        elif self._offer(row):
            self._busy[image_id] = None
        else:
            return False
        if self._arrived is not None:
            self._wake_lingering()
        return True

    def _hold(self, row: Row) -> bool:
        """:meth:`submit_nowait` with read_ahead, once there is room: hold ``row`` compactly."""
        self._last_image = row.image_id  # a lingering worker expects rows of it
        image_id = _held_as(row.image_id)
        busy = self._held
        held = busy.get(image_id, _ABSENT)  # entries packed in an int (0: none), or a list
        if held is not _ABSENT:
            entry = self._pack(row)
            if type(held) is list:
                held.append(entry)
            elif type(held) is int and type(entry) is int and held.bit_length() <= _PACKED_BITS:
                busy[image_id] = held | entry << (-(-held.bit_length() // _WORD_BITS) * _WORD_BITS)
            else:  # too long for an int, or a tuple in it: a list from now on
                busy[image_id] = [*_entries(held), entry]
            self._parked += 1
        elif self._offer(_QUEUED):
            self._queue(image_id)
            busy[image_id] = self._pack(row)
            self._queued += 1
        else:
            return False
        if self._arrived is not None:
            self._wake_lingering()
        return True

    def _offer(self, item: Row | str) -> bool:
        """Hand ``item`` to the workers' stream if it has room; False if it is full."""
        try:
            self._ready.send_nowait(item)
        except anyio.WouldBlock:
            return False
        return True

    async def submit_waiting(self, row: Row) -> None:
        """:meth:`submit` after :meth:`submit_nowait` said no: wait for room, then hand over."""
        if not self._serialize:  # testing switch (--unsafe-no-image-lock): shows the race
            await put(self._ready, row)
            return
        self._last_image = row.image_id  # before waiting: a lingering worker expects it
        while self._parked + self._queued >= self._max_held:
            self._room = anyio.Event()
            await self._room.wait()
        key = self._key(row.image_id)
        if key in self._part(key):
            self.submit_nowait(row)  # parking has room now: that cannot fail
            return
        self._wake_lingering()
        if self._count_ready:
            self._part(key)[key] = self._pack(row)
            self._queued += 1
            await put(self._ready, _QUEUED)
            self._queue(key)  # no await since the put: no worker took the item yet
            return
        self._busy[row.image_id] = None
        await put(self._ready, row)

    def _part(self, key: str | int) -> _Busy:
        """What holds the image keyed ``key``: with read_ahead the HeldMap, else ``_busy``."""
        return self._held

    def _key(self, image_id: str) -> str | int:
        """What ``_busy`` keys ``image_id`` by: with read_ahead :func:`_held_as`, else itself."""
        return _held_as(image_id) if self._count_ready else image_id

    def _pack(self, row: Row) -> _Entry:
        """``row`` as the window holds it (its image is the key it is held under): an int,
        when its key and value are in the table of shared strings or fit in it (a window of a
        million rows repeats a few keys and values), else a tuple of them."""
        tag = self._code(row.tag)
        value = 0 if row.value is None else self._code(row.value)
        if tag > 0 and value >= 0 and 0 <= row.line < _MAX_LINE:
            return row.line << _LINE_SHIFT | tag << _CODE_BITS | value
        return (row.line, row.tag, row.value)

    def _code(self, text: str) -> int:
        """``text``'s code in the shared table (added if there is room), or -1."""
        code = self._codes.get(text, -1)
        if code < 0 and len(self._texts) <= _MAX_SHARED:
            code = self._codes[text] = len(self._texts)
            self._texts.append(text)
        return code

    def _unpack(self, image_id: str, entry: _Entry) -> Row:
        if type(entry) is int:
            texts = self._texts
            tag = texts[entry >> _CODE_BITS & _CODE_MASK]
            assert tag is not None
            return Row(entry >> _LINE_SHIFT, image_id, tag, texts[entry & _CODE_MASK])
        if type(entry) is Row:  # held without read_ahead: as it came
            return entry
        line, tag, value = entry  # type: ignore[misc]
        return Row(line, image_id, tag, value)

    def taken(self, item: Any = None) -> Row:
        """Worker side: it received ``item`` from the ready stream (it no longer waits there);
        returns the row to work on. With read_ahead ``item`` stands for the image queued first
        (:meth:`_queue`), whose first row leaves the window now; else it is that row."""
        if not self._count_ready:
            return item  # type: ignore[no-any-return]
        self._queued -= 1
        self._make_room()
        key = self._dequeue()
        # the rest stay parked
        return self._unpack(_image_of(key), _first(self._held, key))

    def _queue(self, key: str | int) -> None:
        """Append the image keyed ``key`` to the queue that the ready stream's items stand for:
        a UUID's two words in an array (16 bytes, not its 48-byte int), another key in a deque
        (its place in the array two zero words)."""
        if type(key) is int and 0 < key < _UUID_LIMIT:
            self._order.append(key >> 64)
            self._order.append(key & _WORD)
        else:
            self._order.append(0)
            self._order.append(0)
            self._order_others.append(key)

    def _dequeue(self) -> str | int:
        """The key of the image queued first (:meth:`_queue`), out of the queue."""
        order, head = self._order, self._head
        hi, lo = order[head], order[head + 1]
        head += 2
        if head >= _COMPACT_AFTER and head * 2 >= len(order):
            del order[:head]  # the taken half: one move per half, not one per image
            head = 0
        self._head = head
        if hi or lo:
            return hi << 64 | lo
        return self._order_others.popleft()

    async def gather(self, first: Row, limit: int, linger: float = 0.0) -> list[Row]:
        """Worker side: ``first`` and up to ``limit - 1`` rows parked behind it, in input order.

        The image stays busy; the caller owns every row returned. With ``linger`` > 0, wait up
        to that long for more rows of the image while the input is still at that image.
        """
        batch = [first]
        if limit <= 1 or not self._serialize:
            return batch
        if self._fill(batch, limit) or linger <= 0:
            return batch
        with anyio.move_on_after(linger):
            while self._expecting(first.image_id):
                self._arrived = self._arrived or anyio.Event()
                await self._arrived.wait()
                if self._fill(batch, limit):
                    return batch
        self._fill(batch, limit)
        return batch

    def top_up(self, batch: list[Row], limit: int) -> None:
        """Worker side, just before ``batch`` is sent: add the rows of its image that were
        parked since it was gathered, up to ``limit`` (the list grows in place)."""
        if len(batch) < limit and self._serialize:
            self._fill(batch, limit)

    def _fill(self, batch: list[Row], limit: int) -> bool:
        """Move parked rows of the batch's image into it; True when it can grow no more."""
        image_id = batch[0].image_id
        key = self._key(image_id)
        part = self._part(key)
        waiting = part[key]
        if not waiting:  # None or 0: nothing parked (an empty list goes on below)
            return False
        if type(waiting) is int:
            return self._fill_packed(batch, limit, part, key, waiting)
        keys = {row.tag for row in batch}
        room = limit - len(batch)
        taken = 0
        unpack = self._unpack
        for entry in waiting:
            if taken == room:
                break
            row = unpack(image_id, entry)
            if row.tag in keys:  # that key again: a later request
                break
            keys.add(row.tag)
            batch.append(row)
            taken += 1
        if taken:
            del waiting[:taken]  # one shift of the list per batch, not one per row
            self._parked -= taken
            self._make_room()
        return len(batch) >= limit or (bool(waiting) and taken < room)

    def _fill_packed(
        self, batch: list[Row], limit: int, part: _Busy, key: str | int, words: int
    ) -> bool:
        """:meth:`_fill` for entries packed in an int (held under ``key`` in ``part``)."""
        image_id = batch[0].image_id
        keys = {row.tag for row in batch}
        room = limit - len(batch)
        taken = 0
        while words and taken < room:
            row = self._unpack(image_id, words & _WORD)
            if row.tag in keys:  # that key again: a later request
                break
            keys.add(row.tag)
            batch.append(row)
            words >>= _WORD_BITS
            taken += 1
        if taken:
            part[key] = words
            self._parked -= taken
            self._make_room()
        return len(batch) >= limit or (bool(words) and taken < room)

    def _expecting(self, image_id: str) -> bool:
        return not self._closed and self._last_image == image_id

    def _wake_lingering(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    def _make_room(self) -> None:
        if self._room is not None:  # the producer is waiting for room: wake it
            self._room.set()
            self._room = None

    def release(self, image_id: str) -> Row | None:
        """Worker side: the row of ``image_id`` is settled; return the image's next row, if any.

        The caller then owns that row (the image stays busy); None means the image is free.
        """
        if not self._serialize:
            return None
        if not self._count_ready:
            waiting = self._busy[image_id]
            if not waiting:  # None, or a list emptied earlier
                del self._busy[image_id]
                return None
            self._parked -= 1
            self._make_room()
            return waiting.pop(0)  # type: ignore[no-any-return]
        key = _held_as(image_id)
        busy = self._held
        if not busy[key]:  # 0, or a list emptied earlier
            del busy[key]
            return None
        self._parked -= 1
        self._make_room()
        return self._unpack(image_id, _first(busy, key))

    def close(self) -> None:
        """No more rows will come: workers end once the ready rows and their chains are done."""
        self._closed = True
        self._wake_lingering()
        self._ready.close()


def _entries(held: Any) -> list[_Entry]:
    """An image's waiting entries as a list: from an int (0: none), or a lone tuple entry."""
    if type(held) is not int:
        return [held]
    entries: list[_Entry] = []
    while held:
        entries.append(held & _WORD)
        held >>= _WORD_BITS
    return entries


def _first(busy: _Busy, key: str | int) -> _Entry:
    """Take the first entry waiting under ``key`` (there is one) out of the window."""
    held = busy[key]
    if type(held) is int:
        busy[key] = held >> _WORD_BITS
        return held & _WORD
    if type(held) is list:
        return held.pop(0)  # type: ignore[no-any-return]
    busy[key] = 0  # a lone tuple
    return held  # type: ignore[no-any-return]


# An image id as a UUID is spelt by the service (lowercase, with hyphens): what _held_as packs.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _held_as(image_id: str) -> str | int:
    """The key the window holds ``image_id`` under: a lowercase UUID as its 128-bit int (48
    bytes, against 88 for the 36-character string), any other id as it is. One image, one key:
    a str and an int are never equal, and only the lowercase spelling becomes an int."""
    if len(image_id) == 36 and _UUID.fullmatch(image_id):
        return int(image_id.replace("-", ""), 16)
    return image_id


def _image_of(key: str | int) -> str:
    """The image id a window's key stands for (:func:`_held_as` undone)."""
    if type(key) is str:
        return key
    digits = f"{key:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
