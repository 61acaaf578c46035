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

import numpy as np
from scipy import stats

from cp_dist.config import Config
from cp_dist.errors import UserError
from cp_dist.experiments.scoring_cost import ROUNDS, ROWS, scoring_seconds_per_1k_rows
from cp_dist.experiments.significance import LONG_TAIL_SHARE, auc_by_long_tail, auc_by_user_seen, delong_test, long_tail_masks
from cp_dist.experiments.variants import BASELINE, MAIN_VARIANTS, VARIANTS
from cp_dist.io import atomic_file, write_json
from cp_dist.runs import RunDir
from cp_dist.training.evaluate import split_labels
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train


def run_comparison(
    data_dir: Path, out_dir: Path, config: Config, *, seeds: Sequence[int], variants: Sequence[str] = MAIN_VARIANTS,
    results_dir: Path | None = None, progress: Callable[[str], None] = print, variant_configs: dict[str, Config] | None = None,
) -> dict:
    """Trains every (variant, seed) under `config`, or under its own in variant_configs (a tuned
    recipe each, as `cp-dist tune` chooses them), and writes comparison.json and comparison.md to
    results_dir (default out_dir). Returns the JSON payload."""
    variant_configs = variant_configs or {}
    unknown = [v for v in [*variants, *variant_configs] if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant {unknown[0]!r}; expected some of {', '.join(VARIANTS)}")
    variants = [BASELINE, *[v for v in variants if v != BASELINE]]  # relative changes need the baseline
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in seeds:
        for name in variants:
            own = variant_configs.get(name, config)
            seed_config = dataclasses.replace(own, train=dataclasses.replace(own.train, seed=seed))
            runs[name].append(run_variant(data_dir, out_dir / f"seed{seed}", seed_config, name, progress))
    scoring = {}
    if len(runs) > 1:  # a backbone alone costs what it costs
        progress(f"timing each variant's served model on the test split (seed {seeds[0]}'s, {ROUNDS} rounds in turn)")
        scoring = scoring_seconds_per_1k_rows({name: Path(variant_runs[0]["run"]) for name, variant_runs in runs.items()},
                                              data_dir)
    payload = _summarize(runs, seeds, config, data_dir, scoring) | {
        "variant_recipes": {name: recipe_difference(config, own) for name, own in variant_configs.items() if name in runs}}
    results_dir = results_dir or out_dir
    write_json(results_dir / "comparison.json", payload)
    with atomic_file(results_dir / "comparison.md") as tmp:
        tmp.write_text(format_comparison(payload))
    return payload


def recipe_difference(base: Config, own: Config) -> dict[str, object]:
    """The settings (section.key) in which `own` differs from `base`, with own's values."""
    before, after = base.to_dict(), own.to_dict()
    return {f"{section}.{key}": value for section, values in after.items() for key, value in values.items()
            if before[section][key] != value}


def _with_prompt(config: Config, overrides: dict) -> Config:
    return dataclasses.replace(config, prompt=dataclasses.replace(config.prompt, **overrides)) if overrides else config


def run_variant(data_dir: Path, seed_dir: Path, config: Config, name: str, progress: Callable[[str], None]) -> dict:
    """One variant at config.train.seed in seed_dir/<name>, after the pretraining run it starts from
    (seed_dir/<pretrain_run>, shared by the variants naming it); finished runs are reused."""
    variant = VARIANTS[name]
    config = _with_prompt(config, variant.prompt)
    pretrain_seconds, start, pretrain_valid = 0.0, None, {}
    if variant.pretrain_run is not None:
        pretraining = RunDir(seed_dir / variant.pretrain_run)
        if not pretraining.finished:
            what = f"PA-MLM ({config.prompt.placement} prompts)" if variant.pretrain_stage == "pamlm" else variant.pretrain_stage
            progress(f"[seed {config.train.seed}] {what} -> {pretraining.path}")
        pretrained = train(StageJob(variant.pretrain_stage, data_dir, pretraining.path, config))
        pretrain_seconds, start, pretrain_valid = pretrained["train_seconds"], pretraining.checkpoint, pretrained["valid"]
    run = RunDir(seed_dir / name)
    if not run.finished:
        progress(f"[seed {config.train.seed}] {name}: {variant.description} -> {run.path}")
    metrics = train(StageJob(variant.stage, data_dir, run.path, config, init_from=start))
    return {"seed": config.train.seed, "run": str(run.path), "test": metrics["test"], "valid": metrics["valid"],
            "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"], "pretrain_seconds": pretrain_seconds,
            "fusion_weight": metrics["model_info"].get("fusion_weight"), "mlm_value_gap": pretrain_valid.get("mlm_value_gap"),
            "mlm_value_ce_none": pretrain_valid.get("mlm_value_ce_none"),
            "retrieval_at_1": pretrain_valid.get("retrieval_at_1"), "retrieval_chance": pretrain_valid.get("retrieval_chance"),
            "predictions": run.predictions()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _summarize(runs: dict[str, list[dict]], seeds: Sequence[int], config: Config, data_dir: Path,
               scoring: dict[str, float]) -> dict:
    labels = split_labels(data_dir, "test")
    masks, thresholds = long_tail_masks(data_dir)
    base_auc = [r["test"]["auc"] for r in runs[BASELINE]]
    base_predictions = np.stack([r["predictions"] for r in runs[BASELINE]])
    rows = []
    for name, variant_runs in runs.items():
        auc = [r["test"]["auc"] for r in variant_runs]
        logloss = [r["test"]["logloss"] for r in variant_runs]
        predictions = np.stack([r["predictions"] for r in variant_runs])
        row = {"variant": name, "description": VARIANTS[name].description, "seeds": list(seeds),
               "test_auc": auc, "test_logloss": logloss,
               "relative_auc_change": [(a - b) / b for a, b in zip(auc, base_auc)],
               "seconds": [r["train_seconds"] + r["pretrain_seconds"] for r in variant_runs],
               "fusion_weight": [r["fusion_weight"] for r in variant_runs],
               "mlm_value_gap": [r["mlm_value_gap"] for r in variant_runs],
               "mlm_value_ce_none": [r["mlm_value_ce_none"] for r in variant_runs],
               "retrieval_at_1": [r["retrieval_at_1"] for r in variant_runs],
               "retrieval_chance": variant_runs[0]["retrieval_chance"],
               "auc_ctr_tower": [r["test"].get("auc_ctr") for r in variant_runs],
               "auc_plm_shuffled": [r["test"].get("auc_plm_shuffled") for r in variant_runs],
               "long_tail": _seed_mean_cells(auc_by_long_tail, labels, predictions, masks),
               "by_user_seen": _seed_mean_cells(auc_by_user_seen, labels, predictions, masks),
               "scoring_seconds_per_1k_rows": scoring.get(name),
               "scoring_cost": scoring[name] / scoring[BASELINE] if scoring else None}
        row["test_auc_mean"], row["test_auc_std"] = _mean_std(auc)
        row["test_logloss_mean"], row["test_logloss_std"] = _mean_std(logloss)
        row["relative_auc_change_mean"] = statistics.mean(row["relative_auc_change"])
        if name != BASELINE:
            row["delong"] = delong_test(labels, predictions, base_predictions)  # the same test rows, seed means
            tail = masks["item"]
            row["delong_long_tail_items"] = delong_test(labels[tail], predictions[:, tail], base_predictions[:, tail])
            if len(auc) > 1:
                test = stats.ttest_rel(auc, base_auc)  # paired by seed: same split, same seed, other model
                row["paired_t"], row["p_value"] = float(test.statistic), float(test.pvalue)
        rows.append(row)
    return {"baseline": config.ctr.model, "config": config.to_dict(), "long_tail_thresholds": thresholds,
            "long_tail_share": LONG_TAIL_SHARE, "rows": rows}


def _seed_mean_cells(cells_of: Callable[..., list[dict]], labels: np.ndarray, predictions: np.ndarray,
                     masks: dict[str, np.ndarray]) -> list[dict]:
    """Each cell's AUC (cells_of: auc_by_long_tail or auc_by_user_seen), mean over seeds."""
    per_seed = [cells_of(labels, p, masks) for p in predictions]
    return [{**cells[0], "auc": _mean([c["auc"] for c in cells])} for cells in zip(*per_seed)]


def _spread(values: list[float], digits: int = 4) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _optional(values: list, digits: int = 3) -> str:
    mean = _mean(values)
    return "–" if mean is None else f"{mean:.{digits}f}"


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
        f"{pretraining['global_batch_size']}, {pretraining['masking']} masked; finetuning with the PLM up to "
        f"{config['finetune']['epochs']} epoch(s), PLM lr {config['finetune']['plm_lr']:g}; precision "
        f"{config['train']['precision']}.",
        "p (t): paired t-test of the test AUC against the baseline across seeds. p (DeLong): DeLong's test of the "
        "seed-mean AUC difference on the same test rows. a: the CTR tower's weight in the fused logit. value gap: "
        "the PA-MLM run's masked-value cross-entropy with shuffled minus own prompts (0: the prompts carry nothing "
        "about their row). CTR tower: test AUC of y_ctr alone inside the with-PLM model. PLM shuffled: test AUC of "
        "the PLM tower reading other rows' prompts (0.5: it ignores the text). seconds: training, including the "
        "pretraining run (PA-MLM, CTRL) the variant starts from. scoring x: the served model's time to score the "
        f"first {ROWS:,} test rows (or all, if fewer) relative to the baseline's (seed {seeds[0]}'s models, in turns, "
        "on this machine's CPU).",
        *[f"{name} trains under its own preset, which differs in: "
          + ", ".join(f"{key}={value}" for key, value in recipe.items()) + "." for name, recipe in
          payload.get("variant_recipes", {}).items() if recipe],
        "",
        "| variant | test AUC | test LogLoss | rel. AUC change | p (t) | p (DeLong) | p (DeLong, long-tail items) | a "
        "| value gap | CTR tower | PLM shuffled | seconds | scoring x |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        t = f"{row['p_value']:.3f}" if "p_value" in row else "–"
        delong, tail = (f"{row[key]['p_value']:.3g}" if key in row else "–" for key in ("delong", "delong_long_tail_items"))
        lines.append(
            f"| {row['variant']} | {_spread(row['test_auc'])} | {_spread(row['test_logloss'])} | "
            f"{100 * row['relative_auc_change_mean']:+.2f}% | {t} | {delong} | {tail} | {_optional(row['fusion_weight'])} | "
            f"{_optional(row['mlm_value_gap'])} | {_optional(row['auc_ctr_tower'], 4)} | {_optional(row['auc_plm_shuffled'], 4)} | "
            f"{statistics.mean(row['seconds']):.0f} | {_optional([row.get('scoring_cost')], 2)} |"
        )
    lines += [f"\n{row['variant']}: its CTRL pretraining ranks a row's own text first among {1 / row['retrieval_chance']:.0f} "
              f"valid rows' for {_optional(row['retrieval_at_1'])} of them (chance {row['retrieval_chance']:.3f})."
              for row in payload["rows"] if row.get("retrieval_chance")]
    thresholds = payload["long_tail_thresholds"]
    lines += ["", f"Test AUC by long-tail user x long-tail item, mean over seeds. Long tail: ids seen at most "
              f"{thresholds['user']} (users) / {thresholds['item']} (items) times in training (the least frequent ids "
              f"holding {payload['long_tail_share']:.0%} of the training interactions) or never.", "",
              "| variant | " + " | ".join(f"user {'tail' if c['long_tail_user'] else 'head'}, item "
                                         f"{'tail' if c['long_tail_item'] else 'head'} ({c['rows']:,} rows)"
                                         for c in payload["rows"][0]["long_tail"]) + " |",
              "|---|" + "---|" * len(payload["rows"][0]["long_tail"])]
    for row in payload["rows"]:
        lines.append(f"| {row['variant']} | " + " | ".join("–" if c["auc"] is None else f"{c['auc']:.4f}"
                                                           for c in row["long_tail"]) + " |")
    lines += ["", "Test AUC by whether the row's user was seen in training (never-seen users share the "
              "out-of-vocabulary row), mean over seeds; in brackets the change against the baseline.", "",
              "| variant | " + " | ".join(f"user {'seen' if c['user_seen'] else 'never seen'} ({c['rows']:,} rows)"
                                         for c in payload["rows"][0]["by_user_seen"]) + " |", "|---|---|---|"]
    baseline = payload["rows"][0]["by_user_seen"]
    for row in payload["rows"]:
        lines.append(f"| {row['variant']} | " + " | ".join(_cell_against(c["auc"], b["auc"])
                                                           for c, b in zip(row["by_user_seen"], baseline)) + " |")
    return "\n".join(lines) + "\n"


def _cell_against(auc: float | None, baseline: float | None) -> str:
    if auc is None:
        return "–"
    return f"{auc:.4f}" if baseline is None or auc == baseline else f"{auc:.4f} ({100 * (auc - baseline) / baseline:+.2f}%)"
