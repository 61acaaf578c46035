"""The text view of a row ("User ID is 1. Gender is female. ...") and its pre-tokenized form.

Beside each row's token ids, `token_fields` records for every token the field whose value it spells
(-1 for the template: field names, "is", ".", special tokens). PA-MLM masks whole field values with
it, and the alignment diagnostics tell value tokens from template tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from cp_dist.data.meta import SPLITS, DatasetMeta, FieldMeta
from cp_dist.errors import UserError
from cp_dist.io import atomic_file
from cp_dist.pretrained import load_tokenizer

TOKENS_COLUMN = "input_ids"
FIELDS_COLUMN = "token_fields"
TOKENIZATION_VERSION = 2  # 2: token_fields beside input_ids
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


def ensure_tokenized(data_dir: Path, tokenizer_name: str, max_length: int) -> DatasetMeta:
    """The prepared data's metadata, its splits tokenized with this tokenizer and length first if
    they are not already."""
    meta = DatasetMeta.load(data_dir)
    wanted = {"name": tokenizer_name, "max_length": max_length, "version": TOKENIZATION_VERSION}
    if meta.tokenizer is None or {k: meta.tokenizer.get(k) for k in wanted} != wanted:
        meta = tokenize_splits(data_dir, tokenizer_name, max_length=max_length)
    return meta


def tokenize_splits(data_dir: Path, tokenizer_name: str, *, max_length: int = 128, batch_rows: int = 8192) -> DatasetMeta:
    """Adds `input_ids` and `token_fields` list columns to every split, rewriting each file atomically."""
    meta = DatasetMeta.load(data_dir)
    tokenizer = load_tokenizer(tokenizer_name)
    if not tokenizer.is_fast:
        raise UserError(f"{tokenizer_name}: a slow (Python) tokenizer; cp_dist needs a fast one for token offsets")
    for split in SPLITS:
        path = meta.split_path(data_dir, split)
        source = pq.ParquetFile(path)
        with atomic_file(path) as tmp, pq.ParquetWriter(tmp, _with_tokens(source.schema_arrow), compression="zstd") as out:
            progress = tqdm(total=source.metadata.num_rows, desc=f"tokenize {split}", unit="rows", disable=None)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group).drop_columns([c for c in (TOKENS_COLUMN, FIELDS_COLUMN)
                                                                   if c in source.schema_arrow.names])
                texts = render_text(table, meta.fields).to_pylist()
                ids, fields = [], []
                for start in range(0, len(texts), batch_rows):
                    chunk = table.slice(start, batch_rows)
                    encoding = tokenizer(texts[start : start + batch_rows], truncation=True, max_length=max_length,
                                         return_offsets_mapping=True, return_special_tokens_mask=True)
                    ids += encoding["input_ids"]
                    fields += token_fields(encoding, *value_spans(chunk, meta.fields))
                table = table.append_column(TOKENS_COLUMN, pa.array(ids, pa.list_(pa.int32())))
                out.write_table(table.append_column(FIELDS_COLUMN, pa.array(fields, pa.list_(pa.int8()))))
                progress.update(table.num_rows)
            progress.close()
    tokenizer_meta = {"name": tokenizer_name, "max_length": max_length, "column": TOKENS_COLUMN,
                      "pad_token_id": tokenizer.pad_token_id, "version": TOKENIZATION_VERSION}
    updated = DatasetMeta(**{**meta.__dict__, "tokenizer": tokenizer_meta})
    updated.save(data_dir)
    return updated


def _with_tokens(schema: pa.Schema) -> pa.Schema:
    for column in (TOKENS_COLUMN, FIELDS_COLUMN):
        if column in schema.names:
            schema = schema.remove(schema.get_field_index(column))
    return schema.append(pa.field(TOKENS_COLUMN, pa.list_(pa.int32()))).append(pa.field(FIELDS_COLUMN, pa.list_(pa.int8())))


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
