"""Raw files -> Parquet splits with an ID view and a text view, in bounded memory.

The pipeline keeps side tables (users, items) apart from the interactions and works on integer
row numbers: an interaction is (user row, item row, label, time), 17 bytes. Vocabularies are
counted with numpy over those row numbers, and the output is written in row chunks, so memory
grows with the number of interactions times 17 bytes plus the side tables, not with the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

import cp_dist
from cp_dist.data.columns import as_array, clean_text, first_per_key
from cp_dist.data.formats import get_format
from cp_dist.data.formats.base import RawFormat
from cp_dist.data.lines import RawFile
from cp_dist.data.meta import SPLITS, VOCAB_FILE, DatasetMeta, FieldMeta
from cp_dist.data.schema import Field, LabelRule, RawTables
from cp_dist.errors import UserError
from cp_dist.io import atomic_dir

OOV_VALUE = "<OOV>"


@dataclass(frozen=True)
class PrepareOptions:
    split: str | None = None  # "time" | "random"; None: time where the data set has timestamps
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    min_count: int = 1  # values seen fewer times in training map to the OOV index 0
    strict: bool = False  # fail on the first malformed line instead of skipping it
    overwrite: bool = False
    row_group_rows: int = 65_536
    write_rows: int = 1 << 19

    def validate(self) -> None:
        if self.split not in (None, "time", "random"):
            raise UserError(f"--split {self.split!r}: expected 'time' or 'random'")
        if len(self.ratios) != 3 or min(self.ratios) <= 0 or abs(sum(self.ratios) - 1) > 1e-9:
            raise UserError(f"--ratios {self.ratios}: expected three positive fractions that sum to 1")
        if self.row_group_rows < 1:
            raise UserError(f"--row-group-rows {self.row_group_rows}: expected an integer >= 1")
        if self.min_count < 1:
            raise UserError(f"--min-count {self.min_count}: expected an integer >= 1")


@dataclass
class Interactions:
    """Every kept interaction as row numbers into the side tables."""

    user_row: np.ndarray
    item_row: np.ndarray
    label: np.ndarray
    timestamp: np.ndarray | None
    counts: dict[str, int] = field(default_factory=dict)

    def side_row(self, side: str) -> np.ndarray:
        return self.user_row if side == "user" else self.item_row


@dataclass
class Vocabulary:
    """One field's vocabulary: index 0 is OOV, then values by training frequency (ties by value)."""

    values: pa.Array  # value of index 1, 2, ...
    counts: np.ndarray  # training count per index, OOV first
    id_of_side_row: np.ndarray  # vocabulary index of every user or item row

    @classmethod
    def build(cls, column: pa.Array, train_side_rows: np.ndarray, min_count: int) -> Vocabulary:
        encoded = as_array(column).dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        counts = np.bincount(codes[train_side_rows], minlength=len(encoded.dictionary))
        kept = np.flatnonzero(counts >= min_count)
        alphabetical = np.empty(len(encoded.dictionary), dtype=np.int64)
        alphabetical[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
        order = kept[np.lexsort((alphabetical[kept], -counts[kept]))]
        index_of_code = np.zeros(len(encoded.dictionary), dtype=np.int32)
        index_of_code[order] = np.arange(1, len(order) + 1, dtype=np.int32)
        oov = int(counts.sum() - counts[order].sum())
        return cls(encoded.dictionary.take(order), np.concatenate([[oov], counts[order]]), index_of_code[codes])

    @property
    def size(self) -> int:
        return len(self.values) + 1


def prepare(dataset: str, raw_dir: Path, out_dir: Path, options: PrepareOptions | None = None) -> DatasetMeta:
    """Reads `raw_dir` in the data set's native format and writes the prepared directory `out_dir`."""
    options = options or PrepareOptions()
    options.validate()
    fmt = get_format(dataset)
    method = options.split or ("time" if fmt.has_timestamp else "random")
    if method == "time" and not fmt.has_timestamp:
        raise UserError(f"{dataset} has no timestamps, so it cannot be split by time; use --split random")
    if out_dir.exists() and not options.overwrite:  # fail before the long work, not after
        raise UserError(f"{out_dir}: already exists; pass --overwrite to replace it")
    files = fmt.locate(raw_dir, strict=options.strict)
    tables = fmt.read(files)

    items, duplicate_items = first_per_key(tables.items)
    users, duplicate_users = first_per_key(tables.users) if tables.users is not None else (None, 0)
    interactions, users = _encode_interactions(tables, fmt.label_rule, users, items, fmt.has_timestamp)
    interactions.counts |= {"duplicate_item_rows": duplicate_items, "duplicate_user_rows": duplicate_users}
    side_tables = {"user": _clean(users, fmt.fields, "user"), "item": _clean(items, fmt.fields, "item")}

    split_rows = _split(interactions, method, options)
    train_rows = split_rows[0]
    vocabularies = {
        f.name: Vocabulary.build(
            side_tables[f.side][f.name], interactions.side_row(f.side)[train_rows], options.min_count
        )
        for f in fmt.fields
    }
    meta = _meta(fmt, files, interactions, split_rows, vocabularies, method, options)
    with atomic_dir(out_dir, overwrite=options.overwrite) as tmp:
        for name, rows in zip(SPLITS, split_rows):
            _write_split(tmp / f"{name}.parquet", rows, fmt.fields, interactions, side_tables, vocabularies, options)
        _write_vocabularies(tmp / VOCAB_FILE, vocabularies)
        meta.save(tmp)
    return meta


def _lookup(index: dict[str, int], keys: pa.Array, grow: bool) -> np.ndarray:
    """Row number of every key (-1 if unknown); with grow=True unknown keys get new rows."""
    if grow:
        return np.fromiter((index.setdefault(k, len(index)) for k in keys.to_pylist()), np.int64, len(keys))
    get = index.get
    return np.fromiter((get(k, -1) for k in keys.to_pylist()), np.int64, len(keys))


def _encode_interactions(
    tables: RawTables, rule: LabelRule, users: pa.Table | None, items: pa.Table, need_time: bool
) -> tuple[Interactions, pa.Table]:
    item_index = {k: n for n, k in enumerate(items["key"].to_pylist())}
    user_index = {} if users is None else {k: n for n, k in enumerate(users["key"].to_pylist())}
    counts = dict.fromkeys(("interactions_read", "dropped_by_label_rule", "dropped_unknown_user", "dropped_unknown_item"), 0)
    parts: list[tuple[np.ndarray, ...]] = []
    for chunk in tables.interactions:
        ratings = chunk["rating"].to_numpy()
        bad = rule.out_of_range(ratings)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise UserError(
                f"{tables.interactions_file}:{chunk['line'][k].as_py()}: rating {chunk['rating'][k].as_py()} "
                f"does not fit the label rule ({rule.describe()})"
            )
        counts["interactions_read"] += len(ratings)
        keep = rule.kept(ratings)
        counts["dropped_by_label_rule"] += int((~keep).sum())
        chunk = chunk.filter(pa.array(keep))
        item_row = _lookup(item_index, as_array(chunk["item_key"]), grow=False)
        known_item = item_row >= 0
        counts["dropped_unknown_item"] += int((~known_item).sum())
        chunk, item_row = chunk.filter(pa.array(known_item)), item_row[known_item]
        user_row = _lookup(user_index, as_array(chunk["user_key"]), grow=users is None)
        known = user_row >= 0
        counts["dropped_unknown_user"] += int((~known).sum())
        label = rule.labels(chunk["rating"].to_numpy()[known])
        time = chunk["timestamp"].to_numpy(zero_copy_only=False)[known] if need_time else None
        parts.append((user_row[known].astype(np.int32), item_row[known].astype(np.int32), label, time))
    n = sum(len(p[0]) for p in parts)
    counts["interactions_kept"] = n
    counts["distinct_users"] = len(np.unique(np.concatenate([p[0] for p in parts]))) if n else 0
    counts["distinct_items"] = len(np.unique(np.concatenate([p[1] for p in parts]))) if n else 0
    if n == 0:
        raise UserError(
            f"{tables.interactions_file}: no interaction is left after the label rule and the joins "
            f"({', '.join(f'{k}={v}' for k, v in counts.items())}); expected at least one"
        )
    if users is None:  # the user field is the key itself
        keys = pa.array(list(user_index), pa.string())
        users = pa.table({"key": keys, "user_id": keys})
    columns = [np.concatenate([p[c] for p in parts]) for c in range(3)]
    timestamps = np.concatenate([p[3] for p in parts]).astype(np.int64) if need_time else None
    return Interactions(*columns, timestamps, counts), users


def _clean(table: pa.Table, fields: tuple[Field, ...], side: str) -> pa.Table:
    return pa.table({f.name: clean_text(table[f.name]) for f in fields if f.side == side})


def _split(interactions: Interactions, method: str, options: PrepareOptions) -> list[np.ndarray]:
    """Row numbers of train, valid and test: by global time (stable on ties) or a seeded shuffle."""
    n = len(interactions.label)
    if method == "time":
        order = np.argsort(interactions.timestamp, kind="stable")
    else:
        order = np.random.default_rng(options.seed).permutation(n)
    cuts = np.round(np.cumsum(options.ratios)[:2] * n).astype(np.int64)
    parts = np.split(order, cuts)
    for name, rows in zip(SPLITS, parts):
        if len(rows) == 0:
            raise UserError(f"{n} interactions are too few for a non-empty {name} split at ratios {options.ratios}")
    return parts


def _write_split(
    path: Path,
    rows: np.ndarray,
    fields: tuple[Field, ...],
    interactions: Interactions,
    side_tables: dict[str, pa.Table],
    vocabularies: dict[str, Vocabulary],
    options: PrepareOptions,
) -> None:
    writer = None
    for start in tqdm(range(0, len(rows), options.write_rows), desc=path.stem, leave=False, disable=None):
        chunk = rows[start : start + options.write_rows]
        side_rows = {side: interactions.side_row(side)[chunk] for side in ("user", "item")}
        columns: dict[str, pa.Array] = {
            f.name: pa.array(vocabularies[f.name].id_of_side_row[side_rows[f.side]]) for f in fields
        }
        columns["label"] = pa.array(interactions.label[chunk])
        if interactions.timestamp is not None:
            columns["timestamp"] = pa.array(interactions.timestamp[chunk])
        for f in fields:
            columns[f"{f.name}_text"] = side_tables[f.side][f.name].take(side_rows[f.side])
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=options.row_group_rows)
    writer.close()


