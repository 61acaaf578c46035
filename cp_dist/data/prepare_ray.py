"""`cp-dist data prepare --engine ray`: data.prepare's preparation spread over a Ray cluster.

It writes what the local engine writes (meta.json schema, vocabularies, split membership, even the
rows' order), with every split as a directory of Parquet files. The driver, the job submitter,
holds object references and per-block statistics only; side tables, interactions and vocabularies
stay in the workers and the object store, so its memory does not grow with the log. Tasks whose
results are many and small (a histogram or the counts of each block) are submitted by a task, not
by the driver: Ray returns small results inline to the submitter, which would grow with the blocks.

1. Side tables: one task reads the user and item files (they grow with the catalogue, not the log),
   keeps the first row per key and cleans the text, as the local engine does.
2. Interactions: a gzip stream cannot be split, so one task decompresses the file and cuts it into
   blocks of whole lines, numbered as in the file; decompressing costs a small share of parsing. Parse
   tasks, one per block and as many at once as the cluster has CPUs, run the data set's own reader,
   the label rule and the joins with the side tables on each block while the next is read.
3. The time split: each cut is the (timestamp, line) key of the row at that rank, found by counting
   rows into histograms over the blocks, a few passes and no sort, from one coordinating task. Rows
   with the cut's timestamp go by line, as the local engine's stable sort of the file-ordered rows
   puts them.
4. Vocabularies by distributed counting: fields of a side table from the training count of each of
   its rows, counted per block and summed block by block in a worker; a user field that is the key
   itself (no user file) by Ray Data groupby, sorted by (training count desc, value) and joined back
   onto the rows.
5. Each split is sorted by (timestamp, line), the local engine's row order, on its compact columns,
   then its ID and text columns are filled in and Ray Data writes it as numbered files.

Time splits only: the local engine's random split draws one permutation of all rows, which has no
distributed equivalent that gives the same membership.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import ray.data
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cp_dist.data.columns import as_array, clean_text
from cp_dist.data.formats import get_format
from cp_dist.data.formats.base import RawFormat
from cp_dist.data.lines import BLOCK_BYTES, FIRST_LINES_KEPT, RawBlock, RawFile
from cp_dist.data.meta import SPLITS, VOCAB_FILE, DatasetMeta
from cp_dist.data.prepare import (
    KEY_USER_FIELD,
    PrepareOptions,
    Vocabulary,
    clean_side_table,
    dataset_meta,
    encode_chunk,
    held_out_rounding,
    no_interactions_left,
    output_table,
    sources,
    split_cuts,
    split_summary,
    unique_side_tables,
    vocabulary_table,
    write_vocabularies,
)
from cp_dist.errors import UserError
from cp_dist.io import atomic_dir
from cp_dist.ray_cluster import init_ray

log = logging.getLogger(__name__)

COUNTS = ("interactions_read", "dropped_by_label_rule", "dropped_unknown_user", "dropped_unknown_item")
#: Histogram bins per counting pass: a 30-year span of seconds resolves to one second in three passes.
BINS = 4096


def prepare_with_ray(dataset: str, raw_dir: Path, out_dir: Path, options: PrepareOptions | None = None, *,
                     address: str | None = None, num_cpus: int | None = None, block_bytes: int = BLOCK_BYTES) -> DatasetMeta:
    """prepare_on_ray on the cluster at `address` (default: $RAY_ADDRESS, the cluster of a `ray job
    submit`, or one `ray start` left running here), else on a local one of `num_cpus` CPUs started for
    this run and stopped after it."""
    _check(dataset, out_dir, options or PrepareOptions())  # before a cluster starts
    connected = ray.is_initialized()
    if not connected:
        init_ray(address, num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        return prepare_on_ray(dataset, raw_dir, out_dir, options, block_bytes=block_bytes)
    except ray.exceptions.RayTaskError as err:  # bad input found in a task: its one-line message, not a traceback
        if isinstance(err.cause, UserError):
            raise err.cause from None
        raise
    finally:
        if not connected:
            ray.shutdown()


def prepare_on_ray(dataset: str, raw_dir: Path, out_dir: Path, options: PrepareOptions | None = None, *,
                   block_bytes: int = BLOCK_BYTES) -> DatasetMeta:
    """Reads `raw_dir` on the Ray cluster this process is connected to (ray.init() first) and writes
    `out_dir` like data.prepare.prepare, each split as `<split>.parquet/part-*.parquet`; the
    interactions file is parsed in blocks of `block_bytes` uncompressed bytes."""
    options = options or PrepareOptions()
    fmt = _check(dataset, out_dir, options)
    files = fmt.locate(raw_dir, strict=options.strict)
    started = time.perf_counter()

    side = _side_tables.remote(dataset, raw_dir, options.strict)
    side_info = ray.get(_side_info.remote(side))
    raw = files[fmt.interactions_role]
    blocks, stats, interactions_sha = _parse(dataset, raw, side, options.strict, block_bytes)
    counts = {name: sum(s["counts"].get(name, 0) for s in stats) for name in COUNTS}
    counts["interactions_kept"] = n = sum(s["rows"] for s in stats)
    if n == 0:
        raise no_interactions_left(str(raw.path), counts)
    log.info("parsed %d lines in %d blocks: %d interactions kept (%.0f s)",
             counts["interactions_read"], len(blocks), n, time.perf_counter() - started)

    cuts = split_cuts(n, options.ratios, held_out_rounding(fmt, options))
    keys = ray.get(_cut_keys.remote([int(rank) for rank in cuts], blocks))
    log.info("time split: valid from (timestamp, line) %s, test from %s (%.0f s)", *keys, time.perf_counter() - started)
    blocks = [_with_split.remote(block, keys) for block in blocks]

    side_vocab, block_summaries = _side_vocabularies.remote(side, blocks, side_info["has_user_table"], options.min_count)
    summaries = _summaries(ray.get(block_summaries))
    vocab_sizes, distinct = ray.get(_vocabulary_sizes.remote(side_vocab))
    rows = ray.data.from_arrow_refs(blocks)
    user_vocab: list = []
    if not side_info["has_user_table"]:
        partitions = min(len(blocks), 4 * _cpus())  # Ray Data's default of 200 costs minutes on small data
        user_vocab, vocab_sizes[KEY_USER_FIELD], distinct["user"] = _user_vocabulary(rows, options.min_count, partitions)
        rows = rows.join(ray.data.from_arrow_refs(user_vocab).select_columns(["user", "user_index"]), "left_outer",
                         num_partitions=partitions, on=("user",))
    counts |= {"distinct_users": distinct["user"], "distinct_items": distinct["item"]} | side_info["duplicates"]
    log.info("vocabularies counted (%.0f s)", time.perf_counter() - started)

    source_files = [s | {"sha256": interactions_sha} if s["role"] == fmt.interactions_role else s
                    for s in side_info["sources"]]
    malformed = side_info["malformed"] + _merged_malformed(str(raw.path), stats)
    meta = dataset_meta(fmt, source_files, malformed, counts, summaries, vocab_sizes, "time", options)
    ordered = rows.sort(["timestamp", "line"]).materialize().to_arrow_refs()
    log.info("rows sorted by (timestamp, line) (%.0f s)", time.perf_counter() - started)
    with atomic_dir(out_dir, overwrite=options.overwrite) as tmp:
        split_dirs = [tmp / f"{name}.parquet" for name in SPLITS]
        for split_dir in split_dirs:
            split_dir.mkdir()
        ray.get([_write_parts.remote(block, [d / f"part-{k:06d}.parquet" for d in split_dirs], fmt.fields, side,
                                     side_vocab, options.row_group_rows) for k, block in enumerate(ordered)])
        ray.get(_write_vocabularies.remote(tmp / VOCAB_FILE, fmt.fields, side_vocab, user_vocab, summaries["train"]["rows"]))
        meta.save(tmp)
    log.info("prepared %s in %.0f s", out_dir, time.perf_counter() - started)
    return meta


def _check(dataset: str, out_dir: Path, options: PrepareOptions) -> RawFormat:
    options.validate()
    fmt = get_format(dataset)
    if options.split == "random" or not fmt.has_timestamp:
        raise UserError(f"{dataset}: --engine ray splits by time only (a random split draws one permutation of every "
                        "row); use --engine local")
    if out_dir.exists() and not options.overwrite:
        raise UserError(f"{out_dir}: already exists; pass --overwrite to replace it")
    return fmt


def _parse(dataset: str, raw: RawFile, side, strict: bool, block_bytes: int) -> tuple[list, list[dict], str]:
    """Block refs of parsed interactions in file order, their small statistics, and the file's sha256."""
    parallel = _cpus()
    # The reader takes no CPU slot: it waits on the parse tasks most of the time, and holding a slot
    # while it waits would leave a 1-CPU cluster none to parse with. It runs on a node with CPUs, not
    # on a head started with --num-cpus=0.
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]
    reader = _read_blocks.options(
        num_cpus=0, _generator_backpressure_num_objects=2 * parallel,
        scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[0], soft=True) if nodes else "DEFAULT",
    ).remote(str(raw.path), raw.encoding, strict, block_bytes)
    blocks, stat_refs, previous = [], [], None
    for ref in reader:  # the last item is the checksum, so each block is parsed once the next one arrives
        if previous is not None:
            parsed, stat = _parse_block.options(num_returns=2).remote(dataset, str(raw.path), previous, side, strict)
            blocks.append(parsed)
            stat_refs.append(stat)
            if len(stat_refs) > 2 * parallel:  # the reader waits while too many blocks are unparsed
                ray.wait(stat_refs, num_returns=len(stat_refs) - 2 * parallel, fetch_local=False)
        previous = ref
    return blocks, ray.get(stat_refs), ray.get(previous)


