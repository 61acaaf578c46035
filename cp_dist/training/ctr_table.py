"""The backbone comparison: every model, several seeds, one table of test AUC and LogLoss."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from cp_dist.config import Config
from cp_dist.io import atomic_file, write_json
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train


def run_table(
    data_dir: Path, out_dir: Path, config: Config, *, models: list[str], seeds: list[int], results_dir: Path | None = None
) -> str:
    """Trains each (model, seed) into out_dir/<model>/seed<k> (finished runs are reused, unfinished ones resume) and
    writes table.json and table.md to results_dir (default out_dir); returns the markdown."""
    results_dir = results_dir or out_dir
    rows = []
    for model in models:
        runs = []
        for seed in seeds:
            run_config = dataclasses.replace(
                config,
                ctr=dataclasses.replace(config.ctr, model=model),
                train=dataclasses.replace(config.train, seed=seed),
            )
            runs.append(train(StageJob("ctr", data_dir, out_dir / model / f"seed{seed}", run_config)))
        auc = [r["test"]["auc"] for r in runs]
        logloss = [r["test"]["logloss"] for r in runs]
        rows.append(
            {
                "model": model,
                "seeds": seeds,
                "test_auc_mean": statistics.mean(auc),
                "test_auc_std": statistics.stdev(auc) if len(auc) > 1 else 0.0,
                "test_logloss_mean": statistics.mean(logloss),
                "test_logloss_std": statistics.stdev(logloss) if len(logloss) > 1 else 0.0,
                "best_epochs": [r["best_epoch"] for r in runs],
                "train_seconds_mean": statistics.mean(r["train_seconds"] for r in runs),
            }
        )
    dataset = runs[0]["dataset"]
    header = (
        f"Test AUC and LogLoss on {dataset}, mean ± std over seeds {', '.join(map(str, seeds))} "
        f"(preset ctr.embedding_dim={config.ctr.embedding_dim}, mlp={config.ctr.mlp}, "
        f"batch {config.train.global_batch_size}, early stopping on validation AUC).\n\n"
        "| model | test AUC | test LogLoss | best epochs | train s |\n|---|---|---|---|---|\n"
    )
    markdown = header + "".join(
        f"| {r['model']} | {r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f} | "
        f"{r['test_logloss_mean']:.4f} ± {r['test_logloss_std']:.4f} | {r['best_epochs']} | {r['train_seconds_mean']:.0f} |\n"
        for r in rows
    )
    write_json(results_dir / "table.json", {"dataset": dataset, "config": config.to_dict(), "rows": rows})
    with atomic_file(results_dir / "table.md") as tmp:
        tmp.write_text(markdown)
    return markdown
