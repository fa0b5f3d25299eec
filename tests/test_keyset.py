"""KeySet, the compact set of this run's pairs, against Python's set."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bulktag.keyset import HeldMap, KeyMap, KeySet, kept


@given(st.lists(st.integers(min_value=0, max_value=(1 << 128) - 1), max_size=300))
def test_add_says_whether_a_key_is_new_exactly_like_a_set_of_its_low_64_bits(
    keys: list[int],
) -> None:
    compact, reference = KeySet(capacity=4), set()
    for key in keys:
        low = (key & ((1 << 64) - 1)) or 1
        assert (low not in reference) == compact.add(key)
        reference.add(low)
    assert len(reference) == len(compact)


def test_keys_that_share_low_bits_probe_past_each_other_and_survive_growth() -> None:
    compact = KeySet(capacity=4)
    crowded = [n << 20 for n in range(1, 200)]  # identical low 20 bits: one long probe run
    assert all(compact.add(key) for key in crowded)
    assert not any(compact.add(key) for key in crowded)
    assert 199 == len(compact)


def test_zero_is_a_key_like_any_other() -> None:
    compact = KeySet()
    assert compact.add(0)
    assert not compact.add(0)
    assert not compact.add(1)  # 0 is stored as 1: the one documented alias


def test_a_million_keys_take_a_few_megabytes_not_eighty() -> None:
    compact = KeySet()
    for n in range(1, 1_000_001):
        compact.add(n * 0x9E3779B97F4A7C15)
    assert 1_000_000 == len(compact)
    assert compact._slots.itemsize * len(compact._slots) <= 24 * 1_000_000


def _known_by(key: int) -> int:
    """What KeyMap tells keys apart by: bits 28-63 of the fingerprint (a tag of 0 is 1)."""
    return ((key >> 32) & 0xFFFFFFFF or 1) << 4 | (key >> 28) & 15


# Keys spread over the bits KeyMap looks at, with high bits (past 64) that must not matter.
_keys = st.integers(0, 40).map(lambda n: n << 70 | (n * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))


@given(
    st.lists(
        st.tuples(_keys, st.integers(min_value=0, max_value=(1 << 128) - 1)),
        max_size=300,
    )
)
def test_keymap_gets_what_was_last_put_exactly_like_a_dict_of_the_bits_it_keeps(
    puts: list[tuple[int, int]],
) -> None:
    compact, reference = KeyMap(capacity=4), dict[int, int]()
    for key, value in puts:
        assert reference.get(_known_by(key)) == compact.get(key)
        compact.put(key, value)
        reference[_known_by(key)] = kept(value)
    assert len(reference) == len(compact)
    assert all(kept(value) == compact.get(key) for key, value in puts[-1:])


@given(st.lists(st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, 7)), max_size=300))
def test_keymap_keys_alike_in_the_kept_bits_are_one_slot(puts: list[tuple[int, int]]) -> None:
    """Arbitrary fingerprints, many sharing bits (the documented collisions): still a dict."""
    compact, reference = KeyMap(capacity=4), dict[int, int]()
    for spread, value in puts:
        key = spread & (0xF00000FF_F0000000 | 0xFF)  # few tags and parts: crowded probe runs
        assert reference.get(_known_by(key)) == compact.get(key)
        compact.put(key, value)
        reference[_known_by(key)] = value
    assert len(reference) == len(compact)


def test_keymap_keys_that_share_low_bits_probe_past_each_other_and_survive_growth() -> None:
    compact = KeyMap(capacity=4)
    crowded = [n << 44 for n in range(1, 200)]  # tags alike in their low 12 bits: one run
    for n, key in enumerate(crowded):
        compact.put(key, n)
    assert list(range(199)) == [compact.get(key) for key in crowded]
    assert compact.get(200 << 44) is None


def test_keymap_keeps_a_values_low_32_bits() -> None:
    compact = KeyMap()
    compact.put(5 << 32, (7 << 40) | 9)
    assert 9 == compact.get(5 << 32) == kept((7 << 40) | 9)
    compact.put(0, 3)  # a tag of 0 is stored as 1: the one documented alias
    assert 3 == compact.get(1 << 32)


def test_a_million_slots_take_at_most_twelve_and_a_half_megabytes() -> None:
    """64-80% full: 10-12.5 MiB for a million (doubling at two thirds full took 16)."""
    compact = KeyMap()
    for n in range(1, 1_000_001):
        compact.put(n * 0x9E3779B97F4A7C15, n)
    assert 1_000_000 - 50 <= len(compact) <= 1_000_000  # 36 kept bits: a few pairs may merge
    assert compact.size_bytes <= 12.5 * 1024 * 1024


# HeldMap: the IMS window's image → held rows, against a dict. Keys from a small pool (so that
# operations meet the same keys again), of every kind the window uses: 128-bit ints (UUIDs),
# ints at the edges (0 and 2^128 are not compact), strings; values compact or not.
_HELD_KEYS = st.sampled_from(
    [0, 1, 2, (1 << 64) - 1, 1 << 64, (1 << 128) - 1, 1 << 128, "img", "7"]
    + [n * 0x9E3779B97F4A7C15 % (1 << 128) for n in range(1, 40)]
    + [n << 64 for n in range(1, 6)]  # alike in the low word
)
_HELD_VALUES = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.sampled_from([0, (1 << 64) + 5, (1 << 128) - 1, 1 << 128, 1 << 200, -1]),
    st.lists(st.integers(0, 9), max_size=3),
    st.none(),
)
_HELD_OPS = st.lists(
    st.tuples(st.sampled_from(["set", "del", "get"]), _HELD_KEYS, _HELD_VALUES), max_size=400
)


@given(_HELD_OPS)
def test_heldmap_behaves_like_a_dict(ops: list[tuple[str, object, object]]) -> None:
    held, reference = HeldMap(), {}  # type: ignore[var-annotated]
    for op, key, value in ops:
        if op == "set":
            held[key] = value
            reference[key] = value
        elif op == "del" and key in reference:
            del held[key]
            del reference[key]
        assert (key in held) == (key in reference)
        assert held.get(key, "absent") == reference.get(key, "absent")
    assert len(held) == len(reference)
    assert sorted(map(repr, held.items())) == sorted(map(repr, reference.items()))
    for key, value in reference.items():
        assert held[key] == value


def test_heldmap_churn_through_growth_and_backward_shifts() -> None:
    held, reference = HeldMap(), {}
    for n in range(1, 30_000):
        key = n * 0x2545F4914F6CDD1D % (1 << 128)
        held[key] = reference[key] = n
        if n % 3:  # a window: most images leave again, in another order than they came
            gone = (n // 2 or 1) * 0x2545F4914F6CDD1D % (1 << 128)
            if gone in reference:
                del held[gone]
                del reference[gone]
    assert len(held) == len(reference)
    assert all(held[key] == value for key, value in reference.items())
    assert dict(held.items()) == reference


def test_heldmap_holds_a_compact_image_in_at_most_fifty_five_bytes() -> None:
    held = HeldMap()
    for n in range(1, 120_001):
        held[n * 0x9E3779B97F4A7C15 % (1 << 128) or 1] = n
    assert 120_000 == len(held)
    assert held.size_bytes / 120_000 <= 55  # 32-byte slots, 50-75% full
