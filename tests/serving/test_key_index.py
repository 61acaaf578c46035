"""KeyIndex, the native item key -> catalogue row lookup of ranking requests, against a dict."""

from __future__ import annotations

import functools
import random
import string
import tracemalloc

import numpy as np
import pytest

from cp_dist.serving._key_index import KeyIndex


@functools.cache
def _keys(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "éß語 -_"
    return list({"".join(rng.choices(alphabet, k=rng.randint(0, 24))) for _ in range(count)})


def _rows(index: KeyIndex, items: list) -> np.ndarray:
    rows = np.empty(len(items), dtype=np.int64)
    index.rows(items, rows)
    return rows


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 1000])
def test_rows_match_a_dict_across_chunk_boundaries(count: int) -> None:
    keys = _keys(200_000, seed=0)  # "" and non-ASCII keys among them
    index, expected = KeyIndex(keys), {key: row for row, key in enumerate(keys, start=1)}
    rng = random.Random(count)
    items = rng.sample(keys, count // 2) + [key + "\x00" for key in rng.sample(keys, count - count // 2)]
    rng.shuffle(items)
    assert len(index) == len(keys) and "" in expected
    assert _rows(index, items).tolist() == [expected.get(item, 0) for item in items]


def test_every_key_is_found_and_unknown_keys_are_not() -> None:
    keys = _keys(300_000, seed=1)
    index = KeyIndex(keys)
    assert np.array_equal(_rows(index, keys), np.arange(1, len(keys) + 1))
    held = set(keys)
    unknown = [key + "!" for key in keys if key + "!" not in held][:100_000]
    assert not _rows(index, unknown).any()


def test_numbers_stand_for_their_string_form() -> None:
    index = KeyIndex(["242", "12.5", "True", "x"])
    assert _rows(index, [242, 12.5, True, "242", 243, 242.0]).tolist() == [1, 2, 3, 1, 0, 0]
    assert _rows(index, ["\ud800", "x"]).tolist() == [0, 4], "a lone surrogate (JSON can send one) is no key"
    with pytest.raises(TypeError, match=r"items\[2\]: a list"):
        _rows(index, ["x", 1, ["x"]])
    with pytest.raises(TypeError, match=r"items\[0\]: a NoneType"):
        _rows(index, [None])


def test_add_rows_adds_each_items_row_to_the_request_row() -> None:
    keys = _keys(5_000, seed=2)
    table = np.random.default_rng(0).integers(0, 1000, size=(len(keys) + 1, 7), dtype=np.int64)
    table[0] = 0
    base = np.arange(7, dtype=np.int64) * 10_000
    items = keys[::3] + ["not a key"] + keys[1::50]
    ids = np.empty((len(items), 7), dtype=np.int64)
    KeyIndex(keys).add_rows(items, table, base, ids)
    assert np.array_equal(ids, table[_rows(KeyIndex(keys), items)] + base)


def test_bad_keys_and_buffers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"keys\[2\]: 'a' appears twice"):
        KeyIndex(["a", "b", "a"])
    with pytest.raises(TypeError, match=r"keys\[1\]: a int; expected a string"):
        KeyIndex(["a", 1])
    index = KeyIndex(["a", "b"])
    with pytest.raises(ValueError, match="out: expected 3 int64 values, got 16 bytes"):
        index.rows(["a", "b", "c"], np.empty(2, dtype=np.int64))
    with pytest.raises(ValueError, match=r"table: expected int64 \[3, width\]"):
        index.add_rows(["a"], np.zeros((2, 4), dtype=np.int64), np.zeros(4, dtype=np.int64), np.empty((1, 4), dtype=np.int64))
    with pytest.raises(BufferError):  # read-only
        index.rows(["a"], bytes(8))
    with pytest.raises(RuntimeError, match="already built"):
        index.__init__(["c"])
    with pytest.raises(RuntimeError, match="not built"):
        KeyIndex.__new__(KeyIndex).rows(["a"], np.empty(1, dtype=np.int64))


def test_numbers_converted_per_request_are_released() -> None:
    index, items, rows = KeyIndex([str(n) for n in range(1000)]), list(range(500, 1500)), np.empty(1000, dtype=np.int64)
    index.rows(items, rows)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            index.rows(items, rows)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000, f"{grown} bytes kept after 200,000 number lookups"
    assert rows.tolist() == list(range(501, 1001)) + [0] * 500


def test_keys_sharing_a_tag_and_a_home_slot_are_told_apart_by_their_bytes() -> None:
    """k169319 and k274730 hash to the same 32-bit tag and, in the 8-slot table of two keys, the same
    home slot (found by searching with the C file's hash): the lookup must go on along the chain."""
    first, second = "k169319", "k274730"
    for keys in ([first, second], [second, first], [first], [second]):
        expected = {key: row for row, key in enumerate(keys, start=1)}
        items = [first, second, "zz"] * 30  # more than one chunk
        assert _rows(KeyIndex(keys), items).tolist() == [expected.get(item, 0) for item in items], keys


def test_an_id_whose_str_changes_the_request_cannot_pull_it_away() -> None:
    items: list = []

    class Rewriting(float):
        def __str__(self) -> str:
            items.clear()
            items.extend([None] * 1000)
            return "1.0"

    items.extend([*(f"k{i}" for i in range(10)), Rewriting(1.0), *(f"k{i}" for i in range(100))])
    looked_up = list(items)
    rows = _rows(KeyIndex([f"k{i}" for i in range(1000)] + ["1.0"]), items)
    assert rows.tolist() == [int(key[1:]) + 1 if isinstance(key, str) else 1001 for key in looked_up]
