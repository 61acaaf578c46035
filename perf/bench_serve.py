"""Inference latency, end to end from raw candidates: CTR-only models against ClickPrompt with its PLM.

One request = a list of candidates, each a dict of raw field values taken from ML-100K's test
split. A request's time covers what serving really does: vocabulary lookup (dicts built from
vocab.parquet), and for the with-PLM model the text template and tokenization, then the forward
pass and the copy of the scores back to the host. Cases, all measured in this run one after the other:

- dcnv2: the raw DCNv2 backbone (the served CTR model: tables as one nn.Embedding);
- clickprompt-no-plm: ClickPrompt's CTR part, which is what ClickPrompt without the PLM serves;
- clickprompt+<encoder>: ClickPrompt with the PLM (MiniLM; random-weight RoBERTa-base/-large);
- ptab+, p5+ and ctr-bert+<encoder>: the paper's PLM baselines that serve with the PLM (PTab: the row
  text, a head on [CLS]; P5: the row text and "Clicked? [MASK]"; CTR-BERT: two towers, the user-side
  and the item-side fields' texts), so that each one's scoring cost stands beside the backbone's;
- each in eager mode and one optimised mode: torch.compile for the CTR models (CUDA graphs on a GPU),
  bf16 autocast for the PLM models on a GPU (the CPU has no bf16 units, so there it is skipped).

The CTR-only cases are measured for two kinds of request: 'raw', a list of candidate dicts (every
field's value encoded per request), and 'ranking', one user and candidate item ids (Ranker: item
fields from the catalogue, written with the user's by one native pass on the host, gathered on a
GPU; the user's encoded once).

Weights are random (latency does not depend on them); RoBERTa configurations use MiniLM's tokenizer,
whose cost is of the same order. Each case runs until --requests requests or --seconds seconds; the
four CTR-only cases take turns request by request, in a random order each time. Every row also
reports the host-side part of a request (vocabulary lookup; text and tokens for the PLM).

    python perf/bench_serve.py                                   # CPU: MiniLM only
    python perf/bench_serve.py --encoders minilm random:roberta-base random:roberta-large   # GPU

Prints a table and writes perf/results/serve_<device>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from report import new_figure, save_figure, write_markdown  # noqa: E402

from cp_dist.baselines.ctr_bert import side_fields  # noqa: E402
from cp_dist.clickprompt.model import ClickPrompt  # noqa: E402
from cp_dist.config import load_config, with_overrides  # noqa: E402
from cp_dist.ctr.model import CTRModel  # noqa: E402
from cp_dist.data.fetch import cache_root  # noqa: E402
from cp_dist.data.meta import DatasetMeta  # noqa: E402
from cp_dist.io import write_json  # noqa: E402
from cp_dist.models import ARCHITECTURES  # noqa: E402
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm, masked_lm_from_config  # noqa: E402
from cp_dist.pretrained import load_tokenizer  # noqa: E402
from cp_dist.serving.ranking import ItemCatalogue, Ranker  # noqa: E402
from cp_dist.serving.scorer import Scorer, Vocabularies, servable_ctr  # noqa: E402


def _candidates(data: Path, meta: DatasetMeta, count: int) -> list[dict]:
    table = pq.read_table(data / "test.parquet", columns=[f.text_column for f in meta.fields]).slice(0, count)
    return [{f.name: row[f.text_column] for f in meta.fields} for row in table.to_pylist()]


class _RankingScorer:
    """A Ranker behind the Scorer's calls, for requests given as (user, item ids)."""

    def __init__(self, ranker: Ranker):
        self.ranker = ranker

    def inputs(self, request: tuple[dict, list]) -> tuple[torch.Tensor, ...]:
        return self.ranker.inputs(*request)

    def probabilities(self, *inputs: torch.Tensor) -> np.ndarray:
        return self.ranker.scorer.probabilities(*inputs)

    def score(self, request: tuple[dict, list]) -> np.ndarray:
        return self.ranker.score(*request)


def _measure(scorers: dict[tuple, Scorer | _RankingScorer], requests: dict[str, list], budget_s: float) -> dict:
    """Per case: (request seconds, of which host-side input preparation). Cases measured together
    take turns request by request, in a fresh random order for every request, so that neither
    drift on a shared machine nor a place in the round (e.g. right after another model, whose
    weights then fill the caches) favours one of them. A case's requests are requests[its kind]."""
    for (*_, kind), scorer in scorers.items():  # warm-up (and compilation, where there is one)
        for request in requests[kind][:2]:
            scorer.score(request)
    times = {key: ([], []) for key in scorers}
    keys, order = list(scorers), np.random.default_rng(0)
    started = time.perf_counter()
    gc.disable()  # as timeit does: the decoded requests' many objects would start collections mid-request
    for number in range(min(len(r) for r in requests.values())):
        for index in order.permutation(len(keys)):
            key, scorer = keys[index], scorers[keys[index]]
            # Decoded from its JSON body just before, as the endpoint receives it: its values are
            # fresh objects (built ahead, they would sit cold in a pool of thousands of requests).
            request = json.loads(json.dumps(requests[key[-1]][number]))
            start = time.perf_counter()
            inputs = scorer.inputs(request)
            prepared = time.perf_counter()
            scorer.probabilities(*inputs)  # ends with the scores on the host, so GPU work is included
            end = time.perf_counter()
            times[key][0].append(end - start)
            times[key][1].append(prepared - start)
        if time.perf_counter() - started > budget_s * len(scorers) and len(times[key][0]) >= 5:
            break
    gc.enable()
    return times


