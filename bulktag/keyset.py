"""A compact set of 64-bit fingerprints: the pairs already met in this run's input.

A Python ``set`` of 128-bit ints costs ~80 bytes a key (a 44-byte int object plus the table
slot), and a fresh run keeps one for every pair of its input. Here the keys live in one
``array('Q')`` with open addressing and linear probing: 8 bytes a slot, at most two thirds
full, so 12-24 bytes a key (up to 48 while the table is 8 MiB or less: see ``_grow``).

Only the low 64 bits of a key are kept. Two different pairs sharing them (about 3 chances in a
million over ten million distinct pairs) would make the second look like a repeat of the first
and skip it for this run; the row is then not in the journal, so the next run — whose resume
index keeps all 128 bits — sends it. A collision delays a row, it never loses one.
"""

from __future__ import annotations

from array import array
from math import isqrt
from typing import Any

_LOW_64 = (1 << 64) - 1
_EMPTY = 0  # a fingerprint of 0 is stored as 1: slot value 0 means "free"
# A KeySet quadruples while the new table stays within this many slots (8 MiB), then doubles.
_QUADRUPLE_UP_TO = 1 << 20


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
        """A bigger table, every key moved into it: a Python loop over the keys, which a run's
        growth repeats. Quadrupling moves the keys about half as often as doubling over a run,
        and leaves the table emptier (shorter probes); so a table quadruples while it is small,
        and doubles once a quadrupled one would pass 8 MiB, where the memory a key takes
        matters more (a run of millions of pairs)."""
        old = self._slots
        factor = 4 if len(old) * 4 <= _QUADRUPLE_UP_TO else 2
        self._slots = slots = array("Q", [_EMPTY]) * (len(old) * factor)
        self._mask = mask = len(slots) - 1
        for fingerprint in old:
            if fingerprint != _EMPTY:
                index = fingerprint & mask
                while slots[index] != _EMPTY:
                    index = (index + 1) & mask
                slots[index] = fingerprint


class KeyMap:
    """A compact map of fingerprints to fingerprints: what this run's input last asked for each
    IMS (image, key), in 8 bytes a slot, one ``array('Q')`` word holding both halves (a
    ``dict`` of 128-bit ints costs ~150 bytes an entry, and two 64-bit arrays 16 bytes a
    slot).

    A word is a key's 32-bit *tag* (bits 32-63 of its fingerprint) over the low 32 bits of its
    value (:func:`kept`: a caller compares values in that form). The tag also picks the slot
    (its low bits) and bits 28-31 of the fingerprint pick one of 16 parts, so a key is known by
    36 bits: two keys sharing them (~7 pairs in a million keys) make one slot. That slot then
    answers with the later key's value: a row of the other key may be sent although this run
    already sent it (a second, harmless request and journal record), or — when the values'
    32 bits match too, about once in 2^32 such pairs — look like a repeat and wait for the next
    run, as with :class:`KeySet`. A key set to a new value whose low 32 bits equal the old
    one's (once in 2^32 changes) likewise waits for the next run. A collision delays a row, it
    never loses one.

    The table is cut in 16, each part growing on its own (:class:`_KeyMapPart`): while a part
    grows it holds its old and new arrays, 1/16 of the table's size at most.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._parts = [_KeyMapPart(capacity // _PARTS) for _ in range(_PARTS)]

    def __len__(self) -> int:
        return sum(map(len, self._parts))

    def get(self, key: int) -> int | None:
        """The :func:`kept` form of the value last put for ``key``, or None."""
        return self._parts[(key >> _PART_SHIFT) & _PART_MASK].get(((key >> 32) & _LOW_32) or 1)

    def put(self, key: int, value: int) -> None:
        part = self._parts[(key >> _PART_SHIFT) & _PART_MASK]
        part.put(((key >> 32) & _LOW_32) or 1, value & _LOW_32)

    @property
    def size_bytes(self) -> int:
        """The tables' arrays."""
        return sum(part.size_bytes for part in self._parts)


_PARTS = 16
_PART_MASK = _PARTS - 1
_PART_SHIFT = 28  # bits 28-31 of a fingerprint pick its part; bits 32-63 are its tag
_LOW_32 = (1 << 32) - 1


