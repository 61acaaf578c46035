"""Training a CTR backbone: TorchRec-sharded tables with a fused row-wise Adagrad, AdamW on the
dense layers, early stopping on validation AUC, test AUC/LogLoss of the best checkpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from tqdm.auto import tqdm

from cp_dist.config import Config
from cp_dist.ctr.model import CTRModel
from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.process_group import RankInfo, launch
from cp_dist.distributed.sharding import describe_plan, shard
from cp_dist.distributed.tables import initialize_tables, load_model, save_model
from cp_dist.io import atomic_file
from cp_dist.training.evaluate import evaluate

METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class CTRJob:
    data_dir: Path
    out_dir: Path
    config: Config


def train_ctr(data_dir: Path, out_dir: Path, config: Config, *, overwrite: bool = False) -> dict:
    """Trains on config.distributed.nproc ranks and returns the metrics written to out_dir/metrics.json."""
    DatasetMeta.load(data_dir)  # fail here, with a clear message, rather than in every rank
    if (out_dir / METRICS_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already holds a finished run; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    launch(_train_rank, config.distributed.nproc, config.distributed.backend, CTRJob(data_dir, out_dir, config))
    return json.loads((out_dir / METRICS_FILE).read_text())


def build_sharded_model(meta: DatasetMeta, config: Config, rank: RankInfo):
    """The CTR model with its tables sharded, initialised identically whatever the sharding."""
    torch.manual_seed(config.train.seed)  # dense layers: the same on every rank and world size
    model = CTRModel(meta.fields, config.ctr, embedding_device="meta")
    apply_optimizer_in_backward(RowWiseAdagrad, model.embedding.parameters(), {"lr": config.train.embedding_lr})
    sharded = shard(model, config.distributed.sharding, rank)
    initialize_tables(sharded, config.train.seed, config.train.embedding_init_std)
    return sharded


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
    model = build_sharded_model(meta, config, rank)
    dense = dense_optimizer(model, config)
    per_rank = {"rank": rank.rank, "world_size": rank.world_size}
    train_loader = SplitLoader(job.data_dir, "train", global_batch_size=train.global_batch_size, shuffle=True,
                               seed=train.seed, drop_last=True, **per_rank)
    eval_loader = {
        split: SplitLoader(job.data_dir, split, global_batch_size=train.eval_batch_size, **per_rank)
        for split in ("valid", "test")
    }

    def score(batch: Batch) -> torch.Tensor:
        return model(batch.ids.to(rank.device))

    history, best_auc, best_epoch, started = [], float("-inf"), -1, time.perf_counter()
    for epoch in range(train.epochs):
        train_loader.set_epoch(epoch)
        model.train()
        step_losses = []
        for batch in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=None if rank.is_main else True):
            step_losses.append(train_step(model, dense, batch, rank.device))
        losses = torch.stack(step_losses)
        dist.all_reduce(losses)  # each step's loss over the whole global batch
        losses = (losses / rank.world_size).tolist()
        model.eval()
        valid = evaluate(score, eval_loader["valid"], rank.device)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "step_losses": losses,
                        "valid": valid, "seconds": time.perf_counter() - started})
        if valid["auc"] > best_auc:
            best_auc, best_epoch = valid["auc"], epoch
            save_model(model, job.out_dir / CHECKPOINT_DIR, {"epoch": epoch, "config": config.to_dict(), "dataset": meta.dataset})
        elif epoch - best_epoch >= train.patience:
            break

    load_model(model, job.out_dir / CHECKPOINT_DIR)
    model.eval()
    results = {split: evaluate(score, eval_loader[split], rank.device) for split in ("valid", "test")}
    if rank.is_main:
        metrics = {
            "dataset": meta.dataset,
            "model": config.ctr.model,
            "best_epoch": best_epoch,
            "valid": results["valid"],
            "test": results["test"],
            "history": history,
            "train_seconds": time.perf_counter() - started,
            "world_size": rank.world_size,
            "sharding": describe_plan(model),
            "config": config.to_dict(),
        }
        with atomic_file(job.out_dir / METRICS_FILE) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2) + "\n")
