"""Training throughput: CTR-only steps against PA-MLM and finetuning-with-PLM steps, per encoder.

Every case runs the product's own step (cp_dist.training.loop.train_step) of the stages `ctr`,
`pamlm` and `with_plm` on a model built the product's way (cp_dist.training.loop.build_stage:
TorchRec-sharded tables, one rank, the preset's engine), one case after the other in this run, so the ratios compare
like with like on a shared, noisy machine. Batches are synthetic with fixed shapes: F ID fields and
T text tokens per row (the cost depends on shapes, not values), so random-weight RoBERTa
configurations can be measured where their weights cannot be fetched (they mask with MiniLM's
tokenizer, cp_dist.pretrained.RANDOM_TOKENIZERS).
--compile measures every with-PLM case a second time with train.compile=true (torch.compile of the
encoder and the prompt generator), beside the eager one; compilation happens in the warm-up steps,
whose time is reported apart. --profile DIR writes a torch.profiler trace of two more steps per case.

    python perf/bench_train.py                                    # CPU: MiniLM 2 and 6 layers
    python perf/bench_train.py --encoders minilm random:roberta-base random:roberta-large --compile \\
        --precision bf16 --set distributed.table_device=cpu      # a GPU without fbgemm-gpu's CUDA kernels

Prints a table and writes perf/results/train_<device>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from report import new_figure, save_figure, write_markdown  # noqa: E402

from cp_dist.config import load_config  # noqa: E402
from cp_dist.data.loader import Batch  # noqa: E402
from cp_dist.data.meta import DatasetMeta, FieldMeta  # noqa: E402
from cp_dist.distributed.process_group import RankInfo, launch  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.pretrained import load_tokenizer  # noqa: E402
from cp_dist.training.loop import build_stage, train_step  # noqa: E402

FIELDS = tuple(FieldMeta(f"field{i}", f"field {i}", "user" if i < 4 else "item", 10_000, 10_000 * i) for i in range(8))


def _meta(tokens: int) -> DatasetMeta:
    """What the stages read of a data set (fields, text length) for the synthetic batches."""
    return DatasetMeta(dataset="synthetic", fields=FIELDS, splits={}, label_rule="", split={}, min_count=1,
                       has_timestamp=False, sources=[], counts={}, malformed=[], created_by="perf/bench_train.py",
                       tokenizer={"max_length": tokens})


def _batches(rows: int, tokens: int, vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield Batch(
            ids=torch.randint(1, 10_000, (rows, len(FIELDS)), generator=generator),
            labels=torch.randint(0, 2, (rows,), generator=generator).float(),
            input_ids=torch.randint(4, vocab, (rows, tokens), generator=generator),
            attention_mask=torch.ones(rows, tokens, dtype=torch.long),
        )


def _timed(step, batches, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of the warm-up steps, compilation included; seconds of the timed steps)."""
    start = time.perf_counter()
    for _ in range(warmup):
        step(next(batches)).item()
    warmup_seconds = time.perf_counter() - start
    prepared = [next(batches) for _ in range(steps)]
    start = time.perf_counter()
    for batch in prepared:
        loss = step(batch)
    loss.item()  # waits for the last step
    return warmup_seconds, time.perf_counter() - start


