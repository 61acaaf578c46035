"""Preparation at paper scale: GoodReads-format synthetic raw files -> `cp-dist data prepare`.

Runs the real command in a child process and reads that child's peak RSS from the kernel
(getrusage of children), so the figure is the command's own, not this script's.

    python perf/bench_prepare.py                       # full paper size (~20.1M kept interactions)
    python perf/bench_prepare.py --rows 2000000        # a quicker look

Prints a table and writes perf/results/prepare_<format>_<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from cp_dist.io import write_json  # noqa: E402

#: 4% of synthetic GoodReads lines are unrated and dropped, leaving the paper's 20.1M interactions.
PAPER_ROWS = 20_950_000
TARGET_SECONDS, TARGET_RSS_GIB = 15 * 60, 4.0


def measured(command: list[str]) -> dict:
    """Runs `command` under measure_child.py, a fresh parent, so getrusage sees that command alone."""
    probe = [sys.executable, str(Path(__file__).with_name("measure_child.py")), *command]
    done = subprocess.run(probe, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="goodreads", choices=("ml-1m", "bookcrossing", "amazon-toys", "goodreads"))
    parser.add_argument("--rows", type=int, default=PAPER_ROWS, help="raw interaction lines to generate")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_prepare"), help="scratch directory")
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    args = parser.parse_args()

    raw = args.work / f"{args.format}-{args.rows}-raw"
    out = args.work / f"{args.format}-{args.rows}-prepared"
    cli = [sys.executable, "-m", "cp_dist.cli", "data"]
    truth_file = raw / "synth_truth.json"
    synth_seconds = None
    if not truth_file.is_file():  # raw files are reused across runs: generating them is not what we measure
        synth_seconds = measured(cli + ["synth", "--format", args.format, "--rows", str(args.rows), "--out", str(raw)])["seconds"]
    prepared = measured(cli + ["prepare", "--dataset", args.format, "--raw", str(raw), "--out", str(out), "--overwrite"])
    meta = json.loads((out / "meta.json").read_text())
    kept = meta["counts"]["interactions_kept"]
    raw_bytes = sum(s["bytes"] for s in meta["sources"])
    result = {
        "benchmark": "prepare",
        "format": args.format,
        "raw_lines": args.rows,
        "interactions_kept": kept,
        "distinct_feature_values": meta["num_features"] - len(meta["fields"]),
        "raw_bytes": raw_bytes,
        "prepare_seconds": round(prepared["seconds"], 1),
        "rows_per_second": round(args.rows / prepared["seconds"]),
        "peak_rss_gib": round(prepared["peak_rss_gib"], 2),
        "synth_seconds": round(synth_seconds, 1) if synth_seconds is not None else None,
        "targets": {"seconds": TARGET_SECONDS, "peak_rss_gib": TARGET_RSS_GIB},
        "meets_targets": prepared["seconds"] < TARGET_SECONDS and prepared["peak_rss_gib"] < TARGET_RSS_GIB,
        "machine": describe_machine(),
        "command": " ".join(sys.argv),
    }
    rows = [
        ("raw interaction lines", f"{args.rows:,}"),
        ("interactions kept", f"{kept:,}"),
        ("distinct feature values", f"{result['distinct_feature_values']:,}"),
        ("raw bytes (compressed)", f"{raw_bytes / 2**30:.2f} GiB"),
        ("prepare wall time", f"{prepared['seconds']:.0f} s (target < {TARGET_SECONDS} s)"),
        ("rows / s", f"{result['rows_per_second']:,}"),
        ("peak RSS", f"{prepared['peak_rss_gib']:.2f} GiB (target < {TARGET_RSS_GIB} GiB)"),
    ]
    print(f"\nprepare benchmark: {args.format} on {result['machine']['cpu_count']} cores ({result['machine']['cpu']})")
    for name, value in rows:
        print(f"  {name:<26}{value}")
    path = args.results / f"prepare_{args.format}_{args.rows}.json"
    write_json(path, result)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
