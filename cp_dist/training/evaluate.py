"""AUC and LogLoss with torchmetrics, synchronised across ranks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from cp_dist.checkpoint import load_run
from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.runs import RunDir


@torch.no_grad()
def evaluate(score: Callable[[Batch], torch.Tensor], batches: Iterable[Batch], device: torch.device) -> dict[str, float]:
    """AUC and LogLoss over every real row of every rank (padding rows are left out)."""
    auc, logloss = BinaryAUROC().to(device), MeanMetric().to(device)
    for batch in batches:
        logits = score(batch)[: batch.num_valid]
        labels = batch.labels[: batch.num_valid].to(device)
        auc.update(torch.sigmoid(logits), labels.long())
        logloss.update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))
    return {"auc": float(auc.compute()), "logloss": float(logloss.compute())}


@torch.no_grad()
def predict(score: Callable[[Batch], torch.Tensor], batches: Iterable[Batch]) -> np.ndarray:
    """This rank's click probabilities, in row order."""
    return np.concatenate([torch.sigmoid(score(b)[: b.num_valid]).cpu().numpy() for b in batches])


def evaluate_run(run_dir: Path, data_dir: Path, split: str, batch_size: int = 4096) -> dict[str, float]:
    """AUC and LogLoss of a finished run's model on a split, rebuilt from its checkpoint in one process."""
    meta = DatasetMeta.load(data_dir)
    _, score, reads_text = load_run(RunDir(run_dir).checkpoint, meta.fields)
    return evaluate(score, SplitLoader(data_dir, split, global_batch_size=batch_size, text=reads_text), torch.device("cpu"))
