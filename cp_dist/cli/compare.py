"""Comparisons over seeds: `cp-dist compare` (the paper's: baseline, ClickPrompt without / with the
PLM, ablations), `cp-dist reproduce` (the paper's tables), `cp-dist ctr-table` (the CTR backbones);
and `cp-dist tune`, the recipe search that chooses what they compare."""

from __future__ import annotations

import argparse
from pathlib import Path

from cp_dist.cli.train import config_from, training_options
from cp_dist.ctr.backbones import BACKBONES
from cp_dist.experiments.paper_tables import PER_BACKBONE, TABLE3_DEPTHS, TABLES
from cp_dist.experiments.variants import MAIN_VARIANTS, VARIANTS


def _compare(args: argparse.Namespace) -> None:
    from cp_dist.experiments.comparison import format_comparison, run_comparison

    payload = run_comparison(args.data, args.out, config_from(args), seeds=args.seeds, variants=args.variants,
                             results_dir=args.results, variant_configs=_variant_configs(args))
    print(format_comparison(payload))
    print(f"wrote {args.results or args.out}/comparison.json and comparison.md")


def _variant_configs(args: argparse.Namespace) -> dict:
    """--variant-preset VARIANT=PRESET: that variant's own preset (with the same --set and options)."""
    from cp_dist.errors import UserError

    configs = {}
    for given in args.variant_preset:
        variant, sep, preset = given.partition("=")
        if not sep or variant not in VARIANTS or not preset:
            raise UserError(f"--variant-preset {given!r}: expected VARIANT=PRESET with a variant of {', '.join(VARIANTS)}")
        if variant in configs:
            raise UserError(f"--variant-preset: {variant} is given twice")
        configs[variant] = config_from(args, preset)
    return configs


def _ctr_table(args: argparse.Namespace) -> None:
    from cp_dist.experiments.ctr_table import run_table

    print(run_table(args.data, args.out, config_from(args), models=args.models, seeds=args.seeds, results_dir=args.results))


def _reproduce(args: argparse.Namespace) -> None:
    from cp_dist.experiments.paper_tables import Scope, format_table, reproduce

    results = args.results or args.out
    scope = Scope(plm_layers=tuple(args.plm_layers), backbones=tuple(args.backbones))
    result = reproduce(args.table, args.data, args.out, config_from(args), seeds=args.seeds, results_dir=results, scope=scope)
    print(format_table(result))
    print(f"wrote {results}/{args.table}.json, .md and .png")


