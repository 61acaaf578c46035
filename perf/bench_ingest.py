"""Ingestion at scale: token ids from per-value tokens, and per-rank reading with logical shards.

    python perf/bench_ingest.py                  # 1M GoodReads-format lines (make bench-ingest)
    python perf/bench_ingest.py --rows 200000    # a quicker look

1. Prepares GoodReads-format synthetic data (`cp-dist data synth`, `prepare` with --row-group-rows).
2. Tokens: the row text tokenized row by row and stored per row (what `cp-dist data tokenize` did
   before per-value tokens) against `tokenize_splits` (each distinct value once, a text_id per row and
   field). Ids and token fields are compared on every row of every split, for MiniLM's WordPiece and a
   byte-level BPE trained here; the bytes each rank decodes are compared too.
3. Reading: W = 1, 2, 4, 8 simulated ranks over the training split with --shards logical shards, and
   with 1 (every rank decodes everything): rows decoded per rank against N / W, every step's rank
   slices against one process's global batch, seconds per epoch per rank (token assembly included),
   and the rows decoded before the first batch of a resume at mid-epoch.

Prints a table and writes perf/results/ingest_<rows>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.ticker import NullFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from report import new_figure, save_figure, write_markdown  # noqa: E402

from cp_dist.data.loader import SplitLoader  # noqa: E402
from cp_dist.data.meta import SPLITS, DatasetMeta  # noqa: E402
from cp_dist.data.text import render_text  # noqa: E402
from cp_dist.data.tokens import ValueTokens, text_ids, tokenize_rows, tokenize_splits  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.pretrained import load_tokenizer  # noqa: E402

WORLD_SIZES = (1, 2, 4, 8)
ROW_GROUP_ROWS = 4096  # the default: a rank of W = 8 then decodes up to 8% beyond its share at 1M rows


def prepared_data(rows: int, row_group_rows: int, work: Path) -> Path:
    """GoodReads-format raw lines and their prepared directory, reused across runs."""
    raw, out = work / f"goodreads-{rows}-raw", work / f"goodreads-{rows}-rg{row_group_rows}"
    cli = [sys.executable, "-m", "cp_dist.cli", "data"]
    if not (raw / "synth_truth.json").is_file():
        subprocess.run(cli + ["synth", "--format", "goodreads", "--rows", str(rows), "--out", str(raw), "--overwrite"], check=True)
    if not (out / "meta.json").is_file():
        subprocess.run(cli + ["prepare", "--dataset", "goodreads", "--raw", str(raw), "--out", str(out), "--overwrite",
                              "--row-group-rows", str(row_group_rows)], check=True)
    return out


def byte_level_bpe(data: Path, out: Path) -> str:
    """A RoBERTa-style byte-level BPE (<s> ... </s>, trimmed offsets) trained on 20,000 training rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    meta = DatasetMeta.load(data)
    texts = render_text(pq.ParquetFile(data / "train.parquet").read_row_group(0), meta.fields).to_pylist()[:20_000]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>").save_pretrained(out)
    return str(out)


def column_bytes(source: pq.ParquetFile, wanted) -> int:
    """Compressed bytes of the columns whose names `wanted` accepts (what a reader decodes)."""
    names = source.schema_arrow.names
    return sum(source.metadata.row_group(g).column(c).total_compressed_size
               for g in range(source.num_row_groups) for c in range(source.metadata.num_columns) if wanted(names[c]))


