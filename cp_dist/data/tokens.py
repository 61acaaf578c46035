"""A row's token ids assembled from its values' tokens, each distinct value tokenized once.

The row text (text.render_text) is template pieces around field values:
'User ID is' + ' 90.' + ' Age is' + ' 60.' + ... Every piece ends where both WordPiece and byte-level
BPE pre-tokenizers cut: a value piece starts with the space that BPE attaches to the next word, and
ends with the template's '.', which merges with any trailing punctuation of the value ('Dr..')
exactly as in the whole text. So each distinct value is tokenized once, as ' <value>.' (read after
'is', so that offsets are trimmed as mid-text), its row in a
token table (tokens.parquet) is stored per row and field (`<field>_text_id`) instead of the row's
token ids, and the loader assembles a batch's ids with numpy: the same ids, truncation and special
tokens as tokenizing the row text (`tokenize_splits` checks this on rows of every split and refuses a
tokenizer that does not compose).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from cp_dist.data.meta import SPLITS, DatasetMeta, FieldMeta
from cp_dist.data.text import TEMPLATE, render_text, token_fields, value_spans
from cp_dist.errors import UserError
from cp_dist.io import atomic_file
from cp_dist.pretrained import load_tokenizer

TOKEN_TABLE_FILE = "tokens.parquet"
TOKENIZATION_VERSION = 3  # 3: a per-value token table and per-field `<field>_text_id` columns
LEGACY_COLUMNS = ("input_ids", "token_fields")  # version 2 stored every row's token ids
CHECKED_ROWS = 256  # rows of each split whose assembled ids are compared with the row text's
_BATCH_VALUES = 65536


@dataclass
class ValueTokens:
    """Every distinct value's tokens in one flat array, and the template pieces between them."""

    ids: np.ndarray  # [pieces' tokens] int64: the F template pieces, then each field's values
    fields: np.ndarray  # [same] int8: the field whose value a token spells, TEMPLATE otherwise
    starts: np.ndarray  # [F + values] first token of each piece in `ids`
    lengths: np.ndarray  # [F + values]
    value_offsets: np.ndarray  # [F] piece number of each field's first value (its text_id 0)
    prefix: np.ndarray  # special tokens before the text ([CLS], <s>)
    suffix: np.ndarray  # and after it ([SEP], </s>)
    max_length: int
    pad_token_id: int

    @classmethod
    def build(cls, tokenizer, fields: tuple[FieldMeta, ...], values: list[pa.Array], max_length: int) -> ValueTokens:
        """Tokenizes the template pieces and every value of values[k] (field k's distinct readable
        values), each exactly once."""
        if tokenizer.truncation_side != "right":
            raise UserError(f"{tokenizer.name_or_path}: truncation_side {tokenizer.truncation_side!r}; "
                            "cp_dist truncates the row text on the right")
        backend = tokenizer.backend_tokenizer  # the Rust tokenizer: no per-value Python dicts
        backend.no_truncation()  # values whole; the row text is truncated at assembly
        backend.no_padding()
        templates = [("" if k == 0 else " ") + f"{f.title} is" for k, f in enumerate(fields)]
        encoded = backend.encode_batch(templates, add_special_tokens=False)
        ids = [np.asarray(e.ids, np.int64) for e in encoded]
        marks = [np.full(len(e.ids), TEMPLATE, np.int8) for e in encoded]
        lengths = [np.array([len(e.ids) for e in encoded], np.int64)]
        context = len(backend.encode("is", add_special_tokens=False).ids)
        value_offsets = []
        for k, field_values in enumerate(values):
            value_offsets.append(sum(len(part) for part in lengths))
            for first in tqdm(range(0, len(field_values), _BATCH_VALUES), desc=f"tokenize {fields[k].name} values",
                              unit="batches", disable=None, leave=False):
                batch = field_values.slice(first, _BATCH_VALUES)
                piece_ids, piece_marks, piece_lengths = _value_pieces(backend, batch, context, k)
                ids.append(piece_ids)
                marks.append(piece_marks)
                lengths.append(piece_lengths)
        lengths = np.concatenate(lengths)
        marked = tokenizer("x", return_special_tokens_mask=True)
        special = np.asarray(marked["special_tokens_mask"], bool)
        first_text, last_text = np.flatnonzero(~special)[[0, -1]]
        return cls(
            ids=np.concatenate(ids), fields=np.concatenate(marks),
            starts=np.cumsum(lengths) - lengths, lengths=lengths, value_offsets=np.asarray(value_offsets, np.int64),
            prefix=np.asarray(marked["input_ids"][:first_text], np.int64),
            suffix=np.asarray(marked["input_ids"][last_text + 1 :], np.int64),
            max_length=max_length, pad_token_id=tokenizer.pad_token_id or 0,
        )

    @property
    def num_fields(self) -> int:
        return len(self.value_offsets)

    def assemble(self, text_ids: np.ndarray, fields: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[B, F] text_ids -> (input ids [B, T] padded, attention mask, token fields), T the
        longest row; without a Python loop over rows. `fields`: the text of these fields only, in
        this order (e.g. one side's, for CTR-BERT's towers); default every field."""
        rows = len(text_ids)
        chosen = np.arange(self.num_fields) if fields is None else np.asarray(fields, np.int64)
        pieces = np.empty((rows, 2 * len(chosen)), np.int64)
        pieces[:, 0::2] = chosen
        pieces[:, 1::2] = self.value_offsets[chosen] + text_ids[:, chosen]
        starts, lengths = self.starts[pieces].ravel(), self.lengths[pieces]
        row_lengths = lengths.sum(1)
        lengths = lengths.ravel()
        total = int(row_lengths.sum())
        source = np.arange(total) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        position = np.arange(total) - np.repeat(np.cumsum(row_lengths) - row_lengths, row_lengths)
        row = np.repeat(np.arange(rows), row_lengths)
        body = np.minimum(row_lengths, self.max_length - len(self.prefix) - len(self.suffix))
        keep = position < body[row]
        width = int(body.max(initial=0)) + len(self.prefix) + len(self.suffix)
        ids = np.full((rows, width), self.pad_token_id, np.int64)
        fields = np.full((rows, width), TEMPLATE, np.int64)
        ids[row[keep], len(self.prefix) + position[keep]] = self.ids[source[keep]]
        fields[row[keep], len(self.prefix) + position[keep]] = self.fields[source[keep]]
        ids[:, : len(self.prefix)] = self.prefix
        ids[np.arange(rows)[:, None], len(self.prefix) + body[:, None] + np.arange(len(self.suffix))] = self.suffix
        mask = np.arange(width)[None, :] < (body + len(self.prefix) + len(self.suffix))[:, None]
        return ids, mask.astype(np.int64), fields

    def save(self, data_dir: Path) -> None:
        lists = pa.ListArray.from_arrays(pa.array(np.append(self.starts, len(self.ids)), pa.int64()), pa.array(self.ids, pa.int32()))
        marks = pa.ListArray.from_arrays(pa.array(np.append(self.starts, len(self.ids)), pa.int64()), pa.array(self.fields, pa.int8()))
        metadata = {"value_offsets": self.value_offsets.tolist(), "prefix": self.prefix.tolist(),
                    "suffix": self.suffix.tolist(), "max_length": self.max_length, "pad_token_id": self.pad_token_id}
        table = pa.table({"ids": lists, "fields": marks}).replace_schema_metadata({"cp_dist": json.dumps(metadata)})
        with atomic_file(data_dir / TOKEN_TABLE_FILE) as tmp:
            pq.write_table(table, tmp, compression="zstd")

    @classmethod
    def load(cls, data_dir: Path) -> ValueTokens:
        path = data_dir / TOKEN_TABLE_FILE
        try:
            table = pq.read_table(path)
            metadata = json.loads(table.schema.metadata[b"cp_dist"])
        except (OSError, KeyError, ValueError, pa.ArrowException) as err:
            raise UserError(f"{path}: not a cp_dist token table ({err}); run `cp-dist data tokenize --data {data_dir}`") from err
        ids = table["ids"].combine_chunks()
        lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        return cls(
            ids=pc.list_flatten(ids).to_numpy().astype(np.int64),
            fields=pc.list_flatten(table["fields"].combine_chunks()).to_numpy().astype(np.int8),
            starts=np.cumsum(lengths) - lengths, lengths=lengths,
            value_offsets=np.asarray(metadata["value_offsets"], np.int64), prefix=np.asarray(metadata["prefix"], np.int64),
            suffix=np.asarray(metadata["suffix"], np.int64), max_length=metadata["max_length"],
            pad_token_id=metadata["pad_token_id"],
        )


def _value_pieces(backend, values: pa.Array, context: int, field: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(token ids, token fields, tokens per value) of values read as 'is <value>.' with special
    tokens, both dropped: the post-processor then trims offsets as it does in mid-text."""
    encodings = backend.encode_batch([f"is {v}." for v in values.to_pylist()])
    counts = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
    total = int(counts.sum())
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int64, total)
    special = np.fromiter(chain.from_iterable(e.special_tokens_mask for e in encodings), bool, total)
    starts = np.fromiter((start for e in encodings for start, _ in e.offsets), np.int64, total)
    piece = np.repeat(np.arange(len(encodings)), counts)
    text = ~special
    seen = np.cumsum(text)  # text tokens so far; minus those before the piece: the token's rank in it
    rank = seen - np.repeat(seen[np.cumsum(counts) - counts] - text[np.cumsum(counts) - counts], counts)
    keep = text & (rank > context)
    value_end = 3 + np.repeat(pc.utf8_length(values).to_numpy(zero_copy_only=False).astype(np.int64), counts)
    inside = (starts >= 3) & (starts < value_end)  # after 'is '
    marks = np.where(inside, field, TEMPLATE).astype(np.int8)
    return ids[keep], marks[keep], np.bincount(piece[keep], minlength=len(encodings)).astype(np.int64)


