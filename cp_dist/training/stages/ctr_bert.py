"""CTR-BERT (a baseline; cp_dist.baselines.ctr_bert): two PLM towers, one per side's text, and an
MLP, finetuned on the click label with ClickPrompt's finetuning budget (the finetune section)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cp_dist.baselines.ctr_bert import SIDES, side_fields
from cp_dist.clickprompt.model import freeze
from cp_dist.data.loader import Batch, BatchSource
from cp_dist.data.tokens import ValueTokens
from cp_dist.distributed.engines import Engine
from cp_dist.training.stages.clickprompt import LanguageModelStage


class CTRBERTFinetune(LanguageModelStage):
    name = "ctr_bert"
    description = "CTR-BERT (baseline): a user-side and an item-side text tower, their [CLS] states into an MLP"
    section = "finetune"
    architecture = "ctr_bert"
    tokens: ValueTokens | None = None

    def prepare(self, model: nn.Module) -> None:
        freeze(model.unused_parameters())

    def batches(self, data_dir: Path, split: str | tuple[str, ...], *, training: bool) -> BatchSource:
        if self.tokens is None:
            self.tokens = ValueTokens.load(data_dir)  # each side's text is assembled from the row's text ids
        return super().batches(data_dir, split, training=training)

    def side_texts(self, batch: Batch) -> list[torch.Tensor]:
        """Token ids and attention mask of the user-side text, then of the item-side text."""
        fields = side_fields(self.meta.fields)
        texts = []
        for side in SIDES:
            ids, mask, _ = self.tokens.assemble(batch.text_ids.numpy(), fields[side])
            texts += [torch.from_numpy(ids).to(self.rank.device), torch.from_numpy(mask).to(self.rank.device)]
        return texts

    def logits(self, model: Engine, batch: Batch) -> torch.Tensor:
        with self.autocast():
            return model(batch.ids.to(self.rank.device), *self.side_texts(batch)).float()
