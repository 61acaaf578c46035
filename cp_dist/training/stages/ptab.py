"""PTab (a baseline; cp_dist.baselines.ptab): masked-LM training of the PLM on the row text alone,
on PA-MLM's budget and masking (the pamlm section), then the click head finetuned with the PLM
(the finetune section, as ClickPrompt's finetuning with the PLM)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cp_dist.clickprompt.diagnostics import diagnostic_sample, mlm_diagnostics
from cp_dist.clickprompt.model import freeze
from cp_dist.distributed.engines import Engine
from cp_dist.training.stages.clickprompt import LanguageModelStage
from cp_dist.training.stages.pamlm import PAMLM


class PTabMLM(PAMLM):
    name = "ptab_mlm"
    description = "PTab's pretraining (baseline): masked-LM on the row text, no prompts and no ID model; then ptab"
    architecture = "ptab"

    def prepare(self, model: nn.Module) -> None:
        freeze(model.head.parameters())  # no loss reaches the click head here
        self.mlm_head_only = {id(p) for p in model.encoder.mlm_head_only_parameters()}

    def validate(self, model: Engine, data_dir: Path) -> dict[str, float]:
        """The masked-value and template cross-entropies of PA-MLM's diagnostic rows, read without prompts."""
        sample = diagnostic_sample(data_dir, self.settings.diagnose_rows, self.rank.rank, self.rank.world_size)
        return mlm_diagnostics(model, sample, self.tokenizer, self.rank.device, self.autocast, prompts=False)

    def summary(self, model: Engine) -> dict:
        return LanguageModelStage.summary(self, model)


class PTabFinetune(LanguageModelStage):
    name = "ptab"
    description = "PTab (baseline): the PLM alone, a click head on [CLS], finetuned (from a ptab_mlm run, or fresh)"
    section = "finetune"
    architecture = "ptab"
    start = "optional"
    fresh = ("head.",)

    def prepare(self, model: nn.Module) -> None:
        freeze(model.encoder.mlm_head_only_parameters())  # unused when scoring clicks