def text_ids(table: pa.Table, fields: tuple[FieldMeta, ...]) -> np.ndarray:
    """[rows, F] the rows' text_id columns, what ValueTokens.assemble reads."""
    return np.stack([table[f.text_id_column].to_numpy() for f in fields], axis=1)


def tokenize_rows(tokenizer, table: pa.Table, fields: tuple[FieldMeta, ...], max_length: int) -> tuple[list, list]:
    """The definition the token table reproduces: each row's text tokenized whole (token ids and
    token fields per row). Slow: the tokenizer reads every row's text."""
    encoding = tokenizer(render_text(table, fields).to_pylist(), truncation=True, max_length=max_length,
                         return_offsets_mapping=True, return_special_tokens_mask=True)
    return encoding["input_ids"], [f.tolist() for f in token_fields(encoding, *value_spans(table, fields))]


def distinct_values(data_dir: Path, meta: DatasetMeta) -> list[pa.Array]:
    """Per field, its distinct readable values over every split, in order of first appearance."""
    seen: list[list[pa.Array]] = [[] for _ in meta.fields]
    for path in (path for split in SPLITS for path in meta.split_files(data_dir, split)):
        source = pq.ParquetFile(path)
        for group in range(source.num_row_groups):
            table = source.read_row_group(group, columns=[f.text_column for f in meta.fields])
            for k, f in enumerate(meta.fields):
                if table[f.text_column].null_count:
                    raise UserError(f"{path}: column {f.text_column!r} has nulls; "
                                    "expected a readable value in every row (`cp-dist data prepare` writes one)")
                seen[k].append(pc.unique(table[f.text_column]))
    return [pc.unique(pa.chunked_array(chunks, pa.string())) for chunks in seen]


