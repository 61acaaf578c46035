"""Small vectorised Arrow helpers shared by the readers and the preparation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cp_dist.data.schema import MISSING_VALUE


def as_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def first_per_key(table: pa.Table, key: str = "key") -> tuple[pa.Table, int]:
    """Keeps the first row of every key, in file order; returns the table and how many rows it dropped."""
    codes = as_array(table[key]).dictionary_encode().indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    if len(first) == table.num_rows:
        return table, 0
    return table.take(np.sort(first)), table.num_rows - len(first)


def list_element_at(lists: pa.ChunkedArray | pa.Array, which: str) -> pa.Array:
    """The first or last element of every list; null for null or empty lists."""
    lists = as_array(lists)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)  # list_flatten drops null lists, so positions follow from lengths
    positions = ends - 1 if which == "last" else ends - lengths
    return pc.list_flatten(lists).take(pa.array(positions, mask=lengths == 0))


def clean_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Readable field values: whitespace runs collapsed, ends trimmed, empty or null -> MISSING_VALUE.

    Single spaces matter beyond looks: they make the text view of a row the plain concatenation
    of its field phrases, whatever the tokenizer.
    """
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(as_array(column), r"\s+", " "))
    return pc.fill_null(pc.if_else(pc.equal(text, ""), None, text), MISSING_VALUE)
