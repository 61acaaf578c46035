"""DeLong's test and the long-tail cells against independent references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from cp_dist.experiments.significance import auc_by_long_tail, auc_by_user_seen, delong_covariance, delong_test, long_tail_masks


def _rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC (ties share ranks): roc_auc_score's value at a fraction of its cost, for the bootstrap."""
    ranks = rankdata(scores)
    positives = labels.sum()
    return (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * (len(labels) - positives))


def _data(rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-signal))).astype(int)
    return labels, signal


def test_aucs_match_sklearn_and_the_variance_matches_a_bootstrap() -> None:
    labels, signal = _data()
    rng = np.random.default_rng(1)
    scores = np.stack([signal + rng.normal(scale=s, size=len(signal)) for s in (0.5, 2.0)])
    aucs, covariance = delong_covariance(labels, scores)
    np.testing.assert_allclose(aucs, [roc_auc_score(labels, s) for s in scores], rtol=1e-12)
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(2000)]
    boot = np.array([[_rank_auc(labels[d], s[d]) for s in scores] for d in draws])
    np.testing.assert_allclose(np.diag(covariance), boot.var(0), rtol=0.15)
    assert abs(covariance[0, 1] - np.cov(boot.T)[0, 1]) < 0.2 * np.sqrt(covariance[0, 0] * covariance[1, 1])


def test_delong_finds_a_real_gain_and_no_gain_between_equals() -> None:
    labels, signal = _data()
    rng = np.random.default_rng(2)
    better = np.stack([signal + rng.normal(scale=0.5, size=len(signal)) for _ in range(3)])
    worse = np.stack([signal + rng.normal(scale=1.5, size=len(signal)) for _ in range(3)])
    result = delong_test(labels, better, worse)
    expected = np.mean([roc_auc_score(labels, b) - roc_auc_score(labels, w) for b, w in zip(better, worse)])
    assert abs(result["auc_difference"] - expected) < 1e-12 and result["p_value"] < 1e-6
    assert delong_test(labels, worse, worse)["p_value"] == 1.0
    noise = np.stack([signal + rng.normal(scale=1.5, size=len(signal)) for _ in range(3)])
    assert delong_test(labels, noise, worse)["p_value"] > 0.01  # same quality, other noise


def test_long_tail_cells_cover_the_test_split(ml100k_prepared: Path) -> None:
    masks, thresholds = long_tail_masks(ml100k_prepared)
    test = pq.read_table(ml100k_prepared / "test.parquet")
    assert len(masks["user"]) == len(masks["item"]) == test.num_rows
    assert masks["user"][test["user_id"].to_numpy() == 0].all(), "users first seen after training are long-tail"
    assert 0 < thresholds["item"] < 100 and 0.05 < masks["item"].mean() < 0.95, (thresholds, masks["item"].mean())
    labels = test["label"].to_numpy()
    cells = auc_by_long_tail(labels, np.random.default_rng(0).random(len(labels)), masks)
    assert sum(c["rows"] for c in cells) == len(labels) and len(cells) == 4


def test_user_seen_groups_split_the_test_rows_at_the_oov_row(ml100k_prepared: Path) -> None:
    masks, _ = long_tail_masks(ml100k_prepared)
    test = pq.read_table(ml100k_prepared / "test.parquet")
    users = test["user_id"].to_numpy()
    assert (masks["user_unseen"] == (users == 0)).all(), "never seen in training is the out-of-vocabulary index"
    assert 0.5 < masks["user_unseen"].mean() < 1, "the time split's test period shows mostly new users"
    labels = test["label"].to_numpy()
    scores = np.where(users == 0, labels, np.random.default_rng(0).random(len(labels)))  # perfect on unseen users only
    seen, unseen = auc_by_user_seen(labels, scores, masks)
    assert seen["user_seen"] and not unseen["user_seen"] and seen["rows"] + unseen["rows"] == len(labels)
    assert unseen["auc"] == 1.0 and seen["auc"] < 1.0
