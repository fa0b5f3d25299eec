"""KeySet, the compact set of this run's pairs, against Python's set."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bulktag.keyset import KeyMap, KeySet


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


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(min_value=0, max_value=(1 << 128) - 1)),
        max_size=300,
    )
)
def test_keymap_gets_what_was_last_put_exactly_like_a_dict_of_low_64_bits(
    puts: list[tuple[int, int]],
) -> None:
    low = (1 << 64) - 1
    compact, reference = KeyMap(capacity=4), dict[int, int]()
    for key, value in puts:
        spread = key << 70 | key * 0x9E3779B97F4A7C15  # high bits that must not matter
        assert reference.get(key) == compact.get(spread)
        compact.put(spread, value)
        reference[key] = value & low
    assert len(reference) == len(compact)
    assert all(value == compact.get(key << 70 | key * 0x9E3779B97F4A7C15)
               for key, value in reference.items())  # fmt: skip


def test_keymap_keys_that_share_low_bits_probe_past_each_other_and_survive_growth() -> None:
    compact = KeyMap(capacity=4)
    crowded = [n << 20 for n in range(1, 200)]
    for n, key in enumerate(crowded):
        compact.put(key, n)
    assert list(range(199)) == [compact.get(key) for key in crowded]
    assert compact.get(200 << 20) is None


def test_a_million_slots_take_megabytes_not_a_hundred_and_fifty() -> None:
    compact = KeyMap()
    for n in range(1, 1_000_001):
        compact.put(n * 0x9E3779B97F4A7C15, n)
    assert 1_000_000 == len(compact)
    assert compact.size_bytes <= 34 * 1024 * 1024
