"""A training stage, declared once: its config section, the model it trains, the batches it reads,
its loss and evaluation, and what it takes from a start checkpoint. The loop
(cp_dist.training.loop) and the engines (cp_dist.distributed.engines) do the rest."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from cp_dist.config import Config, StageConfig, eval_batch_size
from cp_dist.ctr.backbones import BACKBONES
from cp_dist.data.loader import Batch, BatchSource, SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.data.streaming import StreamingShard
from cp_dist.distributed.engines import Engine, Schedule, Start
from cp_dist.distributed.process_group import RankInfo
from cp_dist.errors import UserError
from cp_dist.models import ARCHITECTURES
from cp_dist.training.evaluate import click_metrics, evaluate, predict, split_labels

#: Parameters never weight-decayed: biases, norms, the fusion weight.
NO_DECAY = ("bias", "LayerNorm.weight", "fusion_logit")
START_RULES = ("none", "optional", "required")


class Stage:
    name: ClassVar[str]
    description: ClassVar[str]
    section: ClassVar[str]  # the config section that holds its StageConfig
    architecture: ClassVar[str]  # the model it trains (cp_dist.models)
    reads_text: ClassVar[bool] = False  # batches carry token ids
    train_splits: ClassVar[tuple[str, ...]] = ("train",)
    #: Validation AUC after each epoch picks the checkpoint and stops early (with patience), and
    #: the test split is scored with the picked one. Otherwise the last epoch is the result.
    selects_on_valid: ClassVar[bool] = True
    start: ClassVar[str] = "none"  # a start checkpoint: none | optional | required
    start_prefix: ClassVar[str] = ""  # where this stage's model sits in the start checkpoint
    fresh: ClassVar[tuple[str, ...]] = ()  # parameter prefixes that start fresh instead
    scores_clicks: ClassVar[bool] = True  # its model has a click head (evaluation and serving read it)

    def __init__(self, config: Config, meta: DatasetMeta, rank: RankInfo):
        self.config, self.meta, self.rank = config, meta, rank
        self.settings = self.settings_of(config)

    @classmethod
    def settings_of(cls, config: Config) -> StageConfig:
        return getattr(config, cls.section)

    @classmethod
    def check(cls, config: Config, data_dir: Path, init_from: Path | None) -> None:
        """Settings that would otherwise fail inside every rank, checked once on the driver."""
        BACKBONES.lookup(config.ctr.model, "ctr.model")
        settings, nproc = cls.settings_of(config), config.distributed.nproc
        if settings.global_batch_size % nproc:
            raise UserError(f"{cls.section}.global_batch_size {settings.global_batch_size} is not divisible by "
                            f"distributed.nproc {nproc} (each rank takes an equal slice)")
        shards, evaluation = config.train.logical_shards, eval_batch_size(config, cls.reads_text)
        evaluation_key = "train.eval_batch_size" if evaluation == config.train.eval_batch_size else "prompt.eval_batch_size"
        for name, size in ((f"{cls.section}.global_batch_size", settings.global_batch_size), (evaluation_key, evaluation)):
            if shards < 1 or size % shards:
                raise UserError(f"{name} {size} is not divisible by train.logical_shards {shards} "
                                "(each global batch draws equally from every logical shard)")
        if cls.start == "required" and init_from is None:
            raise UserError(f"stage {cls.name} starts from a checkpoint: give one (e.g. a PA-MLM run's)")
        if cls.start == "none" and init_from is not None:
            raise UserError(f"stage {cls.name} starts from fresh weights; it takes no start checkpoint ({init_from})")

    def build_model(self) -> nn.Module:
        """The architecture, with its tables on "meta" for the engine to shard; dense layers are
        the same on every rank and world size (one seed)."""
        torch.manual_seed(self.config.train.seed)
        return ARCHITECTURES[self.architecture](self.meta.fields, self.config, "meta", self.rank.table_device)

    def start_from(self, checkpoint: Path | None) -> Start | None:
        return None if checkpoint is None else Start(checkpoint, self.start_prefix, self.fresh, self.settings.start_tables)

    def lr_schedule(self, total_steps: int) -> Schedule:
        """Linear warm-up over settings.warmup_ratio of the run's steps, then constant, linear decay
        to 0 or cosine decay to 0 (settings.schedule), as a factor on every dense learning rate."""
        settings = self.settings
        if settings.schedule == "constant" and settings.warmup_ratio == 0:
            return None
        warmup = math.ceil(settings.warmup_ratio * total_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return {"constant": 1.0, "linear": 1 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}[settings.schedule]

        return factor

    def training_batch(self, batch: Batch, step: int) -> Batch:
        """The batch as training reads it: each id replaced by the OOV index 0 with probability
        train.oov_rate, drawn per (seed, step, global row, field), so that any world size draws alike."""
        rate = self.config.train.oov_rate
        if rate == 0:
            return batch
        rows, rank = len(batch), self.rank
        generator = torch.Generator().manual_seed((self.config.train.seed * 1_000_003 + step) * 2 + 1)
        draws = torch.rand(rows * rank.world_size, batch.ids.shape[1], generator=generator)[rank.rank * rows : (rank.rank + 1) * rows]
        return dataclasses.replace(batch, ids=torch.where(draws < rate, 0, batch.ids))

    def learning_rate(self, name: str) -> float:
        """The AdamW learning rate of a dense parameter (tables have their own: settings.embedding_lr)."""
        return self.settings.dense_lr

    def parameter_groups(self, named_parameters: Iterable[tuple[str, nn.Parameter]]) -> list[dict]:
        """One AdamW group per (learning rate, weight decay); no decay for NO_DECAY names."""
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for name, parameter in named_parameters:
            decay = 0.0 if name.endswith(NO_DECAY) else self.settings.weight_decay
            groups.setdefault((self.learning_rate(name), decay), []).append(parameter)
        return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]

    @classmethod
    def training_splits(cls, config: Config) -> tuple[str, ...]:
        """The splits the stage trains on (a Ray job streams them when train.batch_source is ray_data)."""
        return cls.train_splits

    def batches(self, data_dir: Path, split: str | tuple[str, ...], *, training: bool) -> BatchSource:
        """Training: shuffled global batches of settings.global_batch_size, the short last one
        dropped. Evaluation: every row once, in order, in batches of cp_dist.config.eval_batch_size."""
        size = self.settings.global_batch_size if training else eval_batch_size(self.config, self.reads_text)
        if training and self.config.train.batch_source == "ray_data":
            return StreamingShard.of_this_worker(data_dir, split, global_batch_size=size, world_size=self.rank.world_size,
                                                 text=self.reads_text, seed=self.config.train.seed,
                                                 shuffle_buffer_rows=self.config.train.shuffle_buffer_rows)
        return SplitLoader(data_dir, list(split) if isinstance(split, tuple) else split, global_batch_size=size,
                           rank=self.rank.rank, world_size=self.rank.world_size, shuffle=training,
                           seed=self.config.train.seed, drop_last=training, text=self.reads_text,
                           logical_shards=self.config.train.logical_shards)

    def loss(self, model: Engine, batch: Batch, step: int) -> torch.Tensor:
        """The training loss of this rank's slice of global step `step`'s batch."""
        raise NotImplementedError

    def logits(self, model: Engine, batch: Batch) -> torch.Tensor:
        """Click logits (stages that select on validation AUC)."""
        raise NotImplementedError

    def evaluate(self, model: Engine, batches: BatchSource) -> dict[str, float]:
        """AUC and LogLoss of the click logits."""
        return evaluate(lambda b: self.logits(model, b), batches, self.rank.device)

    def validate(self, model: Engine, data_dir: Path) -> dict[str, float] | None:
        """After each epoch (and every settings.eval_every_steps, for stages that do not select):
        what the loop logs, and for stages that select, the "auc" it selects on. None: nothing."""
        return self.evaluate(model, self.batches(data_dir, "valid", training=False)) if self.selects_on_valid else None

    def test(self, model: Engine, data_dir: Path) -> tuple[dict[str, float], np.ndarray]:
        """The selected model on the test split: AUC and LogLoss, and every row's click probability
        in the split's order (per-row significance tests and long-tail tables read them)."""
        probabilities = predict(lambda b: self.logits(model, b), self.batches(data_dir, "test", training=False))
        return click_metrics(split_labels(data_dir, "test"), probabilities), probabilities

    def summary(self, model: Engine) -> dict:
        """Facts about the trained model for metrics.json (collective: every rank calls it)."""
        return {}
