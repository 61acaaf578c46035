"""Batches over the Parquet splits, each rank decoding only the rows its slices draw from.

The rows (splits concatenated) are cut into S logical shards, S contiguous ranges of equal size, S a
setting that does not depend on the world size. A global batch of G rows is G / S rows from each
shard, shard after shard, and is cut into W consecutive slices of G / W rows, one per rank: W ranks
see exactly the rows one process sees at batch G, so sharded and unsharded training compare step by
step, and rank r decodes only the shards its slice overlaps (N / W rows when W divides S; every
row when S = 1, the reading of cp_dist before logical shards, kept bit for bit). Each shard is read
in windows of a few row-group pieces, shuffled per epoch, in a background thread one batch ahead;
a resume skips whole windows without decoding them.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cp_dist.data.meta import DatasetMeta
from cp_dist.data.tokens import TOKENIZATION_VERSION, ValueTokens, text_ids
from cp_dist.errors import UserError

ROW_COLUMN = "__row"  # the global row number, carried through shuffles


@dataclass
class Batch:
    ids: torch.Tensor  # [B, F] vocabulary index of every field (0 = OOV)
    labels: torch.Tensor  # [B] float32 in {0, 1}
    input_ids: torch.Tensor | None = None  # [B, T] token ids, padded
    attention_mask: torch.Tensor | None = None
    token_fields: torch.Tensor | None = None  # [B, T] the field whose value each token spells; -1: template
    row_index: torch.Tensor | None = None  # [B] row number in the split(s); -1: padding that keeps ranks in step
    text_ids: torch.Tensor | None = None  # [B, F] each field's value in the token table (texts of some fields: CTR-BERT)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def valid(self) -> torch.Tensor:
        """[B] bool: the real rows (padding rows repeat nothing and count in no metric)."""
        return self.row_index >= 0 if self.row_index is not None else torch.ones(len(self), dtype=torch.bool)

    def to(self, device: torch.device) -> Batch:
        tensors = (self.ids, self.labels, self.input_ids, self.attention_mask, self.token_fields, self.row_index)
        return Batch(*(t.to(device) if t is not None else None for t in tensors), text_ids=self.text_ids)


class BatchSource(Protocol):
    """What the training loop consumes: an epoch of global batches, this rank's slice of each.

    Global batches must not depend on the world size (W ranks see, together, the rows one process
    would), and set_epoch(epoch, skip) must resume an epoch exactly after its first `skip` batches.
    """

    @property
    def num_rows(self) -> int: ...

    def __len__(self) -> int: ...  # global batches per epoch

    def set_epoch(self, epoch: int, skip: int = 0) -> None: ...

    def __iter__(self) -> Iterator[Batch]: ...


def make_batch(ids: np.ndarray, labels: np.ndarray, rows: np.ndarray | None, values: np.ndarray | None,
               tokens: ValueTokens | None) -> Batch:
    """A Batch from numpy columns: [B, F] ids, [B] labels and row numbers, and where the model reads
    text, [B, F] text ids whose token ids, mask and token fields `tokens` assembles."""
    batch = Batch(torch.from_numpy(ids), torch.from_numpy(labels), row_index=None if rows is None else torch.from_numpy(rows))
    if tokens is not None:
        input_ids, mask, token_fields = tokens.assemble(values)
        batch.input_ids, batch.attention_mask = torch.from_numpy(input_ids), torch.from_numpy(mask)
        batch.token_fields, batch.text_ids = torch.from_numpy(token_fields), torch.from_numpy(values)
    return batch


@dataclass(frozen=True)
class _Piece:
    """The rows [start, stop) of one row group of one file, and the row number of `start`."""

    file: int
    group: int
    start: int
    stop: int
    first_row: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


class SplitLoader:
    """The BatchSource over prepared Parquet splits: one split (or several as one, e.g. train +
    valid for PA-MLM) in global batches; this rank receives its slice of each.

    `decoded_rows` counts the rows this rank has decoded from Parquet since the last set_epoch.
    """

    def __init__(
        self,
        data_dir: Path,
        split: str | Sequence[str],
        *,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        text: bool = False,
        logical_shards: int = 1,
        window_pieces: int = 8,
        read_ahead: int = 1,
    ):
        for divisor, name in ((world_size, "world size"), (logical_shards, "logical_shards")):
            if global_batch_size % divisor:
                raise UserError(f"global batch {global_batch_size} is not divisible by {name} {divisor}")
        self.meta = DatasetMeta.load(data_dir)
        if text and (self.meta.tokenizer or {}).get("version") != TOKENIZATION_VERSION:
            found = "no pre-tokenized text" if self.meta.tokenizer is None else "text tokenized by an older cp_dist"
            raise UserError(f"{data_dir}: {found}; run `cp-dist data tokenize --data {data_dir}` first")
        splits = [split] if isinstance(split, str) else list(split)
        self.files = [pq.ParquetFile(path) for name in splits for path in self.meta.split_files(data_dir, name)]
        self.tokens = ValueTokens.load(data_dir) if text else None
        self.columns = [f.name for f in self.meta.fields] + ["label"] + ([f.text_id_column for f in self.meta.fields] if text else [])
        self.global_batch_size, self.rank, self.world_size = global_batch_size, rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.window_pieces, self.read_ahead = window_pieces, read_ahead
        self.shards = self._cut_shards(logical_shards)
        self.shard_rows = [sum(p.rows for p in pieces) for pieces in self.shards]
        self.epoch, self.skip, self.decoded_rows = 0, 0, 0

    def _cut_shards(self, count: int) -> list[list[_Piece]]:
        """The row-group pieces of each of `count` equal row ranges, in file order."""
        groups = [(k, g, f.metadata.row_group(g).num_rows) for k, f in enumerate(self.files) for g in range(f.num_row_groups)]
        total = sum(rows for *_, rows in groups)
        bounds = [s * total // count for s in range(count + 1)]
        shards: list[list[_Piece]] = [[] for _ in range(count)]
        first = 0
        for file, group, rows in groups:
            for s in range(count):
                start, stop = max(bounds[s], first), min(bounds[s + 1], first + rows)
                if start < stop:
                    shards[s].append(_Piece(file, group, start - first, stop - first, start))
            first += rows
        return shards

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Reshuffles identically on every rank for the given epoch; the next pass starts after its
        first `skip` global batches (resuming mid-epoch from a checkpoint)."""
        self.epoch, self.skip, self.decoded_rows = epoch, skip, 0

    @property
    def num_rows(self) -> int:
        return sum(f.metadata.num_rows for f in self.files)

    @property
    def _full_batches(self) -> int:
        """Global batches in which every shard gives its full G / S rows."""
        return min(self.shard_rows) // (self.global_batch_size // len(self.shards))

    def __len__(self) -> int:
        short = self.num_rows > self._full_batches * self.global_batch_size
        return self._full_batches + (1 if short and not self.drop_last else 0)

    def __iter__(self) -> Iterator[Batch]:
        """This epoch's batches, from `skip` on, decoded one batch ahead in a background thread."""
        if self.read_ahead <= 0:
            yield from self._batches()
            return
        ahead: queue.Queue = queue.Queue(maxsize=self.read_ahead)
        stop, done = threading.Event(), object()

        def offer(item) -> bool:
            """Queues `item` unless the consumer has gone; False once it has."""
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self._batches():
                    if not offer(batch):
                        return
                offer(done)
            except BaseException as err:  # handed to the consumer, raised there
                offer(err)

        worker = threading.Thread(target=produce, name="cp_dist-read-ahead", daemon=True)
        worker.start()
        try:
            while (item := ahead.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def _batches(self) -> Iterator[Batch]:
        count = len(self.shards)
        per_shard, per_rank = self.global_batch_size // count, self.global_batch_size // self.world_size
        shards = self._shards_of_slice(per_shard, per_rank)
        groups = _RowGroups(self, [p for s in shards for p in self.shards[s]])
        readers = {s: _ShardReader(self, s, groups) for s in shards}
        for reader in readers.values():
            reader.skip(min(self.skip, self._full_batches) * per_shard)
        for _ in range(self.skip, self._full_batches):
            yield self._slice({s: reader.take(per_shard) for s, reader in readers.items()}, per_shard, per_rank)
        if len(self) > self._full_batches and self.skip <= self._full_batches:
            parts = {s: reader.take(None) for s, reader in readers.items()}
            rests = [rows - self._full_batches * per_shard for rows in self.shard_rows]
            step = self.world_size // gcd(count, self.world_size)  # S * padded must divide into W slices
            padded = -(-max(rests) // step) * step
            yield self._slice(parts, padded, padded * count // self.world_size)

    def _shards_of_slice(self, per_shard: int, per_rank: int) -> range:
        """The shards that this rank's slice [rank * G / W, (rank + 1) * G / W) overlaps, where shard s
        fills [s * G / S, (s + 1) * G / S); the same for the short last batch, whose shard parts
        are padded to equal size."""
        first = self.rank * per_rank
        return range(first // per_shard, -(-(first + per_rank) // per_shard))

    def _slice(self, parts: dict[int, pa.Table | None], per_shard: int, per_rank: int) -> Batch:
        """This rank's rows of a global batch laid out shard after shard, each shard's part padded to
        per_shard rows: padding rows are all-zero (OOV ids), row_index -1."""
        first = self.rank * per_rank
        fields = self.meta.fields
        ids = np.zeros((per_rank, len(fields)), np.int64)
        labels = np.zeros(per_rank, np.float32)
        rows = np.full(per_rank, -1, np.int64)
        values = np.zeros((per_rank, len(fields)), np.int64) if self.tokens is not None else None
        for shard, part in parts.items():
            if part is None:  # a shard with no rows (fewer rows than shards)
                continue
            lo, hi = max(first, shard * per_shard), min(first + per_rank, shard * per_shard + part.num_rows)
            if lo >= hi:
                continue
            piece = part.slice(lo - shard * per_shard, hi - lo)
            target = slice(lo - first, hi - first)
            ids[target] = np.stack([piece[f.name].to_numpy() for f in fields], axis=1)
            labels[target] = piece["label"].to_numpy()
            rows[target] = piece[ROW_COLUMN].to_numpy()
            if values is not None:
                values[target] = text_ids(piece, fields)
        return make_batch(ids, labels, rows, values, self.tokens)


class _ShardReader:
    """One shard's rows in this epoch's order: its pieces shuffled, read `window_pieces` at a time,
    the rows of a window shuffled; take(n) hands out the next n rows."""

    def __init__(self, loader: SplitLoader, shard: int, groups: _RowGroups):
        self.loader, self.pieces, self.groups = loader, loader.shards[shard], groups
        # One shard draws the stream cp_dist drew before logical shards; several are seeded apart.
        key = [loader.seed, loader.epoch] + ([shard] if len(loader.shards) > 1 else [])
        self.rng = np.random.default_rng(key)
        order = self.rng.permutation(len(self.pieces)) if loader.shuffle else np.arange(len(self.pieces))
        self.windows = [[self.pieces[k] for k in order[w : w + loader.window_pieces]]
                        for w in range(0, len(order), loader.window_pieces)]
        self.buffer: pa.Table | None = None

    def skip(self, rows: int) -> None:
        """Passes over the first `rows` rows, decoding only the window they end in."""
        while self.windows and rows >= (size := sum(p.rows for p in self.windows[0])):
            if self.loader.shuffle:
                self.rng.permutation(size)  # the draw that window's rows would have taken
            for piece in self.windows.pop(0):
                self.groups.release(piece)
            rows -= size
        if rows:
            self.take(rows)

    def take(self, rows: int | None) -> pa.Table | None:
        """The next `rows` rows (None: all that are left; None if the shard has no rows)."""
        while self.windows and (rows is None or self.buffer is None or self.buffer.num_rows < rows):
            window = self._read(self.windows.pop(0))
            self.buffer = window if self.buffer is None else pa.concat_tables([self.buffer, window])
        if self.buffer is None:
            return None
        rows = self.buffer.num_rows if rows is None else rows
        taken, self.buffer = self.buffer.slice(0, rows), self.buffer.slice(rows)
        return taken

    def _read(self, pieces: list[_Piece]) -> pa.Table:
        tables = []
        for p in pieces:
            group = self.groups.read(p).slice(p.start, p.rows)
            tables.append(group.append_column(ROW_COLUMN, pa.array(np.arange(p.first_row, p.first_row + p.rows))))
        window = pa.concat_tables(tables)
        return window.take(self.rng.permutation(window.num_rows)) if self.loader.shuffle else window


class _RowGroups:
    """Decodes the row groups of one rank's shards, each once per epoch: a group that two of its
    shards share is kept until the second one has read its rows."""

    def __init__(self, loader: SplitLoader, pieces: list[_Piece]):
        self.loader = loader
        self.pending = Counter((p.file, p.group) for p in pieces)
        self.kept: dict[tuple[int, int], pa.Table] = {}

    def read(self, piece: _Piece) -> pa.Table:
        key = (piece.file, piece.group)
        table = self.kept.get(key)
        if table is None:
            table = self.loader.files[piece.file].read_row_group(piece.group, columns=self.loader.columns)
            self.loader.decoded_rows += table.num_rows
            self.kept[key] = table
        self.release(piece)
        return table

    def release(self, piece: _Piece) -> None:
        """One fewer piece of this group to read (read now, or skipped on a resume)."""
        key = (piece.file, piece.group)
        self.pending[key] -= 1
        if not self.pending[key]:
            self.kept.pop(key, None)
