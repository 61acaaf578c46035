"""Finetuning with the PLM: CTR model, generator and PLM from PA-MLM (or fresh: the ablation without
PA-MLM), fresh heads, the fused click logit a * y_ctr + (1 - a) * y_plm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cp_dist.clickprompt.model import FINETUNE_HEADS, prepare_for_finetuning
from cp_dist.data.loader import Batch
from cp_dist.distributed.engines import Engine
from cp_dist.training.stages.clickprompt import ClickPromptStage


class FinetuneWithPLM(ClickPromptStage):
    name = "with_plm"
    description = "ClickPrompt finetuned with the PLM: the fused click logit of the CTR model and the prompted PLM"
    section = "finetune"
    start = "optional"
    fresh = FINETUNE_HEADS

    def prepare(self, model: nn.Module) -> None:
        prepare_for_finetuning(model, self.settings.plm_lr)

    def logits(self, model: Engine, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.rank.device)
        with self.autocast():
            return model(batch.ids, batch.input_ids, batch.attention_mask).float()

    def loss(self, model: Engine, batch: Batch, step: int) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(model, batch), batch.labels.to(self.rank.device))

    def summary(self, model: Engine) -> dict:
        fusion = model.module.fusion_logit
        with model.gathered([fusion]):
            weight = float(torch.sigmoid(fusion.detach().float()))
        return super().summary(model) | {"fusion_weight": weight}
