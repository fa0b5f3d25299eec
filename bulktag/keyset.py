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
