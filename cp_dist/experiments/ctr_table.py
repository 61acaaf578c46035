"""The backbone comparison: every model, several seeds, one table of test AUC and LogLoss."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from cp_dist.config import Config
from cp_dist.experiments.published import table2_figures
from cp_dist.io import atomic_file, write_json
from cp_dist.plots import new_figure, save_figure
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train


def run_table(
    data_dir: Path, out_dir: Path, config: Config, *, models: list[str], seeds: list[int], results_dir: Path | None = None
) -> str:
    """Trains each (model, seed) into out_dir/<model>/seed<k> (finished runs are reused, unfinished ones resume) and
    writes table.json and table.md (and table.png beside the paper's figures, where it has the data set) to
    results_dir (default out_dir); returns the markdown."""
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
    for row in rows:
        row["paper"] = _paper(dataset, row["model"])
    write_json(results_dir / "table.json", {"dataset": dataset, "config": config.to_dict(), "rows": rows})
    markdown = format_table(dataset, config, seeds, rows)
    with atomic_file(results_dir / "table.md") as tmp:
        tmp.write_text(markdown)
    if any(row["paper"] for row in rows):
        plot_against_paper(dataset, rows, results_dir / "table.png")
    return markdown


def _paper(dataset: str, model: str) -> dict | None:
    figures = table2_figures(dataset, model)
    return None if figures is None else {"test_auc": figures[0], "test_logloss": figures[1]}


def format_table(dataset: str, config: Config, seeds: list[int], rows: list[dict]) -> str:
    """The markdown table; where the paper's Table 2 has the data set, its figures and our difference."""
    paper = any(row["paper"] for row in rows)
    header = (
        f"Test AUC and LogLoss on {dataset}, mean ± std over seeds {', '.join(map(str, seeds))} "
        f"(preset ctr.embedding_dim={config.ctr.embedding_dim}, mlp={config.ctr.mlp}, "
        f"batch {config.train.global_batch_size}, early stopping on validation AUC)."
        + (" Paper: the published Table 2 (cp_dist.experiments.published); difference: ours less the paper's." if paper else "")
        + "\n\n| model | test AUC | test LogLoss |"
        + (" paper AUC | AUC difference | paper LogLoss |" if paper else "")
        + " best epochs | train s |\n|---|---|---|" + ("---|---|---|" if paper else "") + "---|---|\n"
    )
    lines = []
    for r in rows:
        cells = [r["model"], f"{r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f}",
                 f"{r['test_logloss_mean']:.4f} ± {r['test_logloss_std']:.4f}"]
        if paper:
            published = r["paper"]
            cells += ["–", "–", "–"] if published is None else [
                f"{published['test_auc']:.4f}", f"{r['test_auc_mean'] - published['test_auc']:+.4f}",
                f"{published['test_logloss']:.4f}"]
        cells += [str(r["best_epochs"]), f"{r['train_seconds_mean']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |\n")
    return header + "".join(lines)


def plot_against_paper(dataset: str, rows: list[dict], path: Path) -> None:
    """Our test AUC (std over seeds as error bars) beside the paper's, a pair of bars per backbone."""
    figure, axis = new_figure(width=max(6.0, 0.7 * len(rows) + 2), height=4.5)
    positions = range(len(rows))
    ours = [r["test_auc_mean"] for r in rows]
    theirs = [r["paper"]["test_auc"] if r["paper"] else float("nan") for r in rows]
    axis.bar([x - 0.2 for x in positions], ours, 0.4, yerr=[r["test_auc_std"] for r in rows], capsize=2,
             label=f"cp_dist ({len(rows[0]['seeds'])} seeds)")
    axis.bar([x + 0.2 for x in positions], theirs, 0.4, label="paper, Table 2")
    known = [v for v in ours + theirs if v == v]
    axis.set_ylim(min(known) - 0.01, max(known) + 0.005)
    axis.set_xticks(list(positions), [r["model"] for r in rows], rotation=30, ha="right")
    axis.set_ylabel("test AUC")
    axis.set_title(f"CTR backbones on {dataset}: ours and the paper's", fontsize=9)
    axis.legend(fontsize=8)
    save_figure(figure, path)