def _tune(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.errors import UserError
    from cp_dist.experiments.tune import format_search, read_space, run_search

    if args.trials < 1:
        raise UserError(f"--trials {args.trials}: expected at least 1")
    config = config_from(args)
    space = read_space(args.space, config)  # checked before a cluster starts
    preset = args.preset or DatasetMeta.load(args.data).dataset
    preset = str(Path(preset).resolve()) if preset.endswith((".yaml", ".yml")) else preset
    payload = run_search(args.data, args.out, config, preset, space, trials=args.trials, seed=args.searcher_seed,
                         address=args.ray_address, cpus_per_trial=args.cpus_per_trial)
    print(format_search(payload))
    print(f"wrote {args.out}/tune.json, tune.md and " + ", ".join(f"best-{v}.yaml" for v in space))


def add_commands(commands) -> None:
    p = commands.add_parser(
        "compare",
        help="the paper's comparison: CTR baseline vs ClickPrompt without / with the PLM (and ablations), over seeds",
        description="For each seed: trains the preset's CTR backbone, runs PA-MLM, finetunes without and with the "
        "PLM (and any ablation asked for), then writes comparison.json and comparison.md: test AUC and LogLoss "
        "(mean ± std), the relative AUC change against the baseline, a paired t-test across seeds, each variant's "
        "training seconds and its served model's scoring cost relative to the baseline's. Finished "
        "runs in --out are reused and unfinished ones resume, so an interrupted comparison goes on. Variants: "
        + "; ".join(f"{name}: {v.description}" for name, v in VARIANTS.items()),
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=MAIN_VARIANTS, metavar="VARIANT",
                   help=f"default: {' '.join(MAIN_VARIANTS)}; the baseline always runs")
    p.add_argument("--results", type=Path, help="where comparison.json / .md go (default: --out)")
    p.add_argument("--variant-preset", action="append", default=[], metavar="VARIANT=PRESET",
                   help="train VARIANT under its own preset (e.g. the best-<variant>.yaml of `cp-dist tune`), with the "
                   "same --set; repeatable. Variants sharing a pretraining run must agree on it: a run is never reused "
                   "under other settings")
    training_options(p)
    p.set_defaults(handler=_compare, model=None)

    p = commands.add_parser(
        "reproduce",
        help="one of the paper's Tables 2-6 on a prepared data set, over seeds (resumable)",
        description="Runs the table's blocks (each a set of compare variants under some settings; the block with the "
        "preset's own settings in --out itself, the others in --out/<settings>), then writes TABLE.json, TABLE.md "
        "and TABLE.png (test AUC bars, std over seeds) into --results. Finished runs in --out are reused, so tables "
        "sharing --out share runs and an interrupted table goes on. A table already in --results from the same data "
        "and preset keeps the blocks this call does not run (--plm-layers, --backbones), each with its own seeds, so "
        "a costly block gains seeds when run again with more. Tables: "
        + "; ".join(f"{name}: {table.title}" for name, table in TABLES.items()),
    )
    p.add_argument("table", choices=list(TABLES), metavar="TABLE", help=f"one of: {', '.join(TABLES)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--results", type=Path, help="where TABLE.json / .md / .png go (default: --out)")
    p.add_argument("--plm-layers", nargs="+", type=int, default=list(TABLE3_DEPTHS), metavar="N",
                   help="table3: the encoder depths, each the PLM's first N layers (default: %(default)s); a with-PLM "
                   "run's cost grows with N")
    p.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=list(PER_BACKBONE), metavar="NAME",
                   help="table3, table4: the backbones (default: %(default)s)")
    training_options(p)
    p.set_defaults(handler=_reproduce, model=None)

    p = commands.add_parser(
        "ctr-table",
        help="train several backbones over several seeds and write a comparison table",
        description="Trains every backbone (or --models) once per seed with the same preset and data, and writes "
        "table.json and table.md (in --results, default --out): mean and standard deviation of test AUC and "
        "LogLoss. On a data set of the paper's Table 2 (ml-1m, bookcrossing, amazon-toys, goodreads) the table "
        "sets the published AUC and LogLoss and our difference beside each row, and table.png plots both. "
        "Finished runs in --out are reused, so an interrupted table resumes.",
    )
    p.add_argument("--models", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--results", type=Path, help="where table.json / .md / .png go (default: --out)")
    training_options(p)
    p.set_defaults(handler=_ctr_table, model=None)

    p = commands.add_parser(
        "tune",
        help="recipe search on Ray Tune: the same trial budget for every variant, chosen on validation AUC only",
        description="Draws --trials configurations per variant of the --space file (YAML: variant -> section.key -> "
        "one of {choice: [..]}, {uniform: [low, high]}, {loguniform: [low, high]}, {randint: [low, high)}) with a "
        "seeded random searcher, trains each as that variant of `cp-dist compare` at train.seed in "
        "OUT/trials/<variant>/<key>, and scores it by the run's validation AUC (test is never read). Writes "
        "OUT/tune.json, tune.md (every trial, with PA-MLM's value gap) and best-<variant>.yaml, a preset extending "
        "the one searched from. Finished trials are reused, so a search run again goes on where it stopped. Runs "
        "on the Ray cluster at --ray-address, else on a local one started for the search.",
    )
    p.add_argument("--space", type=Path, required=True, help="the search space (YAML), e.g. cp_dist/presets/search/ml-100k.yaml")
    p.add_argument("--trials", type=int, default=8, help="trials per variant (default: %(default)s)")
    p.add_argument("--searcher-seed", type=int, default=0, help="seed of the random searcher (default: %(default)s)")
    p.add_argument("--cpus-per-trial", type=int, default=2, help="Ray CPUs each trial reserves (default: %(default)s)")
    p.add_argument("--ray-address", help="a running Ray cluster (default: a local one for this search)")
    training_options(p)
    p.set_defaults(handler=_tune, model=None)
