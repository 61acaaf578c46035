"""Per-rank memory and samples/s of the hybrid engine: 1 rank against 2 (row-wise tables, ZeRO-3).

Each case runs real PA-MLM steps (cp_dist.training.loop's build_stage and train_step on the hybrid
engine: TorchRec tables + DeepSpeed) on synthetic GoodReads rows in fresh processes, one case after the other in this
run, and every rank reports:
- tables: its shards of the embedding tables and of their row-wise Adagrad state;
- encoder training state: its parameters (ZeRO-3: its partitions) and optimizer state (fp32 master
  partitions and AdamW moments) of the dense model (language model, generator, CTR layers);
- peak RSS of the rank's process (everything: libraries, activations, buffers);
- samples/s of the whole group.

    python perf/bench_hybrid.py                          # 1 vs 2 ranks, ZeRO-3, MiniLM, CPU, gloo (~3 min)
    python perf/bench_hybrid.py --cases 1:3 2:3 2:2 2:0  # RANKS:ZERO_STAGE cases (~5 min)

Prints a table and writes perf/results/hybrid_<device>.{json,md,png}. --redraw rebuilds the
table and plot from an existing JSON (e.g. one copied from another machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from job_cli import prepared_data  # noqa: E402
from machine import describe_machine  # noqa: E402
from report import save_figure, write_markdown  # noqa: E402

from cp_dist.config import load_config  # noqa: E402
from cp_dist.data.meta import DatasetMeta  # noqa: E402
from cp_dist.distributed.process_group import RankInfo, launch  # noqa: E402
from cp_dist.distributed.tables import table_blocks, table_optimizer_tensors  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.training.loop import build_stage, train_step  # noqa: E402

MIB = 2**20


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _dense_state(engine) -> tuple[int, int]:
    """(parameter bytes, optimizer-state bytes) this rank holds for the DeepSpeed-managed model."""
    unique = {id(p): p for p in engine.module.parameters()}.values()
    params = _bytes(p.ds_tensor if hasattr(p, "ds_tensor") else p for p in unique)  # ZeRO-3: this rank's partition
    zero = engine.optimizer
    inner = getattr(zero, "optimizer", zero)  # ZeRO wraps the torch optimizer
    moments = [t for state in inner.state.values() for t in state.values() if torch.is_tensor(t) and t.dim() > 0]
    masters = getattr(zero, "fp32_partitioned_groups_flat", None) or getattr(zero, "single_partition_of_fp32_groups", None) or []
    return params, _bytes(moments) + _bytes(masters)


def _measure(rank: RankInfo, data: Path, overrides: list[str], warmup: int, steps: int, out: Path) -> None:
    config = load_config("goodreads-smoke", overrides)
    stage, model = build_stage("pamlm", config, DatasetMeta.load(data), rank)
    loader = stage.batches(data, stage.train_splits, training=True)
    batches = (b for epoch in range(10**6) for b in (loader.set_epoch(epoch), loader)[1])
    model.train()

    def step(index: int) -> None:
        train_step(stage, model, next(batches), index)

    for index in range(warmup):
        step(index)
    dist.barrier()
    start = time.perf_counter()
    for index in range(warmup, warmup + steps):
        step(index)
    dist.barrier()
    seconds = time.perf_counter() - start
    params, optimizer = _dense_state(model.engine)
    tables = _bytes(b.tensor for b in table_blocks(model.tables))
    table_state = _bytes(t for _, t in table_optimizer_tensors(model.tables.fused_optimizer.state_dict()))
    (out / f"rank{rank.rank}.json").write_text(json.dumps({
        "rank": rank.rank, "tables_mib": tables / MIB, "table_optimizer_mib": table_state / MIB,
        "encoder_parameters_mib": params / MIB, "encoder_optimizer_mib": optimizer / MIB,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples_per_second": steps * stage.settings.global_batch_size / seconds,
    }))


def _child(args: argparse.Namespace) -> None:
    nproc, stage = map(int, args.child.split(":"))
    overrides = [f"distributed.nproc={nproc}", f"distributed.zero_stage={stage}", "distributed.sharding=row_wise",
                 f"prompt.plm={args.encoder}", f"pamlm.global_batch_size={args.batch}", "distributed.engine=hybrid",
                 f"distributed.cpus_per_worker={max(1, args.threads // nproc)}", *args.set]
    config = load_config("goodreads-smoke", overrides)
    launch(_measure, config.distributed, args.data, overrides, args.warmup, args.steps, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["1:3", "2:3"], help="RANKS:ZERO_STAGE (default: %(default)s)")
    parser.add_argument("--encoder", default="minilm", help="prompt.plm (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=60_000, help="synthetic GoodReads interactions")
    parser.add_argument("--batch", type=int, default=64, help="global batch (rows per step)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads shared by a case's ranks")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_hybrid"))
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--redraw", type=Path, metavar="JSON", help="only rebuild the .md and .png of this result")
    args = parser.parse_args()
    if args.child:
        return _child(args)
    if args.redraw:
        return _write(json.loads(args.redraw.read_text()), args.redraw.with_suffix(""))

    config = load_config("goodreads-smoke", [f"prompt.plm={args.encoder}", *args.set])
    data = prepared_data("goodreads", config, None, args.rows, args.work.resolve() / f"rows-{args.rows}")
    rows = []
    for case in args.cases:
        out = args.work / "case"
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("rank*.json"):
            stale.unlink()
        subprocess.run([sys.executable, __file__, "--child", case, "--data", str(data), "--out", str(out),
                        "--encoder", args.encoder, "--batch", str(args.batch), "--warmup", str(args.warmup),
                        "--steps", str(args.steps), "--threads", str(args.threads),
                        *[f"--set={s}" for s in args.set]], check=True)
        nproc, stage = map(int, case.split(":"))
        for path in sorted(out.glob("rank*.json")):
            rows.append({"ranks": nproc, "zero_stage": stage, **json.loads(path.read_text())})
    meta = DatasetMeta.load(data)
    result = {"machine": describe_machine(), "command": " ".join(sys.argv), "encoder": args.encoder,
              "rows": args.rows, "vocab_sizes": {f.name: f.vocab_size for f in meta.fields},
              "batch": args.batch, "steps": args.steps, "cases": rows}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"hybrid_{device}.json", result)
    _write(result, args.results / f"hybrid_{device}")


def _write(result: dict, stem: Path) -> None:
    """Prints the table; writes STEM.md and STEM.png beside STEM.json."""
    table = _table(result["cases"])
    print(table)
    write_markdown(stem.with_suffix(".md"), f"# Hybrid engine: per-rank memory and throughput\n\n"
                   f"`{result['command']}` on {result['machine'].get('cpu', 'this machine')}; encoder {result['encoder']}, "
                   f"row-wise tables, PA-MLM steps of {result['batch']} rows.\n\n{table}\n")
    _plot(result["cases"], stem.with_suffix(".png"))
    print(f"wrote {stem}.json, .md and .png")


def _plot(rows: list[dict], path: Path) -> None:
    """Rank 0's memory per case: the encoder's training state (stacked) and the table shards."""
    import matplotlib.pyplot as plt

    figure, (encoder, tables) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    cases = [r for r in rows if r["rank"] == 0]
    labels = [f"{r['ranks']} rank{'s' if r['ranks'] > 1 else ''}\nZeRO-{r['zero_stage']}" for r in cases]
    parameters = [r["encoder_parameters_mib"] for r in cases]
    encoder.bar(labels, parameters, label="parameters")
    encoder.bar(labels, [r["encoder_optimizer_mib"] for r in cases], bottom=parameters, label="optimizer state")
    for x, r in enumerate(cases):
        total = r["encoder_parameters_mib"] + r["encoder_optimizer_mib"]
        encoder.text(x, total, f"{r['samples_per_second']:.1f} samples/s", ha="center", va="bottom", fontsize=8)
    encoder.set_ylabel("MiB held by rank 0")
    encoder.set_title("dense model under DeepSpeed (PA-MLM)", fontsize=10)
    encoder.legend(fontsize=8)
    tables.bar(labels, [r["tables_mib"] + r["table_optimizer_mib"] for r in cases], color="tab:green")
    tables.set_title("embedding tables + Adagrad state (TorchRec)", fontsize=10)
    save_figure(figure, path)


def _table(rows: list[dict]) -> str:
    base = {(r["rank"]): r for r in rows if r["ranks"] == 1}.get(0)
    lines = ["| ranks | ZeRO | rank | tables MiB | table optimizer MiB | encoder params MiB | encoder optimizer MiB "
             "| encoder state vs 1 rank | peak RSS MiB | samples/s |", "|" + "---|" * 10]
    for r in rows:
        state = r["encoder_parameters_mib"] + r["encoder_optimizer_mib"]
        ratio = state / (base["encoder_parameters_mib"] + base["encoder_optimizer_mib"]) if base else float("nan")
        lines.append(f"| {r['ranks']} | {r['zero_stage']} | {r['rank']} | {r['tables_mib']:.2f} | {r['table_optimizer_mib']:.3f} "
                     f"| {r['encoder_parameters_mib']:.1f} | {r['encoder_optimizer_mib']:.1f} | {ratio:.2f} "
                     f"| {r['peak_rss_mib']:.0f} | {r['samples_per_second']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
