"""Batches over the Parquet splits, streamed by row group and sliced per rank.

A global batch of G rows is cut into W consecutive slices of G / W rows, one per rank: W ranks
at per-rank batch G / W see exactly the rows one process sees at batch G. That is what makes
sharded and unsharded training comparable step by step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cp_dist.data.meta import DatasetMeta
from cp_dist.data.tokens import TOKENIZATION_VERSION, ValueTokens, text_ids
from cp_dist.errors import UserError


@dataclass
class Batch:
    ids: torch.Tensor  # [B, F] vocabulary index of every field (0 = OOV)
    labels: torch.Tensor  # [B] float32 in {0, 1}
    input_ids: torch.Tensor | None = None  # [B, T] token ids, padded
    attention_mask: torch.Tensor | None = None
    token_fields: torch.Tensor | None = None  # [B, T] the field whose value each token spells; -1: template
    num_valid: int | None = None  # rows past this repeat the last row, so that ranks stay in step

    def __post_init__(self) -> None:
        if self.num_valid is None:
            self.num_valid = len(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Batch:
        tensors = (self.ids, self.labels, self.input_ids, self.attention_mask, self.token_fields)
        return Batch(*(t.to(device) if t is not None else None for t in tensors), num_valid=self.num_valid)


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


class SplitLoader:
    """The BatchSource over prepared Parquet splits: one split (or several as one, e.g. train +
    valid for PA-MLM) in global batches; this rank receives its slice of each."""

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
        window_row_groups: int = 8,
    ):
        if global_batch_size % world_size:
            raise UserError(f"global batch {global_batch_size} is not divisible by world size {world_size}")
        self.meta = DatasetMeta.load(data_dir)
        if text and (self.meta.tokenizer or {}).get("version") != TOKENIZATION_VERSION:
            found = "no pre-tokenized text" if self.meta.tokenizer is None else "text tokenized by an older cp_dist"
            raise UserError(f"{data_dir}: {found}; run `cp-dist data tokenize --data {data_dir}` first")
        splits = [split] if isinstance(split, str) else list(split)
        self.files = [pq.ParquetFile(self.meta.split_path(data_dir, name)) for name in splits]
        self.row_groups = [(f, g) for f in self.files for g in range(f.num_row_groups)]
        self.tokens = ValueTokens.load(data_dir) if text else None
        self.columns = [f.name for f in self.meta.fields] + ["label"] + ([f.text_id_column for f in self.meta.fields] if text else [])
        self.global_batch_size, self.rank, self.world_size = global_batch_size, rank, world_size
        self.shuffle, self.seed, self.drop_last, self.text = shuffle, seed, drop_last, text
        self.window_row_groups = window_row_groups
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Reshuffles identically on every rank for the given epoch; the next pass starts after its
        first `skip` global batches (resuming mid-epoch from a checkpoint)."""
        self.epoch, self.skip = epoch, skip

    @property
    def num_rows(self) -> int:
        return sum(f.metadata.num_rows for f in self.files)

    def __len__(self) -> int:
        full, rest = divmod(self.num_rows, self.global_batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.arange(len(self.row_groups))
        if self.shuffle:
            order = rng.permutation(order)
        carry, index = None, 0
        for start in range(0, len(order), self.window_row_groups):
            window = pa.concat_tables(
                self.row_groups[k][0].read_row_group(self.row_groups[k][1], columns=self.columns)
                for k in order[start : start + self.window_row_groups]
            )
            if self.shuffle:
                window = window.take(rng.permutation(window.num_rows))
            buffer = window if carry is None else pa.concat_tables([carry, window])
            usable = buffer.num_rows - buffer.num_rows % self.global_batch_size
            for offset in range(0, usable, self.global_batch_size):
                if index >= self.skip:
                    yield self._slice(buffer.slice(offset, self.global_batch_size))
                index += 1
            carry = buffer.slice(usable) if usable < buffer.num_rows else None
        if carry is not None and not self.drop_last and index >= self.skip:
            yield self._slice(carry)

    def _slice(self, global_batch: pa.Table) -> Batch:
        """This rank's rows. A short last batch is padded by repeating its last row, so that every
        rank runs the same number of equally sized steps (sharded layers exchange data each step)."""
        rows = global_batch.num_rows
        per_rank = -(-rows // self.world_size)
        if per_rank * self.world_size != rows:  # only a short last batch is copied
            global_batch = global_batch.take(np.minimum(np.arange(per_rank * self.world_size), rows - 1))
        part = global_batch.slice(self.rank * per_rank, per_rank)
        num_valid = int(np.clip(rows - self.rank * per_rank, 0, per_rank))
        ids = np.stack([part[f.name].to_numpy() for f in self.meta.fields], axis=1).astype(np.int64)
        labels = torch.from_numpy(part["label"].to_numpy().astype(np.float32))
        batch = Batch(torch.from_numpy(ids), labels, num_valid=num_valid)
        if self.tokens is not None:
            tokens, mask, fields = self.tokens.assemble(text_ids(part, self.meta.fields))
            batch.input_ids, batch.attention_mask = torch.from_numpy(tokens), torch.from_numpy(mask)
            batch.token_fields = torch.from_numpy(fields)
        return batch
