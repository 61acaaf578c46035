"""P5 (a baseline; cp_dist.baselines.p5): the PLM answers "<row text> Clicked? [MASK]" with its MLM
head, finetuned on the click label with ClickPrompt's finetuning budget (the finetune section)."""

from __future__ import annotations

from cp_dist.training.stages.clickprompt import LanguageModelStage


class P5Finetune(LanguageModelStage):
    name = "p5"
    description = "P5 (baseline, encoder-only form): the MLM head answers 'Clicked? [MASK]' with yes or no"
    section = "finetune"
    architecture = "p5"