class _Autocast(torch.nn.Module):
    """A with-PLM model under bf16 autocast (fp32 weights)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device_type = model, device.type

    def forward(self, *inputs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(*inputs).float()


def _ctr_models(meta: DatasetMeta, config, device: torch.device) -> dict[tuple[str, str], torch.nn.Module]:
    """Raw DCNv2 and ClickPrompt's served CTR-only model: the same network (other weights), built
    before any language model is loaded so that neither runs in a different process state."""
    torch.manual_seed(0)
    dcnv2 = servable_ctr(CTRModel(meta.fields, config.ctr)).to(device)
    tiny_plm = masked_lm_from_config("bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    prompted = ClickPrompt(CTRModel(meta.fields, config.ctr), PromptedEncoder(tiny_plm), config.prompt)  # PLM unused here
    no_plm = servable_ctr(prompted.ctr).to(device)  # what `finetune --without-plm` serves
    del prompted
    mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs on a GPU
    return {("dcnv2", "eager"): dcnv2, ("clickprompt-no-plm", "eager"): no_plm,
            ("dcnv2", "compiled"): torch.compile(dcnv2, mode=mode, dynamic=False),
            ("clickprompt-no-plm", "compiled"): torch.compile(no_plm, mode=mode, dynamic=False)}


class _SideTextScorer(Scorer):
    """CTR-BERT's requests: besides the ids, the user-side and the item-side fields' texts, each tokenized."""

    def inputs(self, rows: list[dict]) -> tuple[torch.Tensor, ...]:
        columns, fields = self.vocabularies.text_columns(rows), self.vocabularies.fields
        sides = side_fields(fields).values()
        return (torch.from_numpy(self.vocabularies.encode(rows)).to(self.device),
                *(tensor for side in sides for tensor in self.tokens(columns, [fields[k] for k in side])))


def _plm_models(encoders: list[str], baselines: bool, meta: DatasetMeta, config, device: torch.device):
    """(case, mode, model, Scorer class) per encoder: ClickPrompt with the PLM and, with `baselines`,
    the PLM baselines that serve with it (PTab, P5, CTR-BERT); eager, and bf16 autocast on a GPU."""
    for encoder in encoders:
        torch.manual_seed(0)
        prompted = ClickPrompt(CTRModel(meta.fields, config.ctr), PromptedEncoder(load_masked_lm(encoder)[0]), config.prompt)
        servable_ctr(prompted.ctr)
        models = {"clickprompt": (prompted, Scorer)}
        if baselines:  # as training builds them, with every layer of the encoder
            built = with_overrides(config, [f"prompt.plm={encoder}", "prompt.plm_layers=null"])
            models |= {case: (ARCHITECTURES[architecture](meta.fields, built), scorer) for case, architecture, scorer in
                       (("ptab", "ptab", Scorer), ("p5", "p5", Scorer), ("ctr-bert", "ctr_bert", _SideTextScorer))}
        for name, (model, scorer) in models.items():
            model = model.eval().to(device)
            yield f"{name}+{encoder}", "eager", model, scorer
            if device.type == "cuda":
                yield f"{name}+{encoder}", "bf16", _Autocast(model, device), scorer
        del prompted, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="prepared ML-100K (default: CACHE/prepared/ml-100k; `cp-dist data fetch ml-100k`)")
    parser.add_argument("--encoders", nargs="*", default=["minilm"], help="PLMs of the with-PLM cases (none: CTR-only)")
    parser.add_argument("--tokenizer", default="minilm", help="tokenizer of every with-PLM case")
    parser.add_argument("--no-baselines", action="store_true", help="leave out the PLM baselines (PTab, P5, CTR-BERT)")
    parser.add_argument("--candidates", nargs="+", type=int, default=[1, 64, 1024])
    parser.add_argument("--requests", type=int, default=3000, help="requests per case at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per case at most (at least 5 requests)")
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--results", type=Path, default=Path("perf/results"))
    args = parser.parse_args()

    data = args.data or cache_root() / "prepared" / "ml-100k"
    meta = DatasetMeta.load(data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_grad_enabled(False)
    vocabularies, tokenizer = Vocabularies.load(data, meta), load_tokenizer(args.tokenizer)
    pool = _candidates(data, meta, max(args.candidates) * 8)
    config = load_config("ml-100k", [f"prompt.num_prompts={args.prompts}"])
    rows = []

    item_key = next(f.name for f in meta.fields if f.side == "item")
    user_fields = [f.name for f in meta.fields if f.side != "item"]

    def measure(scorers: dict[tuple[str, str, str], Scorer | _RankingScorer]) -> None:
        for count in args.candidates:
            raw = [[pool[(r * count + i) % len(pool)] for i in range(count)] for r in range(args.requests)]
            ranking = [({f: request[0][f] for f in user_fields}, [row[item_key] for row in request]) for request in raw]
            for (case, mode, kind), (times, host) in _measure(scorers, {"raw": raw, "ranking": ranking}, args.seconds).items():
                row = {"case": case, "mode": mode, "request": kind, "candidates": count, "requests": len(times),
                       "p50_ms": 1e3 * float(np.percentile(times, 50)), "p99_ms": 1e3 * float(np.percentile(times, 99)),
                       "inputs_p50_ms": 1e3 * float(np.percentile(host, 50)),
                       "candidates_per_second": count / statistics.mean(times)}
                rows.append(row)
                print(f"  {case:<32}{mode:<10}{kind:<8}{count:>6} candidates  p50 {row['p50_ms']:9.3f} ms  p99 {row['p99_ms']:9.3f} ms"
                      f"  (inputs {row['inputs_p50_ms']:.3f} ms; {row['requests']} requests)", flush=True)

    catalogue, ctr_cases = ItemCatalogue.from_data(data, meta), {}
    for (case, mode), model in _ctr_models(meta, config, device).items():
        scorer = Scorer(model, vocabularies, device)
        ctr_cases |= {(case, mode, "raw"): scorer, (case, mode, "ranking"): _RankingScorer(Ranker(scorer, catalogue))}
    measure(ctr_cases)
    for case, mode, model, scorer in _plm_models(args.encoders, not args.no_baselines, meta, config, device):
        measure({(case, mode, "raw"): scorer(model, vocabularies, device, tokenizer, args.max_length)})
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    _ratios(rows)
    result = {"benchmark": "serve_latency", "device": device.type, "prompts": args.prompts, "max_length": args.max_length,
              "tokenizer": args.tokenizer, "data": str(data), "rows": rows, "machine": describe_machine(),
              "command": " ".join(sys.argv)}
    stem = args.results / f"serve_{device.type}"
    write_json(stem.with_suffix(".json"), result)
    summary = _summary(result)
    write_markdown(stem.with_suffix(".md"), summary)
    _plot(rows, stem.with_suffix(".png"), device.type)
    print("\n" + summary + f"\nwrote {stem}.json, .md and .png")


def _ratios(rows: list[dict]) -> None:
    """p50 ratios against DCNv2 in the same mode (eager or compiled) and kind of request, or eager
    DCNv2 on raw requests for PLM modes."""
    base = {(r["mode"], r["request"], r["candidates"]): r["p50_ms"] for r in rows if r["case"] == "dcnv2"}
    for row in rows:
        reference = base.get((row["mode"], row["request"], row["candidates"]), base[("eager", "raw", row["candidates"])])
        row["p50_vs_dcnv2"] = row["p50_ms"] / reference


def _summary(result: dict) -> str:
    machine = result["machine"]
    where = machine["gpu"]["name"] if machine.get("gpu") else f"{machine['cpu']} ({machine['cpu_count']} cores)"
    lines = [
        f"Serving latency on {where}, end to end from raw candidates ({result['max_length']} text tokens at most, "
        f"{result['prompts']} prompts per layer). 'raw': candidates as field dicts; 'ranking': one user and item ids. "
        "'inputs': the host-side part (vocabulary lookup; text and tokens for the PLM). 'vs DCNv2': p50 over raw "
        "DCNv2's p50 in the same mode and request (eager, raw for the PLM modes); the CTR-only cases took turns "
        "request by request.",
        "",
        "| case | mode | request | candidates | p50 ms | p99 ms | inputs p50 ms | candidates/s | vs DCNv2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['mode']} | {r['request']} | {r['candidates']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
        f"{r['inputs_p50_ms']:.3f} | "
        f"{r['candidates_per_second']:,.0f} | {r['p50_vs_dcnv2']:.2f} |"
        for r in result["rows"]
    ]
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path, device: str) -> None:
    figure, axis = new_figure()
    for key in dict.fromkeys((r["case"], r["mode"], r["request"]) for r in rows):
        points = [r for r in rows if (r["case"], r["mode"], r["request"]) == key]
        axis.plot([r["candidates"] for r in points], [r["p99_ms"] for r in points], marker="o", label=" / ".join(key))
    axis.set(xscale="log", yscale="log", xlabel="candidates per request", ylabel="p99 latency (ms)",
             title=f"End-to-end serving latency ({device})")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


if __name__ == "__main__":
    main()