def _cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@ray.remote
def _side_tables(dataset: str, raw_dir: Path, strict: bool) -> dict:
    fmt = get_format(dataset)
    files = fmt.locate(raw_dir, strict=strict)
    users, items = fmt.read_side_tables(files)
    users, items, duplicates = unique_side_tables(users, items)
    return {
        "users": users, "items": items, "duplicates": duplicates,
        "user_text": None if users is None else clean_side_table(users, fmt.fields, "user"),
        "item_text": clean_side_table(items, fmt.fields, "item"),
        "sources": sources(files),
        "malformed": [r.malformed.to_json() for role, r in files.items() if r.malformed.count and role != fmt.interactions_role],
    }


@ray.remote
def _side_info(side: dict) -> dict:
    """What the driver needs of the side tables: their sizes, not their rows."""
    return {"has_user_table": side["users"] is not None, "duplicates": side["duplicates"],
            "sources": side["sources"], "malformed": side["malformed"]}


@ray.remote(num_returns="streaming")
def _read_blocks(path: str, encoding: str, strict: bool, block_bytes: int) -> Iterator:
    """(first line number, lines) blocks of a raw file, then its sha256."""
    raw = RawFile(Path(path), encoding=encoding, strict=strict)
    for first, lines in raw.blocks(block_bytes):
        yield first, b"\n".join(lines)
    yield raw.sha256


