"""Training throughput: CTR-only steps against PA-MLM and finetuning-with-PLM steps, per encoder.

Every case runs the product's own step functions (cp_dist.training.ctr.train_step,
cp_dist.training.clickprompt.pamlm_step / finetune_step) on a model built the product's way
(TorchRec-sharded tables, one rank), one case after the other in this run, so the ratios compare
like with like on a shared, noisy machine. Batches are synthetic with fixed shapes: F ID fields and
T text tokens per row (the cost depends on shapes, not values), so random-weight RoBERTa
configurations can be measured where their weights cannot be fetched; masking uses MiniLM's
tokenizer (--tokenizer) for every encoder (its ids are valid in RoBERTa's larger vocabulary too).

    python perf/bench_train.py                                    # CPU: MiniLM 2 and 6 layers
    python perf/bench_train.py --encoders minilm random:roberta-base random:roberta-large \\
        --precision bf16 --set distributed.table_device=cpu      # a GPU without fbgemm-gpu's CUDA kernels

Prints a table and writes perf/results/train_<device>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from report import new_figure, save_figure, write_markdown  # noqa: E402

from cp_dist.clickprompt.masking import TokenMasker  # noqa: E402
from cp_dist.config import load_config  # noqa: E402
from cp_dist.data.loader import Batch  # noqa: E402
from cp_dist.data.meta import FieldMeta  # noqa: E402
from cp_dist.distributed.process_group import RankInfo, launch  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.pretrained import load_tokenizer  # noqa: E402
from cp_dist.training.clickprompt import (  # noqa: E402
    build_clickprompt,
    clickprompt_optimizer,
    finetune_step,
    pamlm_step,
)
from cp_dist.training.ctr import build_sharded_model, dense_optimizer, train_step  # noqa: E402

FIELDS = [FieldMeta(f"field{i}", f"field {i}", "user" if i < 4 else "item", 10_000, 10_000 * i) for i in range(8)]


def _batches(rows: int, tokens: int, vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield Batch(
            ids=torch.randint(1, 10_000, (rows, len(FIELDS)), generator=generator),
            labels=torch.randint(0, 2, (rows,), generator=generator).float(),
            input_ids=torch.randint(4, vocab, (rows, tokens), generator=generator),
            attention_mask=torch.ones(rows, tokens, dtype=torch.long),
        )


def _timed(step, batches, warmup: int, steps: int, device: torch.device) -> float:
    for _ in range(warmup):
        step(next(batches))
    prepared = [next(batches) for _ in range(steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in prepared:
        loss = step(batch)
    loss.item()  # waits for the last step
    return time.perf_counter() - start


def _measure(rank: RankInfo, args: argparse.Namespace, out: Path) -> None:
    cases = []
    config = load_config("ml-1m", [f"train.precision={args.precision}", *args.set])
    model = build_sharded_model(FIELDS, config, rank)
    dense = dense_optimizer(model, config)
    ctr_step = partial(train_step, model, dense)
    seconds = _timed(lambda b: ctr_step(b, rank.device), _batches(args.ctr_batch, 1, 100),
                     args.warmup, args.steps, rank.device)
    cases.append({"case": "ctr", "encoder": "-", "batch": args.ctr_batch, "seconds": seconds,
                  "samples_per_second": args.steps * args.ctr_batch / seconds})
    tokenizer = load_tokenizer(args.tokenizer)
    for encoder in args.encoders:
        name, _, layers = encoder.partition("@")
        overrides = [f"prompt.plm={name}", f"prompt.num_prompts={args.prompts}", f"train.precision={args.precision}"]
        if layers:
            overrides.append(f"prompt.plm_layers={layers}")
        config = load_config("ml-1m", overrides + list(args.set))
        for stage in ("pretrain", "finetune"):
            model, info = build_clickprompt(FIELDS, config, rank, stage=stage, plm_lr=1e-5, embedding_lr=0.05)
            optimizer = clickprompt_optimizer(model, plm_lr=1e-5, dense_lr=1e-3, weight_decay=0.01)
            vocab = min(model.module.encoder.masked_lm.config.vocab_size, len(tokenizer))
            if stage == "pretrain":
                masker = TokenMasker(tokenizer, seed=0, width=args.tokens)
                step = partial(pamlm_step, model, optimizer, masker, step=0)
            else:
                step = partial(finetune_step, model, optimizer)
            seconds = _timed(lambda b, step=step: step(b, rank=rank, precision=args.precision), _batches(args.batch, args.tokens, vocab),
                             args.warmup, args.steps, rank.device)
            cases.append({"case": "pamlm" if stage == "pretrain" else "finetune_with_plm", "encoder": encoder,
                          "batch": args.batch, "seconds": seconds, "samples_per_second": args.steps * args.batch / seconds,
                          "plm_parameters": info["plm_parameters"], "generator_parameters": info["generator_parameters"]})
            del model, optimizer
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
    parser.add_argument("--tokenizer", default="minilm", help="masks the text (MiniLM's; a path where the package is absent)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="preset override, e.g. distributed.table_device=cpu")
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
    for case in cases:
        case["ratio_to_ctr"] = case["samples_per_second"] / ctr_rate

    print(f"\nTraining throughput on {device} ({args.precision}); ClickPrompt rows carry {args.tokens} tokens, "
          f"{args.prompts} prompts per layer; {args.steps} timed steps each")
    print(f"  {'case':<20}{'encoder':<24}{'batch':>7}{'samples/s':>12}{'vs CTR-only':>13}")
    for case in cases:
        print(f"  {case['case']:<20}{case['encoder']:<24}{case['batch']:>7}{case['samples_per_second']:>12,.0f}"
              f"{case['ratio_to_ctr']:>13.4f}")
    result = {"benchmark": "train_throughput", "device": device, "precision": args.precision, "tokens": args.tokens,
              "prompts": args.prompts, "steps": args.steps, "warmup": args.warmup, "overrides": args.set,
              "cases": cases, "machine": describe_machine(), "command": " ".join(sys.argv)}
    stem = args.results / f"train_{device}"
    write_json(stem.with_suffix(".json"), result)
    _report(result, stem)
    print(f"\nwrote {stem}.json, .md and .png")


def _report(result: dict, stem: Path) -> None:
    """stem.md (the table) and stem.png (samples/s per case, log scale)."""
    machine = result["machine"]
    where = machine["gpu"]["name"] if machine.get("gpu") else f"{machine['cpu']} ({machine['cpu_count']} cores)"
    lines = [f"Training throughput on {where} ({result['precision']}); ClickPrompt rows carry {result['tokens']} text "
             f"tokens and {result['prompts']} prompts per layer; {result['steps']} timed steps per case.", "",
             "| case | encoder | batch | samples/s | vs CTR-only |", "|---|---|---|---|---|"]
    lines += [f"| {c['case']} | {c['encoder']} | {c['batch']} | {c['samples_per_second']:,.0f} | {c['ratio_to_ctr']:.4f} |"
              for c in result["cases"]]
    write_markdown(stem.with_suffix(".md"), "\n".join(lines + ["", f"Command: `{result['command']}`"]) + "\n")
    figure, axis = new_figure(8, 0.5 * len(result["cases"]) + 1.5)
    labels = [c["case"] if c["encoder"] == "-" else f"{c['case']} / {c['encoder']}" for c in result["cases"]]
    axis.barh(labels[::-1], [c["samples_per_second"] for c in result["cases"]][::-1])
    axis.set(xscale="log", xlabel="samples/s", title=f"Training throughput ({result['device']}, {result['precision']})")
    axis.grid(True, axis="x", which="both", alpha=0.3)
    save_figure(figure, stem.with_suffix(".png"))


if __name__ == "__main__":
    main()
