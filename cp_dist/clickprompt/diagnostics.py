"""Does the PLM read the prompts? The checks that can fail where an end metric would not.

PA-MLM (`mlm_diagnostics`): on a fixed sample of rows, the MLM cross-entropy of
- masked values: one whole field value per row, every token [MASK] (row i masks its (i mod F)-th
  field that the text holds), so nothing of the value is left in the text;
- masked template tokens: 15% of the other non-special tokens, [MASK];
each read with the row's own prompts, another row's (a fixed derangement of the batch) and none.
If own and shuffled are equal, the prompts are one constant prefix that carries nothing about its
row: `mlm_value_gap` = shuffled - own is what PA-MLM is for.

Finetuning with the PLM (`tower_diagnostics`): AUC of the fused logit, of y_ctr alone, of y_plm alone,
and of y_plm read with shuffled prompts. Chance for the last means the PLM tower ignores the text
and only relays the CTR model's representation through the prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score

from cp_dist.clickprompt.model import PROMPT_SOURCES
from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.data.text import TEMPLATE

TEMPLATE_SHARE = 0.15
SEED = 20240513
CHUNK = 256  # rows per forward pass


def diagnostic_sample(data_dir: Path, rows: int, rank: int = 0, world_size: int = 1) -> list[Batch]:
    """The first `rows` valid rows (this rank's slice), in chunks of CHUNK rows: the same rows and
    chunks (and so the same shuffled prompts) in training and in `cp-dist diagnose`."""
    loader = SplitLoader(data_dir, "valid", global_batch_size=rows, rank=rank, world_size=world_size, text=True)
    sample = next(iter(loader))
    tensors = (sample.ids, sample.labels, sample.input_ids, sample.attention_mask, sample.token_fields)
    return [Batch(*(t[k : k + CHUNK] for t in tensors)) for k in range(0, len(sample), CHUNK)]


def value_masks(batch: Batch, mask_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's (i mod F)-th present field value, all [MASK]: (masked ids, labels)."""
    fields = batch.token_fields
    num_fields = max(int(fields.max()) + 1, 1)
    present = torch.zeros(len(fields), num_fields + 1, dtype=torch.bool).scatter_(1, fields.long() + 1, True)[:, 1:]
    counts = present.sum(1)
    nth = torch.arange(len(fields)) % counts.clamp_min(1)
    chosen = (present.cumsum(1) == (nth + 1)[:, None]) & present  # the nth present field of each row
    target = torch.where(counts > 0, chosen.float().argmax(1), -2)  # -2: a row with no value tokens
    selected = fields == target[:, None]
    return torch.where(selected, mask_token_id, batch.input_ids), torch.where(selected, batch.input_ids, -100)


def template_masks(batch: Batch, mask_token_id: int, special_ids: torch.Tensor, first_row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TEMPLATE_SHARE of each row's non-special template tokens, [MASK], drawn from a fixed seed per row."""
    rows, length = batch.input_ids.shape
    draws = torch.stack([torch.rand(length, generator=torch.Generator().manual_seed(SEED + first_row + r)) for r in range(rows)])
    template = (batch.token_fields == TEMPLATE) & ~torch.isin(batch.input_ids, special_ids)
    selected = template & (draws < TEMPLATE_SHARE)
    return torch.where(selected, mask_token_id, batch.input_ids), torch.where(selected, batch.input_ids, -100)


#: |tanh| above this counts as saturated: its derivative is below 0.002
SATURATED = 0.999


@torch.no_grad()
def generator_saturation(model, batches: Iterable[Batch]) -> dict[str, float]:
    """How far the prompt generator's tanh layer is from constant: the share of its units saturated
    (|tanh| > SATURATED) on the rows, the units' spread across rows, and the mean |q| it reads. All
    saturated, the prompts are one constant whatever the row, and no gradient reaches the CTR model."""
    q = torch.cat([model.ctr.interact(model.ctr.embed(batch.ids)) for batch in batches])
    hidden = model.generator.shared(q)
    return {"generator_saturated_share": float((hidden.abs() > SATURATED).float().mean()),
            "generator_hidden_std": float(hidden.std(0).mean()), "q_abs_mean": float(q.abs().mean())}


@torch.no_grad()
def value_ce_by_field(model: Callable[..., torch.Tensor], batches: Iterable[Batch], tokenizer, num_fields: int) -> list[dict]:
    """mlm_diagnostics' masked values scored field by field, under own and shuffled prompts: which
    fields the prompts carry (each field's gap), and which the text alone gives away. One process."""
    sums = torch.zeros(num_fields, 2, dtype=torch.float64)
    counts = torch.zeros(num_fields, dtype=torch.float64)
    for batch in batches:
        masked, labels = value_masks(batch, tokenizer.mask_token_id)
        for field in range(num_fields):
            field_labels = torch.where(batch.token_fields == field, labels, -100)
            counts[field] += (field_labels != -100).sum()
            if counts[field] == 0:
                continue
            for source, prompts_from in enumerate(("own", "shuffled")):
                sums[field, source] += model(batch.ids, masked, batch.attention_mask, mlm_labels=field_labels,
                                             mlm_tokens=torch.ones(()), prompts_from=prompts_from).double()
    ce = sums / counts.clamp_min(1)[:, None]
    return [{"field": field, "tokens": int(counts[field]), "ce_own": float(ce[field, 0]), "ce_shuffled": float(ce[field, 1]),
             "gap": float(ce[field, 1] - ce[field, 0])} for field in range(num_fields)]


@torch.no_grad()
def mlm_diagnostics(model: Callable[..., torch.Tensor], batches: Iterable[Batch], tokenizer, device: torch.device,
                    autocast: Callable = nullcontext, prompts: bool = True) -> dict[str, float]:
    """MLM cross-entropies on masked values and template tokens under own / shuffled / no prompts.
    `model` is a ClickPrompt or an engine around one (prompts=False: a masked LM without prompts,
    PTab's, read as "none"); with several ranks each passes its slice of the sample and the sums
    are added up."""
    sources = PROMPT_SOURCES if prompts else ("none",)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    sums = torch.zeros(2, len(sources), dtype=torch.float64, device=device)
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    first_row = dist.get_rank() * 100_000 if dist.is_initialized() else 0  # template draws differ per rank's rows
    for batch in batches:
        for kind, (masked, labels) in enumerate((value_masks(batch, tokenizer.mask_token_id),
                                                 template_masks(batch, tokenizer.mask_token_id, special, first_row))):
            on_device = batch.to(device)
            labels = labels.to(device)
            counts[kind] += (labels != -100).sum()
            for source, prompts_from in enumerate(sources):
                with autocast():
                    total = model(on_device.ids, masked.to(device), on_device.attention_mask, mlm_labels=labels,
                                  mlm_tokens=torch.ones((), device=device), **({"prompts_from": prompts_from} if prompts else {}))
                sums[kind, source] += total.double()
        first_row += len(batch)
    if dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    result = {f"mlm_{kind}_ce_{source}": float(sums[k, s] / counts[k].clamp_min(1))
              for k, kind in enumerate(("value", "template")) for s, source in enumerate(sources)}
    if prompts:
        result["mlm_value_gap"] = result["mlm_value_ce_shuffled"] - result["mlm_value_ce_own"]
    result["mlm_value_tokens"], result["mlm_template_tokens"] = int(counts[0]), int(counts[1])
    return result


def tower_logits(model: Callable[..., torch.Tensor], batch: Batch, prompts_from: str = "own") -> torch.Tensor:
    """[B, 3]: the fused logit, y_ctr and y_plm of a batch on the model's device."""
    return model(batch.ids, batch.input_ids, batch.attention_mask, towers=True, prompts_from=prompts_from).float()


def tower_diagnostics(labels: np.ndarray, own: np.ndarray, shuffled: np.ndarray) -> dict[str, float]:
    """AUC of the fused logit, y_ctr, y_plm, and y_plm under shuffled prompts, from each row's tower
    probabilities ([rows, 3], as tower_logits orders them) with its own and with shuffled prompts."""
    columns = {"auc_fused": own[:, 0], "auc_ctr": own[:, 1], "auc_plm": own[:, 2], "auc_plm_shuffled": shuffled[:, 2]}
    return {name: float(roc_auc_score(labels, scores)) for name, scores in columns.items()}
