"""`cp-dist diagnose`: the alignment diagnostics of a finished run, from its checkpoint alone
(cp_dist.clickprompt.diagnostics says what each figure means)."""

from __future__ import annotations

from pathlib import Path

import torch

from cp_dist.clickprompt.diagnostics import (
    diagnostic_sample,
    generator_saturation,
    mlm_diagnostics,
    tower_diagnostics,
    tower_logits,
    value_ce_by_field,
)
from cp_dist.errors import UserError
from cp_dist.io import write_json
from cp_dist.pretrained import load_tokenizer
from cp_dist.training.evaluate import predict, split_labels
from cp_dist.training.finished import load_run

DIAGNOSE_FILE = "diagnose.json"


def diagnose_run(run_dir: Path, data_dir: Path, rows: int = 512) -> dict:
    """PA-MLM runs: MLM cross-entropies on the first `rows` valid rows; with-PLM runs: AUC of each
    tower on the test split. Writes RUN/diagnose.json and returns it."""
    run = load_run(run_dir, data_dir, clicks=False)
    model, index, meta = run.model, run.index, run.stage.meta
    if index["architecture"] != "clickprompt":
        raise UserError(f"{run_dir}: a {index['stage']} run has no prompts to diagnose; expected a PA-MLM or with-PLM run")
    cpu = torch.device("cpu")
    if index["scores_clicks"]:
        # the run's evaluation batches: shuffled prompts come from other rows of the same batch
        own, shuffled = (predict(lambda b, source=source: tower_logits(model, b, source), run.batches("test"))
                         for source in ("own", "shuffled"))
        split, figures = "test", tower_diagnostics(split_labels(data_dir, "test"), own, shuffled)
    else:
        sample, tokenizer = diagnostic_sample(data_dir, rows), load_tokenizer(meta.tokenizer["name"])
        split, figures = "valid", mlm_diagnostics(model, sample, tokenizer, cpu)
        figures["value_by_field"] = [{**entry, "field": meta.fields[entry["field"]].name}
                                     for entry in value_ce_by_field(model, sample, tokenizer, len(meta.fields))]
        figures |= generator_saturation(model, sample)
    result = {"run": str(run_dir), "stage": index["stage"], "data": str(data_dir), "split": split, **figures}
    write_json(run_dir / DIAGNOSE_FILE, result)
    return result


def format_diagnosis(result: dict) -> str:
    if "mlm_value_gap" in result:
        lines = ["| masked | own prompts | shuffled prompts | no prompts |", "|---|---|---|---|"]
        for kind in ("value", "template"):
            ce = [result[f"mlm_{kind}_ce_{source}"] for source in ("own", "shuffled", "none")]
            lines.append(f"| {kind} tokens ({result[f'mlm_{kind}_tokens']:,}) | " + " | ".join(f"{v:.3f}" for v in ce) + " |")
        lines.append(f"\nMLM cross-entropy (nats) on {result['split']} rows; shuffled - own on values: "
                     f"{result['mlm_value_gap']:+.3f} (0 means the prompts carry nothing about their row)")
        lines += ["", "| masked value of | tokens | own prompts | shuffled prompts | gap |", "|---|---|---|---|---|"]
        lines += [f"| {e['field']} | {e['tokens']:,} | {e['ce_own']:.3f} | {e['ce_shuffled']:.3f} | {e['gap']:+.3f} |"
                  for e in result["value_by_field"]]
        lines.append(f"\nprompt generator: {result['generator_saturated_share']:.0%} of its tanh units saturated, their std "
                     f"across rows {result['generator_hidden_std']:.3g}, mean |q| {result['q_abs_mean']:.3g} (all saturated: "
                     "one constant prompt for every row)")
    else:
        lines = ["| fused | CTR tower | PLM tower | PLM tower, shuffled prompts |", "|---|---|---|---|",
                 "| " + " | ".join(f"{result[k]:.4f}" for k in ("auc_fused", "auc_ctr", "auc_plm", "auc_plm_shuffled")) + " |",
                 f"\n{result['split']} AUC; the PLM tower at 0.5 with shuffled prompts reads only the prompts, not the text"]
    return "\n".join(lines)
