"""The epoch loop shared by CTR training and ClickPrompt finetuning: train, validate, keep the
best checkpoint by validation AUC, stop after `patience` epochs without improvement, and score
the best checkpoint on valid and test."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.distributed.process_group import RankInfo
from cp_dist.distributed.tables import load_model, save_model
from cp_dist.training.evaluate import evaluate

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Fit:
    """What one training run needs besides its model."""

    model: nn.Module
    step: Callable[[Batch], torch.Tensor]  # one optimisation step; returns the loss
    score: Callable[[Batch], torch.Tensor]  # click logits
    train: SplitLoader
    valid: SplitLoader
    test: SplitLoader
    epochs: int
    patience: int
    out_dir: Path
    checkpoint_extra: dict


def global_step_losses(losses: list[torch.Tensor], rank: RankInfo) -> list[float]:
    """Each step's loss over the whole global batch (the mean of the ranks' slice losses)."""
    stacked = torch.stack(losses)
    dist.all_reduce(stacked)
    return (stacked / rank.world_size).tolist()


def fit(run: Fit, rank: RankInfo) -> dict:
    """Returns best_epoch, valid, test, history and train_seconds (identical on every rank)."""
    history, best_auc, best_epoch, started = [], float("-inf"), -1, time.perf_counter()
    for epoch in range(run.epochs):
        run.train.set_epoch(epoch)
        run.model.train()
        losses = [run.step(b) for b in tqdm(run.train, desc=f"epoch {epoch}", leave=False, disable=None if rank.is_main else True)]
        step_losses = global_step_losses(losses, rank)
        run.model.eval()
        valid = evaluate(run.score, run.valid, rank.device)
        history.append({"epoch": epoch, "train_loss": sum(step_losses) / len(step_losses), "step_losses": step_losses,
                        "valid": valid, "seconds": time.perf_counter() - started})
        if valid["auc"] > best_auc:
            best_auc, best_epoch = valid["auc"], epoch
            save_model(run.model, run.out_dir / CHECKPOINT_DIR, {"epoch": epoch, **run.checkpoint_extra})
        elif epoch - best_epoch >= run.patience:
            break
    load_model(run.model, run.out_dir / CHECKPOINT_DIR)
    run.model.eval()
    return {
        "best_epoch": best_epoch,
        "valid": evaluate(run.score, run.valid, rank.device),
        "test": evaluate(run.score, run.test, rank.device),
        "history": history,
        "train_seconds": time.perf_counter() - started,
    }