class _KeyMapPart:
    """One part of a :class:`KeyMap`: open addressing with double hashing over a prime number of
    slots, at most 80% full and grown by a quarter. Doubling at two thirds full (as
    :class:`KeySet` does) leaves a table 33-67% full; here it is 64-80% full, so it takes less
    memory for the same keys. Double hashing keeps the probes short at that load (a free slot
    is met after ~1/(1 - load) probes, linear probing needs ~1/(1 - load)² / 2), and growing
    by a quarter moves each key ~4 times over the run, against ~1 when doubling."""

    def __init__(self, capacity: int = 1024) -> None:
        self._resize(_prime_at_least(max(11, int(capacity / _FILL_AFTER_GROWTH))), array("Q"))
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, tag: int) -> int | None:
        word = self._words[self._find(tag)]
        return word & _LOW_32 if word != _EMPTY else None

    def put(self, tag: int, value: int) -> None:
        index = self._find(tag)
        words = self._words
        new = words[index] == _EMPTY
        words[index] = tag << 32 | value
        if new:
            self._count += 1
            if self._count > self._limit:
                old = self._words
                self._resize(_prime_at_least(int(len(old) * _GROWTH)), old)

    @property
    def size_bytes(self) -> int:
        return self._words.itemsize * len(self._words)

    def _find(self, tag: int) -> int:
        """The slot holding ``tag`` (a non-zero 32-bit tag), or the free slot where it goes."""
        words, size = self._words, self._size
        index = tag % size
        word = words[index]
        if word == _EMPTY or word >> 32 == tag:
            return index
        step = 1 + (tag >> 8) % (size - 1)  # any step visits every slot: the size is prime
        while True:
            index += step
            if index >= size:
                index -= size
            word = words[index]
            if word == _EMPTY or word >> 32 == tag:
                return index

    def _resize(self, size: int, old: array[int]) -> None:
        """A table of ``size`` slots holding the words of ``old`` (their tags are distinct)."""
        self._words = words = array("Q", [_EMPTY]) * size
        self._size = size
        self._limit = int(size * _MAX_FILL)
        for word in old:
            if word != _EMPTY:
                tag = word >> 32
                index = tag % size
                if words[index] != _EMPTY:
                    step = 1 + (tag >> 8) % (size - 1)
                    while True:
                        index += step
                        if index >= size:
                            index -= size
                        if words[index] == _EMPTY:
                            break
                words[index] = word


_MAX_FILL = 0.8  # a part grows past this share of its slots
_GROWTH = 1.25
_FILL_AFTER_GROWTH = _MAX_FILL / _GROWTH


def _prime_at_least(number: int) -> int:
    candidate = number | 1
    while any(candidate % divisor == 0 for divisor in range(3, isqrt(candidate) + 1, 2)):
        candidate += 2
    return candidate


def kept(value: int) -> int:
    """The part of a value that :class:`KeyMap` keeps (and :meth:`KeyMap.get` returns)."""
    return value & _LOW_32


class HeldMap:
    """What the IMS read-ahead window holds for each image: a ``dict`` of image keys to held
    values, compact in the common case — a key that is a 128-bit int (a UUID image id, as the
    scheduler keys it) whose value is an int below 2^128 (up to two rows packed, one word
    each) lives in 32 bytes of an ``array('Q')`` slot (key high and low words, value low and
    high words) instead of a 48-byte int key, a 32-48-byte int value and a 24-byte ``dict``
    entry plus its index. Any other key or value (an id that is not a UUID, three or more rows,
    a list) is kept in a plain ``dict`` beside it; a key is in one place or the other.

    The slots are cut in 16 parts (a part grows on its own: its old and new arrays are 1/16 of
    the table), each open addressing with linear probing over any number of slots (the home
    slot is a multiplicative hash scaled to the size), at most 3/4 full, grown by half, and
    deletion by backward shift, so a window's churn (every image comes and goes) leaves no
    tombstones behind.
    """

    def __init__(self) -> None:
        self._parts = [_HeldPart() for _ in range(_PARTS)]
        self._other: dict[Any, Any] = {}

    def __len__(self) -> int:
        return sum(part.count for part in self._parts) + len(self._other)

    def __contains__(self, key: object) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __getitem__(self, key: object) -> Any:
        held = self.get(key, _ABSENT)
        if held is _ABSENT:
            raise KeyError(key)
        return held

    def get(self, key: object, default: Any = None) -> Any:
        if type(key) is int and 0 < key < _KEY_LIMIT:
            part, index, _hi, _lo = self._slot(key)
            words = part.words
            if words[index] or words[index + 1]:
                return words[index + 2] | words[index + 3] << 64
        return self._other.get(key, default)

    def __setitem__(self, key: object, value: Any) -> None:
        if type(key) is int and 0 < key < _KEY_LIMIT:
            part, index, hi, lo = self._slot(key)
            words = part.words
            held = words[index] or words[index + 1]
            if type(value) is int and 0 <= value < _VALUE_LIMIT:
                if held:
                    words[index + 2] = value & _LOW_64
                    words[index + 3] = value >> 64
                    return
                if self._other:
                    self._other.pop(key, None)
                part.insert(index, hi, lo, value)
                return
            if held:
                part.remove(index)
        self._other[key] = value

    def __delitem__(self, key: object) -> None:
        if type(key) is int and 0 < key < _KEY_LIMIT:
            part, index, _hi, _lo = self._slot(key)
            words = part.words
            if words[index] or words[index + 1]:
                part.remove(index)
                return
        del self._other[key]

    def _slot(self, key: int) -> tuple[Any, int, int, int]:
        """For a key the arrays may hold: its part, the slot it is in or would go to, and
        its high and low 64 bits."""
        hi, lo = key >> 64, key & _LOW_64
        mixed = ((hi ^ lo) * _MULTIPLIER) & _LOW_64
        part = self._parts[mixed & _PART_MASK]
        return part, part.find(hi, lo, mixed), hi, lo

    def items(self) -> list[tuple[Any, Any]]:
        """Every key and value (tests; in no particular order)."""
        pairs = list(self._other.items())
        for part in self._parts:
            words = part.words
            for index in range(0, len(words), _SLOT):
                if words[index] or words[index + 1]:
                    key = words[index] << 64 | words[index + 1]
                    pairs.append((key, words[index + 2] | words[index + 3] << 64))
        return pairs

    @property
    def size_bytes(self) -> int:
        """The parts' arrays (not the dict beside them)."""
        return sum(part.words.itemsize * len(part.words) for part in self._parts)