@ray.remote
def _parse_block(dataset: str, path: str, block: tuple[int, bytes], side: dict, strict: bool) -> tuple[pa.Table, dict]:
    fmt = get_format(dataset)
    raw = RawBlock(Path(path), *block, encoding=fmt.encoding, strict=strict)
    counts: dict[str, int] = {}
    user_keys = None if side["users"] is None else as_array(side["users"]["key"])
    item_keys = as_array(side["items"]["key"])
    parts = [encode_chunk(chunk, fmt.label_rule, item_keys, user_keys, True, counts, path)
             for chunk in fmt.read_interactions(raw)]
    table = pa.concat_tables(parts) if parts else None
    if table is None:
        table = pa.table({"user": pa.array([], pa.int32() if user_keys is not None else pa.string()),
                          "item_row": pa.array([], pa.int32()), "label": pa.array([], pa.int8()),
                          "timestamp": pa.array([], pa.int64()), "line": pa.array([], pa.int64())})
    elif user_keys is None:  # the vocabulary holds the cleaned key, as the local engine's user table does
        table = table.set_column(0, "user", clean_text(table["user"]))
    stats = {"rows": table.num_rows, "counts": counts, "malformed": raw.malformed.to_json()}
    return table, stats


@ray.remote
def _cut_keys(ranks: list[int], blocks: list) -> list[tuple[int, int]]:
    """The keys of the rows at `ranks`, searched in a task (Ray lends its CPU out while it waits on
    its histogram tasks): their results, small enough for Ray to return them inline, come to this task
    and not to the driver, whose memory would otherwise grow with the number of blocks."""
    return [_key_at_rank(rank, blocks) for rank in ranks]


def _key_at_rank(rank: int, blocks: list) -> tuple[int, int]:
    """The (timestamp, line) key of the row at `rank` (0-based) in (timestamp, line) order."""
    def histogram(column: str, edges: np.ndarray, timestamp: int | None = None) -> np.ndarray:
        return np.sum(ray.get([_histogram.remote(b, column, edges, timestamp) for b in blocks]), axis=0)

    bounds = np.array(ray.get([_bounds.remote(b) for b in blocks]))  # [blocks, 4]: ts min/max, line min/max
    timestamp, below = locate(rank, int(bounds[:, 0].min()), int(bounds[:, 1].max()), lambda e: histogram("timestamp", e))
    line, _ = locate(rank - below, int(bounds[:, 2].min()), int(bounds[:, 3].max()),
                     lambda e: histogram("line", e, timestamp))
    return timestamp, line


