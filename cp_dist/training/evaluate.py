"""AUC and LogLoss with torchmetrics, synchronised across ranks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from cp_dist.data.loader import Batch


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
