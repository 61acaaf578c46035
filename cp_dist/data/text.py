"""The text view of a row ("User ID is 1. Gender is female. ...") and its pre-tokenized form."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from cp_dist.data.meta import SPLITS, DatasetMeta, FieldMeta
from cp_dist.io import atomic_file
from cp_dist.pretrained import load_tokenizer

TOKENS_COLUMN = "input_ids"


def render_text(table: pa.Table, fields: Sequence[FieldMeta]) -> pa.Array:
    """One string per row: '<title> is <value>.' for every field, joined by single spaces."""
    pieces: list[pa.Array | str] = []
    for k, f in enumerate(fields):
        pieces += [("" if k == 0 else " ") + f"{f.title} is ", table[f.text_column], "."]
    return pc.binary_join_element_wise(*pieces, "")


def ensure_tokenized(data_dir: Path, tokenizer_name: str, max_length: int) -> DatasetMeta:
    """The prepared data's metadata, its splits tokenized with this tokenizer and length first if
    they are not already."""
    meta = DatasetMeta.load(data_dir)
    wanted = {"name": tokenizer_name, "max_length": max_length}
    if meta.tokenizer is None or {k: meta.tokenizer.get(k) for k in wanted} != wanted:
        meta = tokenize_splits(data_dir, tokenizer_name, max_length=max_length)
    return meta


def tokenize_splits(data_dir: Path, tokenizer_name: str, *, max_length: int = 128, batch_rows: int = 8192) -> DatasetMeta:
    """Adds an `input_ids` list column to every split, rewriting each file atomically."""
    meta = DatasetMeta.load(data_dir)
    tokenizer = load_tokenizer(tokenizer_name)
    for split in SPLITS:
        path = meta.split_path(data_dir, split)
        source = pq.ParquetFile(path)
        with atomic_file(path) as tmp, pq.ParquetWriter(tmp, _with_tokens(source.schema_arrow), compression="zstd") as out:
            progress = tqdm(total=source.metadata.num_rows, desc=f"tokenize {split}", unit="rows", disable=None)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                if TOKENS_COLUMN in table.column_names:
                    table = table.drop_columns(TOKENS_COLUMN)
                texts = render_text(table, meta.fields).to_pylist()
                ids = [
                    ids
                    for start in range(0, len(texts), batch_rows)
                    for ids in tokenizer(texts[start : start + batch_rows], truncation=True, max_length=max_length)["input_ids"]
                ]
                out.write_table(table.append_column(TOKENS_COLUMN, pa.array(ids, pa.list_(pa.int32()))))
                progress.update(table.num_rows)
            progress.close()
    tokenizer_meta = {"name": tokenizer_name, "max_length": max_length, "column": TOKENS_COLUMN,
                      "pad_token_id": tokenizer.pad_token_id}
    updated = DatasetMeta(**{**meta.__dict__, "tokenizer": tokenizer_meta})
    updated.save(data_dir)
    return updated


def _with_tokens(schema: pa.Schema) -> pa.Schema:
    if TOKENS_COLUMN in schema.names:
        schema = schema.remove(schema.get_field_index(TOKENS_COLUMN))
    return schema.append(pa.field(TOKENS_COLUMN, pa.list_(pa.int32())))


def pad_token_lists(lists: pa.Array, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token lists -> (ids [rows, longest], attention mask), without a Python loop over rows."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    mask = np.arange(lengths.max(initial=0))[None, :] < lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = values
    return ids, mask.astype(np.int64)
