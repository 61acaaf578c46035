"""The comparison driver: every variant trains, the table's statistics follow from the runs, and a
second call resumes from finished runs instead of training again."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

from cp_dist.config import load_config
from cp_dist.errors import UserError
from cp_dist.training.comparison import run_comparison
from cp_dist.training.variants import VARIANTS
from tests.clickprompt.conftest import run

pytestmark = pytest.mark.slow  # minute-long end-to-end checks


def test_every_variant_over_two_seeds_then_resume(setup, tmp_path: Path) -> None:
    base, settings = setup
    config = load_config("ml-1m", [*settings, "pamlm.max_steps=3"])
    payload = run_comparison(base / "data", tmp_path, config, seeds=[0, 1], variants=list(VARIANTS), progress=lambda _: None)
    rows = {row["variant"]: row for row in payload["rows"]}
    assert list(rows) == list(VARIANTS)
    for seed in (0, 1):
        history = json.loads((tmp_path / f"seed{seed}" / "pamlm" / "metrics.json").read_text())["history"]
        assert sum(h["steps"] for h in history) == 3, "pamlm.max_steps caps PA-MLM"
        assert (tmp_path / f"seed{seed}" / "pamlm-input" / "metrics.json").is_file()
    assert not (tmp_path / "seed0" / "pamlm-no-prompts").exists()

    base_auc = rows["ctr"]["test_auc"]
    for name, row in rows.items():
        assert all(0 < auc < 1 for auc in row["test_auc"])
        assert row["test_auc_mean"] == pytest.approx(statistics.mean(row["test_auc"]))
        expected = [(a - b) / b for a, b in zip(row["test_auc"], base_auc)]
        assert row["relative_auc_change"] == pytest.approx(expected)
        if name != "ctr":
            assert row["p_value"] == pytest.approx(stats.ttest_rel(row["test_auc"], base_auc).pvalue, nan_ok=True)
    assert all(0 < w < 1 for w in rows["clickprompt"]["fusion_weight"])
    assert rows["ctr"]["fusion_weight"] == [None, None]
    table = (tmp_path / "comparison.md").read_text()
    assert all(f"| {name} |" in table for name in VARIANTS)

    metrics = tmp_path / "seed1" / "clickprompt" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    again = run_comparison(base / "data", tmp_path, config, seeds=[0, 1], variants=list(VARIANTS), progress=lambda _: None)
    assert again["rows"] == payload["rows"] and metrics.stat().st_mtime_ns == stamp, "finished runs are reused"


def test_pamlm_needs_prompts(setup, tmp_path: Path) -> None:
    base, settings = setup
    with pytest.raises(UserError, match="prompt.num_prompts must be at least 1"):
        run("pamlm", base / "data", tmp_path, load_config("ml-1m", [*settings, "prompt.num_prompts=0"]))


def test_unknown_variant(setup, tmp_path: Path) -> None:
    base, settings = setup
    with pytest.raises(UserError, match="unknown variant 'clickprompt-xl'"):
        run_comparison(base / "data", tmp_path, load_config("ml-1m", settings), seeds=[0], variants=["clickprompt-xl"])
