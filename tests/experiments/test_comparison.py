"""The comparison driver: every variant trains, the table's statistics follow from the runs, and a
second call resumes from finished runs instead of training again."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from cp_dist.config import load_config
from cp_dist.errors import UserError
from cp_dist.experiments.comparison import run_comparison
from cp_dist.experiments.variants import VARIANTS
from cp_dist.training.evaluate import predict
from cp_dist.training.finished import load_run
from tests.helpers import run

pytestmark = pytest.mark.slow  # minute-long end-to-end checks


def test_every_variant_over_two_seeds_then_resume(setup, tmp_path: Path) -> None:
    base, settings = setup
    config = load_config("ml-1m", [*settings, "pamlm.max_steps=3", "finetune.max_steps=4", "ctrl.max_steps=3"])
    payload = run_comparison(base / "data", tmp_path, config, seeds=[0, 1], variants=list(VARIANTS), progress=lambda _: None)
    rows = {row["variant"]: row for row in payload["rows"]}
    assert list(rows) == list(VARIANTS)
    for seed in (0, 1):
        history = json.loads((tmp_path / f"seed{seed}" / "pamlm" / "metrics.json").read_text())["history"]
        assert sum(h["steps"] for h in history) == 3, "pamlm.max_steps caps PA-MLM"
        assert (tmp_path / f"seed{seed}" / "pamlm-input" / "metrics.json").is_file()
    assert not (tmp_path / "seed0" / "pamlm-no-prompts").exists()
    ctrl = json.loads((tmp_path / "seed0" / "ctrl-pretrain" / "metrics.json").read_text())
    assert ctrl["stage"] == "ctrl" and sum(h["steps"] for h in ctrl["history"]) == 3, "the CTRL variant's pretraining"
    assert rows["ctrl"]["retrieval_at_1"][0] == ctrl["valid"]["retrieval_at_1"]

    base_auc = rows["ctr"]["test_auc"]
    test = pq.read_table(base / "data" / "test.parquet")
    labels, seen_rows = test["label"].to_numpy(), test["user_id"].to_numpy() != 0
    for name, row in rows.items():
        # The table's figures are the runs' own: their metrics.json, and their test predictions.
        runs = [tmp_path / f"seed{seed}" / name for seed in (0, 1)]
        metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
        assert row["test_auc"] == [m["test"]["auc"] for m in metrics]
        assert row["test_logloss"] == [m["test"]["logloss"] for m in metrics]
        predictions = [pq.read_table(run / "test_predictions.parquet")["probability"].to_numpy() for run in runs]
        assert row["test_auc"] == pytest.approx([roc_auc_score(labels, p) for p in predictions], abs=1e-6)
        assert row["test_auc_mean"] == pytest.approx(statistics.mean(row["test_auc"]))
        expected = [(a - b) / b for a, b in zip(row["test_auc"], base_auc)]
        assert row["relative_auc_change"] == pytest.approx(expected)
        if name != "ctr":
            assert row["p_value"] == pytest.approx(stats.ttest_rel(row["test_auc"], base_auc).pvalue, nan_ok=True)
            assert row["delong"]["auc_difference"] == pytest.approx(statistics.mean(row["test_auc"]) - statistics.mean(base_auc))
        assert sum(cell["rows"] for cell in row["long_tail"]) == len(labels)
        seen, unseen = row["by_user_seen"]
        assert seen["rows"] + unseen["rows"] == len(labels) == len(seen_rows)
        assert unseen["rows"] == (~seen_rows).sum() and (unseen["auc"] is None) == (unseen["rows"] == 0)
        assert seen["auc"] == pytest.approx(statistics.mean(roc_auc_score(labels[seen_rows], p[seen_rows]) for p in predictions))
        # its scoring cost is timed on the served model itself: rebuilt, it scores the test rows as its run did
        served = load_run(runs[0], base / "data")
        assert predict(served.logits, served.batches("test")) == pytest.approx(predictions[0], abs=1e-5)
        assert row["scoring_seconds_per_1k_rows"] > 0
        assert row["scoring_cost"] == pytest.approx(row["scoring_seconds_per_1k_rows"] / rows["ctr"]["scoring_seconds_per_1k_rows"])
    assert all(w != 0.5 for w in rows["clickprompt"]["fusion_weight"]), "the fusion weight trains"
    assert rows["ctr"]["fusion_weight"] == [None, None] and rows["ctr"]["mlm_value_gap"] == [None, None]
    ptab_mlm = json.loads((tmp_path / "seed0" / "ptab-mlm" / "metrics.json").read_text())["valid"]
    assert rows["ptab"]["mlm_value_ce_none"][0] == ptab_mlm["mlm_value_ce_none"] and rows["ptab"]["mlm_value_gap"][0] is None
    gaps = [json.loads((tmp_path / f"seed{seed}" / "pamlm" / "metrics.json").read_text())["valid"]["mlm_value_gap"]
            for seed in (0, 1)]
    assert rows["clickprompt"]["mlm_value_gap"] == gaps == rows["clickprompt-no-plm"]["mlm_value_gap"]
    towers = [json.loads((tmp_path / f"seed{seed}" / "clickprompt" / "metrics.json").read_text())["test"] for seed in (0, 1)]
    assert rows["clickprompt"]["auc_plm_shuffled"] == [t["auc_plm_shuffled"] for t in towers]
    table = (tmp_path / "comparison.md").read_text()
    assert all(f"| {name} |" in table for name in VARIANTS) and "| scoring x |" in table
    assert f"| user seen ({rows['ctr']['by_user_seen'][0]['rows']:,} rows) |" in table

    metrics = tmp_path / "seed1" / "clickprompt" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    again = run_comparison(base / "data", tmp_path, config, seeds=[0, 1], variants=list(VARIANTS), progress=lambda _: None)
    timings = ("scoring_seconds_per_1k_rows", "scoring_cost")  # measured again
    assert [{k: v for k, v in row.items() if k not in timings} for row in again["rows"]] == \
        [{k: v for k, v in row.items() if k not in timings} for row in payload["rows"]]
    assert metrics.stat().st_mtime_ns == stamp, "finished runs are reused"


def test_pamlm_needs_prompts(setup, tmp_path: Path) -> None:
    base, settings = setup
    with pytest.raises(UserError, match="prompt.num_prompts must be at least 1"):
        run("pamlm", base / "data", tmp_path, load_config("ml-1m", [*settings, "prompt.num_prompts=0"]))


def test_unknown_variant(setup, tmp_path: Path) -> None:
    base, settings = setup
    with pytest.raises(UserError, match="unknown variant 'clickprompt-xl'"):
        run_comparison(base / "data", tmp_path, load_config("ml-1m", settings), seeds=[0], variants=["clickprompt-xl"])


def test_a_variant_trains_under_its_own_preset(setup, tmp_path: Path) -> None:
    base, settings = setup
    config = load_config("ml-1m", settings)
    tuned = load_config("ml-1m", [*settings, "ctr.dropout=0.2", "train.dense_lr=0.002"])
    payload = run_comparison(base / "data", tmp_path, config, seeds=[0], variants=["ctr"], progress=lambda _: None,
                             variant_configs={"ctr": tuned})
    recorded = json.loads((tmp_path / "seed0" / "ctr" / "run.json").read_text())["config"]
    assert recorded["ctr"]["dropout"] == 0.2 and recorded["train"]["dense_lr"] == 0.002
    assert payload["variant_recipes"] == {"ctr": {"ctr.dropout": 0.2, "train.dense_lr": 0.002}}
    assert "ctr trains under its own preset, which differs in: ctr.dropout=0.2, train.dense_lr=0.002." in \
        (tmp_path / "comparison.md").read_text()
