"""The backbone table's text and plot beside the paper's Table 2 (no training: rows as run_table makes them)."""

from __future__ import annotations

from pathlib import Path

from cp_dist.config import Config
from cp_dist.experiments.ctr_table import _paper, format_table, plot_against_paper


def _rows(dataset: str) -> list[dict]:
    return [{"model": model, "seeds": [0, 1], "test_auc_mean": auc, "test_auc_std": 0.001, "test_logloss_mean": 0.4,
             "test_logloss_std": 0.002, "best_epochs": [1, 2], "train_seconds_mean": 90.0, "paper": _paper(dataset, model)}
            for model, auc in (("fm", 0.8300), ("dcnv2", 0.8455))]


def test_a_data_set_of_the_paper_gets_its_figures_and_our_difference(tmp_path: Path) -> None:
    rows = _rows("ml-1m")
    text = format_table("ml-1m", Config(), [0, 1], rows)
    assert "| paper AUC | AUC difference | paper LogLoss |" in text
    assert "| dcnv2 | 0.8455 ± 0.0010 | 0.4000 ± 0.0020 | 0.8439 | +0.0016 | 0.3954 | [1, 2] | 90 |" in text
    assert "| fm | 0.8300 ± 0.0010 | 0.4000 ± 0.0020 | 0.8371 | -0.0071 | 0.4090 |" in text
    plot_against_paper("ml-1m", rows, tmp_path / "table.png")
    assert (tmp_path / "table.png").stat().st_size > 0 and not list(tmp_path.glob(".*tmp*"))


def test_a_data_set_the_paper_never_used_gets_no_paper_columns() -> None:
    text = format_table("ml-100k", Config(), [0, 1], _rows("ml-100k"))
    assert "paper" not in text and "| dcnv2 | 0.8455 ± 0.0010 | 0.4000 ± 0.0020 | [1, 2] | 90 |" in text
