"""The comparison's variants (cp-dist compare): each a stage of the registry, the PA-MLM run it
starts from, and the prompt settings it changes. Importing this module imports nothing heavy."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

BASELINE = "ctr"


@dataclass(frozen=True)
class Variant:
    description: str
    stage: str  # a stage of cp_dist.training.stages.STAGES
    # the pretraining run it starts from, shared by the variants naming it: "pamlm" (the preset's
    # prompts), "pamlm-input", "ctrl-pretrain", "ptab-mlm", "ptab-mlm-no-prompts"; None: fresh
    pretrain_run: str | None = None
    prompt: dict = dataclasses.field(default_factory=dict)  # overrides of the prompt section
    pretrain_stage: str = "pamlm"  # the stage of that run


VARIANTS: dict[str, Variant] = {
    BASELINE: Variant("the preset's CTR backbone alone", "ctr"),
    "clickprompt-no-plm": Variant("ClickPrompt, finetuned without the PLM (served as the plain backbone)", "without_plm", "pamlm"),
    "clickprompt": Variant("ClickPrompt, finetuned with the PLM", "with_plm", "pamlm"),
    "ablation-no-pamlm": Variant("with the PLM, no PA-MLM (finetuning starts from fresh prompts)", "with_plm"),
    "ablation-input-prompts": Variant("with the PLM, prompts at the input layer only (PA-MLM too)", "with_plm", "pamlm-input",
                                      {"placement": "input"}),
    "ablation-no-prompts": Variant("with the PLM, no prompts: the two towers' logits fused late, no PA-MLM",
                                   "with_plm", None, {"num_prompts": 0}),
    "ablation-no-prompts-mlm": Variant("with the PLM, no prompts (late fusion), the PLM first trained by masked-LM on "
                                       "the row text (PTab's pretraining)", "with_plm", "ptab-mlm-no-prompts",
                                       {"num_prompts": 0}, pretrain_stage="ptab_mlm"),
    "ctrl": Variant("CTRL (baseline): InfoNCE between q and the PLM's row embedding, then the backbone alone",
                    "without_plm", "ctrl-pretrain", pretrain_stage="ctrl"),
    "ctr-bert": Variant("CTR-BERT (baseline): a user-side and an item-side text tower into an MLP", "ctr_bert"),
    "ptab": Variant("PTab (baseline): masked-LM on the row text, then the PLM alone with a head on [CLS]", "ptab",
                    "ptab-mlm", pretrain_stage="ptab_mlm"),
    "p5": Variant("P5 (baseline, encoder-only): the PLM answers 'Clicked? [MASK]' with yes or no", "p5"),
}
MAIN_VARIANTS = [BASELINE, "clickprompt-no-plm", "clickprompt"]