def _profile(step, batches, directory: Path, name: str) -> None:
    """directory/name.trace.json, a Chrome trace of two steps (chrome://tracing, Perfetto), and
    directory/name.ops.txt, their ops ranked by own time."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as profiler:
        for _ in range(2):
            step(next(batches)).item()
    directory.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(directory / f"{name}.trace.json"))
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    (directory / f"{name}.ops.txt").write_text(profiler.key_averages().table(sort_by=sort, row_limit=30))


def _measure(rank: RankInfo, args: argparse.Namespace, out: Path) -> None:
    cases = []
    config = load_config("ml-1m", [f"train.precision={args.precision}", *args.set])
    stage, model = build_stage("ctr", config, _meta(args.tokens), rank)
    warmup, seconds = _timed(partial(train_step, stage, model, step=0), _batches(args.ctr_batch, 1, 100), args.warmup, args.steps)
    cases.append({"case": "ctr", "encoder": "-", "mode": "eager", "batch": args.ctr_batch, "seconds": seconds,
                  "warmup_seconds": warmup, "samples_per_second": args.steps * args.ctr_batch / seconds})
    modes = ("eager", "compiled") if args.compile else ("eager",)
    for encoder, mode, case in itertools.product(args.encoders, modes, ("pamlm", "with_plm")):
        name, _, layers = encoder.partition("@")
        overrides = [f"prompt.plm={name}", f"prompt.num_prompts={args.prompts}", f"train.precision={args.precision}",
                     f"train.compile={str(mode == 'compiled').lower()}", "pamlm.plm_lr=1e-5", "finetune.plm_lr=1e-5"]
        if layers:
            overrides.append(f"prompt.plm_layers={layers}")
        config = load_config("ml-1m", overrides + list(args.set))
        torch._dynamo.reset()  # each case compiles afresh (and never hits the recompilation limit)
        stage, model = build_stage(case, config, _meta(args.tokens), rank)
        info = stage.summary(model)
        vocab = min(model.module.encoder.masked_lm.config.vocab_size, len(load_tokenizer(name)))
        timed_step = partial(train_step, stage, model, step=0)
        batches = _batches(args.batch, args.tokens, vocab)
        warmup, seconds = _timed(timed_step, batches, args.warmup, args.steps)
        cases.append({"case": case, "encoder": encoder, "mode": mode, "batch": args.batch, "seconds": seconds,
                      "warmup_seconds": warmup, "samples_per_second": args.steps * args.batch / seconds,
                      "plm_parameters": info["plm_parameters"], "generator_parameters": info["generator_parameters"]})
        if args.profile:
            _profile(timed_step, batches, args.profile, re.sub(r"[^\w@-]+", "_", f"{case}-{encoder}-{mode}"))
        del model, stage
        if rank.device.type == "cuda":
            torch.cuda.empty_cache()
    out.write_text(json.dumps(cases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["minilm@2", "minilm"],
                        help="prompt.plm values, optionally @layers (e.g. minilm@2, random:roberta-base)")
    parser.add_argument("--batch", type=int, default=256, help="rows per PA-MLM / finetuning step")
    parser.add_argument("--ctr-batch", type=int, default=4096, help="rows per CTR-only step")
    parser.add_argument("--tokens", type=int, default=64, help="text tokens per row")
    parser.add_argument("--prompts", type=int, default=5, help="prompts per layer")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="preset override, e.g. distributed.table_device=cpu")
    parser.add_argument("--compile", action="store_true", help="also measure each with-PLM case with train.compile=true")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="write a profiler trace and op table per case here")
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    parser.add_argument("--redraw", type=Path, metavar="RESULT_JSON",
                        help="only rewrite the summary and plot of an earlier result (e.g. one copied from a GPU machine)")
    args = parser.parse_args()
    if args.redraw:
        _report(json.loads(args.redraw.read_text()), args.redraw.with_suffix(""))
        return

    config = load_config("ml-1m", args.set)
    timing = args.results / ".train_timing.json"
    timing.parent.mkdir(parents=True, exist_ok=True)
    launch(_measure, config.distributed, args, timing)
    cases = json.loads(timing.read_text())
    timing.unlink()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ctr_rate = cases[0]["samples_per_second"]
    eager = {(c["case"], c["encoder"]): c["samples_per_second"] for c in cases if c["mode"] == "eager"}
    for case in cases:
        case["ratio_to_ctr"] = case["samples_per_second"] / ctr_rate
        case["ratio_to_eager"] = case["samples_per_second"] / eager[case["case"], case["encoder"]]
    result = {"benchmark": "train_throughput", "device": device, "precision": args.precision, "tokens": args.tokens,
              "prompts": args.prompts, "steps": args.steps, "warmup": args.warmup, "overrides": args.set,
              "cases": cases, "machine": describe_machine(), "command": " ".join(sys.argv)}
    stem = args.results / f"train_{device}"
    write_json(stem.with_suffix(".json"), result)
    print("\n" + _report(result, stem) + f"\nwrote {stem}.json, .md and .png")


def _report(result: dict, stem: Path) -> str:
    """Writes stem.md (the table, which it returns) and stem.png (samples/s per case, log scale)."""
    machine = result["machine"]
    where = machine["gpu"]["name"] if machine.get("gpu") else f"{machine['cpu']} ({machine['cpu_count']} cores)"
    lines = [f"Training throughput on {where} ({result['precision']}); ClickPrompt rows carry {result['tokens']} text "
             f"tokens and {result['prompts']} prompts per layer; {result['steps']} timed steps per case.", "",
             "'warm-up s': the untimed first steps, compilation included; 'vs eager': samples/s over the same "
             "case's without train.compile.", "",
             "| case | encoder | mode | batch | samples/s | vs CTR-only | vs eager | warm-up s |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['case']} | {c['encoder']} | {c.get('mode', 'eager')} | {c['batch']} | {c['samples_per_second']:,.0f} | "
              f"{c['ratio_to_ctr']:.4f} | {c.get('ratio_to_eager', 1.0):.2f} | {_seconds(c.get('warmup_seconds'))} |"
              for c in result["cases"]]
    summary = "\n".join(lines + ["", f"Command: `{result['command']}`"]) + "\n"
    write_markdown(stem.with_suffix(".md"), summary)
    figure, axis = new_figure(8, 0.5 * len(result["cases"]) + 1.5)
    labels = [c["case"] if c["encoder"] == "-" else f"{c['case']} / {c['encoder']} / {c.get('mode', 'eager')}"
              for c in result["cases"]]
    axis.barh(labels[::-1], [c["samples_per_second"] for c in result["cases"]][::-1])
    axis.set(xscale="log", xlabel="samples/s", title=f"Training throughput ({result['device']}, {result['precision']})")
    axis.grid(True, axis="x", which="both", alpha=0.3)
    save_figure(figure, stem.with_suffix(".png"))
    return summary


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
