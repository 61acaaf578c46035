"""Training a CTR backbone: TorchRec-sharded tables with a fused row-wise Adagrad, AdamW on the
dense layers, early stopping on validation AUC, test AUC/LogLoss of the best checkpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from cp_dist.config import Config
from cp_dist.ctr.model import CTRModel
from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.data.meta import DatasetMeta, FieldMeta
from cp_dist.distributed.process_group import RankInfo, launch
from cp_dist.distributed.sharding import describe_plan, embedding_collection_path, shard
from cp_dist.distributed.tables import initialize_tables, load_model
from cp_dist.io import write_json
from cp_dist.training.loop import Fit, fit

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class CTRJob:
    data_dir: Path
    out_dir: Path
    config: Config
    init_from: Path | None = None


def train_ctr(data_dir: Path, out_dir: Path, config: Config, *, overwrite: bool = False, init_from: Path | None = None) -> dict:
    """Trains on config.distributed.nproc ranks and returns the metrics written to out_dir/metrics.json.

    init_from: a PA-MLM checkpoint whose CTR embeddings and interaction layers start the model
    (ClickPrompt without the PLM); the head starts fresh.
    """
    DatasetMeta.load(data_dir)  # fail here, with a clear message, rather than in every rank
    if (out_dir / METRICS_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already holds a finished run; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    launch(_train_rank, config.distributed, CTRJob(data_dir, out_dir, config, init_from))
    return json.loads((out_dir / METRICS_FILE).read_text())


def shard_and_initialize(model: torch.nn.Module, config: Config, rank: RankInfo, embedding_lr: float):
    """Fused row-wise Adagrad on the tables, the tables sharded, and initialised identically
    whatever the sharding. Build `model` under torch.manual_seed(config.train.seed) first, so
    that the dense layers are the same on every rank and world size."""
    tables = model.get_submodule(embedding_collection_path(model))
    apply_optimizer_in_backward(RowWiseAdagrad, tables.parameters(), {"lr": embedding_lr})
    sharded = shard(model, config.distributed.sharding, rank)
    initialize_tables(sharded, config.train.seed, config.train.embedding_init_std)
    return sharded


def build_sharded_model(fields: Sequence[FieldMeta], config: Config, rank: RankInfo):
    """The CTR model with its tables sharded."""
    torch.manual_seed(config.train.seed)
    model = CTRModel(fields, config.ctr, embedding_device="meta", lookup_device=rank.table_device)
    return shard_and_initialize(model, config, rank, config.train.embedding_lr)


def dense_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    """AdamW over every parameter the fused table optimizer does not already own."""
    return torch.optim.AdamW(
        [p for _, p in in_backward_optimizer_filter(model.named_parameters())],
        lr=config.train.dense_lr, weight_decay=config.train.dense_weight_decay,
    )


def train_step(model: torch.nn.Module, dense: torch.optim.Optimizer, batch: Batch, device: torch.device) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(model(batch.ids.to(device)), batch.labels.to(device))
    dense.zero_grad()
    loss.backward()  # the tables' row-wise Adagrad steps inside backward
    dense.step()
    return loss.detach()


def _train_rank(rank: RankInfo, job: CTRJob) -> None:
    config, train = job.config, job.config.train
    meta = DatasetMeta.load(job.data_dir)
    model = build_sharded_model(meta.fields, config, rank)
    if job.init_from is not None:  # e.g. the CTR part of a PA-MLM checkpoint, with a fresh head
        load_model(model, job.init_from, source_prefix="ctr.", keep=("head.",))
    dense = dense_optimizer(model, config)
    per_rank = {"rank": rank.rank, "world_size": rank.world_size}
    run = Fit(
        model=model,
        step=lambda batch: train_step(model, dense, batch, rank.device),
        score=lambda batch: model(batch.ids.to(rank.device)),
        train=SplitLoader(job.data_dir, "train", global_batch_size=train.global_batch_size, shuffle=True,
                          seed=train.seed, drop_last=True, **per_rank),
        valid=SplitLoader(job.data_dir, "valid", global_batch_size=train.eval_batch_size, **per_rank),
        test=SplitLoader(job.data_dir, "test", global_batch_size=train.eval_batch_size, **per_rank),
        epochs=train.epochs,
        patience=train.patience,
        out_dir=job.out_dir,
        checkpoint_extra={"stage": "ctr", "config": config.to_dict(), "dataset": meta.dataset},
    )
    results = fit(run, rank)
    if rank.is_main:
        write_json(job.out_dir / METRICS_FILE, {"dataset": meta.dataset, "model": config.ctr.model, **results,
                                    "init_from": str(job.init_from) if job.init_from else None,
                                    "world_size": rank.world_size, "sharding": describe_plan(model),
                                    "config": config.to_dict()})
