"""A compact set of 64-bit fingerprints: the pairs already met in this run's input.

A Python ``set`` of 128-bit ints costs ~80 bytes a key (a 44-byte int object plus the table
slot), which made a fresh run's memory grow by ~80 MB per million pairs. Here the keys live in
one ``array('Q')`` with open addressing and linear probing: 8 bytes a slot, at most two thirds
full, so 12-24 bytes a key.

Only the low 64 bits of a key are kept. Two different pairs sharing them (about 3 chances in a
million over ten million distinct pairs) would make the second look like a repeat of the first
and skip it for this run; the row is then not in the journal, so the next run — whose resume
index keeps all 128 bits — sends it. A collision delays a row, it never loses one.
"""

from __future__ import annotations

from array import array

_LOW_64 = (1 << 64) - 1
_EMPTY = 0  # a fingerprint of 0 is stored as 1: slot value 0 means "free"


class KeySet:
    def __init__(self, capacity: int = 1024) -> None:
        size = 8
        while size * 2 < capacity * 3:
            size <<= 1
        self._slots = array("Q", [_EMPTY]) * size
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: int) -> bool:
        """Add ``key``; True if it was not there yet, False if it was (a repeat)."""
        fingerprint = (key & _LOW_64) or 1
        slots, mask = self._slots, self._mask
        index = fingerprint & mask  # SipHash's low bits are uniformly spread
        while True:
            held = slots[index]
            if held == _EMPTY:
                break
            if held == fingerprint:
                return False
            index = (index + 1) & mask
        slots[index] = fingerprint
        self._count += 1
        if self._count * 3 > len(slots) * 2:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = slots = array("Q", [_EMPTY]) * (len(old) * 2)
        self._mask = mask = len(slots) - 1
        for fingerprint in old:
            if fingerprint != _EMPTY:
                index = fingerprint & mask
                while slots[index] != _EMPTY:
                    index = (index + 1) & mask
                slots[index] = fingerprint


class KeyMap:
    """A compact map of 64-bit fingerprints to 64-bit fingerprints: :class:`KeySet`'s table
    with a second array for the values, 16 bytes a slot (a ``dict`` of 128-bit ints costs
    ~150 bytes an entry: ~150 MB for an IMS run's million slots).

    Keys and values keep their low 64 bits only (:func:`low64`); a caller compares values in
    that form. A collision of keys makes two slots one: at worst a row looks like a repeat and
    waits for the next run, as with :class:`KeySet`.

    The table is cut in 16 by a key's top bits, each part growing on its own: while a table
    doubles it holds the old and the new arrays, +50%; a part doubling adds 1/16 of that.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._parts = [_KeyMapPart(capacity // _PARTS) for _ in range(_PARTS)]

    def __len__(self) -> int:
        return sum(map(len, self._parts))

    def get(self, key: int) -> int | None:
        """The low 64 bits of the value last put for ``key``, or None."""
        return self._parts[(key & _LOW_64) >> _PART_SHIFT].get(key)

    def put(self, key: int, value: int) -> None:
        self._parts[(key & _LOW_64) >> _PART_SHIFT].put(key, value)

    @property
    def size_bytes(self) -> int:
        """The tables' arrays, keys and values."""
        return sum(part.size_bytes for part in self._parts)


_PARTS = 16
_PART_SHIFT = 60  # a 64-bit fingerprint's top 4 bits pick its part; its low bits, its slot


class _KeyMapPart:
    def __init__(self, capacity: int = 1024) -> None:
        size = 8
        while size * 2 < capacity * 3:
            size <<= 1
        self._keys = array("Q", [_EMPTY]) * size
        self._values = array("Q", [0]) * size
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: int) -> int | None:
        """The low 64 bits of the value last put for ``key``, or None."""
        index = self._find((key & _LOW_64) or 1)
        return self._values[index] if self._keys[index] != _EMPTY else None

    def put(self, key: int, value: int) -> None:
        fingerprint = (key & _LOW_64) or 1
        index = self._find(fingerprint)
        self._values[index] = value & _LOW_64
        if self._keys[index] == _EMPTY:
            self._keys[index] = fingerprint
            self._count += 1
            if self._count * 3 > len(self._keys) * 2:
                self._grow()

    @property
    def size_bytes(self) -> int:
        return self._keys.itemsize * len(self._keys) * 2

    def _find(self, fingerprint: int) -> int:
        """The slot holding ``fingerprint``, or the free slot where it would go."""
        keys, mask = self._keys, self._mask
        index = fingerprint & mask
        while (held := keys[index]) != _EMPTY and held != fingerprint:
            index = (index + 1) & mask
        return index

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        size = len(old_keys) * 2
        self._keys, self._values = array("Q", [_EMPTY]) * size, array("Q", [0]) * size
        self._mask = size - 1
        for fingerprint, value in zip(old_keys, old_values, strict=True):
            if fingerprint != _EMPTY:
                index = self._find(fingerprint)
                self._keys[index], self._values[index] = fingerprint, value


def low64(key: int) -> int:
    """The part of a key that :class:`KeyMap` keeps of a value."""
    return key & _LOW_64
