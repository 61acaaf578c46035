"""DCNv2 training throughput: 1 process with whole tables against 2 processes with sharded tables.

Every case runs the real training step (cp_dist.training.loop.train_step of the `ctr` stage) on the same ML-1M-shaped
synthetic data with the ML-1M preset (the paper's 32 / 6x256 / 6), one after the other in this run,
so the ratios compare like with like on a shared, noisy machine. Threads are split evenly: one
process gets all cores, two processes get half each.

    python perf/bench_ctr_train.py                 # CPU, gloo
    python perf/bench_ctr_train.py --steps 300     # longer, steadier

Prints a table and writes perf/results/ctr_train_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from cp_dist.config import DistributedConfig, load_config  # noqa: E402
from cp_dist.data.meta import DatasetMeta  # noqa: E402
from cp_dist.data.prepare import prepare  # noqa: E402
from cp_dist.data.synth import synth  # noqa: E402
from cp_dist.distributed.process_group import RankInfo, launch  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.training.loop import build_stage, train_step  # noqa: E402

CASES = [(1, "auto"), (2, "table_wise"), (2, "row_wise"), (2, "column_wise")]


def _measure(rank: RankInfo, data: Path, sharding: str, batch: int, warmup: int, steps: int, out: Path) -> None:
    config = load_config("ml-1m", [f"distributed.sharding={sharding}", f"train.global_batch_size={batch}"])
    stage, model = build_stage("ctr", config, DatasetMeta.load(data), rank)
    loader = stage.batches(data, "train", training=True)
    batches = (b for epoch in range(10**6) for b in (loader.set_epoch(epoch), loader)[1])
    for step in range(warmup):
        train_step(stage, model, next(batches), step)
    dist.barrier()
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        train_step(stage, model, next(batches), step)
    dist.barrier()
    seconds = time.perf_counter() - start
    if rank.is_main:
        out.write_text(json.dumps({"seconds": seconds, "plan": model.describe()["sharding"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000, help="synthetic ML-1M-format rating lines")
    parser.add_argument("--batch", type=int, default=4096, help="global batch size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_ctr_train"))
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    args = parser.parse_args()

    data = args.work / f"ml-1m-{args.rows}"
    if not (data / "meta.json").is_file():
        synth("ml-1m", args.rows, args.work / f"raw-{args.rows}", overwrite=True)
        prepare("ml-1m", args.work / f"raw-{args.rows}", data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for nproc, sharding in CASES:
        timing = args.work / "timing.json"
        launch(_measure, DistributedConfig(nproc=nproc), data, sharding, args.batch, args.warmup, args.steps, timing)
        measured = json.loads(timing.read_text())
        rows.append({"processes": nproc, "sharding": sharding, "seconds": measured["seconds"],
                     "samples_per_second": args.steps * args.batch / measured["seconds"], "plan": measured["plan"]})
    baseline = rows[0]["samples_per_second"]
    for row in rows:
        row["ratio_to_one_process"] = row["samples_per_second"] / baseline

    print(f"\nDCNv2 training (ML-1M preset 32 / 6x256 / 6), global batch {args.batch}, {args.steps} timed steps, {device}")
    print(f"  {'processes':<10}{'tables':<14}{'samples/s':>12}{'vs 1 process':>14}")
    for row in rows:
        tables = "whole" if row["processes"] == 1 else row["sharding"]
        print(f"  {row['processes']:<10}{tables:<14}{row['samples_per_second']:>12,.0f}{row['ratio_to_one_process']:>14.2f}")
    result = {"benchmark": "ctr_train", "model": "dcnv2", "device": device, "rows": args.rows, "global_batch": args.batch,
              "steps": args.steps, "warmup": args.warmup, "cases": rows, "machine": describe_machine(),
              "command": " ".join(sys.argv)}
    path = args.results / f"ctr_train_{device}.json"
    write_json(path, result)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
