"""Per-row statistics of test predictions: DeLong's test of an AUC difference on the same rows,
AUC by long-tail user x long-tail item (the paper's Table 6) and AUC by whether the row's user was
seen in training at all (under a time split most test users were not: they share the
out-of-vocabulary row).

The paired t-test across seeds asks whether a gain survives another seed; DeLong's test asks
whether it survives another sample of test rows. Here it tests the difference of the seed-mean AUCs
of two models, with the covariance of all 2S AUCs (S seeds x 2 models, all on the same rows)
from DeLong, DeLong and Clarke-Pearson (1988), computed with the midrank algorithm of Sun and Xu (2014).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy import stats
from sklearn.metrics import roc_auc_score

from cp_dist.data.meta import VOCAB_FILE, DatasetMeta

#: Long-tail ids: the least frequent training ids that together hold this share of the training
#: interactions, and every id never seen in training (the out-of-vocabulary index).
LONG_TAIL_SHARE = 0.2


def delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k score vectors ([k, rows]) on the same rows, and their [k, k] covariance."""
    positive = labels.astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    x, y = scores[:, positive], scores[:, ~positive]
    tx = np.apply_along_axis(stats.rankdata, 1, x)
    ty = np.apply_along_axis(stats.rankdata, 1, y)
    tz = np.apply_along_axis(stats.rankdata, 1, np.concatenate([x, y], axis=1))
    aucs = (tz[:, :m].sum(1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n  # each positive's share of negatives ranked below it
    v10 = 1 - (tz[:, m:] - ty) / m  # each negative's share of positives ranked above it
    covariance = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, covariance


def delong_test(labels: np.ndarray, model: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """DeLong's test of mean_s AUC(model_s) - mean_s AUC(baseline_s), both [seeds, rows] on the same rows."""
    seeds = len(model)
    aucs, covariance = delong_covariance(labels, np.concatenate([model, baseline]))
    weights = np.concatenate([np.full(seeds, 1 / seeds), np.full(seeds, -1 / seeds)])
    # the difference as two means: exactly 0 for identical models, where a dot product can leave
    # rounding against a variance that is rounding too (then p would not be 1)
    difference, variance = float(aucs[:seeds].mean() - aucs[seeds:].mean()), float(weights @ covariance @ weights)
    z = difference / np.sqrt(variance) if variance > 0 else 0.0
    return {"auc_difference": difference, "z": float(z), "p_value": float(2 * stats.norm.sf(abs(z)))}


def long_tail_masks(data_dir: Path, split: str = "test") -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """For each row of the split, whether its user and its item are long-tail ids ({"user": [rows],
    "item": [rows]}) and whether they were never seen in training ("user_unseen", "item_unseen"), and
    each side's training-count threshold (long tail: count <= threshold).
    A side's id field is its first field (the user id and the item id in every supported data set)."""
    meta = DatasetMeta.load(data_dir)
    vocab = pq.read_table(data_dir / VOCAB_FILE, columns=["field", "index", "train_count"]).to_pandas()
    rows = meta.read_split(data_dir, split)
    masks, thresholds = {}, {}
    for side in ("user", "item"):
        field = next(f for f in meta.fields if f.side == side)
        counts = np.zeros(field.vocab_size, np.int64)
        own = vocab[vocab["field"] == field.name]
        counts[own["index"].to_numpy()] = own["train_count"].to_numpy()
        ordered = np.sort(counts[1:])
        share = np.cumsum(ordered) / max(1, ordered.sum())
        thresholds[side] = int(ordered[np.searchsorted(share, LONG_TAIL_SHARE)]) if len(ordered) else 0
        masks[side] = counts[rows[field.name].to_numpy()] <= thresholds[side]
        masks[f"{side}_unseen"] = counts[rows[field.name].to_numpy()] == 0
    return masks, thresholds


def auc_by_long_tail(labels: np.ndarray, probabilities: np.ndarray, masks: dict[str, np.ndarray]) -> list[dict]:
    """AUC in each (long-tail user, long-tail item) cell; None where a cell has one class only."""
    cells = []
    for user in (True, False):
        for item in (True, False):
            rows = (masks["user"] == user) & (masks["item"] == item)
            cells.append({"long_tail_user": user, "long_tail_item": item, "rows": int(rows.sum()),
                          "auc": _auc_on(labels, probabilities, rows)})
    return cells


def auc_by_user_seen(labels: np.ndarray, probabilities: np.ndarray, masks: dict[str, np.ndarray]) -> list[dict]:
    """AUC on the rows whose user was seen in training and on those whose user was not (None where a
    group has one class only)."""
    cells = []
    for unseen in (False, True):
        rows = masks["user_unseen"] == unseen
        cells.append({"user_seen": not unseen, "rows": int(rows.sum()), "auc": _auc_on(labels, probabilities, rows)})
    return cells


def _auc_on(labels: np.ndarray, probabilities: np.ndarray, rows: np.ndarray) -> float | None:
    return float(roc_auc_score(labels[rows], probabilities[rows])) if len(set(labels[rows])) == 2 else None
