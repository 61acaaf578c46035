"""Raw files -> Parquet splits with an ID view and a text view, in bounded memory.

The pipeline keeps side tables (users, items) apart from the interactions and works on integer
row numbers: an interaction is (user row, item row, label, time), 17 bytes. Vocabularies are
counted with numpy over those row numbers, and the output is written in row chunks, so memory
grows with the number of interactions times 17 bytes plus the side tables, not with the text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
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
#: Where a data set has no user file, its one user field is the user key itself.
KEY_USER_FIELD = "user_id"
HELD_OUT_ROUNDINGS = ("nearest", "up")
VOCAB_SCHEMA = pa.schema([("field", pa.string()), ("index", pa.int32()), ("value", pa.string()), ("train_count", pa.int64())])


@dataclass(frozen=True)
class PrepareOptions:
    split: str | None = None  # "time" | "random"; None: time where the data set has timestamps
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    held_out_rounding: str | None = None  # "nearest" | "up"; None: the data set's (RawFormat.held_out_rounding)
    seed: int = 0
    # values seen fewer times in training map to the OOV index 0; 0 keeps every value of the side tables
    # (the catalogue's vocabulary, as the paper counts features), unseen ones after the seen
    min_count: int = 1
    strict: bool = False  # fail on the first malformed line instead of skipping it
    overwrite: bool = False
    row_group_rows: int = 65_536
    write_rows: int = 1 << 19

    def validate(self) -> None:
        if self.split not in (None, "time", "random"):
            raise UserError(f"--split {self.split!r}: expected 'time' or 'random'")
        if len(self.ratios) != 3 or min(self.ratios) <= 0 or abs(sum(self.ratios) - 1) > 1e-9:
            raise UserError(f"--ratios {self.ratios}: expected three positive fractions that sum to 1")
        if self.held_out_rounding not in (None, *HELD_OUT_ROUNDINGS):
            raise UserError(f"--held-out-rounding {self.held_out_rounding!r}: expected one of {', '.join(HELD_OUT_ROUNDINGS)}")
        if self.row_group_rows < 1:
            raise UserError(f"--row-group-rows {self.row_group_rows}: expected an integer >= 1")
        if self.min_count < 0:
            raise UserError(f"--min-count {self.min_count}: expected an integer >= 0")


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
        return cls.from_counts(column, np.bincount(train_side_rows, minlength=len(column)), min_count)

    @classmethod
    def from_counts(cls, column: pa.Array, train_count_of_row: np.ndarray, min_count: int) -> Vocabulary:
        """From each side-table row's training count (rows sharing a value add up)."""
        encoded = as_array(column).dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        counts = np.bincount(codes, weights=train_count_of_row, minlength=len(encoded.dictionary)).astype(np.int64)
        kept = np.flatnonzero(counts >= min_count)
        alphabetical = np.empty(len(encoded.dictionary), dtype=np.int64)
        alphabetical[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
        order = kept[np.lexsort((alphabetical[kept], -counts[kept]))]
        index_of_code = np.zeros(len(encoded.dictionary), dtype=np.int32)
        index_of_code[order] = np.arange(1, len(order) + 1, dtype=np.int32)
        oov = int(counts.sum() - counts[order].sum())
        return cls(encoded.dictionary.take(order), np.concatenate([[oov], counts[order]]), index_of_code[codes])

    def table(self, name: str) -> pa.Table:
        """This vocabulary's rows of vocab.parquet."""
        return vocabulary_table(name, self.values, self.counts)

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

    users, items, duplicates = unique_side_tables(tables.users, tables.items)
    interactions, users = _encode_interactions(tables, fmt.label_rule, users, items, fmt.has_timestamp)
    interactions.counts |= duplicates
    side_tables = {"user": clean_side_table(users, fmt.fields, "user"), "item": clean_side_table(items, fmt.fields, "item")}

    split_rows = _split(interactions, method, options, held_out_rounding(fmt, options))
    train_rows = split_rows[0]
    vocabularies = {
        f.name: Vocabulary.build(
            side_tables[f.side][f.name], interactions.side_row(f.side)[train_rows], options.min_count
        )
        for f in fmt.fields
    }
    summaries = {name: _summary(interactions, rows) for name, rows in zip(SPLITS, split_rows)}
    malformed = [raw.malformed.to_json() for raw in files.values() if raw.malformed.count]
    meta = dataset_meta(fmt, sources(files), malformed, interactions.counts, summaries,
                        {name: v.size for name, v in vocabularies.items()}, method, options)
    with atomic_dir(out_dir, overwrite=options.overwrite) as tmp:
        for name, rows in zip(SPLITS, split_rows):
            _write_split(tmp / f"{name}.parquet", rows, fmt.fields, interactions, side_tables, vocabularies, options)
        write_vocabularies(tmp / VOCAB_FILE, [vocabularies[f.name].table(f.name) for f in fmt.fields])
        meta.save(tmp)
    return meta


def unique_side_tables(users: pa.Table | None, items: pa.Table) -> tuple[pa.Table | None, pa.Table, dict[str, int]]:
    """The first row of every user and item key, and how many later rows were dropped."""
    items, duplicate_items = first_per_key(items)
    users, duplicate_users = first_per_key(users) if users is not None else (None, 0)
    return users, items, {"duplicate_item_rows": duplicate_items, "duplicate_user_rows": duplicate_users}


def sources(files: dict[str, RawFile]) -> list[dict]:
    """meta.json's record of the raw files, once they have been read through (checksums set)."""
    return [{"role": role, "file": raw.path.name, "bytes": raw.bytes, "sha256": raw.sha256} for role, raw in files.items()]


def encode_chunk(
    chunk: pa.Table, rule: LabelRule, item_keys: pa.Array, user_keys: pa.Array | None, need_time: bool,
    counts: dict[str, int], source: str,
) -> pa.Table:
    """One chunk of raw interactions through the label rule and the joins with the side tables:
    columns `user` (row in the user table, or the key itself where the data set has no user file),
    `item_row`, `label`, `timestamp` (where needed) and `line`. Adds to `counts` what it dropped."""
    ratings = chunk["rating"].to_numpy()
    bad = rule.out_of_range(ratings)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise UserError(f"{source}:{chunk['line'][k].as_py()}: rating {chunk['rating'][k].as_py()} "
                        f"does not fit the label rule ({rule.describe()})")
    counts["interactions_read"] = counts.get("interactions_read", 0) + len(ratings)
    keep = rule.kept(ratings)
    item_row = pc.index_in(chunk["item_key"], value_set=item_keys)
    known = keep & pc.is_valid(item_row).to_numpy(zero_copy_only=False)
    user = chunk["user_key"]
    if user_keys is not None:
        user = pc.index_in(user, value_set=user_keys)
        known_user = pc.is_valid(user).to_numpy(zero_copy_only=False)
        counts["dropped_unknown_user"] = counts.get("dropped_unknown_user", 0) + int((known & ~known_user).sum())
    else:
        known_user = True
    for name, dropped in (("dropped_by_label_rule", ~keep), ("dropped_unknown_item", keep & ~known)):
        counts[name] = counts.get(name, 0) + int(dropped.sum())
    kept = pa.array(known & known_user)
    columns = {
        "user": pc.filter(user, kept) if user_keys is None else pc.filter(user, kept).cast(pa.int32()),
        "item_row": pc.filter(item_row, kept).cast(pa.int32()),
        "label": pa.array(rule.labels(ratings[known & known_user])),
    }
    if need_time:
        columns["timestamp"] = pc.filter(chunk["timestamp"], kept)
    return pa.table(columns | {"line": pc.filter(chunk["line"], kept)})


def _encode_interactions(
    tables: RawTables, rule: LabelRule, users: pa.Table | None, items: pa.Table, need_time: bool
) -> tuple[Interactions, pa.Table]:
    item_keys = as_array(items["key"])
    user_keys = None if users is None else as_array(users["key"])
    user_index: dict[str, int] = {}  # where the data set has no user file: keys in order of first appearance
    counts = dict.fromkeys(("interactions_read", "dropped_by_label_rule", "dropped_unknown_user", "dropped_unknown_item"), 0)
    parts: list[tuple[np.ndarray, ...]] = []
    for chunk in tables.interactions:
        encoded = encode_chunk(chunk, rule, item_keys, user_keys, need_time, counts, tables.interactions_file)
        if users is None:
            user_row = np.fromiter((user_index.setdefault(k, len(user_index)) for k in encoded["user"].to_pylist()),
                                   np.int32, encoded.num_rows)
        else:
            user_row = encoded["user"].to_numpy()
        time = encoded["timestamp"].to_numpy() if need_time else None
        parts.append((user_row, encoded["item_row"].to_numpy(), encoded["label"].to_numpy(), time))
    n = sum(len(p[0]) for p in parts)
    counts["interactions_kept"] = n
    counts["distinct_users"] = len(np.unique(np.concatenate([p[0] for p in parts]))) if n else 0
    counts["distinct_items"] = len(np.unique(np.concatenate([p[1] for p in parts]))) if n else 0
    if n == 0:
        raise no_interactions_left(tables.interactions_file, counts)
    if users is None:  # the user field is the key itself
        keys = pa.array(list(user_index), pa.string())
        users = pa.table({"key": keys, KEY_USER_FIELD: keys})
    columns = [np.concatenate([p[c] for p in parts]) for c in range(3)]
    timestamps = np.concatenate([p[3] for p in parts]).astype(np.int64) if need_time else None
    return Interactions(*columns, timestamps, counts), users


def no_interactions_left(source: str, counts: dict[str, int]) -> UserError:
    return UserError(f"{source}: no interaction is left after the label rule and the joins "
                     f"({', '.join(f'{k}={v}' for k, v in counts.items())}); expected at least one")


def clean_side_table(table: pa.Table, fields: tuple[Field, ...], side: str) -> pa.Table:
    return pa.table({f.name: clean_text(table[f.name]) for f in fields if f.side == side})


def _split(interactions: Interactions, method: str, options: PrepareOptions, rounding: str) -> list[np.ndarray]:
    """Row numbers of train, valid and test: by global time (stable on ties) or a seeded shuffle."""
    n = len(interactions.label)
    if method == "time":
        order = np.argsort(interactions.timestamp, kind="stable")
    else:
        order = np.random.default_rng(options.seed).permutation(n)
    return np.split(order, split_cuts(n, options.ratios, rounding))


def held_out_rounding(fmt: RawFormat, options: PrepareOptions) -> str:
    return options.held_out_rounding or fmt.held_out_rounding


def split_cuts(n: int, ratios: tuple[float, float, float], rounding: str) -> list[int]:
    """Where train and valid end among n ordered rows. "nearest": each cut at the row nearest its
    cumulative fraction. "up": valid and test each ceil(ratio * n) rows, train the rest, which gives
    the paper's Table 1 sizes (ML-1M's 739,012 rows: 591,208 / 73,902 / 73,902)."""
    if rounding == "up":
        valid, test = (math.ceil(Fraction(str(r)) * n) for r in ratios[1:])
        cuts = [n - valid - test, n - test]
    else:
        cuts = [int(c) for c in np.round(np.cumsum(ratios)[:2] * n)]
    for name, size in zip(SPLITS, np.diff([0, *cuts, n])):
        if size <= 0:
            raise UserError(f"{n} interactions are too few for a non-empty {name} split at ratios {ratios}")
    return cuts


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
        table = output_table(
            fields,
            {f.name: vocabularies[f.name].id_of_side_row[side_rows[f.side]] for f in fields},
            {f.name: side_tables[f.side][f.name].take(side_rows[f.side]) for f in fields},
            interactions.label[chunk],
            None if interactions.timestamp is None else interactions.timestamp[chunk],
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=options.row_group_rows)
    writer.close()


def output_table(fields: tuple[Field, ...], ids: dict[str, np.ndarray], texts: dict[str, pa.Array],
                 label: np.ndarray, timestamp: np.ndarray | None) -> pa.Table:
    """Rows of a split as both engines write them: ID columns, label, timestamp, text columns."""
    columns = {f.name: pa.array(ids[f.name], pa.int32()) for f in fields} | {"label": pa.array(label, pa.int8())}
    if timestamp is not None:
        columns["timestamp"] = pa.array(timestamp, pa.int64())
    return pa.table(columns | {f"{f.name}_text": as_array(texts[f.name]).cast(pa.string()) for f in fields})


def vocabulary_table(name: str, values: pa.Array, counts: np.ndarray) -> pa.Table:
    """vocab.parquet's rows of one field: OOV at index 0 with its count, then `values`."""
    return pa.table(
        {
            "field": pa.array([name] * (len(values) + 1), pa.string()),
            "index": pa.array(np.arange(len(values) + 1, dtype=np.int32)),
            "value": pa.concat_arrays([pa.array([OOV_VALUE], pa.string()), as_array(values).cast(pa.string())]),
            "train_count": pa.array(np.asarray(counts, dtype=np.int64)),
        }
    )


def write_vocabularies(path: Path, tables: Iterable[pa.Table]) -> None:
    """Every field's vocabulary into one file, field after field; `tables` may stream."""
    with pq.ParquetWriter(path, VOCAB_SCHEMA, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table.cast(VOCAB_SCHEMA))


def _summary(interactions: Interactions, rows: np.ndarray) -> dict:
    times = None if interactions.timestamp is None else interactions.timestamp[rows]
    return split_summary(len(rows), int(interactions.label[rows].sum()),
                         None if times is None else (int(times.min()), int(times.max())))


def split_summary(rows: int, positives: int, time_range: tuple[int, int] | None) -> dict:
    summary = {"rows": rows, "positives": positives, "positive_rate": positives / rows}
    if time_range is not None:
        summary |= {"first_timestamp": time_range[0], "last_timestamp": time_range[1]}
    return summary


def dataset_meta(
    fmt: RawFormat,
    source_files: list[dict],
    malformed: list[dict],
    counts: dict[str, int],
    summaries: dict[str, dict],
    vocab_sizes: dict[str, int],
    method: str,
    options: PrepareOptions,
) -> DatasetMeta:
    """meta.json, the same schema from both engines."""
    offsets = np.concatenate([[0], np.cumsum([vocab_sizes[f.name] for f in fmt.fields])])
    return DatasetMeta(
        dataset=fmt.name,
        fields=tuple(
            FieldMeta(f.name, f.title, f.side, vocab_sizes[f.name], int(offset)) for f, offset in zip(fmt.fields, offsets)
        ),
        splits={name: summaries[name] for name in SPLITS},
        label_rule=fmt.label_rule.describe(),
        split={"method": method, "ratios": list(options.ratios), "seed": options.seed,
               "held_out_rounding": held_out_rounding(fmt, options)},
        min_count=options.min_count,
        has_timestamp="first_timestamp" in summaries["train"],
        sources=source_files,
        counts=counts | {"malformed_lines": sum(m["count"] for m in malformed)},
        malformed=malformed,
        created_by=f"cp_dist {cp_dist.__version__}",
    )