def tokenize_splits(data_dir: Path, tokenizer_name: str, *, max_length: int = 128) -> DatasetMeta:
    """Writes tokens.parquet and adds a `<field>_text_id` column per field to every split (each file
    rewritten atomically); meta.json names the tokenizer only once all of them are written."""
    meta = DatasetMeta.load(data_dir)
    tokenizer = load_tokenizer(tokenizer_name)
    if not tokenizer.is_fast:
        raise UserError(f"{tokenizer_name}: a slow (Python) tokenizer; cp_dist needs a fast one for token offsets")
    if meta.tokenizer is not None:  # a failure below must not leave the old tokenizer's name over new files
        meta = DatasetMeta(**{**meta.__dict__, "tokenizer": None})
        meta.save(data_dir)
    values = distinct_values(data_dir, meta)
    tokens = ValueTokens.build(tokenizer, meta.fields, values, max_length)
    id_columns = [f.text_id_column for f in meta.fields]
    parts = [(split, k, path) for split in SPLITS for k, path in enumerate(meta.split_files(data_dir, split))]
    for split, part, path in parts:
        source = pq.ParquetFile(path)
        stale = [c for c in (*LEGACY_COLUMNS, *id_columns) if c in source.schema_arrow.names]
        schema = pa.schema([f for f in source.schema_arrow if f.name not in stale] + [pa.field(c, pa.int32()) for c in id_columns])
        with atomic_file(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as out:
            for group in tqdm(range(source.num_row_groups), desc=f"text ids {split}", unit="row groups", disable=None):
                table = source.read_row_group(group).drop_columns(stale)
                for k, f in enumerate(meta.fields):
                    table = table.append_column(f.text_id_column, pc.index_in(table[f.text_column], value_set=values[k]).cast(pa.int32()))
                if part == group == 0:
                    _check_composes(tokenizer, tokens, table.slice(0, CHECKED_ROWS), meta.fields, path)
                out.write_table(table)
    tokenizer_meta = {"name": tokenizer_name, "max_length": max_length, "pad_token_id": tokens.pad_token_id,
                      "version": TOKENIZATION_VERSION, "distinct_values": {f.name: len(v) for f, v in zip(meta.fields, values)}}
    tokens.save(data_dir)
    updated = DatasetMeta(**{**meta.__dict__, "tokenizer": tokenizer_meta})
    updated.save(data_dir)
    return updated


def _check_composes(tokenizer, tokens: ValueTokens, table: pa.Table, fields: tuple[FieldMeta, ...], path: Path) -> None:
    """Refuses a tokenizer whose row-text ids differ from the assembled ones (one that does not cut
    where the pieces end)."""
    expected_ids, expected_fields = tokenize_rows(tokenizer, table, fields, tokens.max_length)
    ids, mask, marks = tokens.assemble(text_ids(table, fields))
    for row, (want_ids, want_fields) in enumerate(zip(expected_ids, expected_fields)):
        length = int(mask[row].sum())
        if ids[row, :length].tolist() != want_ids or marks[row, :length].tolist() != want_fields:
            raise UserError(f"{tokenizer.name_or_path}: tokenizing values one by one does not give the row text's tokens "
                            f"({path}, row {row}); cp_dist supports tokenizers that cut at spaces and punctuation "
                            "(WordPiece, byte-level BPE)")


def ensure_tokenized(data_dir: Path, tokenizer_name: str, max_length: int) -> DatasetMeta:
    """The prepared data's metadata, tokenized with this tokenizer and length first if it is not already."""
    meta = DatasetMeta.load(data_dir)
    wanted = {"name": tokenizer_name, "max_length": max_length, "version": TOKENIZATION_VERSION}
    if meta.tokenizer is None or {k: meta.tokenizer.get(k) for k in wanted} != wanted:
        meta = tokenize_splits(data_dir, tokenizer_name, max_length=max_length)
    return meta