def compare_tokens(data: Path, tokenizer_name: str, max_length: int, scratch: Path) -> dict:
    """Per-value tokens (timed) against the row text tokenized row by row and stored per row (timed,
    as before), with ids and token fields compared on every row."""
    started = time.perf_counter()
    meta = tokenize_splits(data, tokenizer_name, max_length=max_length)
    per_value_seconds = time.perf_counter() - started
    tokenizer, tokens = load_tokenizer(tokenizer_name), ValueTokens.load(data)
    row_seconds, rows, identical, row_bytes, id_bytes = 0.0, 0, 0, 0, 0
    for split in SPLITS:
        source = pq.ParquetFile(data / f"{split}.parquet")
        id_bytes += column_bytes(source, lambda name: name.endswith("_text_id"))
        stored = scratch / f"{split}-row-tokens.parquet"
        with pq.ParquetWriter(stored, pa.schema([("input_ids", pa.list_(pa.int32())), ("token_fields", pa.list_(pa.int8()))]),
                              compression="zstd") as writer:
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                started = time.perf_counter()
                want_ids, want_fields = tokenize_rows(tokenizer, table, meta.fields, max_length)
                writer.write_table(pa.table({"input_ids": pa.array(want_ids, pa.list_(pa.int32())),
                                             "token_fields": pa.array(want_fields, pa.list_(pa.int8()))}))
                row_seconds += time.perf_counter() - started
                ids, mask, fields = tokens.assemble(text_ids(table, meta.fields))
                lengths = mask.sum(1)
                same_length = lengths == np.array([len(r) for r in want_ids])
                flat_equal = same_length.all() and (np.concatenate(want_ids) == ids[mask == 1]).all() \
                    and (np.concatenate(want_fields) == fields[mask == 1]).all()
                rows += table.num_rows
                identical += table.num_rows if flat_equal else int(sum(
                    ids[r, : lengths[r]].tolist() == want_ids[r] and fields[r, : lengths[r]].tolist() == want_fields[r]
                    for r in range(table.num_rows)))
        row_bytes += column_bytes(pq.ParquetFile(stored), lambda name: True)
    return {
        "tokenizer": tokenizer_name if "/" not in tokenizer_name else "byte-level BPE (trained here, 4,000 tokens)",
        "rows": rows, "identical_rows": identical, "identical_share": identical / rows,
        "distinct_values": sum(meta.tokenizer["distinct_values"].values()),
        "row_by_row_seconds": round(row_seconds, 2), "per_value_seconds": round(per_value_seconds, 2),
        "speedup": round(row_seconds / per_value_seconds, 1),
        "stored_per_row_token_bytes": row_bytes, "stored_text_id_bytes": id_bytes,
    }


def read_epochs(data: Path, shards: int, batch: int, worlds: tuple[int, ...]) -> list[dict]:
    """Each simulated rank's epoch of training batches (text included): rows decoded, seconds, and
    whether the rank slices make up one process's global batches."""
    rows_total = DatasetMeta.load(data).splits["train"]["rows"]
    reference, results = None, []
    for world in worlds:
        slices, decoded, seconds = [], [], []
        for rank in range(world):
            loader = SplitLoader(data, "train", global_batch_size=batch, rank=rank, world_size=world, shuffle=True,
                                 drop_last=True, text=True, logical_shards=shards)
            loader.set_epoch(1)
            started = time.perf_counter()
            slices.append([b.row_index.numpy() for b in loader])
            seconds.append(time.perf_counter() - started)
            decoded.append(loader.decoded_rows)
        steps = [np.concatenate(parts) for parts in zip(*slices, strict=True)]
        reference = steps if reference is None else reference
        results.append({
            "logical_shards": shards, "world_size": world, "rows": rows_total,
            "decoded_per_rank_max": max(decoded), "decoded_over_share": round(max(decoded) / (rows_total / world), 4),
            "seconds_per_rank_max": round(max(seconds), 2), "seconds_all_ranks": round(sum(seconds), 2),
            "slices_make_up_global_batches": len(steps) == len(reference) and all(np.array_equal(a, b) for a, b in zip(steps, reference)),
        })
    return results


