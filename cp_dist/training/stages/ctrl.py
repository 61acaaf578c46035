"""CTRL's contrastive pretraining (a baseline; cp_dist.baselines.ctrl). The CTR model it leaves is
finetuned alone by the without_plm stage, exactly as after PA-MLM."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cp_dist.baselines.ctrl import contrastive_logits
from cp_dist.clickprompt.model import freeze
from cp_dist.config import Config
from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.engines import Engine
from cp_dist.errors import UserError
from cp_dist.training.stages.clickprompt import LanguageModelStage


class CTRLPretraining(LanguageModelStage):
    name = "ctrl"
    description = "CTRL (baseline): the CTR model's q and the PLM's row embedding aligned by InfoNCE; then without_plm"
    section = "ctrl"
    architecture = "ctrl"
    selects_on_valid = False
    scores_clicks = False

    def prepare(self, model: nn.Module) -> None:
        freeze(model.unused_parameters())

    def pairs(self, model: Engine, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.rank.device)
        with self.autocast():
            return model(batch.ids, batch.input_ids, batch.attention_mask).float()

    @classmethod
    def check(cls, config: Config, data_dir: Path, init_from: Path | None) -> None:
        super().check(config, data_dir, init_from)
        rows, nproc = config.ctrl.diagnose_rows, config.distributed.nproc
        if rows % nproc or rows > DatasetMeta.load(data_dir).splits["valid"]["rows"]:
            raise UserError(f"ctrl.diagnose_rows {rows}: expected a multiple of distributed.nproc {nproc}, "
                            "at most the valid split's rows")

    def loss(self, model: Engine, batch: Batch, step: int) -> torch.Tensor:
        logits, targets = contrastive_logits(self.pairs(model, batch), self.settings.temperature)
        return F.cross_entropy(logits, targets)

    @torch.no_grad()
    def validate(self, model: Engine, data_dir: Path) -> dict[str, float]:
        """On the first ctrl.diagnose_rows valid rows, as one batch: the contrastive loss, and how
        often a row's q ranks its own text first among the batch's (chance: 1 / rows). An alignment
        that carries nothing about the row stays at chance."""
        rows = self.settings.diagnose_rows
        loader = SplitLoader(data_dir, "valid", global_batch_size=rows, rank=self.rank.rank,
                             world_size=self.rank.world_size, text=True)
        pairs = self.pairs(model, next(iter(loader)))
        logits, targets = contrastive_logits(pairs, self.settings.temperature)
        totals = torch.stack([F.cross_entropy(logits, targets, reduction="sum") / 2,
                              (logits[: len(pairs)].argmax(1) == targets[: len(pairs)]).sum().float()])
        if dist.is_initialized():
            dist.all_reduce(totals)
        return {"contrastive_loss": float(totals[0]) / rows, "retrieval_at_1": float(totals[1]) / rows,
                "retrieval_chance": 1 / rows}
