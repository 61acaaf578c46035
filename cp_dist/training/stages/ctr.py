"""Training a CTR backbone, and finetuning one without the PLM after PA-MLM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cp_dist.data.loader import Batch
from cp_dist.distributed.engines import Engine
from cp_dist.training.stages.base import Stage


class CTRTraining(Stage):
    name = "ctr"
    description = "a CTR backbone on its own (BCE on the click label)"
    section = "train"
    architecture = "ctr"

    def logits(self, model: Engine, batch: Batch) -> torch.Tensor:
        return model(batch.ids.to(self.rank.device))

    def loss(self, model: Engine, batch: Batch, step: int) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(model, batch), batch.labels.to(self.rank.device))


class FinetuneWithoutPLM(CTRTraining):
    """ClickPrompt without the PLM: the CTR embeddings and interaction layers come from PA-MLM, the
    head starts fresh, and the served model is exactly the plain backbone."""

    name = "without_plm"
    description = "ClickPrompt finetuned without the PLM: the backbone, started from a PA-MLM checkpoint"
    start = "required"
    start_prefix = "ctr."
    fresh = ("head.",)