def _write_vocabularies(path: Path, vocabularies: dict[str, Vocabulary]) -> None:
    tables = [
        pa.table(
            {
                "field": pa.array([name] * v.size, pa.string()),
                "index": pa.array(np.arange(v.size, dtype=np.int32)),
                "value": pa.concat_arrays([pa.array([OOV_VALUE], pa.string()), v.values.cast(pa.string())]),
                "train_count": pa.array(v.counts.astype(np.int64)),
            }
        )
        for name, v in vocabularies.items()
    ]
    pq.write_table(pa.concat_tables(tables), path, compression="zstd")


def _meta(
    fmt: RawFormat,
    files: dict[str, RawFile],
    interactions: Interactions,
    split_rows: list[np.ndarray],
    vocabularies: dict[str, Vocabulary],
    method: str,
    options: PrepareOptions,
) -> DatasetMeta:
    offsets = np.concatenate([[0], np.cumsum([vocabularies[f.name].size for f in fmt.fields])])
    splits = {}
    for name, rows in zip(SPLITS, split_rows):
        positives = int(interactions.label[rows].sum())
        splits[name] = {"rows": len(rows), "positives": positives, "positive_rate": positives / len(rows)}
        if interactions.timestamp is not None:
            times = interactions.timestamp[rows]
            splits[name] |= {"first_timestamp": int(times.min()), "last_timestamp": int(times.max())}
    malformed = [raw.malformed.to_json() for raw in files.values() if raw.malformed.count]
    counts = interactions.counts | {"malformed_lines": sum(m["count"] for m in malformed)}
    return DatasetMeta(
        dataset=fmt.name,
        fields=tuple(
            FieldMeta(f.name, f.title, f.side, vocabularies[f.name].size, int(offset))
            for f, offset in zip(fmt.fields, offsets)
        ),
        splits=splits,
        label_rule=fmt.label_rule.describe(),
        split={"method": method, "ratios": list(options.ratios), "seed": options.seed},
        min_count=options.min_count,
        has_timestamp=interactions.timestamp is not None,
        sources=[
            {"role": role, "file": raw.path.name, "bytes": raw.bytes, "sha256": raw.sha256}
            for role, raw in files.items()
        ],
        counts=counts,
        malformed=malformed,
        created_by=f"cp_dist {cp_dist.__version__}",
    )
