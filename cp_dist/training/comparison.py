"""The paper's comparison on one data set: the CTR baseline, ClickPrompt without and with the PLM,
and the ablations, over several seeds, in one table with a paired significance test.

Runs land in out_dir/seed<k>/<run>; a finished run (its metrics.json or pretrain.json) is reused,
so an interrupted comparison resumes where it stopped. The PA-MLM run of a seed is shared by the
variants that start from it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from cp_dist.config import Config
from cp_dist.io import atomic_file, write_json
from cp_dist.training.clickprompt import PRETRAIN_FILE, finetune_with_plm, finetune_without_plm, pretrain
from cp_dist.training.ctr import METRICS_FILE, train_ctr

BASELINE = "ctr"


@dataclass(frozen=True)
class Variant:
    description: str
    stage: str  # ctr | without_plm | with_plm
    pretrain: str | None = None  # the PA-MLM run it starts from: "pamlm" (the preset's prompts), "pamlm-input", None
    prompt: dict = dataclasses.field(default_factory=dict)  # overrides of the prompt section


VARIANTS: dict[str, Variant] = {
    BASELINE: Variant("the preset's CTR backbone alone", "ctr"),
    "clickprompt-no-plm": Variant("ClickPrompt, finetuned without the PLM (served as the plain backbone)", "without_plm", "pamlm"),
    "clickprompt": Variant("ClickPrompt, finetuned with the PLM", "with_plm", "pamlm"),
    "ablation-no-pamlm": Variant("with the PLM, no PA-MLM (finetuning starts from fresh prompts)", "with_plm"),
    "ablation-input-prompts": Variant("with the PLM, prompts at the input layer only (PA-MLM too)", "with_plm", "pamlm-input",
                                      {"placement": "input"}),
    "ablation-no-prompts": Variant("with the PLM, no prompts: the two towers' logits fused late, no PA-MLM",
                                   "with_plm", None, {"num_prompts": 0}),
}
MAIN_VARIANTS = [BASELINE, "clickprompt-no-plm", "clickprompt"]


def run_comparison(
    data_dir: Path, out_dir: Path, config: Config, *, seeds: Sequence[int], variants: Sequence[str] = MAIN_VARIANTS,
    results_dir: Path | None = None, progress: Callable[[str], None] = print,
) -> dict:
    """Trains every (variant, seed) and writes comparison.json and comparison.md to results_dir
    (default out_dir). Returns the JSON payload."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {unknown[0]!r}; expected some of {', '.join(VARIANTS)}")
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
    run_dir = seed_dir / name
    pretrain_seconds = 0.0
    pretrained = None
    if variant.pretrain is not None:
        pretrained = seed_dir / variant.pretrain
        if not (pretrained / PRETRAIN_FILE).is_file():
            progress(f"[seed {config.train.seed}] PA-MLM ({config.prompt.placement} prompts) -> {pretrained}")
            pretrain(data_dir, pretrained, config, overwrite=True)
        pretrain_seconds = json.loads((pretrained / PRETRAIN_FILE).read_text())["train_seconds"]
    if (run_dir / METRICS_FILE).is_file():
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    else:
        progress(f"[seed {config.train.seed}] {name}: {variant.description} -> {run_dir}")
        if variant.stage == "ctr":
            metrics = train_ctr(data_dir, run_dir, config, overwrite=True)
        elif variant.stage == "without_plm":
            metrics = finetune_without_plm(data_dir, pretrained, run_dir, config, overwrite=True)
        else:
            metrics = finetune_with_plm(data_dir, pretrained, run_dir, config, overwrite=True)
    return {"seed": config.train.seed, "run": str(run_dir), "test": metrics["test"], "valid": metrics["valid"],
            "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
            "pretrain_seconds": pretrain_seconds, "fusion_weight": metrics.get("fusion_weight")}


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
               "seconds": [r["train_seconds"] + r["pretrain_seconds"] for r in variant_runs],
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
    pretraining = config["pretrain"]
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
