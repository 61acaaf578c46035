"""The text view of a row ("User ID is 1. Gender is female. ...") and how its tokens map to fields.

Beside a row's token ids, its token fields record for every token the field whose value it spells
(-1 for the template: field names, "is", ".", special tokens). PA-MLM masks whole field values with
them, and the alignment diagnostics tell value tokens from template tokens. data.tokens stores and
assembles both from per-value tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cp_dist.data.meta import FieldMeta

TEMPLATE = -1  # token_fields of a token that belongs to no field's value


def render_text(table: pa.Table, fields: Sequence[FieldMeta]) -> pa.Array:
    """One string per row: '<title> is <value>.' for every field, joined by single spaces."""
    pieces: list[pa.Array | str] = []
    for k, f in enumerate(fields):
        pieces += [("" if k == 0 else " ") + f"{f.title} is ", table[f.text_column], "."]
    return pc.binary_join_element_wise(*pieces, "")


def value_spans(table: pa.Table, fields: Sequence[FieldMeta]) -> tuple[np.ndarray, np.ndarray]:
    """[rows, fields] start and end (characters) of each field's value in render_text's string."""
    starts, ends = np.zeros((table.num_rows, len(fields)), np.int64), np.zeros((table.num_rows, len(fields)), np.int64)
    position = np.zeros(table.num_rows, np.int64)
    for k, f in enumerate(fields):
        position += (0 if k == 0 else 1) + len(f"{f.title} is ")
        starts[:, k] = position
        position += pc.utf8_length(table[f.text_column]).to_numpy(zero_copy_only=False)
        ends[:, k] = position
        position += 1  # "."
    return starts, ends


def token_fields(encoding, starts: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Per row, the field whose value each token spells (TEMPLATE for every other token), from a
    fast tokenizer's offsets and special-tokens mask."""
    lengths = [len(ids) for ids in encoding["input_ids"]]
    rows = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.concatenate([np.asarray(o, np.int64).reshape(-1, 2) for o in encoding["offset_mapping"]])
    special = np.concatenate([np.asarray(m, bool) for m in encoding["special_tokens_mask"]])
    token_start = offsets[:, 0][:, None]
    inside = (token_start >= starts[rows]) & (token_start < ends[rows]) & ~special[:, None]
    field = np.where(inside.any(1), inside.argmax(1), TEMPLATE).astype(np.int8)
    return np.split(field, np.cumsum(lengths)[:-1])


def pad_token_lists(lists: pa.Array, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token lists -> (ids [rows, longest] padded with pad_id, attention mask), without a
    Python loop over rows."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    mask = np.arange(lengths.max(initial=0))[None, :] < lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = values
    return ids, mask.astype(np.int64)
