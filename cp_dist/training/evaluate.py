"""AUC and LogLoss with torchmetrics, synchronised across ranks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import log_loss, roc_auc_score
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from cp_dist.data.loader import Batch
from cp_dist.data.meta import DatasetMeta


@torch.no_grad()
def evaluate(score: Callable[[Batch], torch.Tensor], batches: Iterable[Batch], device: torch.device) -> dict[str, float]:
    """AUC and LogLoss over every real row of every rank (padding rows are left out)."""
    auc, logloss = BinaryAUROC().to(device), MeanMetric().to(device)
    for batch in batches:
        valid = batch.valid.to(device)
        logits = score(batch)[valid]
        labels = batch.labels.to(device)[valid]
        auc.update(torch.sigmoid(logits), labels.long())
        logloss.update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))
    return {"auc": float(auc.compute()), "logloss": float(logloss.compute())}


@torch.no_grad()
def predict(score: Callable[[Batch], torch.Tensor], batches: Iterable[Batch]) -> np.ndarray:
    """Probabilities (sigmoid of `score`'s logits, [rows] or [rows, outputs]) of every row of the
    split, in row order, on every rank: each global batch's rank slices are gathered with their row
    numbers, and the rows put back in file order (padding left out)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    parts, rows = [], []
    for batch in batches:
        probabilities = torch.sigmoid(score(batch).float())
        index = batch.row_index.to(probabilities.device)
        if world > 1:
            gathered = [torch.empty_like(probabilities) for _ in range(world)], [torch.empty_like(index) for _ in range(world)]
            dist.all_gather(gathered[0], probabilities)
            dist.all_gather(gathered[1], index)
            probabilities, index = torch.cat(gathered[0]), torch.cat(gathered[1])
        parts.append(probabilities[index >= 0].cpu().numpy())
        rows.append(index[index >= 0].cpu().numpy())
    return np.concatenate(parts)[np.argsort(np.concatenate(rows), kind="stable")]


def click_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """AUC and LogLoss of click probabilities (every rank holds them all after predict())."""
    return {"auc": float(roc_auc_score(labels, probabilities)), "logloss": float(log_loss(labels, probabilities))}


def split_labels(data_dir: Path, split: str) -> np.ndarray:
    """The split's labels in row order (the order of an unshuffled loader)."""
    return DatasetMeta.load(data_dir).read_split(data_dir, split, columns=["label"])["label"].to_numpy()
