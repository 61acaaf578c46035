"""The paper's comparison on one data set: the CTR baseline, ClickPrompt without and with the PLM,
and the ablations, over several seeds, in one table with a paired significance test.

Runs land in out_dir/seed<k>/<run>; a finished run is reused and an unfinished one resumes, so an
interrupted comparison goes on where it stopped. The PA-MLM run of a seed is shared by the
variants that start from it.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from scipy import stats

from cp_dist.config import Config
from cp_dist.errors import UserError
from cp_dist.io import atomic_file, write_json
from cp_dist.runs import RunDir
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train
from cp_dist.training.variants import BASELINE, MAIN_VARIANTS, VARIANTS


def run_comparison(
    data_dir: Path, out_dir: Path, config: Config, *, seeds: Sequence[int], variants: Sequence[str] = MAIN_VARIANTS,
    results_dir: Path | None = None, progress: Callable[[str], None] = print,
) -> dict:
    """Trains every (variant, seed) and writes comparison.json and comparison.md to results_dir
    (default out_dir). Returns the JSON payload."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant {unknown[0]!r}; expected some of {', '.join(VARIANTS)}")
    variants = [BASELINE, *[v for v in variants if v != BASELINE]]  # relative changes need the baseline
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in seeds:
        seed_config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
        for name in variants:
            runs[name].append(_run_variant(data_dir, out_dir / f"seed{seed}", seed_config, name, progress))
    payload = _summarize(runs, seeds, config)
    results_dir = results_dir or out_dir
    write_json(results_dir / "comparison.json", payload)
    with atomic_file(results_dir / "comparison.md") as tmp:
        tmp.write_text(format_comparison(payload))
    return payload


def _with_prompt(config: Config, overrides: dict) -> Config:
    return dataclasses.replace(config, prompt=dataclasses.replace(config.prompt, **overrides)) if overrides else config


def _run_variant(data_dir: Path, seed_dir: Path, config: Config, name: str, progress: Callable[[str], None]) -> dict:
    variant = VARIANTS[name]
    config = _with_prompt(config, variant.prompt)
    pamlm_seconds, start = 0.0, None
    if variant.pamlm_run is not None:
        pamlm = RunDir(seed_dir / variant.pamlm_run)
        if not pamlm.finished:
            progress(f"[seed {config.train.seed}] PA-MLM ({config.prompt.placement} prompts) -> {pamlm.path}")
        pamlm_seconds = train(StageJob("pamlm", data_dir, pamlm.path, config))["train_seconds"]
        start = pamlm.checkpoint
    run = RunDir(seed_dir / name)
    if not run.finished:
        progress(f"[seed {config.train.seed}] {name}: {variant.description} -> {run.path}")
    metrics = train(StageJob(variant.stage, data_dir, run.path, config, init_from=start))
    return {"seed": config.train.seed, "run": str(run.path), "test": metrics["test"], "valid": metrics["valid"],
            "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
            "pamlm_seconds": pamlm_seconds, "fusion_weight": metrics["model_info"].get("fusion_weight")}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summarize(runs: dict[str, list[dict]], seeds: Sequence[int], config: Config) -> dict:
    base_auc = [r["test"]["auc"] for r in runs[BASELINE]]
    rows = []
    for name, variant_runs in runs.items():
        auc = [r["test"]["auc"] for r in variant_runs]
        logloss = [r["test"]["logloss"] for r in variant_runs]
        row = {"variant": name, "description": VARIANTS[name].description, "seeds": list(seeds),
               "test_auc": auc, "test_logloss": logloss,
               "relative_auc_change": [(a - b) / b for a, b in zip(auc, base_auc)],
               "seconds": [r["train_seconds"] + r["pamlm_seconds"] for r in variant_runs],
               "fusion_weight": [r["fusion_weight"] for r in variant_runs]}
        row["test_auc_mean"], row["test_auc_std"] = _mean_std(auc)
        row["test_logloss_mean"], row["test_logloss_std"] = _mean_std(logloss)
        row["relative_auc_change_mean"] = statistics.mean(row["relative_auc_change"])
        if name != BASELINE and len(auc) > 1:
            test = stats.ttest_rel(auc, base_auc)  # paired by seed: same split, same seed, other model
            row["paired_t"], row["p_value"] = float(test.statistic), float(test.pvalue)
        rows.append(row)
    return {"baseline": config.ctr.model, "config": config.to_dict(), "rows": rows}


def format_comparison(payload: dict) -> str:
    config = payload["config"]
    prompt = config["prompt"]
    seeds = payload["rows"][0]["seeds"]
    pretraining = config["pamlm"]
    steps = f", at most {pretraining['max_steps']} steps" if pretraining.get("max_steps") else ""
    lines = [
        f"Test AUC / LogLoss, mean ± std over seeds {', '.join(map(str, seeds))}; baseline {payload['baseline']}; "
        f"PLM {prompt['plm']} ({prompt['plm_layers'] or 'all'} layers, max_length {prompt['max_length']}, "
        f"{prompt['num_prompts']} prompts per layer); PA-MLM {pretraining['epochs']} epoch(s){steps} at batch "
        f"{pretraining['global_batch_size']}; finetuning with the PLM up to {config['finetune']['epochs']} epoch(s), "
        f"PLM lr {config['finetune']['plm_lr']:g}; precision {config['train']['precision']}.",
        "p: paired t-test of the test AUC against the baseline across seeds (two-sided). seconds: training, "
        "including the PA-MLM run the variant starts from.",
        "",
        "| variant | test AUC | test LogLoss | rel. AUC change | p | a (CTR weight) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    def spread(mean: float, std: float) -> str:
        return f"{mean:.4f} ± {std:.4f}" if len(seeds) > 1 else f"{mean:.4f}"

    for row in payload["rows"]:
        p_value = f"{row['p_value']:.3f}" if "p_value" in row else "–"
        weights = [w for w in row["fusion_weight"] if w is not None]
        fusion = f"{statistics.mean(weights):.3f}" if weights else "–"
        lines.append(
            f"| {row['variant']} | {spread(row['test_auc_mean'], row['test_auc_std'])} | "
            f"{spread(row['test_logloss_mean'], row['test_logloss_std'])} | {100 * row['relative_auc_change_mean']:+.2f}% | "
            f"{p_value} | {fusion} | {statistics.mean(row['seconds']):.0f} |"
        )
    return "\n".join(lines) + "\n"
