"""The Engine interface and the build sequence both engines share.

An engine is a model set up for distributed training: how it is sharded, stepped and checkpointed
across ranks. Both engines keep the ID tables in TorchRec's DistributedModelParallel, sharded by the
plan and stepped inside backward by a fused optimizer (row-wise Adagrad by default); they differ in
the dense rest (plain: DDP and AdamW; hybrid: DeepSpeed ZeRO). Their build sequence is written once
here (fuse the table optimizer -> shard -> initialise the tables -> load the start checkpoint, then
AdamW over the dense parameters with its schedule); each implementation supplies what it shards and
how it wraps the dense part. Implementations import this module and never each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from cp_dist.config import Config, StageConfig
from cp_dist.distributed.checkpoint import load_model
from cp_dist.distributed.process_group import RankInfo
from cp_dist.distributed.sharding import shard
from cp_dist.distributed.tables import initialize_tables

#: (name, parameter) pairs -> AdamW parameter groups; the stage decides learning rates and decay.
ParameterGroups = Callable[[Iterable[tuple[str, nn.Parameter]]], list[dict]]
#: step -> factor on every dense learning rate (warm-up and decay); None: constant.
Schedule = Callable[[int], float] | None
#: StageConfig.embedding_optimizer -> the optimizer TorchRec fuses into the tables' backward.
TABLE_OPTIMIZERS = {"rowwise_adagrad": RowWiseAdagrad, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}


@dataclass(frozen=True)
class Start:
    """A checkpoint the model starts from (e.g. PA-MLM's, for finetuning), loaded before training."""

    checkpoint: Path
    source_prefix: str = ""  # where the model sits inside the saved one, e.g. "ctr."
    keep: tuple[str, ...] = ()  # parameters that start fresh instead (heads the saved model lacks)
    tables: bool = True  # False: the embedding tables start fresh too


class Engine(Protocol):
    """A model set up for distributed training. Methods that write or read state are collective."""

    @property
    def module(self) -> nn.Module: ...  # the model itself (the hybrid's: an identity for its tables)

    def __call__(self, ids: torch.Tensor, *args, **kwargs) -> torch.Tensor: ...

    def train(self) -> None: ...

    def eval(self) -> None: ...

    def backward_and_step(self, loss: torch.Tensor) -> None: ...

    def save_state(self, directory: Path) -> None: ...  # a resume point: weights and optimizer states

    def load_state(self, directory: Path) -> None: ...

    def save_model(self, directory: Path, extra: dict) -> None: ...  # cp_dist.distributed.checkpoint's format

    def gathered(self, parameters: list[nn.Parameter]) -> AbstractContextManager: ...  # whole values within

    def describe(self) -> dict: ...  # for logs and metrics: engine, sharding plan


def fuse_table_optimizer(tables: nn.Module, settings: StageConfig) -> None:
    """The tables' optimizer, applied inside backward (TorchRec fuses it into the lookup kernels)."""
    if next(tables.parameters(), None) is None:
        return  # a model without ID tables
    apply_optimizer_in_backward(TABLE_OPTIMIZERS[settings.embedding_optimizer], tables.parameters(),
                                {"lr": settings.embedding_lr})


def shard_and_start(tables: nn.Module, shardable: nn.Module, config: Config, rank: RankInfo, settings: StageConfig,
                    start: Start | None, *, table_prefix: str = "", dense: nn.Module | None = None) -> DistributedModelParallel:
    """The first half of the build: the tables' optimizer fused, `shardable` (the model, or the tables
    alone) sharded, the tables initialised identically whatever the sharding, the start checkpoint
    loaded. dense: the dense model when it lives outside `shardable` (placed on the rank's device first)."""
    fuse_table_optimizer(tables, settings)
    sharded = shard(shardable, config.distributed.sharding, rank)
    initialize_tables(sharded, config.train.seed, config.train.embedding_init_std, table_prefix=table_prefix)
    if dense is not None:
        dense.to(rank.device)
    if start is not None:
        load_model(sharded, start.checkpoint, source_prefix=start.source_prefix, keep=start.keep,
                   table_prefix=table_prefix, dense=dense, tables=start.tables)
    return sharded


def dense_optimizer(trainable: Iterable[tuple[str, nn.Parameter]], parameter_groups: ParameterGroups,
                    schedule: Schedule) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The second half: AdamW over the trainable dense parameters, and its schedule."""
    optimizer = torch.optim.AdamW(parameter_groups(trainable))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule else None
