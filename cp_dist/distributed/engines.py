"""Training engines: how a model is sharded, stepped and checkpointed across ranks.

Both engines keep the ID tables in TorchRec's DistributedModelParallel, sharded by the plan and
stepped by a fused row-wise Adagrad inside backward. They differ in the dense rest (CTR layers,
prompt generator, language model, heads):
- plain: replicated on every rank (DDP) and stepped by AdamW; one process or N;
- hybrid (cp_dist.distributed.hybrid): partitioned by DeepSpeed ZeRO.
The training loop sees only the Engine interface, so every stage runs on either.
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
from cp_dist.config import Config
from cp_dist.distributed.process_group import RankInfo
from cp_dist.distributed.sharding import describe_plan, embedding_collection_path, shard
from cp_dist.distributed.tables import initialize_tables, is_table, load_table_state, save_table_state

#: (name, parameter) pairs -> AdamW parameter groups; the stage decides learning rates and decay.
ParameterGroups = Callable[[Iterable[tuple[str, nn.Parameter]]], list[dict]]
DENSE_STATE_FILE = "dense-state.pt"


@dataclass(frozen=True)
class Start:
    """A checkpoint the model starts from (e.g. PA-MLM's, for finetuning), loaded before training."""

    checkpoint: Path
    source_prefix: str = ""  # where the model sits inside the saved one, e.g. "ctr."
    keep: tuple[str, ...] = ()  # parameters that start fresh instead (heads the saved model lacks)


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


def build_engine(model: nn.Module, config: Config, rank: RankInfo, *, parameter_groups: ParameterGroups,
                 embedding_lr: float, global_batch_size: int, start: Start | None = None) -> Engine:
    """config.distributed.engine's engine around `model`, built under torch.manual_seed(config.train.seed)
    with its tables on "meta": the tables are initialised identically whatever the sharding."""
    if config.distributed.engine == "hybrid":
        from cp_dist.distributed.hybrid import build_hybrid

        return build_hybrid(model, config, rank, parameter_groups=parameter_groups, embedding_lr=embedding_lr,
                            global_batch_size=global_batch_size, start=start)
    return build_plain(model, config, rank, parameter_groups=parameter_groups, embedding_lr=embedding_lr, start=start)


def build_plain(model: nn.Module, config: Config, rank: RankInfo, *, parameter_groups: ParameterGroups,
                embedding_lr: float, start: Start | None = None) -> PlainEngine:
    tables = model.get_submodule(embedding_collection_path(model))
    apply_optimizer_in_backward(RowWiseAdagrad, tables.parameters(), {"lr": embedding_lr})
    sharded = shard(model, config.distributed.sharding, rank)
    initialize_tables(sharded, config.train.seed, config.train.embedding_init_std)
    if start is not None:
        load_model(sharded, start.checkpoint, source_prefix=start.source_prefix, keep=start.keep)
    trainable = (item for item in in_backward_optimizer_filter(sharded.named_parameters()) if item[1].requires_grad)
    return PlainEngine(sharded, torch.optim.AdamW(parameter_groups(trainable)))


class PlainEngine:
    def __init__(self, model: DistributedModelParallel, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

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
        loss.backward()  # the tables' row-wise Adagrad steps inside backward
        self.optimizer.step()

    def _dense(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((k, v) for k, v in self.model.state_dict().items() if not is_table(k))

    def save_state(self, directory: Path) -> None:
        """This rank's table shards and their Adagrad state; rank 0 the dense weights and AdamW's
        state (the same on every rank). Resume with the same world size and plan."""
        rank = torch.distributed.get_rank()
        save_table_state(self.model, directory / f"tables-rank{rank:05d}.safetensors")
        if rank == 0:
            torch.save({"dense": dict(self._dense()), "optimizer": self.optimizer.state_dict()}, directory / DENSE_STATE_FILE)

    @torch.no_grad()
    def load_state(self, directory: Path) -> None:
        load_table_state(self.model, directory / f"tables-rank{torch.distributed.get_rank():05d}.safetensors")
        saved = torch.load(directory / DENSE_STATE_FILE, map_location="cpu", weights_only=True)  # never runs code
        for key, tensor in self._dense():
            tensor.copy_(saved["dense"][key])
        self.optimizer.load_state_dict(saved["optimizer"])

    def save_model(self, directory: Path, extra: dict) -> None:
        save_model(self.model, directory, extra)

    def gathered(self, parameters: list[nn.Parameter]) -> AbstractContextManager:
        return nullcontext()  # every rank holds the whole dense model

    def describe(self) -> dict:
        return {"engine": "plain", "sharding": describe_plan(self.model)}