def resume_cost(data: Path, shards: int, batch: int, world: int, window_pieces: int) -> dict:
    loader = SplitLoader(data, "train", global_batch_size=batch, world_size=world, shuffle=True, drop_last=True,
                         text=True, logical_shards=shards, read_ahead=0, window_pieces=window_pieces)
    skip = len(loader) // 2
    loader.set_epoch(1, skip=skip)
    started = time.perf_counter()
    next(iter(loader))
    row_group = pq.ParquetFile(data / "train.parquet").metadata.row_group(0).num_rows
    read_shards = max(1, shards // world)
    return {"skip_batches": skip, "of_batches": len(loader), "decoded_before_first_batch": loader.decoded_rows,
            "one_window_bound": read_shards * window_pieces * row_group,
            "seconds_to_first_batch": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="GoodReads-format raw lines (default %(default)s)")
    parser.add_argument("--row-group-rows", type=int, default=ROW_GROUP_ROWS,
                        help="Parquet row group size (default %(default)s). A rank decodes up to 2 row groups beyond its "
                        "share: at 1M rows and W = 8 that is 8%% extra at 4,096 and under 5%% at 2,048; at production "
                        "size (billions of rows) the default 65,536 is far below it")
    parser.add_argument("--shards", type=int, default=8, help="logical shards (default %(default)s)")
    parser.add_argument("--batch", type=int, default=4096, help="global batch (default %(default)s)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_ingest"), help="scratch directory")
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    parser.add_argument("--reading-only", action="store_true",
                        help="leave out the tokenizer comparison (about 25 minutes at 1M rows): per-rank reading and resume "
                        "only, the data tokenized per value with MiniLM")
    args = parser.parse_args()

    data = prepared_data(args.rows, args.row_group_rows, args.work)
    if args.reading_only:
        tokenize_splits(data, "minilm", max_length=args.max_length)
        tokens = []
    else:
        with tempfile.TemporaryDirectory() as scratch:
            bpe = byte_level_bpe(data, Path(scratch) / "bpe")
            tokens = [compare_tokens(data, bpe, args.max_length, Path(scratch)),
                      compare_tokens(data, "minilm", args.max_length, Path(scratch))]  # MiniLM last: the data stays tokenized for it
    reading = read_epochs(data, args.shards, args.batch, WORLD_SIZES) + read_epochs(data, 1, args.batch, (1, 8))
    resume = resume_cost(data, args.shards, args.batch, 8, window_pieces=8)

    result = {"benchmark": "ingest", "raw_lines": args.rows, "row_group_rows": args.row_group_rows,
              "global_batch": args.batch, "tokens": tokens, "reading": reading, "resume": resume,
              "machine": describe_machine(), "command": " ".join(sys.argv)}
    lines = [f"# Ingestion: {args.rows:,} GoodReads-format lines, row groups of {args.row_group_rows:,} rows", ""]
    if tokens:
        lines += ["| tokenizer | rows identical | distinct values | row by row (s) | per value (s) | speed-up "
                  "| per-row token bytes | text_id bytes |", "|---|---|---|---|---|---|---|---|"]
    for t in tokens:
        lines.append(f"| {t['tokenizer']} | {t['identical_rows']:,} / {t['rows']:,} | {t['distinct_values']:,} | "
                     f"{t['row_by_row_seconds']} | {t['per_value_seconds']} | {t['speedup']}x | "
                     f"{t['stored_per_row_token_bytes'] / 2**20:.1f} MiB | {t['stored_text_id_bytes'] / 2**20:.1f} MiB |")
    lines += ["" if tokens else "(tokenizers not compared: --reading-only)", "",
              f"Training split, N = {reading[0]['rows']:,} rows, global batch {args.batch:,}, token assembly included:", "",
              "| logical shards | W | rows decoded by the busiest rank | / (N / W) | s per epoch, busiest rank | slices = global batches |",
              "|---|---|---|---|---|---|"]
    for r in reading:
        lines.append(f"| {r['logical_shards']} | {r['world_size']} | {r['decoded_per_rank_max']:,} | {r['decoded_over_share']} | "
                     f"{r['seconds_per_rank_max']} | {r['slices_make_up_global_batches']} |")
    lines += ["", f"Resume at batch {resume['skip_batches']} of {resume['of_batches']} (W = 8, one rank): "
              f"{resume['decoded_before_first_batch']:,} rows decoded before the first batch "
              f"(one read-ahead window: {resume['one_window_bound']:,}), {resume['seconds_to_first_batch']} s."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)

    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / (f"ingest_{args.rows}" + ("_reading" if args.reading_only else "")
                           + (f"_rg{args.row_group_rows}" if args.row_group_rows != ROW_GROUP_ROWS else ""))
    figure, (left, right) = new_figure(11, 4.5, columns=2)
    for shards in (args.shards, 1):
        points = [r for r in reading if r["logical_shards"] == shards]
        left.plot([r["world_size"] for r in points], [r["decoded_per_rank_max"] for r in points], "o-", label=f"{shards} logical shard(s)")
    left.plot(WORLD_SIZES, [reading[0]["rows"] / w for w in WORLD_SIZES], "k:", label="N / W")
    left.set(xscale="log", yscale="log", xlabel="ranks W", ylabel="rows decoded per rank per epoch", xticks=WORLD_SIZES,
             xticklabels=[str(w) for w in WORLD_SIZES], title="Per-rank reading")
    left.xaxis.set_minor_formatter(NullFormatter())
    left.legend()
    if tokens:
        names = [t["tokenizer"].split(" (")[0] for t in tokens]
        x = np.arange(len(tokens))
        right.bar(x - 0.2, [t["row_by_row_seconds"] for t in tokens], 0.4, label="row by row, ids stored per row")
        right.bar(x + 0.2, [t["per_value_seconds"] for t in tokens], 0.4, label="each distinct value once")
        right.set(xticks=x, xticklabels=names, ylabel="seconds to tokenize every split", title=f"Tokens, {tokens[0]['rows']:,} rows")
        right.legend()
    else:
        right.set_axis_off()
    save_figure(figure, stem.with_suffix(".png"))
    write_json(stem.with_suffix(".json"), result)
    write_markdown(stem.with_suffix(".md"), text)
    print(f"wrote {stem}.json, .md and .png")


if __name__ == "__main__":
    main()