def locate(rank: int, low: int, high: int, histogram: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int]:
    """The integer value v in [low, high] of the `rank`-th smallest counted row (0-based), and how many
    rows lie below v; `histogram(edges)` counts the rows in each [edges[i], edges[i+1])."""
    below = 0
    while low < high:
        edges = np.unique(np.linspace(low, high + 1, BINS + 1).astype(np.int64))
        counts = histogram(edges)
        cumulative = np.cumsum(counts)
        bin_ = int(np.searchsorted(cumulative, rank - below, side="right"))
        below += int(cumulative[bin_ - 1]) if bin_ else 0
        low, high = int(edges[bin_]), int(edges[bin_ + 1]) - 1
    return low, below


@ray.remote
def _bounds(table: pa.Table) -> tuple[int, int, int, int]:
    if table.num_rows == 0:
        return np.iinfo(np.int64).max, np.iinfo(np.int64).min, np.iinfo(np.int64).max, np.iinfo(np.int64).min
    ts, line = pc.min_max(table["timestamp"]), pc.min_max(table["line"])
    return ts["min"].as_py(), ts["max"].as_py(), line["min"].as_py(), line["max"].as_py()


@ray.remote
def _histogram(table: pa.Table, column: str, edges: np.ndarray, timestamp: int | None) -> np.ndarray:
    values = table[column].to_numpy()
    if timestamp is not None:
        values = values[table["timestamp"].to_numpy() == timestamp]
    return count_in_bins(values, edges)


