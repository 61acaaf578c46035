"""The registry of training stages. A stage (a baseline, too) is one module plus one line here;
`cp-dist train STAGE`, the comparison and the Ray jobs then run it through the one loop."""

from __future__ import annotations

from cp_dist.registry import Registry

STAGES: Registry = Registry("stage", {
    "ctr": "cp_dist.training.stages.ctr:CTRTraining",
    "pamlm": "cp_dist.training.stages.pamlm:PAMLM",
    "with_plm": "cp_dist.training.stages.finetune:FinetuneWithPLM",
    "without_plm": "cp_dist.training.stages.ctr:FinetuneWithoutPLM",
    "ctrl": "cp_dist.training.stages.ctrl:CTRLPretraining",
    "ctr_bert": "cp_dist.training.stages.ctr_bert:CTRBERTFinetune",
    "ptab_mlm": "cp_dist.training.stages.ptab:PTabMLM",
    "ptab": "cp_dist.training.stages.ptab:PTabFinetune",
    "p5": "cp_dist.training.stages.p5:P5Finetune",
})
