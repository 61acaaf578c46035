"""The plain engine: TorchRec shards the ID tables; the dense rest (CTR layers, prompt generator,
language model, heads) is replicated on every rank (DDP) and stepped by AdamW. One process or N.
A model without ID tables (the text-only baselines: CTR-BERT, PTab, P5) gets an empty sharding plan
and the engine holds its dense part alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.optim.optimizers import in_backward_optimizer_filter

from cp_dist.config import Config, StageConfig
from cp_dist.distributed.checkpoint import save_model
from cp_dist.distributed.engines.base import ParameterGroups, Schedule, Start, dense_optimizer, shard_and_start
from cp_dist.distributed.process_group import RankInfo
from cp_dist.distributed.sharding import describe_plan, embedding_collection_path
from cp_dist.distributed.tables import is_table, load_table_state, save_table_state
from cp_dist.runs import DENSE_STATE_FILE, tables_file


def build_plain(model: nn.Module, config: Config, rank: RankInfo, settings: StageConfig, *,
                parameter_groups: ParameterGroups, schedule: Schedule = None, start: Start | None = None) -> PlainEngine:
    path = embedding_collection_path(model)
    tables = model.get_submodule(path) if path is not None else nn.Module()
    sharded = shard_and_start(tables, model, config, rank, settings, start)
    trainable = (item for item in in_backward_optimizer_filter(sharded.named_parameters()) if item[1].requires_grad)
    return PlainEngine(sharded, *dense_optimizer(trainable, parameter_groups, schedule))


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
        save_table_state(self.model, directory / tables_file(rank))
        if rank == 0:
            state = {"dense": dict(self._dense()), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}
            torch.save(state, directory / DENSE_STATE_FILE)

    @torch.no_grad()
    def load_state(self, directory: Path) -> None:
        load_table_state(self.model, directory / tables_file(torch.distributed.get_rank()))
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