def count_in_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many values lie in each [edges[i], edges[i + 1])."""
    inside = values[(values >= edges[0]) & (values < edges[-1])]
    return np.bincount(np.searchsorted(edges, inside, side="right") - 1, minlength=len(edges) - 1)


@ray.remote
def _with_split(table: pa.Table, keys: list[tuple[int, int]]) -> pa.Table:
    """Adds `split`: 0 below the first cut key, 1 below the second, 2 from there."""
    ts, line = table["timestamp"].to_numpy(), table["line"].to_numpy()
    split = np.zeros(table.num_rows, dtype=np.int8)
    for timestamp, cut_line in keys:
        split += (ts > timestamp) | ((ts == timestamp) & (line >= cut_line))
    return table.append_column("split", pa.array(split))


@ray.remote
def _block_counts(table: pa.Table, side_users: bool) -> tuple[dict, dict]:
    """Per split: rows, positives, time range; per side table: its rows' training counts and the
    rows seen at all."""
    split, label, ts = table["split"].to_numpy(), table["label"].to_numpy(), table["timestamp"].to_numpy()
    summary = {}
    for index in range(len(SPLITS)):
        mask = split == index
        summary[index] = (int(mask.sum()), int(label[mask].sum()), int(ts[mask].min()) if mask.any() else None,
                          int(ts[mask].max()) if mask.any() else None)
    rows = {"item": table["item_row"].to_numpy()} | ({"user": table["user"].to_numpy()} if side_users else {})
    counts = {side: (np.unique(r[split == 0], return_counts=True), np.unique(r)) for side, r in rows.items()}
    return summary, counts


def _summaries(blocks: list[dict]) -> dict[str, dict]:
    summaries = {}
    for index, name in enumerate(SPLITS):
        parts = [b[index] for b in blocks if b[index][0]]
        summaries[name] = split_summary(sum(p[0] for p in parts), sum(p[1] for p in parts),
                                        (min(p[2] for p in parts), max(p[3] for p in parts)))
    return summaries


@ray.remote(num_returns=2)
def _side_vocabularies(side: dict, blocks: list, side_users: bool, min_count: int) -> tuple[dict, list[dict]]:
    """Vocabularies of the side tables' fields from the blocks' training counts, summed here block
    by block, and how many of each side's rows occur at all; each block's split summary. The blocks
    are counted by tasks submitted from here, so that their results, small enough for Ray to return
    them inline, come to this task and not to the driver, whose memory would grow with the blocks."""
    block_counts = [_block_counts.options(num_returns=2).remote(block, side_users) for block in blocks]
    vocabularies, distinct = {}, {}
    for name in ("user", "item"):
        texts = side[f"{name}_text"]
        if texts is None:
            continue
        train, seen = np.zeros(texts.num_rows, dtype=np.int64), np.zeros(texts.num_rows, dtype=bool)
        for _, ref in block_counts:
            (rows, n), present = ray.get(ref)[name]
            np.add.at(train, rows, n)
            seen[present] = True
        distinct[name] = int(seen.sum())
        vocabularies |= {column: Vocabulary.from_counts(texts[column], train, min_count) for column in texts.column_names}
    return {"vocabularies": vocabularies, "distinct": distinct}, ray.get([summary for summary, _ in block_counts])


@ray.remote
def _vocabulary_sizes(side_vocab: dict) -> tuple[dict, dict]:
    return {name: v.size for name, v in side_vocab["vocabularies"].items()}, dict(side_vocab["distinct"])


def _user_vocabulary(rows: ray.data.Dataset, min_count: int, partitions: int) -> tuple[list, int, int]:
    """Block refs of (user, train_count, user_index) for every user with at least `min_count`
    training rows, in index order (training count descending, then value); the vocabulary size with
    OOV; the number of distinct users."""
    train = rows.map_batches(
        lambda b: pa.table({"user": b["user"], "train_count": pc.equal(b["split"], 0).cast(pa.int64())}),
        batch_format="pyarrow")
    counted = train.groupby("user", num_partitions=partitions).sum("train_count")
    counted = counted.rename_columns({"sum(train_count)": "train_count"}).materialize()
    kept = counted.map_batches(lambda b: b.filter(pc.greater_equal(b["train_count"], min_count)), batch_format="pyarrow")
    ordered = kept.sort(["train_count", "user"], descending=[True, False]).materialize().to_arrow_refs()
    sizes = ray.get([_num_rows.remote(ref) for ref in ordered])
    offsets = np.cumsum([1, *sizes])
    numbered = [_numbered.remote(ref, int(first)) for ref, first in zip(ordered, offsets)]
    return numbered, int(offsets[-1]), counted.count()


@ray.remote
def _num_rows(table: pa.Table) -> int:
    return table.num_rows


@ray.remote
def _numbered(table: pa.Table, first: int) -> pa.Table:
    return table.append_column("user_index", pa.array(np.arange(first, first + table.num_rows, dtype=np.int32)))


@ray.remote
def _write_parts(block: pa.Table, paths: list[Path], fields, side: dict, side_vocab: dict, row_group_rows: int) -> None:
    """A sorted block's rows with their ID and text columns, one Parquet file per split it holds rows of
    (paths[s] for split s): a block lies in one split but where a cut falls inside it."""
    vocabularies = side_vocab["vocabularies"]
    rows = {"item": block["item_row"].to_numpy()}
    texts_of = {"item": side["item_text"], "user": side["user_text"]}
    ids, texts = {}, {}
    if side["users"] is None:  # the key-only user field: its text is the cleaned key, its index from the join
        ids[KEY_USER_FIELD] = pc.fill_null(block["user_index"], 0).to_numpy()
        texts[KEY_USER_FIELD] = as_array(block["user"])
    else:
        rows["user"] = block["user"].to_numpy()
    for f in fields:
        if f.name not in ids:
            ids[f.name] = vocabularies[f.name].id_of_side_row[rows[f.side]]
            texts[f.name] = texts_of[f.side][f.name].take(rows[f.side])
    table = output_table(fields, ids, texts, block["label"].to_numpy(), block["timestamp"].to_numpy())
    split = block["split"].to_numpy()
    for index, path in enumerate(paths):
        rows_of_split = np.flatnonzero(split == index)
        if len(rows_of_split):
            pq.write_table(table.take(rows_of_split), path, row_group_size=row_group_rows, compression="zstd")


@ray.remote
def _write_vocabularies(path: Path, fields, side_vocab: dict, user_blocks: list, train_rows: int) -> None:
    """vocab.parquet in field order; the key-only user field streamed block by block, OOV first."""
    def tables() -> Iterator[pa.Table]:
        for f in fields:
            if f.name in side_vocab["vocabularies"]:
                yield side_vocab["vocabularies"][f.name].table(f.name)
                continue
            kept = sum(int(pc.sum(ray.get(ref)["train_count"]).as_py() or 0) for ref in user_blocks)
            yield vocabulary_table(f.name, pa.array([], pa.string()), np.array([train_rows - kept]))
            for ref in user_blocks:
                block = ray.get(ref)
                yield pa.table({"field": pa.array([f.name] * block.num_rows, pa.string()), "index": block["user_index"],
                                "value": block["user"], "train_count": block["train_count"]})
    write_vocabularies(path, tables())


def _merged_malformed(path: str, stats: list[dict]) -> list[dict]:
    count = sum(s["malformed"]["count"] for s in stats)
    if not count:
        return []
    first = sorted((line for s in stats for line in s["malformed"]["first_lines"]), key=lambda m: m["line"])
    return [{"file": path, "count": count, "first_lines": first[:FIRST_LINES_KEPT]}]