_ABSENT = object()
_KEY_LIMIT = 1 << 128
_VALUE_LIMIT = 1 << 128
_MULTIPLIER = 0x9E3779B97F4A7C15  # 2^64 / the golden ratio: Fibonacci hashing
_SLOT = 4  # words a slot: key high, key low, value low, value high; a free slot's key is 0
_HELD_MAX_FILL = 0.75
_HELD_GROWTH = 1.5


class _HeldPart:
    """One part of a :class:`HeldMap`."""

    def __init__(self) -> None:
        self.count = 0
        self._resize(8)

    def find(self, hi: int, lo: int, mixed: int) -> int:
        """The index (in words) of the slot holding key ``hi, lo``, or of the free slot where
        it goes."""
        words = self.words
        index = ((mixed * self.size) >> 64) * _SLOT
        end = self.size * _SLOT
        while True:
            first = words[index]
            second = words[index + 1]
            if (first == hi and second == lo) or not (first or second):
                return index
            index += _SLOT
            if index == end:
                index = 0

    def insert(self, index: int, hi: int, lo: int, value: int) -> None:
        words = self.words
        words[index] = hi
        words[index + 1] = lo
        words[index + 2] = value & _LOW_64
        words[index + 3] = value >> 64
        self.count += 1
        if self.count > self.limit:
            self._resize(int(self.size * _HELD_GROWTH))

    def remove(self, index: int) -> None:
        """Free the slot at ``index``, shifting back the slots after it that probed past it."""
        words, size = self.words, self.size
        end = size * _SLOT
        free = index
        at = index
        while True:
            at += _SLOT
            if at == end:
                at = 0
            hi, lo = words[at], words[at + 1]
            if not (hi or lo):
                break
            home = ((((hi ^ lo) * _MULTIPLIER) & _LOW_64) * size >> 64) * _SLOT
            # the slot at ``at`` stays if its home is cyclically in (free, at]
            stays = free < home <= at if free <= at else home > free or home <= at
            if not stays:
                words[free : free + _SLOT] = words[at : at + _SLOT]
                free = at
        words[free : free + _SLOT] = _FREE_SLOT
        self.count -= 1

    def _resize(self, size: int) -> None:
        old = getattr(self, "words", None)
        self.words = words = array("Q", [0]) * (size * _SLOT)
        self.size = size
        self.limit = int(size * _HELD_MAX_FILL)
        if old is None:
            return
        end = size * _SLOT
        for at in range(0, len(old), _SLOT):
            hi, lo = old[at], old[at + 1]
            if hi or lo:
                index = ((((hi ^ lo) * _MULTIPLIER) & _LOW_64) * size >> 64) * _SLOT
                while words[index] or words[index + 1]:
                    index += _SLOT
                    if index == end:
                        index = 0
                words[index : index + _SLOT] = old[at : at + _SLOT]


_FREE_SLOT = array("Q", [0, 0, 0, 0])
