"""Recipe search (`cp-dist tune`) on Ray Tune, fair by construction: every variant of the search
space gets the same number of trials, drawn by the same seeded searcher, scored by the same
objective, its run's validation AUC. Test rows are never read to choose.

A trial is one variant of `cp-dist compare` at one seed with some `section.key=value` overrides,
trained as a normal run in OUT/trials/<variant>/<key> (key: a digest of the overrides), so a
search run again reuses its finished trials and resumes an unfinished one. The best trial of each
variant is written as a preset, OUT/best-<variant>.yaml, that extends the preset searched from.

The search space is YAML: a mapping of variant to a mapping of `section.key` to one distribution,
  ctr:
    train.lr: {loguniform: [1.0e-4, 1.0e-2]}
  clickprompt-no-plm:
    train.lr: {loguniform: [1.0e-4, 1.0e-2]}
    pamlm.max_steps: {choice: [100, 300]}
with the distributions of DISTRIBUTION_ARITY (randint's upper bound excluded, as in Ray Tune).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from cp_dist.config import Config, load_config, with_overrides
from cp_dist.errors import UserError
from cp_dist.io import atomic_file, write_json

OBJECTIVE = "valid_auc"
#: What a trial reports (Ray Tune adds its own bookkeeping: times, host names, which tune.json leaves out).
TRIAL_FIELDS = ("trial", "params", OBJECTIVE, "valid_logloss", "best_epoch", "mlm_value_gap", "seconds", "run")


#: Ray Tune's distributions that a space may name, and how many arguments each takes (None: a list of values).
DISTRIBUTION_ARITY = {"choice": None, "uniform": 2, "loguniform": 2, "randint": 2}


def read_space(path: Path, config: Config) -> dict[str, dict[str, tuple[str, list]]]:
    """The search space file, checked: known variants, keys of the config, one known distribution
    each with the arguments it takes, every value a valid setting of its key."""
    from cp_dist.experiments.variants import VARIANTS

    try:
        payload = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"{path}: cannot read the search space ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(payload, dict) or not payload:
        raise UserError(f"{path}: expected a mapping of variant to its search space, e.g. `ctr: {{train.lr: {{loguniform: "
                        "[1.0e-4, 1.0e-2]}}}}`")
    space = {}
    for variant, keys in payload.items():
        if variant not in VARIANTS:
            raise UserError(f"{path}: unknown variant {variant!r}; expected some of {', '.join(VARIANTS)}")
        if not isinstance(keys, dict) or not keys:
            raise UserError(f"{path}: {variant}: expected a mapping of section.key to a distribution")
        space[variant] = {key: _distribution(path, variant, key, spec, config) for key, spec in keys.items()}
    return space


def _distribution(path: Path, variant: str, key: str, spec: Any, config: Config) -> tuple[str, list]:
    where = f"{path}: {variant}.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UserError(f"{where}: expected one distribution, e.g. {{choice: [16, 32]}}; one of {', '.join(DISTRIBUTION_ARITY)}")
    ((name, args),) = spec.items()
    if name not in DISTRIBUTION_ARITY:
        raise UserError(f"{where}: unknown distribution {name!r}; expected one of {', '.join(DISTRIBUTION_ARITY)}")
    arity = DISTRIBUTION_ARITY[name]
    if not isinstance(args, list) or not args or (arity is not None and len(args) != arity):
        raise UserError(f"{where}: {name} takes {'a non-empty list of values' if arity is None else '[low, high]'}, got {args!r}")
    if arity is not None and not (all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) and args[0] < args[1]):
        raise UserError(f"{where}: {name} takes numbers [low, high] with low < high, got {args!r}")
    for value in args if arity is None else args[:1]:
        try:
            with_overrides(config, [f"{key}={json.dumps(value)}"])
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    return name, args


def overrides_of(params: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in sorted(params.items())]


def trial_key(params: dict[str, Any]) -> str:
    return hashlib.sha256("\n".join(overrides_of(params)).encode()).hexdigest()[:12]


def run_search(data_dir: Path, out_dir: Path, config: Config, preset: str, space: dict[str, dict[str, tuple[str, list]]], *,
               trials: int, seed: int = 0, address: str | None = None, cpus_per_trial: int = 2) -> dict:
    """`trials` trials of every variant in `space`, one at a time per variant on the Ray cluster at
    `address` (default: a local one started for the search); writes tune.json, tune.md and
    best-<variant>.yaml into out_dir and returns the tune.json payload."""
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from cp_dist.ray_cluster import init_ray

    started = not ray.is_initialized()
    if started:
        init_ray(address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        variants = []
        for variant, keys in space.items():
            trainable = tune.with_parameters(_trial, data_dir=data_dir.resolve(), out_dir=out_dir.resolve(), config=config,
                                             variant=variant)
            tuner = tune.Tuner(
                tune.with_resources(trainable, {"cpu": cpus_per_trial}),
                param_space={key: tune.choice(args) if name == "choice" else getattr(tune, name)(*args)
                             for key, (name, args) in keys.items()},
                tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", num_samples=trials,
                                            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=1)),
                run_config=tune.RunConfig(name=variant, storage_path=str((out_dir / "ray").resolve()), verbose=1),
            )
            grid = tuner.fit()
            failed = [r for r in grid if r.error is not None]
            if failed:
                raise UserError(f"{variant}: {len(failed)} of {trials} trials failed; the first: {failed[0].error}")
            rows = sorted(({k: r.metrics[k] for k in TRIAL_FIELDS} for r in grid), key=lambda m: m["trial"])
            best = max(rows, key=lambda m: m[OBJECTIVE])
            variants.append({"variant": variant, "space": {k: {n: a} for k, (n, a) in keys.items()}, "trials": rows,
                             "best": best})
            _write_preset(out_dir / f"best-{variant}.yaml", preset, config, variant, best)
    finally:
        if started:
            ray.shutdown()
    payload = {"objective": OBJECTIVE, "seed": config.train.seed, "searcher_seed": seed, "trials_per_variant": trials,
               "preset": preset, "config": config.to_dict(), "variants": variants}
    write_json(out_dir / "tune.json", payload)
    with atomic_file(out_dir / "tune.md") as tmp:
        tmp.write_text(format_search(payload))
    return payload


def _trial(params: dict[str, Any], *, data_dir: Path, out_dir: Path, config: Config, variant: str) -> None:
    """One trial: the variant trained under these overrides; reports its validation figures only."""
    from ray import tune

    from cp_dist.experiments.comparison import run_variant

    overrides = overrides_of(params)
    key = trial_key(params)
    run = run_variant(data_dir, out_dir / "trials" / variant / key, with_overrides(config, overrides), variant, print)
    tune.report({OBJECTIVE: run["valid"]["auc"], "valid_logloss": run["valid"]["logloss"], "trial": key,
                 "params": dict(sorted(params.items())), "best_epoch": run["best_epoch"],
                 "seconds": run["train_seconds"] + run["pretrain_seconds"], "mlm_value_gap": run["mlm_value_gap"],
                 "run": run["run"]})


def _write_preset(path: Path, preset: str, config: Config, variant: str, best: dict) -> None:
    """The best trial's configuration as a preset: `extends` the one searched from, with every value
    that differs from it (the search's --set overrides and the trial's parameters)."""
    from cp_dist.experiments.comparison import recipe_difference

    sections: dict[str, dict] = {}
    for dotted, value in recipe_difference(load_config(preset), with_overrides(config, overrides_of(best["params"]))).items():
        section, key = dotted.split(".", 1)
        sections.setdefault(section, {})[key] = value
    header = (f"# cp-dist tune: the best of its trials for {variant} by validation AUC ({best[OBJECTIVE]:.4f}, trial "
              f"{best['trial']}); use it with --preset {path.name}\n")
    with atomic_file(path) as tmp:
        tmp.write_text(header + yaml.safe_dump({"extends": preset, **sections}, sort_keys=False))


def format_search(payload: dict) -> str:
    lines = [f"Recipe search: {payload['trials_per_variant']} trials per variant (Ray Tune, random search, searcher seed "
             f"{payload['searcher_seed']}), training seed {payload['seed']}, from preset {payload['preset']}; objective: "
             "the run's validation AUC (test is not read). value gap: the PA-MLM run's masked-value cross-entropy with "
             "shuffled minus own prompts. * marks each variant's best trial."]
    for entry in payload["variants"]:
        keys = list(entry["space"])
        lines += ["", f"### {entry['variant']}", "",
                  "| trial | " + " | ".join(keys) + " | valid AUC | valid LogLoss | best epoch | value gap | seconds |",
                  "|---|" + "---|" * (len(keys) + 5)]
        for row in entry["trials"]:
            mark = " *" if row["trial"] == entry["best"]["trial"] else ""
            gap = "–" if row["mlm_value_gap"] is None else f"{row['mlm_value_gap']:.3f}"
            lines.append(f"| {row['trial']}{mark} | " + " | ".join(_value(row["params"][k]) for k in keys)
                         + f" | {row[OBJECTIVE]:.4f} | {row['valid_logloss']:.4f} | {row['best_epoch']} | {gap} | "
                         f"{row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)

