"""The second batch source: this Ray Train worker's share of a Ray Data stream (train.batch_source: ray_data).

Ray Data reads the training splits' Parquet row groups in its own tasks (train.stream_cpus CPUs each), splits the rows across the
workers as they stream (streaming_split, equal shares), and each worker shuffles them in a local
buffer. Against SplitLoader, the default, it gains and gives up:
- reading and decoding scale out with Ray Data's executors (on CPU nodes beside the trainers, where
  the cluster has them), and no rank decodes rows that another trains on;
- global batches depend on the worker count and on which worker took which block first, so runs are
  neither comparable step by step across world sizes nor reproducible from the seed alone;
- a resume starts a new pass and skips as many batches as were done: the rows it skips are not the
  ones the interrupted pass trained on;
- PA-MLM masks stay keyed by (step, position in the batch), so they no longer follow the rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cp_dist.data.loader import Batch, make_batch
from cp_dist.data.meta import DatasetMeta
from cp_dist.data.tokens import ValueTokens, text_ids
from cp_dist.errors import UserError

STREAM = "train"  # the name of the Ray Data stream Ray Train splits across its workers


def training_stream(data_dir: Path, splits: Sequence[str], *, text: bool, seed: int, cpus: float):
    """The Ray Data dataset of the training rows (the columns a stage reads): one read task per
    Parquet row group, asking for `cpus` CPUs, the row groups in a seeded order."""
    import ray.data

    meta = DatasetMeta.load(data_dir)
    columns = [f.name for f in meta.fields] + ["label"] + ([f.text_id_column for f in meta.fields] if text else [])
    groups = [{"path": str(path), "group": group} for split in splits
              for path in meta.split_files(data_dir, split) for group in range(pq.ParquetFile(path).num_row_groups)]
    order = np.random.default_rng(seed).permutation(len(groups))

    def read(batch: dict) -> pa.Table:
        return pa.concat_tables(pq.ParquetFile(path).read_row_group(int(group), columns=columns)
                                for path, group in zip(batch["path"], batch["group"]))

    return ray.data.from_items([groups[k] for k in order]).map_batches(read, batch_size=1, num_cpus=cpus)


class StreamingShard:
    """BatchSource over a worker's DataIterator: per-rank batches of G / W rows, the short last one dropped."""

    def __init__(self, shard, data_dir: Path, splits: Sequence[str], *, global_batch_size: int, world_size: int,
                 text: bool, seed: int, shuffle_buffer_rows: int):
        self.shard, self.meta = shard, DatasetMeta.load(data_dir)
        self.tokens = ValueTokens.load(data_dir) if text else None
        self.rows = sum(self.meta.splits[split]["rows"] for split in splits)
        self.per_rank, self.world_size = global_batch_size // world_size, world_size
        self.seed, self.shuffle_buffer_rows = seed, shuffle_buffer_rows
        self.epoch, self.skip = 0, 0

    @classmethod
    def of_this_worker(cls, data_dir: Path, split: str | Sequence[str], **settings) -> StreamingShard:
        import ray.train

        try:
            shard = ray.train.get_dataset_shard(STREAM)
        except RuntimeError as err:  # not inside a Ray Train worker
            raise UserError("train.batch_source ray_data streams through Ray Train: run the stage as a Ray job "
                            f"(jobs/), or use train.batch_source parquet ({err})") from None
        if shard is None:
            raise UserError(f"this Ray Train run was started without the {STREAM!r} stream that train.batch_source ray_data reads")
        return cls(shard, data_dir, [split] if isinstance(split, str) else list(split), **settings)

    @property
    def num_rows(self) -> int:
        return self.rows

    def __len__(self) -> int:
        return (self.rows // self.world_size) // self.per_rank  # equal shares, whole batches

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[Batch]:
        tables = self.shard.iter_batches(batch_size=self.per_rank, batch_format="pyarrow", drop_last=True,
                                         local_shuffle_buffer_size=self.shuffle_buffer_rows,
                                         local_shuffle_seed=self.seed * 1_000_003 + self.epoch)
        for index, table in enumerate(tables):
            if index >= len(self):  # equal shares can still round differently; ranks must stay in step
                return
            if index >= self.skip:
                yield self._batch(table)

    def _batch(self, table: pa.Table) -> Batch:
        fields = self.meta.fields
        ids = np.stack([table[f.name].to_numpy() for f in fields], axis=1).astype(np.int64)
        labels = table["label"].to_numpy().astype(np.float32)
        return make_batch(ids, labels, None, text_ids(table, fields) if self.tokens is not None else None, self.tokens)
