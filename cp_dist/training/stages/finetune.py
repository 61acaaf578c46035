"""Finetuning with the PLM: CTR model, generator and PLM from PA-MLM (or fresh: the ablation without
PA-MLM), fresh heads, the fused click logit a * y_ctr + (1 - a) * y_plm. From a PTab masked-LM run
(the ablation without prompts, the PLM's MLM pretraining kept) only the PLM comes from the start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cp_dist.clickprompt.diagnostics import tower_diagnostics, tower_logits
from cp_dist.clickprompt.model import FINETUNE_HEADS, prepare_for_finetuning
from cp_dist.data.loader import Batch
from cp_dist.distributed.checkpoint import read_index
from cp_dist.distributed.engines import Engine, Start
from cp_dist.training.evaluate import click_metrics, predict, split_labels
from cp_dist.training.stages.clickprompt import ClickPromptStage


class FinetuneWithPLM(ClickPromptStage):
    name = "with_plm"
    description = "ClickPrompt finetuned with the PLM: the fused click logit of the CTR model and the prompted PLM"
    section = "finetune"
    start = "optional"
    fresh = FINETUNE_HEADS

    def prepare(self, model: nn.Module) -> None:
        prepare_for_finetuning(model, self.settings.plm_lr)

    def start_from(self, checkpoint: Path | None) -> Start | None:
        if checkpoint is not None and read_index(checkpoint)["architecture"] == "ptab":  # a PLM without an ID model
            return Start(checkpoint, "", (*FINETUNE_HEADS, "ctr.", "generator."), tables=False)
        return super().start_from(checkpoint)

    def test(self, model: Engine, data_dir: Path) -> tuple[dict[str, float], np.ndarray]:
        """As every stage's, and what each tower scores alone, and the PLM tower with shuffled prompts
        (cp_dist.clickprompt.diagnostics): two passes over the test split."""
        towers = {}
        for prompts_from in ("own", "shuffled"):
            batches = self.batches(data_dir, "test", training=False)
            towers[prompts_from] = predict(lambda b, source=prompts_from: self.towers(model, b, source), batches)
        labels = split_labels(data_dir, "test")
        metrics = click_metrics(labels, towers["own"][:, 0])
        return metrics | tower_diagnostics(labels, towers["own"], towers["shuffled"]), towers["own"][:, 0]

    def towers(self, model: Engine, batch: Batch, prompts_from: str) -> torch.Tensor:
        with self.autocast():
            return tower_logits(model, batch.to(self.rank.device), prompts_from)

    def summary(self, model: Engine) -> dict:
        fusion = model.module.fusion_logit
        with model.gathered([fusion]):
            weight = float(torch.sigmoid(fusion.detach().float()))
        return super().summary(model) | {"fusion_weight": weight}
