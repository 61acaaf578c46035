"""Training engines: how a model is sharded, stepped and checkpointed across ranks.

Both engines keep the ID tables in TorchRec's DistributedModelParallel, sharded by the plan and
stepped inside backward by a fused optimizer (row-wise Adagrad by default). They differ in the dense rest (CTR layers,
prompt generator, language model, heads):
- plain: replicated on every rank (DDP) and stepped by AdamW; one process or N;
- hybrid (cp_dist.distributed.hybrid): partitioned by DeepSpeed ZeRO.
The training loop sees only the Engine interface, so every stage runs on either. A model without ID
tables (the text-only baselines: CTR-BERT, PTab, P5) gets an empty sharding plan; the engines then
hold its dense part alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from cp_dist.checkpoint import load_model, save_model
from cp_dist.config import Config, StageConfig
from cp_dist.distributed.process_group import RankInfo
from cp_dist.distributed.sharding import describe_plan, embedding_collection_path, shard
from cp_dist.distributed.tables import initialize_tables, is_table, load_table_state, save_table_state

#: (name, parameter) pairs -> AdamW parameter groups; the stage decides learning rates and decay.
ParameterGroups = Callable[[Iterable[tuple[str, nn.Parameter]]], list[dict]]
#: step -> factor on every dense learning rate (warm-up and decay); None: constant.
Schedule = Callable[[int], float] | None
DENSE_STATE_FILE = "dense-state.pt"
#: StageConfig.embedding_optimizer -> the optimizer TorchRec fuses into the tables' backward.
TABLE_OPTIMIZERS = {"rowwise_adagrad": RowWiseAdagrad, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}


def fuse_table_optimizer(tables: nn.Module, settings: StageConfig) -> None:
    """The tables' optimizer, applied inside backward (TorchRec fuses it into the lookup kernels)."""
    if next(tables.parameters(), None) is None:
        return  # a model without ID tables
    apply_optimizer_in_backward(TABLE_OPTIMIZERS[settings.embedding_optimizer], tables.parameters(),
                                {"lr": settings.embedding_lr})


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

    def save_model(self, directory: Path, extra: dict) -> None: ...  # cp_dist.checkpoint's format

    def gathered(self, parameters: list[nn.Parameter]) -> AbstractContextManager: ...  # whole values within

    def describe(self) -> dict: ...  # for logs and metrics: engine, sharding plan


def build_engine(model: nn.Module, config: Config, rank: RankInfo, settings: StageConfig, *,
                 parameter_groups: ParameterGroups, schedule: Schedule = None, start: Start | None = None) -> Engine:
    """config.distributed.engine's engine around `model`, built under torch.manual_seed(config.train.seed)
    with its tables on "meta": the tables are initialised identically whatever the sharding.
    settings: the stage's (batch size, table optimizer)."""
    if config.distributed.engine == "hybrid":
        from cp_dist.distributed.hybrid import build_hybrid

        return build_hybrid(model, config, rank, settings, parameter_groups=parameter_groups, schedule=schedule, start=start)
    return build_plain(model, config, rank, settings, parameter_groups=parameter_groups, schedule=schedule, start=start)


def build_plain(model: nn.Module, config: Config, rank: RankInfo, settings: StageConfig, *,
                parameter_groups: ParameterGroups, schedule: Schedule = None, start: Start | None = None) -> PlainEngine:
    path = embedding_collection_path(model)
    fuse_table_optimizer(model.get_submodule(path) if path is not None else nn.Module(), settings)
    sharded = shard(model, config.distributed.sharding, rank)
    initialize_tables(sharded, config.train.seed, config.train.embedding_init_std)
    if start is not None:
        load_model(sharded, start.checkpoint, source_prefix=start.source_prefix, keep=start.keep, tables=start.tables)
    trainable = (item for item in in_backward_optimizer_filter(sharded.named_parameters()) if item[1].requires_grad)
    optimizer = torch.optim.AdamW(parameter_groups(trainable))
    return PlainEngine(sharded, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule else None)


class PlainEngine:
    def __init__(self, model: DistributedModelParallel, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    @property
    def module(self) -> nn.Module:
        return self.model.module

    def __call__(self, ids: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.model(ids, *args, **kwargs)

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def backward_and_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()  # the tables' optimizer steps inside backward
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def _dense(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((k, v) for k, v in self.model.state_dict().items() if not is_table(k))

    def save_state(self, directory: Path) -> None:
        """This rank's table shards and their optimizer state; rank 0 the dense weights, AdamW's and
        the schedule's state (the same on every rank). Resume with the same world size and plan."""
        rank = torch.distributed.get_rank()
        save_table_state(self.model, directory / f"tables-rank{rank:05d}.safetensors")
        if rank == 0:
            state = {"dense": dict(self._dense()), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}
            torch.save(state, directory / DENSE_STATE_FILE)

    @torch.no_grad()
    def load_state(self, directory: Path) -> None:
        load_table_state(self.model, directory / f"tables-rank{torch.distributed.get_rank():05d}.safetensors")
        saved = torch.load(directory / DENSE_STATE_FILE, map_location="cpu", weights_only=True)  # never runs code
        for key, tensor in self._dense():
            tensor.copy_(saved["dense"][key])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])

    def save_model(self, directory: Path, extra: dict) -> None:
        save_model(self.model, directory, extra)

    def gathered(self, parameters: list[nn.Parameter]) -> AbstractContextManager:
        return nullcontext()  # every rank holds the whole dense model

    def describe(self) -> dict:
        return {"engine": "plain", "sharding": describe_plan(self.model)}
